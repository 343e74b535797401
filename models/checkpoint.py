"""Checkpoint format and model loading.

A run folder holds ``model.pt`` (a ``state_dict``, loaded with
``torch.load(..., weights_only=True)``) and ``run.json`` (architecture,
hyperparameters, dataset, class names, per-epoch history, parameter count,
seed, wall time, input normalisation, the sha256 of ``model.pt``).

Bring-your-own models: ``model_spec="package.module:factory"`` plus a weights
file (see :mod:`models.weights` for the formats read); the factory returns an
``nn.Module``. ``model_spec="onnx:path.onnx"`` converts an ONNX model (see
:mod:`models.onnx_model`).

Nothing in a run folder makes Loupe run code: a run made with
``--model pkg.mod:factory`` (or ``--task pkg.mod:name``) records that spec,
and opening it needs the same flag on the command line (or ``trust_code``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError
from models import zoo
from models.inputs import MNIST_MEAN, MNIST_STD, InputSpec, resolve_input, spec_from_meta
from models.onnx_model import load_onnx, onnx_path
from models.run_meta import (
    META_FILE,
    ONNX_PREFIX,
    SHA_FIELD,
    WEIGHTS_FILE,
    code_specs,
    file_sha256,
    read_run_meta,
    validate_run_meta,
)
from models.weights import fit_state_dict, load_state_file

__all__ = ["META_FILE", "WEIGHTS_FILE", "LoadedModel", "load_model", "read_run_meta",
           "save_run", "validate_run_meta"]
log = logging.getLogger(__name__)
TMP_SUFFIX = ".tmp"


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
        (see :mod:`core.tasks`).
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
        """The :class:`~core.tasks.Task` (see :meth:`bind_task`)."""
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
        from core.tasks import resolve_task

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
        """sha256 over the weights' bytes, the architecture and the embedding layer (and an
        ONNX model's file, whose graph holds layers without weights)."""
        arch = self.arch
        if self.meta.get("onnx_sha256"):
            arch = f"{arch}@{self.meta['onnx_sha256']}"
        return model_fingerprint(self.module, arch, self.embedding_layer)

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    def __post_init__(self) -> None:
        # One number means every channel (as older code and tests pass it).
        if isinstance(self.mean, int | float):
            self.mean = (float(self.mean),)
        if isinstance(self.std, int | float):
            self.std = (float(self.std),)

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


def _clean_leftovers(folder: Path) -> None:
    """Remove temp files an interrupted :func:`save_run` left (``.model.pt.*.tmp``)."""
    for name in (WEIGHTS_FILE, META_FILE):
        for leftover in folder.glob(f".{name}.*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _write_temp(folder: Path, name: str, write) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def save_run(folder: str | os.PathLike, module: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``run.json`` as one consistent pair.

    Both files are written to hidden temp files first, then renamed into place
    (weights first). ``run.json`` records the sha256 of the weights it
    describes, and :func:`load_model` checks it: a process killed between the
    two renames leaves new weights beside the old ``run.json``, which is then
    refused as inconsistent instead of being read as a mix. (Swapping a whole
    temp folder into place instead cannot be done atomically on POSIX either,
    and would drop anything else the user keeps in the run folder.) Temp files
    left by a kill are ignored when listing and removed by the next save.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(folder)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    tmp_weights = _write_temp(folder, WEIGHTS_FILE, lambda f: torch.save(state, f))
    try:
        meta = {**meta, SHA_FIELD: file_sha256(tmp_weights)}
        text = json.dumps(meta, indent=2).encode()
        tmp_meta = _write_temp(folder, META_FILE, lambda f: f.write(text))
    except BaseException:
        tmp_weights.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp_weights, folder / WEIGHTS_FILE)
        os.replace(tmp_meta, folder / META_FILE)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return folder


def resolve_factory(spec: str):
    """Import ``package.module:factory`` and return the callable."""
    return import_attr(spec, "--model", "factory", CheckpointError)


