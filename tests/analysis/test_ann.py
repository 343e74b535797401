"""analysis/ann.py: dropping each row's own index, block by block, as in one piece."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import ann


def _drop_self_whole(idx, dist, rows, k):
    """The one-piece rule, written out: drop the row's own index, else the last column."""
    out_i, out_d = [], []
    for r, i_row, d_row in zip(rows, idx, dist, strict=True):
        hits = np.flatnonzero(i_row == r)
        drop = hits[0] if len(hits) else k
        out_i.append(np.delete(i_row, drop))
        out_d.append(np.delete(d_row, drop))
    return (np.array(out_i, idx.dtype).reshape(len(idx), k),
            np.array(out_d, dist.dtype).reshape(len(idx), k))


@settings(max_examples=50, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(1, 6), chunk=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_drop_self_in_blocks_equals_the_rule(m, k, chunk, seed):
    rng = np.random.default_rng(seed)
    rows = rng.permutation(max(m, 1) * 3)[:m].astype(np.int64)
    idx = rng.integers(0, max(m, 1) * 3, size=(m, k + 1)).astype(np.int64)
    has_self = rng.random(m) < 0.7  # most rows hold themselves, at a random place
    idx[has_self, rng.integers(0, k + 1, size=has_self.sum())] = rows[has_self]
    dist = rng.random((m, k + 1)).astype(np.float32)
    old = ann.DROP_CHUNK
    ann.DROP_CHUNK = chunk
    try:
        got = ann._drop_self(idx, dist, rows, k)
    finally:
        ann.DROP_CHUNK = old
    want = _drop_self_whole(idx, dist, rows, k)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (m, k) and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
