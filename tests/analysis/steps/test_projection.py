"""analysis/steps/projection.py: seeded UMAP and t-SNE maps from the shared kNN graph."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.quality import map_quality
from analysis.steps.neighbors import knn_graph
from analysis.steps.projection import tsne_map, umap_map, with_self

N = 120


@pytest.fixture(scope="module")
def features(tiny_session):
    emb = tiny_session.embeddings[:N]
    idx, dist = knn_graph(emb, 90)
    return emb, idx, dist


def test_with_self_prepends_each_sample():
    idx, dist = with_self(np.array([[1, 2], [0, 2], [1, 0]]), np.ones((3, 2), np.float32))
    assert idx[:, 0].tolist() == [0, 1, 2] and dist[:, 0].tolist() == [0, 0, 0]
    assert idx.shape == (3, 3) and idx.dtype == np.int64


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_map_is_n_by_2_finite_deterministic_and_faithful(method, features):
    emb, idx, dist = features
    project = umap_map if method == "umap" else tsne_map
    kwargs = {"n_epochs": 100} if method == "umap" else {"n_iter": 50}
    a = project(emb, idx, dist, seed=0, **kwargs)
    b = project(emb, idx, dist, seed=0, **kwargs)
    assert a.shape == (N, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert a.std(0).min() > 0  # not collapsed to a point
    quality = map_quality(emb, a, idx, k=10)
    # a 2D map of 64-d digit embeddings keeps most local structure
    assert quality["trustworthiness"] > 0.85
    assert 0.2 < quality["knn_preservation"] <= 1.0
    assert quality["trust_queries"] == N and quality["quality_k"] == 10
