"""analysis/session.py: the per-sample table and the on-demand queries."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import session as session_module
from analysis.session import plan_steps
from core.errors import ConfigError


def brute_nearest(emb, query, exclude, k):
    d = np.linalg.norm(emb.astype(np.float64) - query.astype(np.float64), axis=1)
    d[list(exclude)] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def test_plan_steps():
    plan = plan_steps(20, ("umap", "tsne"))
    assert plan[:3] == ["preprocessing_check", "inference", "mc_dropout"]
    assert plan[-3:] == ["slices", "umap", "tsne"]
    assert "preprocessing_check" not in plan_steps(20, (), extra=True)
    assert "mc_dropout" not in plan_steps(0, ())
    with pytest.raises(ConfigError, match="Unknown projection\\(s\\) pca"):
        plan_steps(0, ("pca",))


@pytest.mark.parametrize("query", [0, 17, 299])
def test_similars_of_one_sample(tiny_session, query):
    emb = tiny_session.embeddings
    idx, dist = tiny_session.similars(query, k=8)
    assert len(idx) == 8 and query not in idx
    assert (np.diff(dist) >= 0).all() and (dist >= 0).all()
    _, expected = brute_nearest(emb, emb[query], [query], 8)
    np.testing.assert_allclose(dist, expected, rtol=1e-3, atol=1e-3)
    # more than the shared graph holds: the direct query path
    idx_far, dist_far = tiny_session.similars(query, k=120)
    assert len(idx_far) == 120 and query not in idx_far
    np.testing.assert_allclose(dist_far[:8], dist, rtol=1e-3, atol=1e-3)


def test_similars_of_a_selection_mean(tiny_session):
    emb = tiny_session.embeddings
    selection = [3, 40, 41, 250]
    idx, dist = tiny_session.similars(selection, k=10)
    assert len(idx) == 10 and not set(idx) & set(selection)
    order, expected = brute_nearest(emb, emb[selection].mean(0), selection, 10)
    np.testing.assert_allclose(dist, expected, rtol=1e-3, atol=1e-3)
    assert len(set(idx) & set(order)) >= 9  # ties aside, the same samples
    with pytest.raises(ConfigError, match="out of range"):
        tiny_session.similars([1, 300])


def test_attribute_result_is_cached(tiny_session, monkeypatch):
    heat = tiny_session.attribute(5, "saliency", target="label")
    assert heat.shape == (28, 28) and np.isfinite(heat).all()

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached heatmap should have been read back")

    monkeypatch.setattr(session_module, "attribute", no_recompute)
    again = tiny_session.attribute(5, "saliency", target="label")
    np.testing.assert_array_equal(again, heat)
    with pytest.raises(AssertionError, match="cached heatmap"):
        tiny_session.attribute(5, "saliency", target=3)  # another target is another entry
    with pytest.raises(ConfigError, match="Sample index 300 out of range"):
        tiny_session.attribute(300)
    with pytest.raises(ConfigError, match="Unknown attribution method"):
        tiny_session.attribute(1, "shap")


def test_table_has_one_row_per_sample(tiny_session):
    table = tiny_session.table()
    ds = tiny_session.dataset
    assert len(table) == len(ds)
    assert table["sample_id"].tolist()[:2] == [f"{ds.key}:0", f"{ds.key}:1"]
    np.testing.assert_array_equal(table["label"], ds.labels)
    np.testing.assert_array_equal(table["correct"], table["pred"] == table["label"])
    for col in ("loss", "confidence", "uncertainty", "mc_entropy", "pixel_margin",
                "embedding_dist_label"):
        assert col in table and table[col].notna().all()
    idx, dist = tiny_session.neighbors()
    assert idx.shape == (len(ds), 10) and (np.diff(dist, axis=1) >= 0).all()


def test_heatmaps_from_many_threads_equal_one_at_a_time(tiny_model, digits, data_root,
                                                       tmp_path):
    """Heatmap jobs run as threads beside MC dropout (dropout switched on) and torchinfo
    (hooks on every layer): each heatmap must still be the model's own."""
    from concurrent.futures import ThreadPoolExecutor

    from analysis.attribution import attribute
    from analysis.session import AnalysisSession
    from cache import ArtifactStore
    from core.datasets import load_dataset

    ds = load_dataset(digits, "test", data_root=data_root, limit=40)
    session = AnalysisSession(tiny_model, ds, ArtifactStore(tmp_path), "cpu", mc_samples=20,
                              projections=(), progress=False)
    pred = session.engine.get("inference")["pred@class"]
    jobs = [(i, m) for i in range(12) for m in ("gradcam", "integrated_gradients", "saliency")]
    expected = {(i, m): attribute(tiny_model, ds.images[[i]], int(pred[i]), m)[0]
                for i, m in jobs}

    def work(job):
        if job == "mc":
            return session.engine.get("mc_dropout")
        if job == "summary":
            return session.model_summary()
        return session.attribute(job[0], job[1], "pred")

    order = ["mc"] + [j for pair in zip(jobs, ["summary"] * len(jobs), strict=True) for j in pair]
    with ThreadPoolExecutor(6) as pool:
        results = dict(zip(map(str, order), pool.map(work, order), strict=True))
    for i, m in jobs:
        np.testing.assert_allclose(results[str((i, m))], expected[(i, m)], rtol=1e-5, atol=1e-6)
    assert "Total params" in results["summary"]
    assert not any(mod.training for mod in tiny_model.module.modules())  # eval mode again
