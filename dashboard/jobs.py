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
``python -m dashboard.bench``). The price is that a job cannot be
killed: ``terminate_job`` forgets it and its result is never read (diskcache
expires it). Jobs that touch a model serialise on :func:`analysis.forward.model_lock`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path

from dash import DiskcacheManager

log = logging.getLogger(__name__)


class ThreadJobManager(DiskcacheManager):
    """A :class:`~dash.DiskcacheManager` whose jobs are daemon threads, not forked processes.

    Parameters
    ----------
    cache : diskcache.Cache
        Where job results and progress are kept.
    expire : float, optional
        Seconds an unread result is kept.
    """

    def __init__(self, cache, expire: float | None = None) -> None:
        super().__init__(cache, expire=expire)
        self._jobs: dict[str, threading.Thread] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call_job_fn(self, key, job_fn, args, context) -> str:
        """Start ``job_fn`` in a daemon thread; the returned handle is opaque to the browser."""
        with self._lock:
            job = str(next(self._ids))
            thread = threading.Thread(target=self._run, args=(job, job_fn, key, args, context),
                                      name=f"loupe-job-{job}", daemon=True)
            self._jobs[job] = thread
        thread.start()
        return job

    def _run(self, job: str, job_fn, key, args, context) -> None:
        try:
            job_fn(key, self._make_progress_key(key), args, context)
        except Exception:  # Dash's job_fn stores the callback's own errors; this is its own
            log.exception("background job %s failed", job)
        finally:
            with self._lock:
                self._jobs.pop(job, None)

    def job_running(self, job) -> bool:
        with self._lock:
            thread = self._jobs.get(str(job))
        return thread is not None and thread.is_alive()

    def terminate_job(self, job) -> None:
        """Forget ``job`` (a thread cannot be killed; its late result is never read)."""
        if job is None:
            return
        with self._lock:
            self._jobs.pop(str(job), None)

    def terminate_unhealthy_job(self, job) -> bool:
        return False  # a thread is either running or gone: never a zombie

    def running_jobs(self) -> list[str]:
        """Handles of the jobs still running, oldest first."""
        with self._lock:
            return [job for job, thread in self._jobs.items() if thread.is_alive()]


def background_manager(jobs_dir: Path) -> ThreadJobManager:
    """The app's background-callback manager on a diskcache folder under the cache dir."""
    import diskcache

    jobs_dir.mkdir(parents=True, exist_ok=True)
    return ThreadJobManager(diskcache.Cache(str(jobs_dir)), expire=600)
