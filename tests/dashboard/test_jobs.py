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
    m.shutdown()
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
    wait_for(lambda: manager.running_jobs() == [])
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
    wait_for(lambda: manager.running_jobs() == [])
    assert manager.running_jobs() == []


def test_the_app_uses_it(registry, tmp_path):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig

    app = create_app(DashboardConfig(checkpoints=[], cache_dir=tmp_path, progress=False),
                     registry)
    assert isinstance(app._background_manager, ThreadJobManager)


# -- the bounded pool -------------------------------------------------------------------------
@pytest.fixture
def pool(tmp_path) -> ThreadJobManager:
    m = background_manager(tmp_path / "pool", workers=2, max_queued=8)
    yield m
    m.shutdown()
    m.handle.close()


def test_sixty_unpolled_jobs_keep_threads_bounded_and_cached_results_prompt(pool):
    from dashboard.jobs import job_refused, pooled

    release = threading.Event()
    started = []

    @pooled(busy=lambda sample: ("busy", sample))
    def heatmap(sample):
        started.append(sample)
        release.wait(20)
        return ("heat", sample)

    job_fn = pool.make_job_fn(heatmap, progress=False)

    def loupe_threads() -> int:
        return sum(t.is_alive() for t in pool._threads)

    threads_before = threading.active_count()
    handles = [pool.call_job_fn(f"k{i}", job_fn, [i], {}) for i in range(2)]
    wait_for(lambda: len(started) == 2)  # both workers busy: the next 8 queue, 50 are refused
    handles += [pool.call_job_fn(f"k{i}", job_fn, [i], {}) for i in range(2, 60)]
    assert len(set(handles)) == 60
    assert loupe_threads() == 2 and threading.active_count() <= threads_before + 2 + 1
    assert pool.queued() == 8 and pool.stats["refused"] == 50
    # the refused ones answered "busy" at once (read once), the queued ones wait
    assert pool.get_result("k59", handles[59]) == ("busy", 59)
    assert pool.get_result("k59", handles[59]) is pool.UNDEFINED
    assert not pool.result_ready("k5") and pool.job_running(handles[5])
    assert not job_refused()
    # a result already there is served without queueing, while the pool is full
    pool.handle.set("seen", ("heat", "seen"))
    start = time.perf_counter()
    seen = pool.call_job_fn("seen", job_fn, ["seen"], {})
    assert pool.get_result("seen", seen) == ("heat", "seen")
    assert time.perf_counter() - start < 0.3
    assert pool.stats["served_cached"] == 1 and loupe_threads() == 2
    release.set()
    wait_for(lambda: pool.running_jobs() == [], timeout=30)
    assert sorted(started) == list(range(10))  # 2 running + 8 queued, the rest refused
    assert loupe_threads() == 2
    # the result is kept for the same inputs (another user, the same sample): no new job
    again = pool.call_job_fn("k3", job_fn, [3], {})
    assert pool.get_result("k3", again) == ("heat", 3)


def test_a_superseded_queued_job_is_dropped_before_it_starts(pool):
    release = threading.Event()
    ran = []

    def job(key, _progress_key, args, _context):
        ran.append(args)
        release.wait(20)
        pool.handle.set(key, args)

    blockers = [pool.call_job_fn(f"b{i}", job, f"b{i}", {}) for i in range(2)]
    wait_for(lambda: len(ran) == 2)
    old = pool.call_job_fn("sample-1", job, "sample-1", {})
    new = pool.call_job_fn("sample-2", job, "sample-2", {})
    pool.terminate_job(old)  # what Dash does with the browser's oldJob
    assert not pool.job_running(old) and pool.job_running(new)
    assert pool.stats["dropped"] == 1
    release.set()
    wait_for(lambda: pool.running_jobs() == [], timeout=30)
    assert "sample-1" not in ran and "sample-2" in ran
    assert all(pool.get_result(b, job) == b for b, job in zip(("b0", "b1"), blockers,
                                                               strict=True))
    assert all(not pool.job_running(b) for b in blockers)  # read: forgotten


