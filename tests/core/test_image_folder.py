"""core/image_folder.py: folder:PATH at its native shape, splits, names and a hostile tree."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_writer import folder_order, photo_patches, sklearn_digits, write_class_folder
from PIL import Image

from core.datasets import load_dataset
from core.errors import ConfigError, DataError
from core.image_files import convert_array


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's 1,797 real digits as 8x8 grey PNGs in ImageFolder layout."""
    images, labels = sklearn_digits()
    root = tmp_path_factory.mktemp("sk") / "digits"
    write_class_folder(root, images, labels)
    order = folder_order(labels)
    return root, images[order], labels[order]


def test_digits_load_natively_pixel_exact(digits_folder):
    root, images, labels = digits_folder
    ds = load_dataset(f"folder:{root}", "all")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names == tuple(str(d) for d in range(10))
    assert ds.native_shape == (1, 8, 8) and ds.conversion == ""
    assert ds.split == "all" and re.fullmatch(r"folder-digits-[0-9a-f]{6}", ds.name)


def test_digits_resized_on_request_and_said_so(digits_folder, caplog):
    root, images, labels = digits_folder
    with caplog.at_level(logging.INFO, logger="core"):
        ds = load_dataset(f"folder:{root}", "all", image_shape=(1, 28, 28))
    assert ds.images.shape == (1797, 1, 28, 28)
    assert ds.native_shape == (1, 8, 8)
    assert ds.conversion == "resized 1,797 images from 8x8 to 28x28"
    infos = [r.getMessage() for r in caplog.records if r.name == "core.datasets"]
    assert infos == [f"{ds.key}: resized 1,797 images from 8x8 to 28x28."]
    # files and in-memory arrays (the idx path) go through the same filter
    same, _ = convert_array(images[:, None], (1, 28, 28))
    np.testing.assert_array_equal(ds.images, same)
    np.testing.assert_array_equal(ds.labels, labels)
    # a None entry keeps the native value; channels are replicated for RGB
    rgb = load_dataset(f"folder:{root}", "all", image_shape=(3, None, None), limit=20)
    assert rgb.images.shape == (20, 3, 8, 8)
    assert (rgb.images == images[:20, None]).all()
    assert rgb.conversion == "converted 20 grey images to RGB"


def test_limit_decodes_a_prefix_with_the_same_ids(digits_folder):
    root, images, _ = digits_folder
    full = load_dataset(f"folder:{root}", "all")
    head = load_dataset(f"folder:{root}", "all", limit=50)
    assert len(head) == 50 and list(head.sample_ids) == list(full.sample_ids[:50])
    np.testing.assert_array_equal(head.images, full.images[:50])


def test_train_test_subfolders(tmp_path):
    images, labels = sklearn_digits()
    root = tmp_path / "split-digits"
    train = np.arange(1500)
    test = np.arange(1500, 1797)
    test = test[labels[test] != 9]  # a class missing from one split keeps its label
    write_class_folder(root / "train", images[train], labels[train], train)
    write_class_folder(root / "val", images[test], labels[test], test)
    tr = load_dataset(f"folder:{root}", "train")
    te = load_dataset(f"folder:{root}", "test")
    assert (len(tr), len(te)) == (1500, len(test))
    assert tr.split == "train" and te.split == "test" and tr.name == te.name
    assert tr.class_names == te.class_names == tuple(str(d) for d in range(10))
    np.testing.assert_array_equal(te.labels, labels[test][folder_order(labels[test])])
    np.testing.assert_array_equal(te.images[:, 0], images[test][folder_order(labels[test])])
    assert not set(tr.sample_ids) & set(te.sample_ids)
    with pytest.raises(ConfigError, match=r"train/, val/; pick one with --split test or"):
        load_dataset(f"folder:{root}", "all")


def test_missing_split_lists_what_exists(tmp_path):
    images, labels = sklearn_digits()
    root = tmp_path / "only-train"
    write_class_folder(root / "train", images[:20], labels[:20])
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{root}", "test")
    assert "has no test split" in str(info.value) and str(root / "train") in str(info.value)


def test_single_folder_serves_any_split_as_all(digits_folder, caplog):
    root, _, _ = digits_folder
    with caplog.at_level(logging.INFO, logger="core.image_folder"):
        ds = load_dataset(f"folder:{root}", "train", limit=5)
    assert ds.split == "all" and ds.sample_ids[0] == f"{ds.name}:all:0"
    lines = [r.getMessage() for r in caplog.records if r.name == "core.image_folder"]
    assert len(lines) == 1 and "'all'" in lines[0] and "--split train" in lines[0]


