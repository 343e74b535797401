"""analysis/steps/duplicates.py: planted exact and near copies in real MNIST digits, and
leakage between real train and test splits."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import analysis.steps.duplicates as dup
from core.datasets import find_idx_dir, load_dataset
from core.errors import ConfigError


def plant(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """Copies planted in real digits (generated here): 3 exact copies, 3 copies with
    +-2 grey levels of noise on every pixel, and one copy shifted by one grey level.
    Returns the images and {copy index: original index}."""
    rng = np.random.default_rng(seed)
    out = images.copy()
    sources = rng.choice(len(images) // 2, 7, replace=False)
    targets = len(images) // 2 + rng.choice(len(images) // 2, 7, replace=False)
    for k, (s, t) in enumerate(zip(sources, targets, strict=True)):
        copy = images[s].astype(np.int16)
        if 3 <= k < 6:
            copy += rng.integers(-2, 3, copy.shape)
        elif k == 6:
            copy += 1
        out[t] = np.clip(copy, 0, 255).astype(np.uint8)
    return out, dict(zip(targets.tolist(), sources.tolist(), strict=True))


@pytest.mark.parametrize("exact_limit", [10**9, 100])  # exact candidates, and the inverted file
def test_planted_copies_are_all_found_and_nothing_else(digits, data_root, monkeypatch,
                                                       exact_limit):
    monkeypatch.setattr(dup, "EXACT_LIMIT", exact_limit)
    ds = load_dataset(digits, "test", data_root=data_root, limit=1000)
    images, planted = plant(ds.images)
    found = dup.find_duplicates(images)
    n = len(images)
    flagged = {i: int(found["earliest"][i]) for i in range(n) if found["earliest"][i] != i}
    assert flagged == planted
    assert (found["ratio"][list(planted)] < 0.1).all()
    np.testing.assert_array_equal(found["ratio"][list(planted)[:3]], 0)  # exact copies
    # the clean digits' nearest neighbours are far above the threshold
    clean = np.setdiff1d(np.arange(n), list(planted) + list(planted.values()))
    assert found["ratio"][clean].min() > 0.15


def test_step_columns_name_the_earliest_copy(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    images, planted = plant(ds.images, seed=1)
    ds = replace(ds, images=images)
    step = dup.Duplicates()
    art = step.run(SimpleNamespace(dataset=ds), step.Config())
    cols = step.columns(art, step.Config())
    want = np.full(len(ds), "", dtype=object)
    for t, s in planted.items():
        want[t] = f"{ds.key}:{s}"
    np.testing.assert_array_equal(cols["duplicate_of"], want)
    assert cols["duplicate_of"].dtype == object


def test_a_group_of_three_points_to_its_earliest_member(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root, limit=200)
    images = ds.images.copy()
    images[50] = images[10]
    images[120] = images[10]
    found = dup.find_duplicates(images)
    assert found["earliest"][[10, 50, 120]].tolist() == [10, 10, 10]
    assert (found["earliest"] != np.arange(200)).sum() == 2


def test_leakage_between_real_train_and_test_and_planted(digits, data_root):
    train = load_dataset(digits, "train", data_root=data_root, limit=3000)
    test = load_dataset(digits, "test", data_root=data_root, limit=1000)
    # Real MNIST splits: no pixel-level copies at the threshold (the closest real pairs are
    # plain 1s at about 0.2 x the typical distance).
    assert dup.find_leakage(train, test) == []
    # Plant: test image 5 copied exactly into train 7, test 9 with +-2 noise into train 11.
    images = train.images.copy()
    images[7] = test.images[5]
    noisy = test.images[9].astype(np.int16) + np.random.default_rng(0).integers(-2, 3, (1, 28, 28))
    images[11] = np.clip(noisy, 0, 255)
    leaks = dup.find_leakage(replace(train, images=images), test)
    assert [(a, b) for a, b, _ in leaks] == [(f"{train.key}:7", f"{test.key}:5"),
                                            (f"{train.key}:11", f"{test.key}:9")]
    assert leaks[0][2] == 0.0 and 0 < leaks[1][2] < 0.1


@pytest.mark.skipif(not find_idx_dir("mnist"), reason="needs MNIST under LOUPE_DATA")
def test_full_mnist_train_and_test_do_not_leak():
    # All 60,000 x 10,000 real images; reported with the measured closest ratio in the README.
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert dup.find_leakage(train, test) == []


def test_leakage_needs_one_image_shape(digits, data_root):
    a = load_dataset(digits, "test", data_root=data_root, limit=10)
    b = replace(a, images=np.zeros((10, 1, 8, 8), np.uint8), name="small")
    with pytest.raises(ConfigError, match="Leakage needs images of one shape"):
        dup.find_leakage(a, b)


def test_pooling_never_increases_a_distance(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root, limit=200)
    full = dup.full_pixels(ds.images)
    pooled = dup.pooled_pixels(ds.images)
    assert pooled.shape[1] <= 64
    d_full = np.linalg.norm(full[:100] - full[100:], axis=1)
    d_pool = np.linalg.norm(pooled[:100] - pooled[100:], axis=1)
    assert (d_pool <= d_full + 1e-5).all()


def test_pixels_in_blocks_equal_the_whole_on_real_digits(digits, data_root):
    # Real test digits, pooled 7 at a time and measured 5 queries at a time (blocks that
    # do not divide 300): bit for bit what one float copy of every image gave.
    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    n, c, h, w = ds.images.shape
    full = dup.full_pixels(ds.images)
    f = 4  # 28x28 pools to 7x7 = 49 <= 64 values
    whole_pooled = full.reshape(n, c, h // f, f, w // f, f).mean((3, 5)).reshape(n, -1)
    pooled = dup.pooled_pixels(ds.images, 64, rows=7)
    np.testing.assert_array_equal(pooled, whole_pooled)
    cand = dup.candidate_neighbours(pooled, pooled, 6)
    cand[::17, -1] = -1  # missing candidates stay inf
    by_hand = np.linalg.norm(full[np.maximum(cand, 0)] - full[:, None, :], axis=2)
    got = dup.candidate_distances(ds.images, ds.images, cand, chunk=5)
    np.testing.assert_array_equal(got, dup.candidate_distances(full, full, cand))
    np.testing.assert_allclose(got[cand >= 0], by_hand[cand >= 0], rtol=1e-5, atol=1e-6)
    assert np.isinf(got[cand < 0]).all()