def import_attr(spec: str, flag: str, what: str, error: type[Exception]):
    """Import ``package.module:attr`` named by command-line ``flag`` and return the attribute;
    a malformed spec, a failed import or a missing attribute raises ``error`` naming the
    flag (``what`` names the attribute in the expected form ``package.module:<what>``)."""
    if ":" not in spec:
        raise error(f"{flag} {spec!r} must look like package.module:{what}.")
    mod_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise error(f"{flag} {spec!r}: cannot import {mod_name!r} ({exc}). "
                    "Is the package on PYTHONPATH?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{flag} {spec!r}: {mod_name} has no attribute {attr!r}.") from None


def _check_trusted(folder: Path, meta: dict, model_spec: str | None, task: str | None,
                   trust_code: bool) -> None:
    """Refuse a run whose ``run.json`` names code the command line did not name."""
    if trust_code:
        return
    given = {"--model": model_spec, "--task": task}
    for flag, spec in code_specs(meta):
        if given[flag] is None:
            raise CheckpointError(
                f"Run {folder} was made with your own code ({spec}); Loupe does not import code "
                f"named in a run folder. Pass {flag} {spec} (or --trust-code) to open it.")


def _check_weights_sha(folder: Path, meta: dict, weights: Path) -> None:
    """The run's ``model.pt`` must be the one its ``run.json`` describes (see :func:`save_run`)."""
    recorded = meta.get(SHA_FIELD)
    if recorded is None or not weights.is_file():
        return  # runs saved before the hash was recorded; a missing file is reported later
    if file_sha256(weights) != recorded:
        raise CheckpointError(
            f"Run folder {folder} is inconsistent: {WEIGHTS_FILE} is not the file its "
            f"{META_FILE} describes ({SHA_FIELD} differs), probably from an interrupted save. "
            f"Retrain it (`python -m models train --out {folder}`) or restore both files.")


