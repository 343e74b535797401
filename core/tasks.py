"""Tasks: what a model reads and what it predicts.

A :class:`Task` declares the model's **inputs** (the image, plus any per-sample
side inputs such as a one-hot number), its **heads** (each with its class
names and loss weight), and how a dataset sample becomes inputs and targets.
Image classification is the one-input, one-head case; the engine, the
training loop and the dashboard only ever go through a task, so a model with
several heads is analysed head by head.

Built-in tasks
--------------
``classification``
    One image in, one head (``class``) whose targets are the dataset's labels.
``mnist-sum``
    An MNIST digit and a random number 0-9 (one-hot) in; heads ``digit``
    (10 classes) and ``sum`` (digit + number, 19 classes). The number of a
    sample is a deterministic function of its sample id
    (:func:`number_from_ids`), so every analysis sees the same one.

Bring your own: ``--task package.module:name`` where ``name`` is a
:class:`Task` (or a function returning one), e.g.::

    task = Task(
        name="my-sum",
        inputs=(ModelInput("image"), ModelInput("number", "one_hot", 10)),
        heads=(Head("digit", DIGITS), Head("sum", SUMS)),
        metadata=lambda ds: {"number": number_from_ids(ds.sample_ids, 10)},
        targets=lambda ds, meta: {"digit": ds.labels, "sum": ds.labels + meta["number"]},
    )
"""

from __future__ import annotations

import hashlib
import importlib
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.image_dataset import ImageDataset

INPUT_KINDS = ("image", "one_hot")
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Head:
    """One output of the model: a classification over ``class_names``.

    ``weight`` scales the head's cross-entropy in the total training loss.
    """

    name: str
    class_names: tuple[str, ...]
    weight: float = 1.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class ModelInput:
    """One positional argument of the model's ``forward``.

    ``kind="image"`` is the normalised ``(B, C, H, W)`` image; ``"one_hot"``
    is the ``(B, size)`` one-hot encoding of the per-sample metadata column
    of the same ``name``.
    """

    name: str
    kind: str = "image"
    size: int = 0


def _no_metadata(dataset: ImageDataset) -> dict[str, np.ndarray]:
    return {}


