"""Checkpoint format and model loading.

A run folder holds ``model.pt`` (a ``state_dict``, loaded with
``torch.load(..., weights_only=True)``) and ``run.json`` (architecture,
hyperparameters, dataset, class names, per-epoch history, parameter count,
seed, wall time, input normalisation).

Bring-your-own models: ``model_spec="package.module:factory"`` plus a weights
file; the factory returns an ``nn.Module``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.errors import CheckpointError
from models import zoo
from models.inputs import MNIST_MEAN, MNIST_STD, InputSpec, resolve_input, spec_from_meta

WEIGHTS_FILE = "model.pt"
META_FILE = "run.json"


@dataclass
class LoadedModel:
    """A model ready for analysis.

    Attributes
    ----------
    module : nn.Module
        In eval mode, on the CPU until moved.
    arch : str
        Zoo name or ``package.module:factory``.
    embedding_layer : str or None
        Module name whose *output* is the embedding; ``None`` means the input
        of the last ``nn.Linear`` (the penultimate features).
    mean, std : tuple of float
        Input normalisation applied to pixels scaled to [0, 1], one value per
        channel (or one for all).
    input_shape : tuple of int
        ``(C, H, W)`` the model is fed (see :meth:`settle_input`).
    declared : InputSpec
        What the flags and ``run.json`` declare about the input.
    input_notes : list of str
        What was assumed rather than declared, in words, for the run summary.
    meta : dict
        The run's ``run.json`` (empty for a bare weights file).
    name : str
        Display name of the run (its folder name).
    task_spec : str or None
        ``classification`` (``None``), a built-in task name or ``pkg.mod:name``
        (see :mod:`analysis.tasks`).
    """

    module: nn.Module
    arch: str
    embedding_layer: str | None = None
    mean: tuple[float, ...] = MNIST_MEAN
    std: tuple[float, ...] = MNIST_STD
    input_shape: tuple[int, int, int] = (1, 28, 28)
    declared: InputSpec = field(default_factory=InputSpec)
    input_notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "model"
    task_spec: str | None = None
    _task: Any = field(default=None, repr=False)

    @property
    def task(self):
        """The :class:`~analysis.tasks.Task` (see :meth:`bind_task`)."""
        if self._task is None:
            self.bind_task(())
        return self._task

    @property
    def has_task(self) -> bool:
        return self._task is not None

    def bind_task(self, class_names) -> None:
        """Resolve the task.

        A plain classifier whose run does not name its classes takes
        ``class_names`` (the dataset's) when its output has that many, else
        numbered classes (its output width is probed with one blank input).
        """
        from analysis.tasks import resolve_task

        names = self.class_names
        if names is None and self.task_spec in (None, "", "classification"):
            width = self._output_width()
            names = list(class_names) if width == len(class_names) else [
                str(i) for i in range(width)]
        self._task = resolve_task(self.task_spec, names or list(class_names))

    def _output_width(self) -> int:
        param = next(self.module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module(torch.zeros(1, *self.input_shape, device=device))
        except TypeError:  # forward() wants more than an image: a multi-input model
            out = None
        finally:
            self.module.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise CheckpointError(f"Model {self.arch} does not return one (batch, classes) "
                                  "logit tensor: declare its task with --task (see the README, "
                                  "'Models with several inputs or heads').")
        return int(out.shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 over the weights' bytes, the architecture and the embedding layer."""
        return model_fingerprint(self.module, self.arch, self.embedding_layer)

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    def settle_input(self, data_shape: tuple[int, int, int] | None = None,
                     data_name: str = "the dataset") -> None:
        """Fix ``input_shape``, ``mean``, ``std`` and ``input_notes`` for images of
        ``data_shape`` ``(C, H, W)`` (``None``: before any data is loaded).

        Raises
        ------
        ConfigError
            The data's channels or size differ from what the model reads and
            nothing declared a conversion; the message names both shapes and the
            ``--input-size`` that fixes it.
        """
        self.input_shape, self.mean, self.std, self.input_notes = resolve_input(
            self.declared, self.module, data_shape, data_name, self.name)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` uint8 pixels -> normalised float32 input."""
        x = images.float() / 255.0
        if len(self.mean) == 1 and len(self.std) == 1:
            return (x - self.mean[0]) / self.std[0]
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


def model_fingerprint(module: nn.Module, arch: str, embedding_layer: str | None) -> str:
    h = hashlib.sha256(f"{arch}|{embedding_layer}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def save_run(folder: str | os.PathLike, module: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``run.json`` atomically (temp file, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp)
    os.replace(tmp, folder / WEIGHTS_FILE)
    tmp_meta = folder / (META_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_meta, folder / META_FILE)
    return folder


def resolve_factory(spec: str):
    """Import ``package.module:factory`` and return the callable."""
    if ":" not in spec:
        raise CheckpointError(f"--model {spec!r} must look like package.module:factory.")
    mod_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise CheckpointError(f"--model {spec!r}: cannot import {mod_name!r} ({exc}). "
                              "Is the package on PYTHONPATH?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CheckpointError(f"--model {spec!r}: {mod_name} has no attribute {attr!r}.") from None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"Cannot load weights {path}: {str(exc).splitlines()[0]} "
                              "(expected a state_dict saved with torch.save).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state_dict (got {type(state).__name__}).")
    return state


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    model_spec: str | None = None,
    weights: str | os.PathLike | None = None,
    embedding_layer: str | None = None,
    task: str | None = None,
    input_spec: InputSpec | None = None,
) -> LoadedModel:
    """Load a run folder (or its ``model.pt``), or a bring-your-own model.

    Parameters
    ----------
    checkpoint : path, optional
        A run folder written by ``python -m models train`` or its ``model.pt``.
    model_spec : str, optional
        ``package.module:factory`` returning an ``nn.Module``.
    weights : path, optional
        State dict for ``model_spec`` (or overriding the run's weights).
    embedding_layer : str, optional
        Module name whose output is the embedding.
    task : str, optional
        The model's task (see :mod:`analysis.tasks`); default: the run's, else
        plain classification.
    input_spec : InputSpec, optional
        The input declared by flags (``--input-size``, ``--mean``, ``--std``);
        it overrides the run's ``input`` entry part by part.
    """
    meta: dict[str, Any] = {}
    name = "model"
    if checkpoint is not None:
        path = Path(checkpoint)
        folder = path if path.is_dir() else path.parent
        weights_path = path / WEIGHTS_FILE if path.is_dir() else path
        if not path.exists():
            raise CheckpointError(f"Checkpoint {path} does not exist. Train one with "
                                  f"`python -m models train --out {path}` or pass a run folder.")
        meta_path = folder / META_FILE
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{meta_path} is not valid JSON ({exc}).") from None
        name = folder.name
        weights = weights or weights_path
    if model_spec is None:
        model_spec = meta.get("model_spec")
    if model_spec:
        factory = resolve_factory(model_spec)
        module = factory()
        if not isinstance(module, nn.Module):
            raise CheckpointError(f"--model {model_spec}: the factory returned "
                                  f"{type(module).__name__}, not a torch.nn.Module.")
        arch = model_spec
    elif "arch" in meta:
        arch = meta["arch"]
        module = zoo.build(arch, num_classes=len(meta.get("class_names", range(10))))
        if task and meta.get("task") and task != meta.get("task"):
            raise CheckpointError(f"--task {task} does not match the run's task "
                                  f"{meta['task']!r} ({meta_path}).")
    else:
        raise CheckpointError("No model given: pass --checkpoint RUN_FOLDER (with run.json), or "
                              "--model package.module:factory --weights FILE.pt.")
    if weights is None:
        raise CheckpointError(f"--model {model_spec} needs --weights FILE.pt.")
    state = _load_state(Path(weights))
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"Weights {weights} do not fit architecture {arch!r}: "
                              f"{str(exc).splitlines()[0]}") from None
    module.eval()
    declared = (input_spec or InputSpec()).over(
        spec_from_meta(meta.get("input"), f"{name}/{META_FILE}"))
    layer = embedding_layer or meta.get("embedding_layer")
    if layer is not None and layer not in dict(module.named_modules()):
        valid = [n for n, _ in module.named_modules() if n]
        raise CheckpointError(f"--embedding-layer {layer!r} is not a module of {arch}. "
                              f"Valid names: {', '.join(valid)}.")
    loaded = LoadedModel(module=module, arch=arch, embedding_layer=layer, meta=meta, name=name,
                         task_spec=task or meta.get("task"), declared=declared)
    loaded.settle_input()
    return loaded
