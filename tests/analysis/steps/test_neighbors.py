"""analysis/steps/neighbors.py: the exact kNN graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.neighbors import NearestNeighbors

from analysis.steps.neighbors import _torch_knn, knn_graph, knn_search
from core.errors import ConfigError


@st.composite
def point_clouds(draw):
    n = draw(st.integers(3, 60))
    d = draw(st.integers(1, 12))
    x = draw(hnp.arrays(np.float32, (n, d), elements=st.floats(-100, 100, width=32)))
    if draw(st.booleans()):  # exact duplicates
        dup = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=n))
        x[dup] = x[dup[0]]
    k = draw(st.integers(1, n - 1))
    return x, k


def brute_force(x: np.ndarray, k: int) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x.astype(np.float64))
    dist, _ = nn.kneighbors(x.astype(np.float64))
    return dist[:, 1:]  # one of the zero distances is the sample itself


def tolerance(x: np.ndarray) -> float:
    # faiss (from 20 queries) and torch expand |a - b|^2 = |a|^2 - 2ab + |b|^2 in float32:
    # near-zero distances carry an error of about sqrt(eps) * |x|
    return 1e-3 * max(1.0, float(np.linalg.norm(x, axis=1).max()))


@settings(max_examples=50, deadline=None)
@given(point_clouds())
def test_knn_graph_invariants(cloud):
    x, k = cloud
    idx, dist = knn_graph(x, k)
    n = len(x)
    assert idx.shape == dist.shape == (n, k)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    assert not (idx == np.arange(n)[:, None]).any(), "a sample is its own neighbour"
    assert ((idx >= 0) & (idx < n)).all()
    assert all(len(set(row)) == k for row in idx), "a neighbour appears twice"
    assert (dist >= 0).all()
    assert (np.diff(dist, axis=1) >= 0).all(), "distances are not ascending"
    tol = tolerance(x)
    np.testing.assert_allclose(dist, brute_force(x, k), atol=tol, rtol=1e-4)
    # each reported distance is the true distance to the reported neighbour
    true = np.linalg.norm(x[idx].astype(np.float64) - x[:, None].astype(np.float64), axis=2)
    np.testing.assert_allclose(dist, true, atol=tol, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(point_clouds())
def test_torch_path_matches_faiss(cloud):
    x, k = cloud
    sq, idx = _torch_knn(torch.from_numpy(x), torch.from_numpy(x), k + 1, chunk=7)
    _, faiss_dist = knn_search(x, x, k + 1)
    # |q|^2 - 2 q.b + |b|^2 in float32 loses about sqrt(eps) * |x| near zero distances
    atol = 2e-3 * max(1.0, float(np.linalg.norm(x, axis=1).max()))
    np.testing.assert_allclose(sq.clamp_min(0).sqrt().numpy(), faiss_dist, atol=atol, rtol=1e-3)


def test_exact_duplicates_are_neighbours_at_distance_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    x[[4, 9, 17]] = x[2]  # four identical rows
    idx, dist = knn_graph(x, 3)
    for i in (2, 4, 9, 17):
        assert set(idx[i]) == {2, 4, 9, 17} - {i}
        assert (dist[i] == 0).all()
    # more duplicates than k: the self column may fall outside the top k + 1
    y = np.zeros((12, 3), np.float32)
    idx, dist = knn_graph(y, 4)
    assert not (idx == np.arange(12)[:, None]).any() and (dist == 0).all()


def test_knn_search_queries_and_errors():
    base = np.array([[0, 0], [1, 0], [3, 0], [10, 0]], np.float32)
    idx, dist = knn_search(base, np.array([[2.2, 0]], np.float32), 3)
    assert idx.tolist() == [[2, 1, 0]]
    np.testing.assert_allclose(dist, [[0.8, 1.2, 2.2]], rtol=1e-5)
    with pytest.raises(ConfigError, match="k=5 neighbours asked for, but only 4"):
        knn_search(base, base, 5)
    with pytest.raises(ConfigError, match="at least k\\+1 samples"):
        knn_graph(base, 4)


def test_step_on_real_embeddings(tiny_session):
    graph = tiny_session.artifact("neighbors")
    emb = tiny_session.embeddings
    n = len(emb)
    assert graph.summary["graph_k"] == 90
    assert graph["indices"].shape == (n, 90)
    np.testing.assert_allclose(graph["distances"][:, :10], brute_force(emb, 10), atol=1e-3,
                               rtol=1e-4)
    cols = tiny_session.engine.columns("neighbors")
    assert cols["nn_index"].shape == (n, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_session):
    emb = tiny_session.embeddings
    cpu_idx, cpu_dist = knn_graph(emb, 10, "cpu")
    gpu_idx, gpu_dist = knn_graph(emb, 10, "cuda")
    np.testing.assert_allclose(gpu_dist, cpu_dist, atol=1e-3, rtol=1e-4)
    assert (gpu_idx == cpu_idx).mean() > 0.99  # ties may order differently