@dataclass(frozen=True)
class Task:
    """Inputs, heads, and how a dataset sample becomes inputs and targets.

    Attributes
    ----------
    name : str
    inputs : tuple of ModelInput
        In the order of the model's ``forward`` arguments; exactly one image.
    heads : tuple of Head
        The model returns one ``(B, C_h)`` logit tensor per head: a tensor
        (one head), a tuple/list in head order, or a dict keyed by head name.
    metadata : callable, optional
        ``dataset -> {column: (N,) int64}``: per-sample side inputs (shown as
        table columns too). Must be deterministic.
    targets : callable, optional
        ``(dataset, metadata) -> {head: (N,) int64}``; default: the single
        head's targets are the dataset's labels.
    dataset_classes : tuple of str, optional
        Class names the analysed dataset must have (default: those of the
        first head when ``targets`` is the default).
    """

    name: str
    inputs: tuple[ModelInput, ...]
    heads: tuple[Head, ...]
    metadata: Callable[[ImageDataset], dict[str, np.ndarray]] = field(
        default=_no_metadata, compare=False)
    targets: Callable[[ImageDataset, dict], dict[str, np.ndarray]] | None = field(
        default=None, compare=False)
    dataset_classes: tuple[str, ...] | None = None
    # Per dataset object, its validated metadata: computed once, read by every batch,
    # table and heatmap (sha256 of every sample id for mnist-sum).
    _metadata_cache: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.heads:
            raise ConfigError(f"Task {self.name!r} declares no head.")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ConfigError(f"Task {self.name!r} has duplicate head names {names}.")
        for h in self.heads:
            if not h.name.isidentifier():
                raise ConfigError(f"Task {self.name!r}: head name {h.name!r} must be an "
                                  "identifier (letters, digits, underscores).")
        images = [i for i in self.inputs if i.kind == "image"]
        if len(images) != 1:
            raise ConfigError(f"Task {self.name!r} must have exactly one image input, "
                              f"has {len(images)}.")
        for i in self.inputs:
            if i.kind not in INPUT_KINDS:
                raise ConfigError(f"Task {self.name!r}: input {i.name!r} has kind {i.kind!r}; "
                                  f"valid: {', '.join(INPUT_KINDS)}.")
            if i.kind == "one_hot" and i.size < 1:
                raise ConfigError(f"Task {self.name!r}: one-hot input {i.name!r} needs size >= 1.")
        if self.targets is None and len(self.heads) != 1:
            raise ConfigError(f"Task {self.name!r} has {len(self.heads)} heads: declare "
                              "`targets` (how a sample gets one target per head).")

    # -- identity -----------------------------------------------------------------------------
    @property
    def head_names(self) -> list[str]:
        return [h.name for h in self.heads]

    @property
    def key(self) -> str:
        """What identifies the task in cache keys (its declaration, not its code)."""
        return hashlib.sha256(repr((self.name, self.inputs, self.heads,
                                    self.dataset_classes)).encode()).hexdigest()

    def head(self, name: str | None) -> Head:
        """The head called ``name`` (the first head for ``None``)."""
        if name in (None, ""):
            return self.heads[0]
        for h in self.heads:
            if h.name == name:
                return h
        raise ConfigError(f"Unknown head {name!r}; the model's heads are "
                          f"{', '.join(self.head_names)}.")

    # -- data ---------------------------------------------------------------------------------
    def sample_metadata(self, dataset: ImageDataset) -> dict[str, np.ndarray]:
        """``{column: (N,) int64}`` side inputs of every sample (computed once per dataset)."""
        cached = self._metadata_cache.get(dataset)
        if cached is not None:
            return cached
        meta = {k: np.asarray(v) for k, v in self.metadata(dataset).items()}
        for inp in self.inputs:
            if inp.kind == "one_hot":
                if inp.name not in meta:
                    raise ConfigError(f"Task {self.name!r}: input {inp.name!r} has no metadata "
                                      "column of that name.")
                col = meta[inp.name]
                if len(col) != len(dataset) or col.min() < 0 or col.max() >= inp.size:
                    raise ConfigError(f"Task {self.name!r}: metadata {inp.name!r} must hold "
                                      f"{len(dataset)} integers in 0..{inp.size - 1}.")
        self._metadata_cache[dataset] = meta
        return meta

    def sample_targets(self, dataset: ImageDataset,
                       metadata: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """``{head: (N,) int64}`` targets (may lie outside a head's classes for OOD data)."""
        if self.targets is None:
            return {self.heads[0].name: dataset.labels}
        meta = dict(metadata) if metadata is not None else self.sample_metadata(dataset)
        out = {k: np.asarray(v, dtype=np.int64) for k, v in self.targets(dataset, meta).items()}
        missing = set(self.head_names) - set(out)
        if missing:
            raise ConfigError(f"Task {self.name!r}: targets gave no value for head(s) "
                              f"{', '.join(sorted(missing))}.")
        return out

    def expected_classes(self) -> tuple[str, ...] | None:
        if self.dataset_classes is not None:
            return self.dataset_classes
        return self.heads[0].class_names if self.targets is None else None

    def accepts(self, dataset: ImageDataset) -> bool:
        """Whether ``dataset``'s classes are the ones the task is defined on."""
        expected = self.expected_classes()
        return expected is None or tuple(dataset.class_names) == tuple(expected)

    def check_dataset(self, dataset: ImageDataset, what: str = "the model") -> None:
        """Raise a :class:`ConfigError` when the task is not defined on ``dataset``."""
        if self.accepts(dataset):
            return
        expected = self.expected_classes()
        raise ConfigError(
            f"{what} was trained for task {self.name!r} on the classes "
            f"{_short(expected)}, but dataset {dataset.key} has the classes "
            f"{_short(dataset.class_names)}. Analyse it on a dataset with the model's classes "
            "(and add this one with --extra-dataset to compare it as out-of-distribution data).")

    # -- model I/O ----------------------------------------------------------------------------
    def model_inputs(self, image: torch.Tensor,
                     metadata: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The ``forward`` arguments for a batch.

        Parameters
        ----------
        image : (B, C, H, W) float, normalised
        metadata : column -> (B,) int64 tensor on the image's device
        """
        args = []
        for inp in self.inputs:
            if inp.kind == "image":
                args.append(image)
            else:
                args.append(F.one_hot(metadata[inp.name].long(), inp.size).to(image.dtype))
        return tuple(args)

    def split_outputs(self, raw: Any) -> dict[str, torch.Tensor]:
        """The model's raw output as ``{head: (B, C_h) logits}``."""
        names = self.head_names
        if isinstance(raw, torch.Tensor):
            if len(names) != 1:
                raise ConfigError(f"Task {self.name!r} has heads {names} but the model "
                                  "returned one tensor; return a tuple or a dict of logits.")
            outs = {names[0]: raw}
        elif isinstance(raw, Mapping):
            missing = set(names) - set(raw)
            if missing:
                raise ConfigError(f"The model's output has no head(s) {sorted(missing)}; "
                                  f"it returned keys {sorted(raw)}.")
            outs = {n: raw[n] for n in names}
        elif isinstance(raw, Sequence) and len(raw) == len(names):
            outs = dict(zip(names, raw, strict=True))
        else:
            raise ConfigError(f"The model returned {type(raw).__name__}; task {self.name!r} "
                              f"expects logits for the heads {names}.")
        for h in self.heads:
            t = outs[h.name]
            if t.ndim != 2 or t.shape[1] != h.num_classes:
                raise ConfigError(f"Head {h.name!r} should give (batch, {h.num_classes}) "
                                  f"logits, got {tuple(t.shape)}.")
        return outs

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for ``run.json`` and the dashboard."""
        return {"name": self.name,
                "inputs": [{"name": i.name, "kind": i.kind, "size": i.size} for i in self.inputs],
                "heads": [{"name": h.name, "classes": list(h.class_names), "weight": h.weight}
                          for h in self.heads]}


def _short(names: Sequence[str] | None) -> str:
    names = list(names or [])
    return ", ".join(names) if len(names) <= 6 else ", ".join(names[:5]) + f", ... ({len(names)})"


# -- built-in tasks -----------------------------------------------------------------------------
def classification(class_names: Sequence[str]) -> Task:
    """Plain image classification over ``class_names``: one input, one head ``class``."""
    return Task(name="classification", inputs=(ModelInput("image"),),
                heads=(Head("class", tuple(class_names)),))


def number_from_ids(sample_ids: Sequence[str], size: int = 10, salt: str = "loupe-number"
                    ) -> np.ndarray:
    """``(N,)`` int64 pseudo-random integers in ``[0, size)``, a pure function of each id.

    sha256 of ``salt:id``: the same sample gets the same number in every run,
    process and machine, and numbers are uniform and independent of labels.
    """
    out = np.empty(len(sample_ids), dtype=np.int64)
    for i, sid in enumerate(sample_ids):
        digest = hashlib.sha256(f"{salt}:{sid}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "little") % size
    return out


def _sum_metadata(dataset: ImageDataset) -> dict[str, np.ndarray]:
    return {"number": number_from_ids(dataset.sample_ids, 10)}


def _sum_targets(dataset: ImageDataset, meta: dict) -> dict[str, np.ndarray]:
    return {"digit": dataset.labels, "sum": dataset.labels + meta["number"]}


def mnist_sum() -> Task:
    """An MNIST digit plus a random number 0-9: heads ``digit`` (10) and ``sum`` (19)."""
    return Task(
        name="mnist-sum",
        inputs=(ModelInput("image"), ModelInput("number", "one_hot", 10)),
        heads=(Head("digit", DIGITS), Head("sum", tuple(str(s) for s in range(19)))),
        metadata=_sum_metadata, targets=_sum_targets, dataset_classes=DIGITS,
    )


TASKS: dict[str, Callable[..., Task]] = {"mnist-sum": mnist_sum}


def resolve_task(spec: str | None, class_names: Sequence[str]) -> Task:
    """The task named ``spec``: ``None``/``classification``, a built-in, or ``pkg.mod:name``.

    ``class_names`` are those of the plain classification task.
    """
    if spec in (None, "", "classification"):
        return classification(class_names)
    if spec in TASKS:
        return TASKS[spec]()
    if ":" not in spec:
        raise ConfigError(f"Unknown task {spec!r}. Valid: classification, {', '.join(TASKS)}, "
                          "or package.module:name for your own Task.")
    mod_name, attr = spec.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--task {spec!r}: cannot load it ({exc}).") from None
    task = obj() if callable(obj) and not isinstance(obj, Task) else obj
    if not isinstance(task, Task):
        raise ConfigError(f"--task {spec!r} is a {type(task).__name__}, "
                          "not an core.tasks.Task.")
    return task


def head_key(field_name: str, head: str) -> str:
    """Key of a per-head array in a step's artifact (``"probs@digit"``)."""
    return f"{field_name}@{head}"
