"""analysis/quality.py: trustworthiness as scikit-learn defines it, kNN preservation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.manifold import trustworthiness as sk_trustworthiness

from analysis.quality import (
    count_below,
    knn_preservation,
    map_knn,
    map_quality,
    trustworthiness,
)
from analysis.steps.neighbors import knn_graph


@settings(max_examples=30, deadline=None)
@given(st.integers(12, 60), st.integers(2, 8), st.integers(1, 5), st.integers(0, 10**6),
       st.floats(0.0, 3.0))
def test_trustworthiness_equals_sklearn(n, d, k, seed, noise):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    coords = x[:, :2] + noise * rng.normal(size=(n, 2))  # from faithful to random
    k = min(k, n // 2 - 1)
    ours = trustworthiness(x.astype(np.float32), coords.astype(np.float32), k)
    expected = sk_trustworthiness(x, coords, n_neighbors=k)
    assert abs(ours - expected) < 1e-6


def test_trustworthiness_on_real_embeddings(tiny_session):
    emb = tiny_session.embeddings[:150]
    rng = np.random.default_rng(0)
    coords = emb[:, :2] + 0.05 * rng.normal(size=(150, 2)).astype(np.float32)
    assert abs(trustworthiness(emb, coords, 10) - sk_trustworthiness(emb, coords, n_neighbors=10)) \
        < 1e-5
    # the query estimate is close to the exact value
    est = trustworthiness(emb, coords, 10, max_queries=100)
    assert abs(est - trustworthiness(emb, coords, 10)) < 0.05


def test_knn_preservation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    high = knn_graph(x, 5)[0]
    assert knn_preservation(high, high, 5) == 1.0
    shuffled = knn_graph(rng.permutation(x), 5)[0]
    assert knn_preservation(high, shuffled, 5) < 0.5
    q = map_quality(x, x, high, k=5)
    assert q["trustworthiness"] == 1.0 and q["knn_preservation"] == 1.0


def hand_trustworthiness(x: np.ndarray, coords: np.ndarray, k: int, rows: np.ndarray) -> float:
    """Venna & Kaski's formula written out, averaged over the query ``rows`` only."""
    n = len(x)
    penalty = 0
    for i in rows:
        d_high = np.linalg.norm(x - x[i], axis=1)
        d_high[i] = np.inf
        rank = np.empty(n, int)
        rank[np.argsort(d_high, kind="stable")] = np.arange(1, n + 1)
        d_low = np.linalg.norm(coords - coords[i], axis=1)
        d_low[i] = np.inf
        for j in np.argsort(d_low, kind="stable")[:k]:
            penalty += max(0, rank[j] - k)
    return 1 - 2 / (len(rows) * k * (2 * n - 3 * k - 1)) * penalty


def test_trustworthiness_over_given_query_rows(tiny_session):
    # real embeddings; a map made of two embedding dimensions plus seeded noise
    emb = tiny_session.embeddings[:200].astype(np.float64)
    rng = np.random.default_rng(3)
    coords = emb[:, :2] + 0.2 * emb[:, :2].std() * rng.normal(size=(200, 2))
    rows = np.sort(rng.choice(200, 40, replace=False))
    ours = trustworthiness(emb.astype(np.float32), coords.astype(np.float32), 10, queries=rows)
    assert abs(ours - hand_trustworthiness(emb, coords, 10, rows)) < 1e-6
    # all rows as queries is the exact value
    assert trustworthiness(emb, coords, 10, queries=np.arange(200)) == \
        trustworthiness(emb, coords, 10)


def test_map_knn_equals_brute_force(tiny_session):
    rng = np.random.default_rng(0)
    coords = tiny_session.embeddings[:, :2] + rng.normal(size=(300, 2)).astype(np.float32)
    tree = map_knn(coords, 10)
    assert tree.shape == (300, 10) and not (tree == np.arange(300)[:, None]).any()
    pts = coords.astype(np.float64)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    # the same neighbours up to the order of exact ties: the same distances, ascending
    np.testing.assert_allclose(np.take_along_axis(d, tree, 1), np.sort(d, 1)[:, :10], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 60), st.integers(1, 5), st.integers(0, 10**6))
def test_count_below_equals_broadcast(rows, n, m, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 5, (rows, n)).astype(np.float32)  # small integers: many ties
    d[rng.random((rows, n)) < 0.1] = np.inf
    thresholds = rng.integers(0, 6, (rows, m)).astype(np.float32)
    expected = (d[:, None, :] < thresholds[:, :, None]).sum(-1)
    assert (count_below(d, thresholds) == expected).all()


def test_count_below_keeps_float64_apart():
    d = np.array([[1.0, 1.0 + 1e-12, 2.0]])
    assert count_below(d, np.array([[1.0 + 1e-12]]))[0, 0] == 1  # not rounded to float32


def test_map_knn_refuses_k_past_the_points():
    with pytest.raises(ValueError, match="k must be in 1..4"):
        map_knn(np.zeros((5, 2), np.float32), 10)


def test_trustworthiness_chunks_agree(tiny_session):
    # one query row per chunk and all rows in one chunk give the same sum
    emb = tiny_session.embeddings[:200]
    coords = emb[:, :2] + 0.3 * np.random.default_rng(4).normal(size=(200, 2)).astype(np.float32)
    assert trustworthiness(emb, coords, 10, chunk=1) == trustworthiness(emb, coords, 10, chunk=256)
