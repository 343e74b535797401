"""analysis/self_knn.py: the kNN graph with each distance computed once is the exact graph."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from analysis import self_knn as sk
from core.errors import ConfigError


def _true_distances(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` float64 distances of each row's k nearest others, written out."""
    x64 = x.astype(np.float64)
    d = np.sqrt(((x64[:, None, :] - x64[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, 1)[:, :k]


def _assert_exact(x: np.ndarray, k: int, idx: np.ndarray, dist: np.ndarray) -> None:
    """A true k-nearest set per row (ties in any order), never the row itself, no
    repeats, and the float32 distances returned are those of the returned rows."""
    n = len(x)
    assert idx.shape == dist.shape == (n, k)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    assert ((idx >= 0) & (idx < n)).all()
    assert not (idx == np.arange(n)[:, None]).any()
    assert all(len(set(row.tolist())) == k for row in idx)
    x64 = x.astype(np.float64)
    got = np.sqrt(((x64[:, None, :] - x64[idx]) ** 2).sum(-1))
    # float32 rounding of |q|^2 + |p|^2 - 2 q.p, relative to the largest squared norm
    tol = 1e-5 * np.sqrt((x64 ** 2).sum(1).max()) + 1e-5
    np.testing.assert_allclose(np.sort(got, 1), _true_distances(x, k), atol=tol)
    np.testing.assert_allclose(dist, got, atol=tol)
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 40 rows in tiles of 16: a few hundred rows cross many block pairs,
    diagonal and not, and tiles that end inside a block."""
    monkeypatch.setattr(sk, "BLOCK", 40)
    monkeypatch.setattr(sk, "TILE", 16)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # constants only
@given(n=st.integers(2, 400), d=st.integers(1, 10), clusters=st.integers(1, 8),
       spread=st.sampled_from([0.0, 1.0, 10.0]), k=st.integers(1, 60),
       duplicates=st.booleans(), offset=st.sampled_from([0.0, 300.0]),
       seed=st.integers(0, 2**16))
def test_graph_is_exact(small_blocks, n, d, clusters, spread, k, duplicates, offset, seed):
    """Clustered and unstructured data, exact duplicates (distance 0), vectors far
    from the origin (large norms), k up to n - 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * spread
    x = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d)) + offset)
    x = x.astype(np.float32)
    if duplicates:
        x[n // 2:] = x[:n - n // 2]
    k = min(k, n - 1)
    idx, dist = sk.self_knn(x, k, seed=seed)
    _assert_exact(x, k, idx, dist)


def test_digits_with_default_blocks_match_faiss():
    """scikit-learn's 1,797 digits (64 pixels), one block: the same neighbour sets
    as faiss's brute force, distances within float32 rounding."""
    faiss = pytest.importorskip("faiss")
    x = load_digits().data.astype(np.float32)
    idx, dist = sk.self_knn(x, 15)
    _assert_exact(x, 15, idx, dist)
    sq, ref = faiss.knn(x, x, 16)
    ref_dist = np.sqrt(np.maximum(sq, 0))
    # a row's set may differ only among candidates tied with its 15th distance
    for row, (mine, theirs) in enumerate(zip(idx, ref, strict=True)):
        theirs = [j for j in theirs if j != row][:15]
        differ = set(mine.tolist()) ^ set(theirs)
        assert all(abs(np.linalg.norm(x[row] - x[j]) - dist[row, -1]) < 1e-3 for j in differ)
    np.testing.assert_allclose(dist[:, 0], np.sort(ref_dist, 1)[:, 1], atol=1e-3)


def test_several_blocks_of_real_digits(small_blocks):
    """The same digits, now 45 blocks of 40 rows: the work changes, the graph not."""
    x = load_digits().data.astype(np.float32)
    idx, dist = sk.self_knn(x, 10)
    _assert_exact(x, 10, idx, dist)


def test_the_seed_changes_the_work_not_the_result(small_blocks):
    x = load_digits().data.astype(np.float32)[:600]
    a, b = sk.self_knn(x, 8, seed=0), sk.self_knn(x, 8, seed=5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 3e30])
def test_non_finite_vectors_are_refused_by_sample(bad):
    x = np.random.default_rng(0).random((50, 4), dtype=np.float32)
    x[17, 2] = bad
    with pytest.raises(ConfigError, match="sample 17"):
        sk.self_knn(x, 3)


@pytest.mark.parametrize("k", [0, 5])
def test_k_out_of_range_is_refused(k):
    with pytest.raises(ConfigError, match="k="):
        sk.self_knn(np.zeros((5, 2), np.float32), k)
