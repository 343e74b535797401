"""analysis/executor.py's thread pool (a job marked ``threads`` runs its batches on several
threads in this process, with the same result as one after another) and how many batches
one Ray call runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.executor import BatchJob, InProcessExecutor, usable_cores

CPU = torch.device("cpu")


def _slow_squares(_model, arrays, _device, record=None):
    def fn(start, stop):
        x = arrays["x"][start:stop]
        if record is not None:
            with record["lock"]:
                record["threads"].add(threading.get_ident())
                record["running"] += 1
                record["most"] = max(record["most"], record["running"])
        time.sleep(0.002 * ((start * 7919) % 5))  # finish out of order
        if record is not None:
            with record["lock"]:
                record["running"] -= 1
        return {"square": x ** 2, "row": np.arange(start, stop)}
    return fn


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 400), batch=st.integers(1, 50), workers=st.integers(1, 4))
def test_threaded_batches_equal_sequential(n, batch, workers):
    x = np.random.default_rng(n).normal(size=(n, 2))
    one = InProcessExecutor(workers=1).map_batches(
        BatchJob(_slow_squares, {"x": x}, threads=True), n, batch, device=CPU)
    many = InProcessExecutor(workers=workers).map_batches(
        BatchJob(_slow_squares, {"x": x}, threads=True), n, batch, device=CPU)
    assert one.keys() == many.keys()
    for k in one:
        np.testing.assert_array_equal(one[k], many[k])
    if n:
        np.testing.assert_array_equal(many["row"], np.arange(n))


def test_batches_run_on_several_threads_at_most_workers_at_once():
    record = {"lock": threading.Lock(), "threads": set(), "running": 0, "most": 0}
    x = np.arange(3000, dtype=np.float64)
    InProcessExecutor(workers=3).map_batches(
        BatchJob(_slow_squares, {"x": x}, options={"record": record}, threads=True),
        len(x), 10, device=CPU)
    assert len(record["threads"]) > 1 and record["most"] <= 3


def test_at_most_twice_the_workers_batches_are_in_flight(monkeypatch):
    import analysis.executor as executor_mod

    counts = {"started": 0, "gathered": 0, "most": 0}
    lock = threading.Lock()
    add = executor_mod.Gather.add

    def counting_add(self, rows, part):
        counts["gathered"] += 1
        return add(self, rows, part)

    def build(_model, arrays, _device):
        def fn(start, stop):
            with lock:
                counts["started"] += 1
                counts["most"] = max(counts["most"], counts["started"] - counts["gathered"])
            time.sleep(0.001)
            return {"x": arrays["x"][start:stop]}
        return fn

    monkeypatch.setattr(executor_mod.Gather, "add", counting_add)
    InProcessExecutor(workers=2).map_batches(BatchJob(build, {"x": np.ones(2000)}, threads=True),
                                             2000, 10, device=CPU)
    assert counts["gathered"] == 200 and 2 <= counts["most"] <= 4


def test_an_unmarked_job_runs_in_the_calling_thread():
    record = {"lock": threading.Lock(), "threads": set(), "running": 0, "most": 0}
    InProcessExecutor(workers=4).map_batches(
        BatchJob(_slow_squares, {"x": np.ones(200)}, options={"record": record}), 200, 10,
        device=CPU)
    assert record["threads"] == {threading.get_ident()}


def _failing(_model, arrays, _device):
    def fn(start, stop):
        if start == 120:
            raise ValueError("batch 120 is bad")
        return {"x": arrays["x"][start:stop]}
    return fn


def test_a_failing_batch_raises_its_error():
    with pytest.raises(ValueError, match="batch 120 is bad"):
        InProcessExecutor(workers=2).map_batches(
            BatchJob(_failing, {"x": np.ones(1000)}, threads=True), 1000, 10, device=CPU)


def test_usable_cores():
    assert 1 <= usable_cores()


@settings(max_examples=100, deadline=None)
@given(batches=st.integers(1, 100_000), workers=st.integers(1, 64))
def test_ray_group_bounds(batches, workers):
    from analysis.executor import RAY_GROUP_MAX, ray_group

    group = ray_group(batches, workers)
    assert 1 <= group <= RAY_GROUP_MAX
    calls = -(-batches // group)
    if group > 1:  # grouped only where every worker still gets at least four calls
        assert calls >= 4 * workers
