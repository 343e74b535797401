"""analysis/steps/outliers.py: the k-th neighbour distance, on real digits with planted
outliers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from analysis.steps.neighbors import knn_graph
from analysis.steps.outliers import Outliers, kth_neighbour_distance
from cache import Artifact
from core.datasets import load_dataset
from core.errors import ConfigError


def test_planted_outliers_score_highest(digits, data_root):
    # 500 real digits (pixels stand in for embeddings) plus 5 inverted ones (white paper,
    # black ink): those are the unusual ones.
    ds = load_dataset(digits, "test", data_root=data_root, limit=505)
    x = ds.images.reshape(len(ds), -1).astype(np.float32) / 255
    x[500:] = 1 - x[500:]
    idx, dist = knn_graph(x, 20)
    step = Outliers()
    art = step.run(SimpleNamespace(inputs={"neighbors": Artifact({"indices": idx,
                                                                   "distances": dist})}),
                   step.Config(k=10))
    score = step.columns(art, step.Config())["outlier_score"]
    assert set(np.argsort(-score)[:5]) == set(range(500, 505))
    # the 10th neighbour's distance, brute force
    want = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x)[0][:, 10]
    np.testing.assert_allclose(score, want, rtol=1e-3, atol=1e-3)


def test_k_beyond_the_graph_is_a_config_error():
    with pytest.raises(ConfigError, match="k=30 must be between 1 and the 20 neighbours"):
        kth_neighbour_distance(np.zeros((4, 20)), 30)
