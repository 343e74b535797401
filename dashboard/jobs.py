"""Background callbacks run in threads of the server process, results kept in diskcache.

Dash's :class:`~dash.DiskcacheManager` starts every background job with
``fork()``. The dashboard's server is multi-threaded (one thread per request)
and holds numeric thread pools (torch's OpenMP, faiss, numba), so a forked job
inherits whatever lock another thread held at that instant (the import lock,
an sqlite transaction, an OpenMP barrier) and can hang for good; Python 3.12
warns about exactly this. A job nobody waits for then also blocks the exit of
the process that forked it (``multiprocess`` joins its children at exit): the
likely cause of a CI run that never exited after all its tests had passed.

:class:`ThreadJobManager` keeps Dash's protocol (results, progress and
``set_props`` in the same diskcache folder, signed job handles) and runs each
job in a daemon thread instead: nothing is copied, nothing can inherit a held
lock, and a job's result is back in under a millisecond (0.7 ms median,
``python -m benchmarks.server``). The price is that a job cannot be
killed: ``terminate_job`` forgets it and its result is never read (diskcache
expires it). Jobs that touch a model serialise on :func:`analysis.forward.model_lock`.

The threads are a fixed pool (``workers``, default the CPU count) fed by a
bounded queue, so a browser that starts sixty heatmaps and never polls costs
sixty queue entries at most, not sixty threads. A job whose result is still
in the job cache (the same callback with the same inputs, within ``expire``
seconds) is answered at once without queueing; the same inputs asked again
while a job runs join that job; a job the browser tab superseded (the same
callback fired again from the same page load, told by Dash's signed
``endId``, or named in ``oldJob``) is dropped before it starts;
past ``max_queued`` waiting jobs a job is refused: the callback's ``busy``
answer (:func:`pooled`) or no update.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dash import DiskcacheManager
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)

# Set while a job runs because the queue was full: the callback answers "busy".
_REFUSED = contextvars.ContextVar("loupe_job_refused", default=False)
# A "busy" answer is kept this long for its poll, and never served to another request.
BUSY_RESULT_EXPIRE_S = 30
READ_ONCE_KEYS = 4096
_ABSENT = object()
WORKER_IDLE_S = 60.0
# Dash asks job_running() just after get_result() found nothing: a job finishing in
# between would read as cancelled (no update, the heatmap never shown). A finished
# job still reads as running this long, so the next poll reads its result.
FINISHED_GRACE_S = 5.0


def pooled(busy: Callable[..., object] | None = None):
    """Declare what a background callback answers when the job queue is full.

    ``busy`` takes the callback's arguments (the same signature) and returns
    its outputs (e.g. an empty figure and a "busy, try again" alert); without
    it a refused job gives no update. Put it under ``@dash.callback``.
    """
    def mark(fn):
        fn.loupe_busy = busy
        return fn

    return mark


def job_refused() -> bool:
    """Whether the current job runs only to answer "busy" (see :func:`pooled`)."""
    return _REFUSED.get()


@dataclass
class _Task:
    key: str
    job_fn: Callable
    args: object
    context: object
    handles: set = field(default_factory=set)
    queued_at: float = field(default_factory=time.monotonic)
    started: bool = False
    client: str | None = None  # the page load that asked (its signed endId)
    slot: tuple = ()  # (client, callback, outputs): a newer job of the slot supersedes


def _slot(client: str | None, job_fn, context) -> tuple:
    """What a newer job supersedes: the same tab's same callback writing the same outputs
    (pattern-matching callbacks write several)."""
    outputs = context.get("outputs_list") if isinstance(context, dict) else None
    return client, id(job_fn), repr(outputs)[:500]


def requesting_client() -> str | None:
    """The page load (browser tab) of the current request: the ``endId`` dash-renderer
    echoes on every callback request (``None`` outside a request)."""
    try:
        from flask import has_request_context, request
    except ImportError:  # pragma: no cover
        return None
    if not has_request_context():
        return None
    end_id = request.args.get("endId")
    return end_id[:200] if isinstance(end_id, str) and end_id else None


class ThreadJobManager(DiskcacheManager):
    """A :class:`~dash.DiskcacheManager` whose jobs run on a bounded pool of daemon threads.

    Parameters
    ----------
    cache : diskcache.Cache
        Where job results and progress are kept.
    expire : float, optional
        Seconds a result is kept (and served again to the same inputs).
    workers : int, optional
        Jobs running at once (default ``os.cpu_count()``).
    max_queued : int
        Jobs waiting at most; more are refused (see :func:`pooled`).
    """

    def __init__(self, cache, expire: float | None = None, workers: int | None = None,
                 max_queued: int = 32) -> None:
        super().__init__(cache, expire=expire)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_queued = max_queued
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: OrderedDict[int, _Task] = OrderedDict()  # waiting, oldest first
        self._running: dict[int, _Task] = {}
        self._handles: dict[str, int] = {}  # job handle -> task id
        self._by_key: dict[str, int] = {}  # result key -> task id, queued or running
        self._latest: dict[tuple, int] = {}  # (client, job_fn) -> its queued task id
        self._finished: OrderedDict[str, float] = OrderedDict()  # handle -> when it finished
        self._threads: list[threading.Thread] = []
        self._read_once: OrderedDict[str, None] = OrderedDict()  # keys of "busy" answers
        self._salt = os.urandom(4).hex()
        self._closed = False
        self.stats = {"queued": 0, "served_cached": 0, "joined": 0, "dropped": 0,
                      "refused": 0}

    # -- Dash's protocol ---------------------------------------------------------------------
    def build_cache_key(self, fn, args, cache_args_to_ignore, triggered):
        """Dash's key of (callback, inputs), salted per server: a result kept from an
        earlier run of the dashboard is never served."""
        return f"{super().build_cache_key(fn, args, cache_args_to_ignore, triggered)}-{self._salt}"

    def make_job_fn(self, fn, progress, key=None):
        busy = getattr(fn, "loupe_busy", None)

        def guarded(*args, **kwargs):
            if _REFUSED.get():
                if busy is None:
                    raise PreventUpdate
                return busy(*args, **kwargs)
            return fn(*args, **kwargs)

        return super().make_job_fn(guarded, progress, key)

    def call_job_fn(self, key, job_fn, args, context) -> str:
        """Queue ``job_fn`` (or answer at once); the returned handle is opaque to the browser.

        A browser tab's earlier job of the same callback still waiting in the
        queue is superseded: dropped before it starts, whether or not the tab
        sent ``oldJob``.
        """
        handle = str(next(self._ids))
        client = requesting_client()
        with self._lock:
            if key not in self._read_once and key not in self._by_key and key in self.handle:
                self.stats["served_cached"] += 1
                return handle  # the result is there: the first poll reads it
            task_id = self._by_key.get(key)
            if task_id is not None:  # the same inputs are being computed: join them
                task = self._queue.get(task_id) or self._running.get(task_id)
                task.handles.add(handle)
                self._handles[handle] = task_id
                self.stats["joined"] += 1
                return handle
            slot = _slot(client, job_fn, context)
            if client is not None:
                self._drop_superseded(slot)
            if len(self._queue) >= self.max_queued:
                self.stats["refused"] += 1
                refused = True
            else:
                refused = False
                if self._read_once.pop(key, _ABSENT) is not _ABSENT:
                    self.handle.delete(key)  # an unread "busy" answer is not this job's result
                task_id = int(handle)
                self._queue[task_id] = _Task(key, job_fn, args, context, {handle},
                                             client=client, slot=slot)
                self._handles[handle] = task_id
                self._by_key[key] = task_id
                if client is not None:
                    self._latest[slot] = task_id
                self.stats["queued"] += 1
                self._start_workers()
                self._wake.notify()
        if refused:
            log.warning("job queue full (%d waiting): job refused", self.max_queued)
            with self._lock:
                self._read_once[key] = None
                while len(self._read_once) > READ_ONCE_KEYS:
                    self._read_once.popitem(last=False)
            token = _REFUSED.set(True)
            try:
                job_fn(key, self._make_progress_key(key), args, context)
            finally:
                _REFUSED.reset(token)
            self.handle.touch(key, expire=BUSY_RESULT_EXPIRE_S)
        return handle

    def get_result(self, key, job):
        """The job's result; kept ``expire`` seconds after it was computed for the same
        inputs, except a "busy" answer, which is read once."""
        result = self.handle.get(key, self.UNDEFINED)
        if result is self.UNDEFINED:
            return self.UNDEFINED
        with self._lock:
            read_once = self._read_once.pop(key, _ABSENT) is not _ABSENT
        if read_once:
            self.clear_cache_entry(key)
        # Reads only, unless there is something to delete: every poll of every tab comes
        # here, and a write waits for SQLite's lock (the expiry was set when it was stored).
        progress_key = self._make_progress_key(key)
        if progress_key in self.handle:
            self.clear_cache_entry(progress_key)
        if job:
            self.terminate_job(job)
        return result

    def _drop_superseded(self, slot: tuple) -> None:
        """Drop the queued task of ``slot`` (a tab's callback), under ``self._lock``, if
        that tab alone waits for it."""
        task_id = self._latest.pop(slot, None)
        task = self._queue.get(task_id) if task_id is not None else None
        if task is None or task.started or len(task.handles) != 1:
            return
        del self._queue[task_id]
        for handle in task.handles:
            self._handles.pop(handle, None)
        if self._by_key.get(task.key) == task_id:
            del self._by_key[task.key]
        self.stats["dropped"] += 1

    def job_running(self, job) -> bool:
        """Whether ``job`` is queued or running (or finished less than
        :data:`FINISHED_GRACE_S` ago: see there)."""
        with self._lock:
            job = str(job)
            if job in self._handles:
                return True
            done = self._finished.get(job)
            return done is not None and time.monotonic() - done < FINISHED_GRACE_S

    def terminate_job(self, job) -> None:
        """Forget ``job``; a queued job nobody else waits for is dropped before it starts
        (a running thread cannot be killed: its late result is kept like any other)."""
        if job is None:
            return
        with self._lock:
            self._finished.pop(str(job), None)
            task_id = self._handles.pop(str(job), None)
            if task_id is None:
                return
            task = self._queue.get(task_id) or self._running.get(task_id)
            if task is None:
                return
            task.handles.discard(str(job))
            if not task.handles and not task.started:
                del self._queue[task_id]
                self._by_key.pop(task.key, None)
                if self._latest.get(task.slot) == task_id:
                    del self._latest[task.slot]
                self.stats["dropped"] += 1

    def terminate_unhealthy_job(self, job) -> bool:
        return False  # a thread is either running or gone: never a zombie

    def running_jobs(self) -> list[str]:
        """Handles of the jobs queued or running, oldest first."""
        with self._lock:
            return sorted(self._handles, key=int)

    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._lock:
            return len(self._queue)

    # -- the pool ----------------------------------------------------------------------------
    def _start_workers(self) -> None:
        """Start the pool's missing threads (under ``self._lock``) when a job comes."""
        self._closed = False
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"loupe-job-worker-{len(self._threads) + 1}")
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """Let the pool's threads exit once the queue is empty (a test's or an app's end)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    def _work(self) -> None:
        try:
            self._serve_queue()
        except SystemExit:  # a test harness stopping its server thread raises it in ours
            with self._lock:
                me = threading.current_thread()
                self._threads = [t for t in self._threads if t is not me]

    def _serve_queue(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                while not self._queue:
                    # An idle worker leaves (the next job starts it again): an app that is
                    # no longer served keeps no thread.
                    if self._closed or not self._wake.wait(WORKER_IDLE_S) and not self._queue:
                        self._threads = [t for t in self._threads if t is not me]
                        return
                task_id, task = self._queue.popitem(last=False)
                task.started = True
                if self._latest.get(task.slot) == task_id:
                    del self._latest[task.slot]
                self._running[task_id] = task
            try:
                task.job_fn(task.key, self._make_progress_key(task.key), task.args,
                            task.context)
                if self.expire:
                    self.handle.touch(task.key, expire=self.expire)
            except Exception:  # Dash's job_fn stores the callback's own errors; this is its own
                log.exception("background job %s failed", task_id)
            finally:
                with self._lock:
                    self._running.pop(task_id, None)
                    if self._by_key.get(task.key) == task_id:
                        del self._by_key[task.key]
                    now = time.monotonic()
                    for handle in task.handles:
                        if self._handles.pop(handle, None) is not None:
                            self._finished[handle] = now
                    while self._finished and (len(self._finished) > 10_000 or now - next(
                            iter(self._finished.values())) > FINISHED_GRACE_S):
                        self._finished.popitem(last=False)


def background_manager(jobs_dir: Path, workers: int | None = None,
                       max_queued: int = 32) -> ThreadJobManager:
    """The app's background-callback manager on a diskcache folder under the cache dir
    (at most 256 MB of results, each kept 10 minutes)."""
    import diskcache

    jobs_dir.mkdir(parents=True, exist_ok=True)
    return ThreadJobManager(diskcache.Cache(str(jobs_dir), size_limit=256 * 1024 ** 2),
                            expire=600, workers=workers, max_queued=max_queued)