def test_rgb_photo_patches_round_trip(tmp_path):
    patches, labels, names = photo_patches()
    root = tmp_path / "photos"
    for i, (patch, label) in enumerate(zip(patches, labels, strict=True)):
        (root / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(patch).save(root / names[label] / f"{i:03d}.png")
    ds = load_dataset(f"folder:{root}", "all")
    assert ds.images.shape == (18, 3, 32, 32) and ds.native_shape == (3, 32, 32)
    assert ds.class_names == ("astronaut", "chelsea", "coffee") and ds.conversion == ""
    np.testing.assert_array_equal(ds.images.transpose(0, 2, 3, 1), patches)
    np.testing.assert_array_equal(ds.labels, labels)
    grey = load_dataset(f"folder:{root}", "all", image_shape=(1, None, None))
    expected = [np.asarray(Image.fromarray(p).convert("L")) for p in patches]
    np.testing.assert_array_equal(grey.images[:, 0], np.stack(expected))
    assert grey.conversion == "converted 18 colour images to grey"


def test_two_folders_named_test_do_not_share_ids(tmp_path):
    images, labels = sklearn_digits()
    a, b = tmp_path / "a" / "test", tmp_path / "b" / "test"
    write_class_folder(a, images[:30], labels[:30])
    write_class_folder(b, images[30:70], labels[30:70])
    da, db = load_dataset(f"folder:{a}", "all"), load_dataset(f"folder:{b}", "all")
    assert da.name != db.name
    assert da.name.startswith("folder-test-") and db.name.startswith("folder-test-")
    assert not set(da.sample_ids) & set(db.sample_ids)
    # the name hangs on the resolved path: the same folder reached another way agrees
    assert load_dataset(f"folder:{tmp_path}/a/../a/test", "all", limit=1).name == da.name


def test_mixed_sizes_need_an_input_size(tmp_path):
    images, _ = sklearn_digits()
    root = tmp_path / "mixed"
    (root / "x").mkdir(parents=True)
    small, big = root / "x" / "a.png", root / "x" / "b.png"
    Image.fromarray(images[0]).save(small)
    Image.fromarray(images[1]).resize((16, 12)).save(big)
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{root}", "all")
    message = str(info.value)
    assert str(small) in message and str(big) in message and "--input-size" in message
    ds = load_dataset(f"folder:{root}", "all", image_shape=(None, 10, 10))
    assert ds.images.shape == (2, 1, 10, 10) and ds.native_shape is None
    assert ds.conversion == "resized 2 images from mixed sizes to 10x10"


def test_fifo_named_png_is_skipped_without_opening(digits_folder, tmp_path, caplog):
    images, labels = sklearn_digits()
    root = tmp_path / "fifo"
    write_class_folder(root, images[:3], np.zeros(3, np.int64))
    fifo = root / "0" / "x.png"
    os.mkfifo(fifo)
    result: dict[str, object] = {}

    def load():
        try:
            result["ds"] = load_dataset(f"folder:{root}", "all")
        except Exception as exc:  # handed to the main thread, which asserts on it
            result["error"] = exc

    with caplog.at_level(logging.WARNING, logger="core.image_folder"):
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(timeout=30)
        if worker.is_alive():  # open() blocked on the FIFO: a writer end releases it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=5)
            pytest.fail("loading blocked on a FIFO named x.png")
    assert "error" not in result, result.get("error")
    assert len(result["ds"]) == 3
    assert any(str(fifo) in r.getMessage() for r in caplog.records)


def test_symlink_loop_does_not_multiply_samples(tmp_path):
    images, labels = sklearn_digits()
    root = tmp_path / "loop"
    write_class_folder(root, images[:12], labels[:12] % 2)
    plain = load_dataset(f"folder:{root}", "all")
    os.symlink(root / "0", root / "0" / "loop")  # a directory linked to its parent
    os.symlink(root / "1", root / "1" / "sub-alias")
    looped = load_dataset(f"folder:{root}", "all")
    assert len(looped) == len(plain) == 12
    np.testing.assert_array_equal(looped.images, plain.images)
    np.testing.assert_array_equal(looped.labels, plain.labels)


def test_linked_class_folders_are_followed(tmp_path):
    # ImageFolder follows links: a class folder that is a link to elsewhere still counts
    images, labels = sklearn_digits()
    write_class_folder(tmp_path / "elsewhere", images[:4], np.zeros(4, np.int64))
    write_class_folder(tmp_path / "root", images[4:9], np.ones(5, np.int64))
    os.symlink(tmp_path / "elsewhere" / "0", tmp_path / "root" / "0")
    ds = load_dataset(f"folder:{tmp_path / 'root'}", "all")
    assert ds.labels.tolist() == [0] * 4 + [1] * 5


def test_hidden_entries_are_skipped(digits_folder, tmp_path):
    images, labels = sklearn_digits()
    root = tmp_path / "hidden"
    write_class_folder(root, images[:4], labels[:4])
    (root / ".ipynb_checkpoints").mkdir()
    (root / str(labels[0]) / "._0000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    ds = load_dataset(f"folder:{root}", "all")
    assert len(ds) == 4 and ".ipynb_checkpoints" not in ds.class_names


def test_over_pixel_limit_names_file_and_limit(tmp_path, monkeypatch):
    images, labels = sklearn_digits()
    root = tmp_path / "big"
    write_class_folder(root, images[:2], labels[:2])
    big = root / str(labels[0]) / "big.png"
    Image.fromarray(images[0]).resize((40, 30)).save(big)
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "1000")  # a real 50 MP file is not needed
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{root}", "all", image_shape=(1, 8, 8))
    assert str(big) in str(info.value) and "1,000" in str(info.value)
    assert "LOUPE_MAX_PIXELS" in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_names_the_file(tmp_path, damage):
    images, labels = sklearn_digits()
    root = tmp_path / "corrupt"
    write_class_folder(root, images[:3], labels[:3])
    bad = root / str(labels[1]) / "bad.png"
    if damage == "garbage":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    else:  # a real PNG cut short: the header reads, decoding fails
        Image.fromarray(images[1]).resize((64, 64)).save(bad)
        bad.write_bytes(bad.read_bytes()[:80])
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{root}", "all", image_shape=(1, 8, 8))
    assert str(bad) in str(info.value)


def test_bad_shape_request(digits_folder):
    root, _, _ = digits_folder
    with pytest.raises(ConfigError, match="channels must be 1"):
        load_dataset(f"folder:{root}", "all", image_shape=(2, 8, 8))
    with pytest.raises(ConfigError, match="positive"):
        load_dataset(f"folder:{root}", "all", image_shape=(1, 0, 8))


# Class names and counts drawn by hypothesis; the pixels are the real digits.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["cat", "dog", "0", "10", "2", "b c", "Ä"]),
                       st.integers(1, 4), min_size=1, max_size=4))
