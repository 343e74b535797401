"""core/scale_data.py: mnist-scale:N is deterministic, keeps labels, stays in bounded memory.

The source images are real: MNIST's training set when LOUPE_DATA holds it, else
the embedded mnist-5k's 4,000 training digits (``mnist-scale:N:mnist-5k``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from core.datasets import load_dataset
from core.errors import ConfigError, DataError
from core.image_store import build_store
from core.scale_data import (
    augment,
    load_scale_dataset,
    load_source,
    parse_scale_name,
    scale_origin,
    scale_origin_ids,
    scale_rows,
    scale_spec,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def suffix(digits) -> str:
    """``""`` (MNIST's idx files) or ``":mnist-5k"`` (the embedded digits)."""
    return "" if digits == "mnist" else ":mnist-5k"


@pytest.fixture(scope="module")
def source(digits, data_root):
    return load_source(digits, "train", data_root, 1)


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "image-stores"


@pytest.mark.parametrize("bad", ["mnist-scale:abc", "mnist-scale:0", "mnist-scale:-5",
                                 "mnist-scale:", "mnist-scale:1.5", "mnist-scale:²"])
def test_bad_counts_name_the_value_and_the_fix(bad):
    with pytest.raises(ConfigError) as err:
        load_dataset(bad, "train")
    msg = str(err.value)
    assert repr(bad.split(":", 1)[1]) in msg and "mnist-scale:100000" in msg


def test_an_unknown_source_or_split_is_a_config_error(data_root):
    with pytest.raises(ConfigError, match=r"source 'emnist'.*mnist-scale:10:mnist-5k"):
        load_dataset("mnist-scale:10:emnist", "train")
    with pytest.raises(ConfigError, match="'train' split .* not 'all'"):
        load_dataset("mnist-scale:10:mnist-5k", "all")


def test_parse_accepts_separators():
    assert parse_scale_name("mnist-scale:1_000_000") == (1_000_000, "mnist")
    assert parse_scale_name("mnist-scale:1,000:mnist-5k") == (1000, "mnist-5k")


def test_without_the_idx_files_the_error_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LOUPE_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("mnist-scale:1000", "train", data_root=tmp_path / "nothing")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "LOUPE_DATA" in msg
    assert str(tmp_path / "nothing") in msg and "mnist-scale:1000:mnist-5k" in msg


def test_samples_are_deterministic_across_batch_sizes_and_counts(source, tmp_path, suffix):
    n, name = 700, "mnist" + ("-5k" if suffix else "")
    a = build_store(scale_spec(n, name, source), scale_rows(source), root=tmp_path / "a",
                    batch_rows=n)
    b = build_store(scale_spec(n, name, source), scale_rows(source), root=tmp_path / "b",
                    batch_rows=37)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert a.fingerprint == b.fingerprint
    # mnist-scale:300 is the first 300 samples of mnist-scale:700.
    c = build_store(scale_spec(300, name, source), scale_rows(source), root=tmp_path / "c",
                    batch_rows=64)
    assert np.array_equal(np.asarray(c.images), np.asarray(a.images[:300]))
    # augment() alone: a sample does not depend on its batch neighbours.
    idx = np.array([5, 123, 699])
    alone = np.concatenate([augment(source.images[[i], 0], np.array([i])) for i in idx])
    assert np.array_equal(alone, np.asarray(a.images[idx, 0]))


def test_another_process_builds_the_same_bytes(source, tmp_path, suffix, data_root):
    name = f"mnist-scale:500{suffix}"
    here = load_scale_dataset(name, "train", data_root, store_root=tmp_path / "here",
                              batch_rows=61)
    env = {**os.environ, "LOUPE_CACHE": str(tmp_path / "there"), "PYTHONPATH": str(REPO)}
    if data_root:
        env["LOUPE_DATA"] = data_root
    out = subprocess.run(
        [sys.executable, "-c", "from core.datasets import load_dataset; "
         f"ds = load_dataset({name!r}, 'train'); print(ds.fingerprint, ds.key)"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=True)
    assert out.stdout.split() == [here.fingerprint, here.key]
    there = next((tmp_path / "there" / "image-stores").glob("mnist-scale-*/images.npy"))
    assert np.array_equal(np.load(there), np.asarray(here.images))


def test_labels_are_the_sources_and_images_stay_close_to_their_source(source, tmp_path,
                                                                       suffix, data_root):
    n = 2 * len(source) if suffix else 1200  # mnist-5k: two variants of each digit
    ds = load_scale_dataset(f"mnist-scale:{n}{suffix}", "train", data_root,
                            store_root=tmp_path)
    src, variant = scale_origin(np.arange(n), len(source))
    assert np.array_equal(ds.labels, source.labels[src])
    assert ds.labels.dtype == np.int64 and ds.class_names == source.class_names
    assert not np.any(np.all(ds.images[:, 0] == source.images[src, 0], axis=(1, 2)))
    # Hand-written check that the changes are small: after a 2-pixel blur (so a shift of a
    # pixel or two is no change of digit) a sample correlates better with its own source
    # image than with a source image of another class.
    other = np.array([np.flatnonzero(source.labels != source.labels[s])[s % 50] for s in src])

    def blurred(images):
        return ndimage.gaussian_filter(images[:, 0].astype(np.float64), (0, 2, 2)).reshape(n, -1)

    aug, own_src, other_src = (blurred(np.asarray(x)) for x in
                               (ds.images, source.images[src], source.images[other]))
    own = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(aug, own_src, strict=True)])
    cross = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(aug, other_src, strict=True)])
    assert np.mean(own > cross) > 0.95
    assert 0.75 < np.median(own) < 0.97
    assert scale_origin_ids([0, len(source) + 3], len(source)).tolist() == \
        ["scale-0-0", "scale-3-1"]
    if suffix:
        assert variant.max() == 1 and ds.name == f"mnist-scale-{n}-of-mnist-5k"


def test_load_dataset_serves_train_memmapped_and_test_real(tmp_path, suffix, digits,
                                                           data_root, store_root):
    ds = load_dataset(f"mnist-scale:400{suffix}", "train", data_root=data_root, limit=50)
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (50, 1, 28, 28)
    assert ds.sample_ids[7] == f"{ds.name}:train:7" and ds.key == f"{ds.name}:train"
    assert list(store_root.glob("mnist-scale-400*/manifest.json"))
    test = load_dataset(f"mnist-scale:400{suffix}", "test", data_root=data_root)
    real = load_dataset(digits, "test", data_root=data_root)
    assert test.key == real.key and np.array_equal(test.images, real.images)
    # A model's other input shape is applied as for any dataset.
    big = load_dataset(f"mnist-scale:400{suffix}", "train", data_root=data_root, limit=3,
                       image_shape=(3, 32, 32))
    assert big.images.shape == (3, 3, 32, 32) and "resized 3 images" in big.conversion
    assert isinstance(big.images, np.memmap) and big.native_shape == (1, 28, 28)


def test_peak_memory_of_a_50k_build_stays_well_under_the_array(source, tmp_path, suffix):
    n, batch = 50_000, 256
    spec = scale_spec(n, "mnist" + ("-5k" if suffix else ""), source)
    tracemalloc.start()
    try:
        ds = build_store(spec, scale_rows(source), root=tmp_path, batch_rows=batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A 256-row batch has ~10 MB of float64 working arrays; the store is 39 MB.
    assert peak < n * 784 / 3, f"peak {peak / 1e6:.1f} MB for a {n * 784 / 1e6:.0f} MB store"
    assert len(ds) == n