def test_the_same_inputs_join_the_running_job(pool):
    release = threading.Event()
    ran = []

    def job(key, _progress_key, args, _context):
        ran.append(args)
        release.wait(20)
        pool.handle.set(key, args)

    first = pool.call_job_fn("same", job, "x", {})
    second = pool.call_job_fn("same", job, "x", {})
    pool.terminate_job(first)  # one browser gives up: the other still gets the result
    assert pool.job_running(second) and pool.stats["joined"] == 1
    release.set()
    wait_for(lambda: pool.result_ready("same"))
    assert pool.get_result("same", second) == "x" and ran == ["x"]


def test_the_sample_page_answers_busy_when_the_queue_is_full():
    import dash

    from dashboard.views.sample import BUSY_TEXT, heatmap_busy

    dash.register_page  # noqa: B018 (the page module needs Dash's pages machinery)
    figure, alert = heatmap_busy({"run": "x", "id": "mnist:test:1"}, "saliency", "pred", None)
    assert BUSY_TEXT in alert.children and figure is not None


def test_idle_workers_leave_and_come_back(pool, monkeypatch):
    from dashboard import jobs

    monkeypatch.setattr(jobs, "WORKER_IDLE_S", 0.05)
    done = []
    pool.call_job_fn("a", lambda *a: done.append(1), [], {})
    wait_for(lambda: done == [1])
    wait_for(lambda: not any(t.is_alive() for t in pool._threads))
    pool.call_job_fn("b", lambda *a: done.append(2), [], {})
    wait_for(lambda: done == [1, 2])


def test_one_tab_starting_sixty_jobs_keeps_one_queued_and_others_are_served(pool):
    """Sixty heatmaps asked by one tab and never polled: each supersedes the one before
    while it waits, so another tab's job runs right after the two already running."""
    from flask import Flask

    release = threading.Event()
    ran = []

    def job(key, _progress_key, args, _context):
        ran.append(args)
        release.wait(20)
        pool.handle.set(key, args)

    flask_app = Flask(__name__)
    with flask_app.test_request_context("/_dash-update-component?endId=tab-A"):
        pool.call_job_fn("a0", job, "a0", {})
        wait_for(lambda: len(ran) == 1)  # started, so a1 does not supersede it
        pool.call_job_fn("a1", job, "a1", {})
        wait_for(lambda: len(ran) == 2)
        for n in range(2, 60):
            pool.call_job_fn(f"a{n}", job, f"a{n}", {})
    assert pool.queued() == 1 and pool.stats["dropped"] == 57 and pool.stats["refused"] == 0
    with flask_app.test_request_context("/_dash-update-component?endId=tab-B"):
        other = pool.call_job_fn("b0", job, "b0", {})
    assert pool.queued() == 2 and pool.job_running(other)
    assert sum(t.is_alive() for t in pool._threads) == 2
    release.set()
    wait_for(lambda: pool.running_jobs() == [], timeout=30)
    assert sorted(ran) == ["a0", "a1", "a59", "b0"]


def test_a_job_that_just_finished_still_reads_as_running_until_its_result_is_read(pool):
    """Dash asks job_running() right after get_result() found nothing; a job finishing
    in between must not read as cancelled (the heatmap would never be shown)."""
    release = threading.Event()

    def job(key, *_):
        release.wait(20)
        pool.handle.set(key, "heat")

    handle = pool.call_job_fn("k", job, [], {})
    assert pool.get_result("k", handle) is pool.UNDEFINED  # a poll, before it finishes
    release.set()
    wait_for(lambda: pool.running_jobs() == [])
    assert pool.job_running(handle)  # finished, not cancelled: the next poll reads it
    assert pool.get_result("k", handle) == "heat"
    assert not pool.job_running(handle)
