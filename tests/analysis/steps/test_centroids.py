"""analysis/steps/centroids.py: class centroids and distances in pixel and embedding space."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis.steps.centroids import (
    centroid_distances,
    class_centroids,
    distance_columns,
    pixel_centroids,
    pixel_distances,
    pixel_features,
)


def brute_distances(features, centroids):
    f = features.astype(np.float64)
    return np.sqrt(((f[:, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1))


@st.composite
def labelled_features(draw):
    n, d, c = draw(st.integers(2, 40)), draw(st.integers(1, 10)), draw(st.integers(2, 6))
    feats = draw(hnp.arrays(np.float32, (n, d), elements=st.floats(-50, 50, width=32)))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return feats, labels, c


@settings(max_examples=60, deadline=None)
@given(labelled_features())
def test_centroids_and_distances_match_numpy(data):
    feats, labels, c = data
    cents = class_centroids(feats, labels, c)
    for k in range(c):
        if (labels == k).any():
            np.testing.assert_allclose(cents[k], feats[labels == k].astype(np.float64).mean(0),
                                       rtol=1e-5, atol=1e-4)
        else:
            assert np.isnan(cents[k]).all()
    present = ~np.isnan(cents).any(1)
    dist = centroid_distances(feats, cents[present])
    assert dist.shape == (len(feats), present.sum()) and (dist >= 0).all()
    # torch.cdist uses |a|^2 - 2ab + |b|^2 (matrix multiply): near-zero distances carry an
    # error of about sqrt(float32 eps) * |x|
    atol = 1e-3 * max(1.0, float(np.linalg.norm(feats, axis=1).max()))
    np.testing.assert_allclose(dist, brute_distances(feats, cents[present]), rtol=1e-4,
                               atol=atol)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 30), st.integers(2, 8)),
                  elements=st.floats(0, 100, width=32)), st.data())
def test_margin_sign_and_nearest_class(dist, data):
    n, c = dist.shape
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    pred = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    cols = distance_columns(dist, labels, pred, "pixel")
    rows = np.arange(n)
    other = np.where(np.arange(c)[None] == labels[:, None], np.inf, dist).min(1)
    np.testing.assert_array_equal(cols["pixel_dist_label"], dist[rows, labels])
    np.testing.assert_array_equal(cols["pixel_dist_pred"], dist[rows, pred])
    np.testing.assert_array_equal(cols["pixel_dist_other"], other)
    np.testing.assert_allclose(cols["pixel_margin"], other - dist[rows, labels], rtol=1e-6)
    # positive margin <=> the own class's centroid is strictly the nearest
    strictly_nearest = dist[rows, labels] < other
    np.testing.assert_array_equal(cols["pixel_margin"] > 0, strictly_nearest)
    assert (cols["pixel_nearest_class"][strictly_nearest] == labels[strictly_nearest]).all()


def test_steps_on_real_digits(tiny_session):
    ds = tiny_session.dataset
    pixel = tiny_session.artifact("pixel_centroids")
    feats = pixel_features(ds.images)
    assert feats.max() <= 1.0 and feats.shape == (len(ds), 784)
    means = np.stack([feats[ds.labels == k].mean(0) for k in range(10)])
    np.testing.assert_allclose(pixel["centroids"], means, atol=1e-5)
    np.testing.assert_allclose(pixel["distances"], brute_distances(feats, means), rtol=1e-4,
                               atol=1e-4)
    art = tiny_session.artifact("centroids")
    emb = tiny_session.embeddings
    emb_means = np.stack([emb[ds.labels == k].mean(0) for k in range(10)])
    np.testing.assert_allclose(art["embedding_centroids@class"], emb_means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(art["embedding_distances@class"], brute_distances(emb, emb_means),
                               rtol=1e-3, atol=1e-3)
    cols = tiny_session.engine.columns("centroids")
    for space in ("pixel", "embedding"):
        for part in ("dist_label", "dist_pred", "dist_other", "margin"):
            assert cols[f"{space}_{part}@class"].shape == (len(ds),)
        assert (cols[f"{space}_dist_label@class"] >= 0).all()
    # most real digits are nearer their own class's mean image than any other
    assert (cols["pixel_margin@class"] > 0).mean() > 0.6
    # and misclassified digits sit nearer another class in embedding space than the right ones
    wrong = art["pred@class"] != ds.labels
    if wrong.any():
        margin = cols["embedding_margin@class"]
        assert margin[wrong].mean() < margin[~wrong].mean()


def test_pixel_steps_in_blocks_equal_the_whole_on_real_digits(tiny_session):
    # Real MNIST test digits (the tiny run's 300), read 7 at a time (blocks that do not
    # divide 300): the same numbers, bit for bit, as from every float pixel at once.
    ds = tiny_session.dataset
    feats = pixel_features(ds.images)
    whole = class_centroids(feats, ds.labels, 10)
    blocks = pixel_centroids(ds.images, ds.labels, 10, rows=7)
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(pixel_distances(ds.images, whole, rows=7),
                                  centroid_distances(feats, whole))
    np.testing.assert_array_equal(tiny_session.artifact("pixel_centroids")["centroids"], whole)
