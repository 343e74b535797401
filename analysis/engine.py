"""Runs registered steps for one (model, dataset) pair, each result cached by content.

A step's cache key is a sha256 over: the step's name, code version and
config; the model's weights, architecture, embedding layer and input
normalisation and task (only for steps that read the model); the dataset's name,
split and content fingerprint; and the keys of the steps it requires (so a
change upstream re-keys everything downstream, and nothing else).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from analysis.executor import Executor, InProcessExecutor
from analysis.forward import model_lock
from analysis.registry import StepContext, get_step, make_config
from cache import Artifact, ArtifactStore, stable_hash
from core.datasets import ImageDataset
from core.memory import release_freed_memory, release_mapped_arrays
from models.checkpoint import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """How a step's result was obtained: ``computed``, ``cached`` (disk) or ``memory``.

    ``started`` is ``time.perf_counter()`` when its computing (or reading) began.
    """

    name: str
    status: str
    seconds: float
    key: str
    started: float = 0.0


def _norm_key(values: tuple[float, ...]) -> float | list[float]:
    return float(values[0]) if len(set(values)) == 1 else [float(v) for v in values]


class Engine:
    """Computes and caches step artifacts for one model on one dataset.

    Parameters
    ----------
    model : LoadedModel
    dataset : ImageDataset
    store : ArtifactStore
    device : torch.device
    options : dict of step name to dict of config overrides
    reference : Engine, optional
        The in-distribution engine when ``dataset`` is an extra (OOD) dataset.
    executor : Executor, optional
        Where batch steps run (see :mod:`analysis.executor`); default in this
        process. Not part of any key: every executor gives equal results.
    """

    def __init__(self, model: LoadedModel, dataset: ImageDataset, store: ArtifactStore,
                 device: torch.device, options: dict[str, dict[str, Any]] | None = None,
                 reference: Engine | None = None, progress: bool = True,
                 executor: Executor | None = None) -> None:
        if not model.has_task:  # a run that does not name its classes takes the dataset's
            model.bind_task(dataset.class_names)
        self.model = model
        self.dataset = dataset
        self.store = store
        self.device = device
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.reference = reference
        self.progress = progress
        self.executor = executor or InProcessExecutor()
        self.records: list[StepRecord] = []
        self._keys: dict[str, str] = {}
        self._memory: dict[str, Artifact] = {}
        self._model_id: str | None = None
        # One lock per step: one thread computes a step, the others asking for it wait;
        # two different steps can be computed at once (see :meth:`get`).
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            m = self.model
            # One value for all channels hashes as the float it was before per-channel
            # normalisation existed, so those keys are unchanged.
            self._model_id = stable_hash(m.fingerprint, _norm_key(m.mean), _norm_key(m.std),
                                         list(m.input_shape), m.task.key)
        return self._model_id

    def config(self, name: str) -> Any:
        return make_config(name, self.options.get(name))

    def key(self, name: str) -> str:
        """The content address of step ``name``'s result for this model and dataset."""
        if name not in self._keys:
            step = get_step(name)
            ref = [self.reference.key(r) for r in step.uses_reference] if self.reference else []
            extra = step.key_extra(self.model) if step.uses_model else None
            self._keys[name] = stable_hash(
                "loupe-step", name, step.version, self.config(name),
                self.model_id if step.uses_model else None,
                self.dataset.key, self.dataset.fingerprint,
                [self.key(r) for r in step.requires], ref,
                *([extra] if extra is not None else []),
            )
        return self._keys[name]

    def done(self, name: str) -> bool:
        """Whether step ``name``'s artifact is in memory (:meth:`get` returns at once)."""
        return name in self._memory

    def _step_lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, name: str) -> Artifact:
        """The artifact of step ``name``: from memory, the disk cache, or computed.

        Thread-safe. A thread computing a step holds that step's lock while it
        takes its inputs (each under its own lock), so locks are taken along the
        steps' requirements only, which form no cycle: no deadlock. Steps that
        call the model (``uses_model`` and ``calls_model``) also hold the model's
        lock while they run (:func:`model_lock`), innermost: nothing may call
        ``get`` while holding the model's lock (``key`` can take it).
        """
        if name in self._memory:
            return self._memory[name]
        with self._step_lock(name):
            if name in self._memory:  # another thread finished it while this one waited
                return self._memory[name]
            step = get_step(name)
            key = self.key(name)
            started = time.perf_counter()
            artifact = self.store.get(key)
            if artifact is not None:
                self.records.append(StepRecord(name, "cached", time.perf_counter() - started,
                                               key, started))
            else:
                inputs = {r: self.get(r) for r in step.requires}
                reference = {}
                if self.reference is not None:
                    reference = {r: self.reference.get(r) for r in step.uses_reference}
                started = time.perf_counter()
                ctx = StepContext(self.model, self.dataset, self.device, inputs, reference,
                                  self.progress, self.executor)
                locked = step.uses_model and step.calls_model
                with model_lock(self.model) if locked else nullcontext():
                    artifact = step.run(ctx, self.config(name))
                if self.store.put(key, artifact, what=f"step {name} of {self.dataset.key}"):
                    # Hold the memory-mapped copy, so the computed arrays can be freed.
                    artifact = self.store.get(key) or artifact
                release_freed_memory()  # the step's temporaries, handed back to the OS
                # and the pages it read of memory-mapped inputs and images (read again
                # from the file if touched)
                release_mapped_arrays([*(a for art in inputs.values() for a in art.values()),
                                       self.dataset.images])
                seconds = time.perf_counter() - started
                log.info("computed %s in %.2f s", name, seconds)
                self.records.append(StepRecord(name, "computed", seconds, key, started))
            self._memory[name] = artifact
            return artifact

    def columns(self, name: str) -> dict:
        """Per-sample columns of step ``name`` (computing it if needed)."""
        return get_step(name).columns(self.get(name), self.config(name))
