"""analysis/maps.py: the map functions; the steps' maps are tested in
tests/analysis/steps/test_projection.py."""

from __future__ import annotations

import numpy as np
import pytest

import analysis.maps as maps
from analysis.maps import stratified_sample, umap_sampled, with_self
from analysis.session import AnalysisSession
from core.datasets import load_dataset


@pytest.fixture(scope="module")
def session_2k(tiny_model, digits, data_root, shared_store):
    """The tiny run on 2,000 real test digits (inference only)."""
    ds = load_dataset(digits, "test", data_root=data_root, limit=2000)
    return AnalysisSession(tiny_model, ds, shared_store, "cpu", mc_samples=5, projections=(),
                           progress=False)


def test_with_self_prepends_each_sample():
    idx, dist = with_self(np.array([[1, 2], [0, 2], [1, 0]]), np.ones((3, 2), np.float32))
    assert idx[:, 0].tolist() == [0, 1, 2] and dist[:, 0].tolist() == [0, 0, 0]
    assert idx.shape == (3, 3) and idx.dtype == np.int64


def test_stratified_sample_keeps_class_proportions(digits, data_root):
    labels = load_dataset(digits, "test", data_root=data_root, limit=2000).labels
    rows = stratified_sample(labels, 800, seed=0)
    assert rows.shape == (800,) and rows.dtype == np.int64
    assert (np.diff(rows) > 0).all()  # sorted, no repeats
    classes, counts = np.unique(labels, return_counts=True)
    picked = np.array([(labels[rows] == c).sum() for c in classes])
    assert (np.abs(picked - counts * 800 / 2000) < 1).all()  # each class within one of its quota
    np.testing.assert_array_equal(stratified_sample(labels, 800, seed=0), rows)
    assert not np.array_equal(stratified_sample(labels, 800, seed=1), rows)
    np.testing.assert_array_equal(stratified_sample(labels, 5000), np.arange(2000))


def test_umap_places_the_rest_in_blocks_as_well_as_in_one_call(session_2k, monkeypatch):
    """The held-out samples go to umap-learn's transform a block at a time (its graph is the
    size of a block), their neighbours found in one search; the map is as faithful."""
    from analysis.quality import trustworthiness

    umap = maps.import_umap()
    emb = np.asarray(session_2k.engine.get("inference")["embedding"])
    fit_rows = stratified_sample(session_2k.dataset.labels, 800, 0)
    rest = np.setdiff1d(np.arange(len(emb)), fit_rows)
    one = umap_sampled(emb, fit_rows)  # 1,200 held out: one block
    calls, searches, handed = [], [], []
    real_transform, real_query = umap.UMAP.transform, maps.SampleSearch.query
    real_found = maps.FoundNeighbours.query
    monkeypatch.setattr(umap.UMAP, "transform",
                        lambda self, x: calls.append(len(x)) or real_transform(self, x))
    monkeypatch.setattr(maps.SampleSearch, "query",
                        lambda self, q, k, epsilon=None: searches.append(len(q))
                        or real_query(self, q, k, epsilon))
    monkeypatch.setattr(maps.FoundNeighbours, "query",
                        lambda self, q, k, epsilon=None: handed.append(self.block is not None)
                        or real_found(self, q, k, epsilon))
    monkeypatch.setattr(maps, "PLACE_BLOCK", 300)
    blocks = umap_sampled(emb, fit_rows)
    assert calls == [300, 300, 300, 300] and searches == [1200]
    assert handed == [False, True, True, True, True]  # one search, then each block's share
    np.testing.assert_array_equal(blocks[fit_rows], one[fit_rows])
    assert np.isfinite(blocks).all()
    k = 10
    for rows in (rest, np.arange(len(emb))):  # measured: 0.9779 / 0.9773 held out,
        # 0.9798 / 0.9794 all
        t_one = trustworthiness(emb, one, k, queries=rows)
        t_blocks = trustworthiness(emb, blocks, k, queries=rows)
        assert abs(t_one - t_blocks) < 0.005
    shift = np.linalg.norm(blocks[rest] - one[rest], axis=1)
    assert np.median(shift) < 0.02 * np.ptp(one, 0).max()  # measured: 0.069 of 12.8


def test_found_neighbours_refuse_queries_that_are_not_their_block():
    rng = np.random.default_rng(0)
    base, block = rng.normal(size=(50, 4)), rng.normal(size=(6, 4)).astype(np.float32)
    search = maps.FoundNeighbours(base)
    idx, dist = search.query(block, 5)  # no block set: a search
    search.block = (block, idx, dist)
    np.testing.assert_array_equal(search.query(block.copy(), 3)[0], idx[:, :3])
    for wrong, k in ((block[:5], 5), (block[::-1], 5), (block, 6)):
        with pytest.raises(RuntimeError, match="not the block"):
            search.query(wrong, k)