def _no_model_message(weights: str | os.PathLike | None) -> str:
    if weights is None:
        return ("No model given: pass --checkpoint RUN_FOLDER (with run.json), or "
                "--model package.module:factory --weights FILE.pt, or --model onnx:FILE.onnx.")
    path = Path(weights)
    load_state_file(path)  # a pickled model, TorchScript, a bad file: that error first
    return (f"{path} holds weights only, without a run.json beside it that names the "
            f"architecture: pass --model package.module:factory --weights {path} (your code "
            "that builds the network), or a run folder written by `python -m models train`.")


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    model_spec: str | None = None,
    weights: str | os.PathLike | None = None,
    embedding_layer: str | None = None,
    task: str | None = None,
    input_spec: InputSpec | None = None,
    trust_code: bool = False,
) -> LoadedModel:
    """Load a run folder (or its ``model.pt``), or a bring-your-own model.

    Parameters
    ----------
    checkpoint : path, optional
        A run folder written by ``python -m models train`` or its ``model.pt``.
    model_spec : str, optional
        ``package.module:factory`` returning an ``nn.Module``, or
        ``onnx:PATH`` (an ONNX model, converted; no weights needed).
    weights : path, optional
        Weights for ``model_spec`` (or overriding the run's): a state_dict, a
        training checkpoint holding one, or a ``.safetensors`` file (see
        :mod:`models.weights`).
    embedding_layer : str, optional
        Module name whose output is the embedding.
    task : str, optional
        The model's task (see :mod:`core.tasks`); default: the run's, else
        plain classification.
    input_spec : InputSpec, optional
        The input declared by flags (``--input-size``, ``--mean``, ``--std``);
        it overrides the run's ``input`` entry part by part.
    trust_code : bool
        Import the ``model_spec``/``task`` code a run folder names even when
        not given as arguments. Off by default: a run folder is data.

    Notes
    -----
    An ONNX model's input ``[C, H, W]`` (when the graph fixes it) is in
    ``meta["onnx_input_shape"]``.
    """
    meta: dict[str, Any] = {}
    name: str | None = None
    folder: Path | None = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"Checkpoint {path} does not exist. Train one with "
                                  f"`python -m models train --out {path}` or pass a run folder.")
        folder = path if path.is_dir() else path.parent
        weights_path = path / WEIGHTS_FILE if path.is_dir() else path
        meta = read_run_meta(folder)
        if meta or path.is_dir():
            name = folder.name
        if meta:
            _check_trusted(folder, meta, model_spec, task, trust_code)
            if weights is None and weights_path.resolve() == (folder / WEIGHTS_FILE).resolve():
                _check_weights_sha(folder, meta, weights_path)
        onnx_run = str(meta.get("model_spec") or "").startswith(ONNX_PREFIX)
        if weights is None and (weights_path.is_file() or not onnx_run):
            weights = weights_path  # an ONNX run may keep its weights in its .onnx file alone
    from_run = model_spec is None and bool(meta.get("model_spec"))
    spec = model_spec or meta.get("model_spec")
    onnx_file: Path | None = None
    if spec and spec.startswith(ONNX_PREFIX):
        onnx_file = onnx_path(spec, folder if from_run else None)
        module, onnx_shape = load_onnx(onnx_file)
        arch = f"{ONNX_PREFIX}{onnx_file.name}"
        meta = {**meta, "onnx_sha256": file_sha256(onnx_file)}
        if onnx_shape is not None:
            meta["onnx_input_shape"] = onnx_shape
    elif spec:
        factory = resolve_factory(spec)
        if not callable(factory):
            raise CheckpointError(f"--model {spec}: {type(factory).__name__} is not callable; "
                                  "name a function or class that returns the nn.Module.")
        try:
            module = factory()
        except Exception as exc:  # noqa: BLE001 - the user's factory failed: say so, no trace
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointError(f"--model {spec}: calling it failed with {type(exc).__name__}: "
                                  f"{first}. The factory must take no arguments and return "
                                  "the nn.Module.") from None
        if not isinstance(module, nn.Module):
            raise CheckpointError(f"--model {spec}: the factory returned "
                                  f"{type(module).__name__}, not a torch.nn.Module.")
        arch = spec
    elif "arch" in meta:
        arch = meta["arch"]
        module = zoo.build(arch, num_classes=len(meta.get("class_names", range(10))))
        if task and meta.get("task") and task != meta.get("task"):
            raise CheckpointError(f"--task {task} does not match the run's task "
                                  f"{meta['task']!r} ({folder / META_FILE}).")
    elif meta:
        raise CheckpointError(f"{folder / META_FILE} names no arch or model_spec: pass --model "
                              "package.module:factory (the code that builds the network).")
    else:
        raise CheckpointError(_no_model_message(weights))
    if weights is None and onnx_file is None:
        raise CheckpointError(f"--model {spec} needs --weights FILE.pt.")
    if weights is not None:
        fit_state_dict(module, load_state_file(weights), weights, arch)
    if name is None:
        source = Path(weights) if weights is not None else onnx_file
        name = source.stem if source is not None else spec.rsplit(":", 1)[-1]
    module.eval()
    declared = (input_spec or InputSpec()).over(
        spec_from_meta(meta.get("input"), f"{name}/{META_FILE}"))
    if meta.get("onnx_input_shape"):
        declared = declared.over(InputSpec(tuple(meta["onnx_input_shape"]),
                                           source=f"the ONNX graph of {arch}"))
    layer = embedding_layer or meta.get("embedding_layer")
    if layer is not None and layer not in dict(module.named_modules()):
        valid = [n for n, _ in module.named_modules() if n]
        raise CheckpointError(f"--embedding-layer {layer!r} is not a module of {arch}. "
                              f"Valid names: {', '.join(valid)}.")
    loaded = LoadedModel(module=module, arch=arch, embedding_layer=layer, meta=meta, name=name,
                         task_spec=task or meta.get("task"), declared=declared)
    loaded.settle_input()
    return loaded
