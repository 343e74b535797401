"""analysis/steps/neighbors.py: the exact kNN graph, and the approximate one past exact_max."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.neighbors import NearestNeighbors

from analysis.ann import ivf_params, recall_at_k
from analysis.engine import Engine
from analysis.registry import make_config
from analysis.steps.neighbors import _torch_knn, knn_graph, knn_search, scaled_knn_graph
from cache import stable_hash
from core.datasets import load_dataset
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


@pytest.fixture(scope="module")
def real_pixels(digits, data_root) -> np.ndarray:
    """4,000 real test digits as 784-d pixel vectors in [0, 1] (no model needed)."""
    ds = load_dataset(digits, "test", data_root=data_root, limit=4000)
    return ds.images.reshape(len(ds), -1).astype(np.float32) / 255.0


def hand_recall(approx_idx: np.ndarray, x: np.ndarray, k: int) -> float:
    """Recall@k of a graph against scikit-learn's brute-force kNN, by set intersection."""
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x.astype(np.float64))
    true = nn.kneighbors(x.astype(np.float64), return_distance=False)
    hits = [len(set(a) & set(t[t != i][:k]))
            for i, (a, t) in enumerate(zip(approx_idx, true, strict=True))]
    return float(np.mean(hits) / k)


def test_approximate_graph_past_exact_max_on_real_digits(real_pixels):
    x, k = real_pixels, 30
    idx, dist, info = scaled_knn_graph(x, k, exact_max=1000, recall_floor=0.9,
                                       recall_queries=500)
    n = len(x)
    assert info["knn_method"] == "ivf_flat"
    assert info["ann_nlist"] == ivf_params(n).nlist == 102  # 4 sqrt(4000) = 253, 39 per cell
    assert idx.shape == dist.shape == (n, k) and idx.dtype == np.int64
    assert dist.dtype == np.float32
    assert not (idx == np.arange(n)[:, None]).any() and ((idx >= 0) & (idx < n)).all()
    assert (np.diff(dist, axis=1) >= 0).all()
    true = np.linalg.norm(x[idx] - x[:, None], axis=2)  # each distance is the true one
    np.testing.assert_allclose(dist, true, atol=1e-3, rtol=1e-4)
    # the recall it reports (500 sampled queries) is above the floor and close to the
    # recall of the whole graph, counted by hand against brute force
    whole = hand_recall(idx, x, k)
    assert info["ann_recall"] >= 0.9 and whole >= 0.9
    assert abs(info["ann_recall"] - whole) < 0.03
    assert info["ann_recall_queries"] == 500 and info["ann_nprobe"] < info["ann_nlist"]
    again = scaled_knn_graph(x, k, exact_max=1000, recall_floor=0.9, recall_queries=500)
    np.testing.assert_array_equal(again[0], idx)  # seeded: the same graph twice
    assert again[2] == info


def test_exact_path_unchanged_below_exact_max(real_pixels):
    x = real_pixels[:600]
    idx, dist, info = scaled_knn_graph(x, 10, exact_max=600)
    assert info == {"knn_method": "exact"}
    ref_idx, ref_dist = knn_graph(x, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_recall_below_the_floor_warns(real_pixels, caplog):
    with caplog.at_level(logging.WARNING, logger="analysis.ann"):
        _, _, info = scaled_knn_graph(real_pixels, 30, exact_max=1000, recall_floor=1.0,
                                      recall_queries=500)
    assert info["ann_recall"] < 1.0  # a quarter of the cells does not find every neighbour
    assert info["ann_nprobe"] == ivf_params(len(real_pixels)).max_nprobe
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert f"recall@30 is {info['ann_recall']:.3f}" in warning[0]
    assert "below the floor 1.00" in warning[0] and "exact_max above 4000" in warning[0]


def test_recall_at_k_counts_by_distance():
    exact = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    assert recall_at_k(np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]]), exact) == 5 / 6
    assert recall_at_k(np.array([[1.0, np.inf, np.inf], [1.0, 1.0, 1.0]]), exact) == 4 / 6


def test_new_options_keep_the_old_cache_key():
    @dataclasses.dataclass(frozen=True)
    class Config:  # the step's config before exact_max, recall_floor, recall_queries
        k: int = 10
        graph_k: int = 90

    assert stable_hash(make_config("neighbors")) == stable_hash(Config())
    assert stable_hash(make_config("neighbors", {"k": 5})) == stable_hash(Config(k=5))
    assert stable_hash(make_config("neighbors", {"exact_max": 10})) != stable_hash(Config())


def test_step_takes_the_approximate_path_past_exact_max(tiny_session):
    # the session's store: its inference result is found there by key, not recomputed
    tiny_session.artifact("inference")
    engine = Engine(tiny_session.model, tiny_session.dataset, tiny_session.store,
                    torch.device("cpu"), {"neighbors": {"k": 10, "exact_max": 100}},
                    progress=False)
    art = engine.get("neighbors")
    emb = tiny_session.embeddings
    n = len(emb)
    assert art["indices"].shape == (n, 90) and art["distances"].dtype == np.float32
    assert art.summary["knn_method"] == "ivf_flat" and art.summary["graph_k"] == 90
    assert art.summary["ann_recall"] >= 0.9
    assert hand_recall(art["indices"], emb, 90) >= 0.9
    assert engine.key("neighbors") != tiny_session.engine.key("neighbors")
    assert engine.columns("neighbors")["nn_index"].shape == (n, 10)
    assert [r.status for r in engine.records] == ["cached", "computed"]
