"""Where the batch steps' per-batch work runs: in this process, or on Ray Data.

The batch steps (``inference``, ``mc_dropout``, ``image_metadata``,
``attribution``) describe their per-batch work as a :class:`BatchJob`: a
module-level ``build`` function that, given the model, the per-sample input
arrays and a device, returns a function of one batch
``(start, stop) -> dict of (stop - start, ...) arrays``. An executor runs that
function over the batches ``[0, B), [B, 2B), ...`` and returns every output
array concatenated in sample order.

- :class:`InProcessExecutor` (the default) builds the function once and calls
  it on each batch in turn, in this process, on the session's device; a job
  marked ``threads`` (numpy work that releases the GIL: ``image_metadata``)
  has its batches run on one thread per core (1.6x on 2 cores).
- :class:`RayExecutor` runs the batches on Ray Data: a dataset of batch
  descriptors (first and last sample index) goes through
  ``Dataset.map_batches``; the per-sample arrays and the pickled model go to
  the object store once. Each worker builds the batch function once
  (:class:`_RayBatchWorker`, Ray Data's callable class: it unpickles the
  model), and every output batch carries its sample indices, by which the
  results are put back in order. With GPUs in the cluster, the callable class
  runs on an actor pool, one GPU per actor; on CPUs it runs in Ray tasks that
  keep it per worker process (Ray reuses task processes between jobs, actors
  start anew for each job: see :class:`RayExecutor`). The batch boundaries are
  the same as in-process, so a step whose result depends on them (MC dropout
  seeds its random stream per batch) gives equal results on either executor.
  No scheduling here: Ray Data's own.

The executor is a per-session choice that does not enter any cache key: both
give equal results (``allclose``: a worker may sum in another order with
another number of threads).

Why the model travels pickled: a :class:`~models.checkpoint.LoadedModel` does
not keep the path or flags it was loaded from, and an ONNX model, a
``--model pkg.mod:factory`` model and a task given by ``--task`` would need
them all replayed on every worker. The job is pickled with cloudpickle (what
Ray uses) with the module's weights on the CPU; its classes are pickled by
reference, so Loupe and any ``--model``/``--task`` code must be importable on
the workers (on one machine they are; on a cluster install them on every node).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import socket
import sys
import threading
import uuid
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import ConfigError
from models.checkpoint import LoadedModel

log = logging.getLogger(__name__)

EXECUTORS = ("inprocess", "ray")
BatchFn = Callable[[int, int], dict[str, np.ndarray]]
INDEX = "__index__"  # the sample-index column of the Ray path's output batches


@dataclass
class BatchJob:
    """One step's per-batch work, described so that any process can build it.

    Attributes
    ----------
    build : callable
        A module-level function (pickled by reference)
        ``build(model, arrays, device, **options) -> fn`` where
        ``fn(start, stop)`` returns a dict of arrays of ``stop - start`` rows.
    arrays : dict of str to array
        Per-sample inputs, read ``[start:stop]`` by ``fn`` (e.g. ``"image"``
        ``(N, C, H, W)`` uint8). Read-only on a Ray worker.
    model : LoadedModel, optional
        The model ``fn`` runs (``None`` for model-free steps).
    options : dict
        Small picklable keyword arguments of ``build``.
    threads : bool
        ``fn`` may run on several batches at once from several threads, and
        spends its time in code that releases the GIL (numpy, scipy,
        scikit-image): the in-process executor then runs the batches on a pool
        of one thread per core. ``False`` (torch models: torch already uses
        every core within a batch) runs them one after another.
    """

    build: Callable[..., BatchFn]
    arrays: Mapping[str, np.ndarray]
    model: LoadedModel | None = None
    options: dict[str, Any] = field(default_factory=dict)
    threads: bool = False

    def make(self, device: torch.device) -> BatchFn:
        """The batch function on ``device`` (built once per process that runs it)."""
        return self.build(self.model, self.arrays, device, **self.options)


def batch_ranges(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(0, B), (B, 2B), ...]`` covering ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch output dicts along their first axis."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Gather:
    """Per-batch outputs written, as they come, into ``(n, ...)`` arrays at their rows.

    Keeping every batch's small arrays until one final concatenation fragments
    the heap: the freed activations of later batches sit between kept outputs,
    and glibc cannot hand them back (inference over 1,000,000 MNIST digits held
    300 MB of outputs in 6.5 GB). The concatenation also needed the outputs
    twice. Here each batch's outputs are copied into arrays allocated at the
    first batch and freed at once.

    Parameters
    ----------
    n : int
        The number of samples; every row must be filled exactly once.
    desc : str
        What is gathered, for the error messages.
    """

    def __init__(self, n: int, desc: str = "") -> None:
        self.n, self.desc = n, desc or "job"
        self.arrays: dict[str, np.ndarray] | None = None
        self.seen = np.zeros(n, bool)

    def add(self, rows: slice | np.ndarray, part: Mapping[str, np.ndarray]) -> None:
        """Write ``part`` (each ``(len(rows), ...)``) at ``rows`` (a slice or sample indices)."""
        part = {k: np.asarray(v) for k, v in part.items()}
        if self.arrays is None:
            self.arrays = {k: np.empty((self.n, *v.shape[1:]), v.dtype) for k, v in part.items()}
        if part.keys() != self.arrays.keys():
            raise RuntimeError(f"{self.desc}: a batch gave arrays {sorted(part)}, the first "
                               f"gave {sorted(self.arrays)}")
        count = len(range(self.n)[rows]) if isinstance(rows, slice) else len(rows)
        lengths = {len(v) for v in part.values()}
        if lengths - {count}:
            raise RuntimeError(f"{self.desc}: a batch of {count} samples gave arrays of "
                               f"{sorted(lengths)} rows")
        repeated = not isinstance(rows, slice) and len(np.unique(rows)) != len(rows)
        if repeated or np.any(self.seen[rows]):
            raise RuntimeError(f"{self.desc}: a batch's samples were returned twice")
        self.seen[rows] = True
        for k, v in part.items():
            target = self.arrays[k]
            if v.dtype != target.dtype:  # widen as np.concatenate would
                wide = np.result_type(target.dtype, v.dtype)
                if wide != target.dtype:
                    target = self.arrays[k] = target.astype(wide)
            target[rows] = v

    def result(self) -> dict[str, np.ndarray]:
        """The ``(n, ...)`` arrays; ``RuntimeError`` when a sample was never filled."""
        missing = int((~self.seen).sum())
        if missing:
            raise RuntimeError(f"{self.desc}: {missing} of {self.n} samples were never "
                               "returned (a batch lost)")
        return self.arrays or {}


class Executor:
    """Runs a :class:`BatchJob` over every batch of ``n`` samples (see the module docstring)."""

    name: str = ""

    def compute_device(self, device: torch.device, job_uses_model: bool = True) -> torch.device:
        """The device the batches run on, for a session on ``device`` (picks batch sizes)."""
        return device

    def map_batches(self, job: BatchJob, n: int, batch_size: int, *, device: torch.device,
                    desc: str = "", progress: bool = False) -> dict[str, np.ndarray]:
        """Every output array of ``job`` over samples ``0..n-1``, in sample order.

        Returns
        -------
        dict of str to array
            Each ``(n, ...)``: the batches' outputs concatenated by sample index.
        """
        raise NotImplementedError

    def prepare(self) -> None:
        """Get ready for work ahead (nothing by default); returns at once."""

    def close(self) -> None:
        """Release what the executor started (nothing by default)."""


class InProcessExecutor(Executor):
    """The batches in this process (the default): one after another, or, for a job
    marked ``threads``, on a pool of ``workers`` threads (one per usable core).

    Each batch's outputs go to their rows as it finishes (:class:`Gather`), so
    the result does not depend on the order the threads finish in; at most
    ``2 * workers`` batches are in flight.
    """

    name = "inprocess"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or usable_cores()

    def map_batches(self, job: BatchJob, n: int, batch_size: int, *, device: torch.device,
                    desc: str = "", progress: bool = False) -> dict[str, np.ndarray]:
        fn = job.make(device)
        gather = Gather(n, desc)
        ranges = batch_ranges(n, batch_size)
        with tqdm(total=len(ranges), desc=desc, leave=False, disable=not progress) as bar:
            if not job.threads or self.workers < 2 or len(ranges) < 2:
                for start, stop in ranges:
                    gather.add(slice(start, stop), fn(start, stop))
                    bar.update()
                return gather.result()
            with ThreadPoolExecutor(self.workers, thread_name_prefix="loupe-batch") as pool:
                pending: dict[Future, tuple[int, int]] = {}
                try:
                    for start, stop in ranges:
                        if len(pending) >= 2 * self.workers:
                            self._collect(pending, gather, bar, FIRST_COMPLETED)
                        pending[pool.submit(fn, start, stop)] = (start, stop)
                    self._collect(pending, gather, bar, ALL_COMPLETED)
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
        return gather.result()

    @staticmethod
    def _collect(pending: dict[Future, tuple[int, int]], gather: Gather, bar,
                 until: str) -> None:
        """Gather the finished batches of ``pending`` (waiting ``until``), in any order."""
        done, _ = wait(pending, return_when=until)
        for future in done:
            start, stop = pending.pop(future)
            gather.add(slice(start, stop), future.result())
            bar.update()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _RayBatchWorker:
    """Ray Data's callable class: builds the job's batch function once per worker."""

    def __init__(self, refs: list, use_gpu: bool, threads: int) -> None:
        import cloudpickle
        import ray

        arrays_ref, job_ref = refs  # in a list: Ray passes them on unresolved
        job: BatchJob = cloudpickle.loads(ray.get(job_ref))
        job.arrays = ray.get(arrays_ref)  # zero-copy, read-only views of the object store
        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.fn = job.make(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for start, stop in zip(batch["start"].tolist(), batch["stop"].tolist(), strict=True):
            out = self.fn(int(start), int(stop))
            out[INDEX] = np.arange(start, stop, dtype=np.int64)
            parts.append(out)
        return concat_parts(parts)


RAY_GROUP_MAX = 64  # batches per Ray call, at most


def ray_group(batches: int, workers: int) -> int:
    """How many consecutive batches one Ray call runs: at least four calls per worker
    (for balance), at most :data:`RAY_GROUP_MAX` batches each, at least one.

    Each Ray call costs tens of milliseconds of scheduling and object-store traffic on
    top of its batches; one call per batch made inference on 70,000 MNIST digits take
    35 s on 2 local workers against 10 s in-process. The batch boundaries (and so
    MC dropout's per-batch seeds) are the same whatever the grouping.
    """
    return max(1, min(RAY_GROUP_MAX, batches // (4 * max(1, workers))))


WARM_MODULES = ("analysis.steps.image_metadata", "analysis.steps.inference",
                "analysis.steps.mc_dropout")


def _warm_up() -> None:
    """Import what a batch job's task imports (run in Ray task processes ahead of the jobs).

    By name: the steps import this module, which needs none of them itself.
    """
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)


# In a Ray task worker process: the worker of the job it last ran (token, worker).
_TASK_WORKER: dict[str, _RayBatchWorker] = {}


def _ray_task(batch: dict[str, np.ndarray], refs: list, token: str, use_gpu: bool,
              threads: int) -> dict[str, np.ndarray]:
    """Ray Data's function on the task path: the :class:`_RayBatchWorker` of job ``token``,
    made once per worker process (Ray reuses task processes, so torch, the imports and
    the model stay loaded between batches and the next job only loads its model)."""
    worker = _TASK_WORKER.get(token)
    if worker is None:
        _TASK_WORKER.clear()  # one job at a time: the previous job's model is dropped
        worker = _TASK_WORKER[token] = _RayBatchWorker(refs, use_gpu, threads)
    return worker(batch)


def _empty_weak_dict(_d: weakref.WeakKeyDictionary) -> tuple:
    return weakref.WeakKeyDictionary, ()


def dumps_job(job: BatchJob) -> bytes:
    """``job`` pickled with cloudpickle, weak-keyed caches (a task's per-dataset metadata
    cache) travelling empty: they cannot be pickled, and a cache may start empty."""
    import io

    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        dispatch_table = ChainMap({weakref.WeakKeyDictionary: _empty_weak_dict},
                                  cloudpickle.Pickler.dispatch_table)

    buf = io.BytesIO()
    Pickler(buf).dump(job)
    return buf.getvalue()


def _cpu_model(model: LoadedModel | None) -> LoadedModel | None:
    """``model`` with its module on the CPU (a copy when it is elsewhere), for pickling."""
    if model is None:
        return None
    if all(p.device.type == "cpu" for p in model.module.parameters()) and all(
            b.device.type == "cpu" for b in model.module.buffers()):
        return model
    return dataclasses.replace(model, module=copy.deepcopy(model.module).cpu())


_CONNECT_LOCK = threading.Lock()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once on a ``host:port`` nothing listens on (Ray itself retries for minutes)."""
    if address in (None, "auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--ray-address {address}: nothing answers there ({exc}). Start a "
                          "cluster with `ray start --head` on that machine and pass the "
                          "address it prints (host:6379), or 'auto' on one of its nodes.") from None


def _user_paths() -> list[str]:
    """This process's import path less the interpreter's own folders (stdlib, site-packages:
    a worker has those, and Ray's vendored packages must come first there)."""
    system = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if (os.path.isdir(path) and "site-packages" not in path and "dist-packages" not in path
                and not any(path.startswith(s + os.sep) or path == s for s in system)
                and path not in out):
            out.append(path)
    return out


class RayExecutor(Executor):
    """The batches on Ray Data (see the module docstring).

    Parameters
    ----------
    address : str, optional
        A running cluster (``ray start --head`` prints it; ``"auto"`` finds a
        local one). ``None``: Ray is started here, with ``num_cpus``.
    num_cpus : int, optional
        CPUs of the Ray started here (``None``: all of this machine's).
    workers : int, optional
        Actors per job; default one per GPU when GPUs are used, else one per CPU
        of the cluster; never more than the number of batches.
    use_gpus : bool, optional
        Ask one GPU per worker; default: when the cluster has GPUs.
    actors : bool, optional
        Run the callable class on an actor pool (Ray Data's pattern for stateful
        work; the actors start with each job), or as tasks that build it once per
        task process (Ray keeps those processes between jobs). Default: actors
        when GPUs are used, tasks otherwise. Measured on 2 busy CPU cores, an
        actor pool costs 6-9 s to start per job (new processes importing torch),
        the task path 0.4 s once its processes exist.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 workers: int | None = None, use_gpus: bool | None = None,
                 actors: bool | None = None) -> None:
        try:
            import ray
            import ray.data  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray Data: pip install 'ray[data]'.") from None
        self.address = address
        self.num_cpus = num_cpus
        self.workers = workers
        self._use_gpus = use_gpus
        self.actors = actors
        self._started = False
        self._warmed: list = []
        self.cpus = self.gpus = 0

    def connect(self) -> None:
        """Start Ray here, or join the cluster at ``address`` (once; on first use, so a
        session whose steps are all cached never starts Ray)."""
        import ray

        with _CONNECT_LOCK:  # sessions of one dashboard may start jobs from several threads
            if ray.is_initialized():
                if not self.cpus:
                    self._read_resources()
                return
            self._init()

    def _init(self) -> None:
        import ray

        _check_reachable(self.address)
        local = self.address is None
        # A Ray started here gives its workers this process's import path (a --model
        # package added to sys.path at run time included); a cluster's nodes have their own.
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(_user_paths())}}
        try:
            # "local": a new Ray here, even when `ray start` left one running on this machine
            ray.init(address=self.address or "local",
                     num_cpus=self.num_cpus if local else None,
                     include_dashboard=False, configure_logging=False,
                     runtime_env=env if local else None)
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {self.address}: cannot connect to a Ray cluster "
                              f"({exc}). Start one with `ray start --head` and pass the "
                              "address it prints (or 'auto').") from None
        self._started = True
        self._read_resources()

    def prepare(self) -> None:
        """Connect, and have one task process per CPU import torch and the batch steps
        in the background (Ray reuses them for the jobs' tasks), while this process
        loads the model and the data."""
        import ray

        self.connect()
        if not self._warmed:
            self._warmed = [ray.remote(num_cpus=1)(_warm_up).remote() for _ in range(self.cpus)]

    def _read_resources(self) -> None:
        import ray

        resources = ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self.gpus = int(resources.get("GPU", 0))
        log.info("Ray executor: %d CPUs, %d GPUs (%s)", self.cpus, self.gpus,
                 self.address or "started here")

    @property
    def use_gpus(self) -> bool:
        """Whether model jobs ask one GPU per worker."""
        self.connect()
        return self.gpus > 0 if self._use_gpus is None else self._use_gpus

    def compute_device(self, device: torch.device, job_uses_model: bool = True) -> torch.device:
        return torch.device("cuda" if self.use_gpus and job_uses_model else "cpu")

    def map_batches(self, job: BatchJob, n: int, batch_size: int, *, device: torch.device,
                    desc: str = "", progress: bool = False) -> dict[str, np.ndarray]:
        import ray
        import ray.data

        ranges = batch_ranges(n, batch_size)
        if not ranges:
            return {}
        self.connect()
        gpu = self.use_gpus and job.model is not None
        per_worker = self.gpus if gpu else self.cpus
        size = max(1, min(self.workers or per_worker, len(ranges)))
        threads = 1 if gpu else max(1, self.cpus // size)
        # The arrays go to the object store as they are (workers read them zero-copy);
        # the rest (build function, options, model on the CPU) is pickled once.
        refs = [ray.put(dict(job.arrays)),
                ray.put(dumps_job(dataclasses.replace(job, arrays={},
                                                      model=_cpu_model(job.model))))]
        ray.data.DataContext.get_current().enable_progress_bars = progress
        items = [{"start": s, "stop": e} for s, e in ranges]
        group = ray_group(len(items), size)
        # Blocks of at least ``group`` rows: smaller ones would be merged into fewer calls.
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // group))
        resources = {"num_cpus": 0 if gpu else threads, "num_gpus": 1 if gpu else 0}
        actors = gpu if self.actors is None else self.actors
        if actors:
            ds = ds.map_batches(_RayBatchWorker, batch_size=group, batch_format="numpy",
                                fn_constructor_args=(refs, gpu, threads),
                                compute=ray.data.ActorPoolStrategy(size=size), **resources)
        else:
            ds = ds.map_batches(_ray_task, batch_size=group, batch_format="numpy",
                                fn_kwargs={"refs": refs, "token": uuid.uuid4().hex,
                                           "use_gpu": gpu, "threads": threads},
                                compute=ray.data.TaskPoolStrategy(size=size), **resources)
        log.info("%s: %d batches, %d per Ray call, on %d Ray %s (%s)", desc or "job",
                 len(ranges), group, size, "actors" if actors else "tasks",
                 "1 GPU each" if gpu else f"{threads} CPU each")
        gather = Gather(n, f"{desc or 'job'} on Ray")
        for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
            index = part.pop(INDEX)
            if index.size and (index.min() < 0 or index.max() >= n):
                raise RuntimeError(f"{desc}: the Ray workers returned sample indices "
                                   f"outside 0..{n - 1}")
            gather.add(index, part)
        return gather.result()

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def make_executor(name: str = "inprocess", address: str | None = None,
                  num_cpus: int | None = None) -> Executor:
    """The executor called ``name`` (``--executor``), on ``address`` (``--ray-address``)."""
    if name == "inprocess":
        if address:
            raise ConfigError(f"--ray-address {address} needs --executor ray.")
        return InProcessExecutor()
    if name == "ray":
        return RayExecutor(address or None, num_cpus=num_cpus)
    raise ConfigError(f"--executor {name!r} is not one of {', '.join(EXECUTORS)}.")
