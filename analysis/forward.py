"""Batched forward passes with an embedding captured by a forward hook."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError
from models.checkpoint import LoadedModel

_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: LoadedModel) -> threading.RLock:
    """The lock to hold while running ``model``: one per module, re-entrant.

    A forward pass is not re-entrant on a shared module: the embedding hook,
    Captum's layer hooks and MC dropout's train-mode dropout layers are state
    on the module. The dashboard serves requests and background jobs from
    threads of one process, so every pass that reads the model holds this.
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model.module)
        if lock is None:
            lock = _MODEL_LOCKS[model.module] = threading.RLock()
        return lock


def last_linear_name(module: nn.Module) -> str:
    """Name of the last ``nn.Linear`` registered in ``module`` (its input is the embedding)."""
    names = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError("The model has no nn.Linear layer to take the default embedding from; "
                          "pass --embedding-layer NAME (a module whose output is the embedding).")
    return names[-1]


def embedding_target(model: LoadedModel) -> tuple[nn.Module, str]:
    """The hooked module and ``"input"`` or ``"output"`` (which side is the embedding)."""
    modules = dict(model.module.named_modules())
    if model.embedding_layer:
        return modules[model.embedding_layer], "output"
    return modules[last_linear_name(model.module)], "input"


@contextmanager
def capture_embedding(model: LoadedModel) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass appends its ``(B, D)`` embedding to the list."""
    target, side = embedding_target(model)
    captured: list[torch.Tensor] = []

    if side == "input":
        def hook(_m, args):
            captured.append(torch.flatten(args[0], 1))
        handle = target.register_forward_pre_hook(hook)
    else:
        def hook(_m, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            captured.append(torch.flatten(out, 1))
        handle = target.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def auto_batch_size(device: torch.device, requested: int = 0, cpu: int = 128) -> int:
    """``requested``, or when 0 the size that is fastest here for MNIST-scale CNNs.

    Measured on 2 CPU cores (mnist_cnn, 10k images): a forward pass takes 1.0 s
    at 64-128 per batch, 1.8 s at 256-512, 2.1 s at 1000 (large batches fall out
    of cache). MC dropout prefers ``cpu=256``: its tail runs T times per batch,
    so fewer batches mean less per-call overhead (1.5 s vs 2.0 s at 128).
    GPUs want large batches.
    """
    if requested > 0:
        return requested
    return 1024 if device.type == "cuda" else cpu


def model_batches(model: LoadedModel, dataset, device: torch.device,
                  batch_size: int) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
    """Yield ``(start, args)``: the ``forward`` arguments of each batch, on ``device``.

    ``args`` come from the model's task: the normalised ``(B, C, H, W)`` image
    and any side inputs (a one-hot number...). The uint8 pixels go to the
    device batch by batch (a memory-mapped dataset is read only as far as it is
    iterated) and are converted there.
    """
    task = model.task
    pixels = dataset.images
    meta = {k: torch.as_tensor(v).to(device) for k, v in task.sample_metadata(dataset).items()}
    for start in range(0, len(pixels), batch_size):
        sl = slice(start, start + batch_size)
        batch = torch.from_numpy(np.array(pixels[sl], copy=True)).to(device)
        yield start, task.model_inputs(model.prepare(batch),
                                       {k: v[sl] for k, v in meta.items()})


def model_arrays(model: LoadedModel, dataset) -> dict[str, np.ndarray]:
    """The per-sample arrays a batch of ``forward`` arguments is made from (see
    :func:`batch_args`): ``"image"`` ``(N, C, H, W)`` uint8 and, per side input
    of the model's task, ``"meta:NAME"`` ``(N,)``."""
    meta = model.task.sample_metadata(dataset)
    return {"image": dataset.images, **{f"meta:{k}": np.asarray(v) for k, v in meta.items()}}


def batch_args(model: LoadedModel, arrays: Mapping[str, np.ndarray], start: int, stop: int,
               device: torch.device) -> tuple[torch.Tensor, ...]:
    """The ``forward`` arguments of samples ``start:stop`` of :func:`model_arrays`, on
    ``device``: the same values as :func:`model_batches` gives for that batch."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        part = a[start:stop]
        # Arrays shared by Ray workers are read-only; torch wants writable memory.
        return torch.as_tensor(part if part.flags.writeable else part.copy()).to(device)

    meta = {k.split(":", 1)[1]: tensor(v) for k, v in arrays.items() if k.startswith("meta:")}
    return model.task.model_inputs(model.prepare(tensor(arrays["image"])), meta)


def example_inputs(model: LoadedModel, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Blank ``forward`` arguments of ``batch`` samples (for torchinfo summaries)."""
    task = model.task
    image = torch.zeros(batch, *model.input_shape)
    meta = {i.name: torch.zeros(batch, dtype=torch.long) for i in task.inputs if i.kind != "image"}
    return task.model_inputs(image, meta)
