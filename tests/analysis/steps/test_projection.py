"""analysis/steps/projection.py: seeded UMAP and t-SNE maps from the shared kNN graph.

The maps are the ones the CLI computed in its own process (the ``cli_run``
fixture); recomputing them here checks they are N x 2, finite, faithful and
the same for the same seed in another process.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.quality import map_quality
from analysis.session import AnalysisSession
from analysis.steps.projection import tsne_map, umap_map, with_self


@pytest.fixture(scope="module")
def cli_session(cli_run, data_root):
    assert cli_run["run"] is not None and cli_run["run"].returncode == 0, cli_run["train"].stderr
    return AnalysisSession.open(cli_run["run_dir"], cli_run["dataset"], "test",
                                data_root=data_root, cache_dir=cli_run["cache"], device="cpu",
                                limit=cli_run["limit"], progress=False)


def test_with_self_prepends_each_sample():
    idx, dist = with_self(np.array([[1, 2], [0, 2], [1, 0]]), np.ones((3, 2), np.float32))
    assert idx[:, 0].tolist() == [0, 1, 2] and dist[:, 0].tolist() == [0, 0, 0]
    assert idx.shape == (3, 3) and idx.dtype == np.int64


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_map_is_n_by_2_finite_faithful_and_deterministic(method, cli_session):
    records = cli_session.run(["inference", "neighbors", method])
    assert {r.status for r in records} == {"cached"}  # computed by the CLI's process
    art = cli_session.artifact(method)
    coords = art["coords"]
    n = len(cli_session.dataset)
    assert coords.shape == (n, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert coords.std(0).min() > 0  # not collapsed to a point
    # a 2D map of 64-d digit embeddings keeps most local structure
    assert art.summary["trustworthiness"] > 0.85
    assert 0.2 < art.summary["knn_preservation"] <= 1.0
    emb = cli_session.embeddings
    graph = cli_session.artifact("neighbors")
    quality = map_quality(emb, coords, graph["indices"], k=10)
    assert quality["trustworthiness"] == pytest.approx(art.summary["trustworthiness"], abs=1e-9)
    config = cli_session.engine.config(method)
    if method == "umap":
        again = umap_map(emb, graph["indices"], graph["distances"], seed=config.seed,
                         n_neighbors=config.n_neighbors, min_dist=config.min_dist,
                         n_epochs=config.n_epochs)
    else:
        again = tsne_map(emb, graph["indices"], graph["distances"], seed=config.seed,
                         perplexity=config.perplexity, n_iter=config.n_iter)
    np.testing.assert_array_equal(again, coords)