def test_sample_ids_unique_and_stable(counts):
    images, _ = sklearn_digits()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "prop"
        k = 0
        for cls, n in counts.items():
            (root / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(images[k]).save(root / cls / f"{i}.png")
                k += 1
        first = load_dataset(f"folder:{root}", "all")
        second = load_dataset(f"folder:{root}", "all")
    ids = list(first.sample_ids)
    assert len(set(ids)) == len(ids) == sum(counts.values())
    assert ids == list(second.sample_ids)
    assert first.fingerprint == second.fingerprint
    assert first.class_names == tuple(sorted(counts))


def test_links_leaving_the_dataset_are_not_followed(tmp_path, caplog):
    """A folder someone sent may link to the rest of the disk: those links are skipped."""
    import numpy as np
    from PIL import Image

    from core.image_folder import load_image_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(outside / "secret.png")
    ds_root = tmp_path / "ds"
    (ds_root / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(ds_root / "cat" / "a.png")
    (ds_root / "cat" / "elsewhere").symlink_to(outside, target_is_directory=True)
    (ds_root / "cat" / "stolen.png").symlink_to(outside / "secret.png")
    (ds_root / "cat" / "inside.png").symlink_to(ds_root / "cat" / "a.png")
    with caplog.at_level("WARNING"):
        ds = load_image_folder(str(ds_root))
    assert len(ds) == 2  # a.png and the link to it; nothing from outside
    assert (ds.images == 0).all()
    assert "lead outside" in caplog.text and "stolen.png" in caplog.text
