"""analysis/self_knn.py: the kNN graph with each distance computed once is the exact graph."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from analysis import self_knn as sk
from core.errors import ConfigError


def _true_distances(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` float64 distances of each row's k nearest others (scikit-learn's
    brute force in float64, an independent reference)."""
    x64 = x.astype(np.float64)
    dist, idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x64).kneighbors(x64)
    # drop each row itself (its distance 0 may sit anywhere among exact duplicates)
    own = idx == np.arange(len(x))[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(x)), drop] = False
    return dist[keep].reshape(len(x), k)


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
    # The neighbours are chosen by |q|^2 + |p|^2 - 2 q.p in float32 on the centred
    # vectors (as faiss chooses them): exact up to its rounding, a small multiple of
    # float32's epsilon times the largest squared norm, on *squared* distances.
    centred = x64 - x64.mean(0)
    tol = 1e-5 * (centred ** 2).sum(1).max() + 1e-9
    np.testing.assert_allclose(np.sort(got, 1) ** 2, _true_distances(x, k) ** 2, atol=tol)
    # from the differences of the centred float32 vectors: rounding of the centring only
    np.testing.assert_allclose(dist, got, rtol=1e-5,
                               atol=1e-6 * np.sqrt(x.shape[1]) * (1 + np.abs(centred).max()))
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.fixture(params=[16, 40, 64], ids=["tile<block", "tile=block", "tile>block"])
def small_blocks(monkeypatch, request):
    """Blocks of 40 rows in tiles of 16, 40 or 64: a few hundred rows cross many block
    pairs, diagonal and not, and tiles that end inside a block."""
    monkeypatch.setattr(sk, "BLOCK", 40)
    monkeypatch.setattr(sk, "TILE", request.param)


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


def test_default_blocks_on_mnist_digits_match_faiss(digits, data_root):
    """5,000 MNIST training digits (784 pixels) with the default constants: three blocks,
    the compiled scan and the k-means order. The same neighbour sets as faiss's brute
    force, except among candidates tied with a row's 15th distance."""
    faiss = pytest.importorskip("faiss")
    from core.datasets import load_dataset

    ds = load_dataset(digits, "train", data_root=data_root, limit=5000)
    x = np.asarray(ds.images, np.float32).reshape(len(ds.images), -1) / 255
    assert len(x) > 2 * sk.BLOCK
    idx, dist = sk.self_knn(x, 15)
    _assert_exact(x, 15, idx, dist)
    sq, ref = faiss.knn(x, x, 16)
    for row, (mine, theirs) in enumerate(zip(idx, ref, strict=True)):
        differ = set(mine.tolist()) ^ {j for j in theirs.tolist() if j != row}
        differ.discard(row)
        kth = dist[row, -1]
        assert all(abs(np.linalg.norm(x[row] - x[j]) - kth) < 1e-4 * (1 + kth) for j in differ)


def test_several_blocks_of_real_digits(small_blocks):
    """scikit-learn's 1,797 digits in 45 blocks of 40 rows: the work changes, the graph not."""
    x = load_digits().data.astype(np.float32)
    idx, dist = sk.self_knn(x, 10)
    _assert_exact(x, 10, idx, dist)


@pytest.mark.parametrize("n", [39, 40, 41, 81])
@pytest.mark.parametrize("k_of", [lambda n: 1, lambda n: n - 1], ids=["k=1", "k=n-1"])
def test_block_edges_and_the_largest_k(monkeypatch, n, k_of):
    """Just under, at and over one block of 40, two blocks and one row; k from 1 to n - 1."""
    monkeypatch.setattr(sk, "BLOCK", 40)
    monkeypatch.setattr(sk, "TILE", 16)
    x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    k = k_of(n)
    idx, dist = sk.self_knn(x, k)
    _assert_exact(x, k, idx, dist)


def test_identical_rows():
    x = np.ones((60, 4), np.float32)
    idx, dist = sk.self_knn(x, 7)
    assert (dist == 0).all()
    assert not (idx == np.arange(60)[:, None]).any()
    assert all(len(set(row.tolist())) == 7 for row in idx)


def test_any_row_order_gives_the_same_graph(small_blocks, monkeypatch):
    """The k-means order only changes the work: with the rows in a random order
    instead (also what happens without faiss), the same neighbours at the same
    distances (digits have no ties at their 10th distance here)."""
    x = load_digits().data.astype(np.float32)[:600]
    idx, dist = sk.self_knn(x, 10)
    shuffled = np.random.default_rng(3).permutation(len(x))
    monkeypatch.setattr(sk, "_cell_order", lambda data, seed: shuffled)
    idx2, dist2 = sk.self_knn(x, 10)
    np.testing.assert_array_equal(dist2, dist)
    np.testing.assert_array_equal(idx2, idx)


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
