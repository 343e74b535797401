"""dashboard/jobs.py: background jobs as threads of the server, results in diskcache."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from dashboard.jobs import ThreadJobManager, background_manager


def wait_for(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.005)


@pytest.fixture
def manager(tmp_path) -> ThreadJobManager:
    m = background_manager(tmp_path / "jobs")
    yield m
    m.handle.close()


def test_a_job_runs_in_this_process_and_leaves_no_child(manager):
    release = threading.Event()
    ran_in = {}

    def job_fn(key, progress_key, args, _context):
        ran_in["pid"], ran_in["args"] = os.getpid(), args
        manager.handle.set(progress_key, ["half way"])
        release.wait(10)
        manager.handle.set(key, {"heat": 42})

    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    job = manager.call_job_fn("k1", job_fn, ["a", 1], {})
    assert isinstance(job, str)
    wait_for(lambda: manager.get_progress("k1") == ["half way"])
    assert manager.job_running(job) and manager.running_jobs() == [job]
    assert not manager.result_ready("k1")
    children_now = {p.pid for p in psutil.Process().children(recursive=True)}
    assert children_now <= children_before  # no process was started for it
    release.set()
    wait_for(lambda: manager.result_ready("k1"))
    wait_for(lambda: not manager.job_running(job))
    assert manager.get_result("k1", job) == {"heat": 42}
    assert ran_in == {"pid": os.getpid(), "args": ["a", 1]}
    assert manager.running_jobs() == []


def test_handles_are_unique_and_unknown_ones_are_harmless(manager):
    done = []
    jobs = [manager.call_job_fn(f"k{i}", lambda *a, i=i: done.append(i), [], {})
            for i in range(20)]
    assert len(set(jobs)) == 20
    wait_for(lambda: len(done) == 20)
    wait_for(lambda: manager.running_jobs() == [])
    assert sorted(done) == list(range(20))
    assert not manager.job_running("999999") and not manager.terminate_unhealthy_job("999999")
    manager.terminate_job("999999")
    manager.terminate_job(None)


def test_a_terminated_job_is_forgotten_and_a_failing_one_does_not_kill_the_server(manager):
    release = threading.Event()

    def slow(key, *_):
        release.wait(10)
        manager.handle.set(key, "late")

    job = manager.call_job_fn("slow", slow, [], {})
    manager.terminate_job(job)
    assert not manager.job_running(job) and manager.running_jobs() == []
    release.set()

    def broken(*_):
        raise RuntimeError("boom")

    job = manager.call_job_fn("broken", broken, [], {})
    wait_for(lambda: not manager.job_running(job))
    assert manager.running_jobs() == []


def test_the_app_uses_it(registry, tmp_path):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig

    app = create_app(DashboardConfig(checkpoints=[], cache_dir=tmp_path, progress=False),
                     registry)
    assert isinstance(app._background_manager, ThreadJobManager)
