"""analysis/executor.py's Gather: batches written at their rows equal one concatenation.

No Ray needed: the index path is exercised with shuffled batches, as Ray returns them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.executor import BatchJob, Gather, InProcessExecutor, batch_ranges, concat_parts


def _part(start: int, stop: int, width: int) -> dict[str, np.ndarray]:
    rows = np.arange(start, stop)
    return {"score": rows.astype(np.float32) / 7,
            "vector": np.repeat(rows[:, None], width, 1).astype(np.int16),
            "flag": rows % 3 == 0}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), batch=st.integers(1, 64), width=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_shuffled_batches_land_at_their_rows(n, batch, width, seed):
    ranges = batch_ranges(n, batch)
    whole = concat_parts([_part(s, e, width) for s, e in ranges])
    by_slice, by_index = Gather(n), Gather(n)
    for s, e in ranges:
        by_slice.add(slice(s, e), _part(s, e, width))
    for i in np.random.default_rng(seed).permutation(len(ranges)):
        s, e = ranges[i]
        by_index.add(np.arange(s, e), _part(s, e, width))
    for got in (by_slice.result(), by_index.result()):
        assert got.keys() == whole.keys()
        for k, v in whole.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)


def test_a_wider_dtype_later_widens_as_concatenate_does():
    parts = [{"x": np.arange(3, dtype=np.float32)}, {"x": np.array([0.1, 0.2], np.float64)}]
    g = Gather(5)
    g.add(slice(0, 3), parts[0])
    g.add(slice(3, 5), parts[1])
    want = concat_parts(parts)["x"]
    assert g.result()["x"].dtype == want.dtype == np.float64
    np.testing.assert_array_equal(g.result()["x"], want)


def test_a_lost_batch_is_an_error():
    g = Gather(10, "inference")
    g.add(slice(0, 5), {"x": np.zeros(5)})
    with pytest.raises(RuntimeError, match="inference: 5 of 10 samples were never returned"):
        g.result()


@pytest.mark.parametrize("second", [slice(3, 6), np.array([5, 6, 6])])
def test_a_repeated_sample_is_an_error(second):
    g = Gather(10, "inference")
    g.add(slice(0, 5), {"x": np.zeros(5)})
    with pytest.raises(RuntimeError, match="returned twice"):
        g.add(second, {"x": np.zeros(3)})


def test_a_batch_of_the_wrong_length_is_an_error_not_broadcast():
    g = Gather(10, "inference")
    with pytest.raises(RuntimeError, match=r"a batch of 5 samples gave arrays of \[1\] rows"):
        g.add(slice(0, 5), {"x": np.zeros(1)})


def test_other_arrays_in_a_later_batch_are_an_error():
    g = Gather(4)
    g.add(slice(0, 2), {"x": np.zeros(2)})
    with pytest.raises(RuntimeError, match=r"gave arrays \['y'\], the first gave \['x'\]"):
        g.add(slice(2, 4), {"y": np.zeros(2)})


def _doubling(_model, arrays, _device):
    def fn(start, stop):
        return {"twice": arrays["x"][start:stop] * 2, "first": arrays["x"][start:stop, :1]}
    return fn


def test_the_in_process_executor_gathers_every_batch():
    x = np.random.default_rng(0).normal(size=(1001, 3)).astype(np.float32)
    out = InProcessExecutor().map_batches(BatchJob(_doubling, {"x": x}), len(x), 64,
                                          device=torch.device("cpu"))
    np.testing.assert_array_equal(out["twice"], x * 2)
    np.testing.assert_array_equal(out["first"], x[:, :1])
