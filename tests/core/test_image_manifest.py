"""core/image_manifest.py: csv:FILE manifests on real digits, and every malformed one."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from image_writer import folder_order, sklearn_digits, write_class_folder, write_manifest

from core.datasets import load_dataset
from core.errors import DataError
from core.image_manifest import sorted_class_names


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """scikit-learn's 1,797 real digits as 8x8 PNGs, listed in ImageFolder's order."""
    images, labels = sklearn_digits()
    root = tmp_path_factory.mktemp("man") / "digits"
    paths = write_class_folder(root, images, labels)
    order = folder_order(labels)
    return root, [paths[i] for i in order], images[order], labels[order]


def test_manifest_matches_the_folder(digits_files):
    root, paths, images, labels = digits_files
    rows = [{"label": int(lab), "path": str(p.relative_to(root)), "note": "x"}
            for p, lab in zip(paths, labels, strict=True)]
    rows[5]["path"] = str(paths[5])  # absolute paths are accepted too
    manifest = write_manifest(root / "digits.csv", rows, ["label", "path", "note"])
    ds = load_dataset(f"csv:{manifest}", "all")
    folder = load_dataset(f"folder:{root}", "all")
    np.testing.assert_array_equal(ds.images, folder.images)
    np.testing.assert_array_equal(ds.labels, folder.labels)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    assert ds.class_names == folder.class_names
    assert re.fullmatch(r"csv-digits-[0-9a-f]{6}", ds.name) and ds.split == "all"
    assert ds.native_shape == (1, 8, 8) and ds.conversion == ""
    resized = load_dataset(f"csv:{manifest}", "all", image_shape=(1, 28, 28), limit=40)
    np.testing.assert_array_equal(
        resized.images, load_dataset(f"folder:{root}", "all", image_shape=(1, 28, 28),
                                     limit=40).images)
    assert resized.conversion == "resized 40 images from 8x8 to 28x28"


def test_split_column_filters_rows_and_keeps_labels(digits_files):
    root, paths, _, labels = digits_files
    rows = [{"path": str(p.relative_to(root)), "label": int(lab),
             "split": "train" if i % 4 else ("val" if lab != 3 else "test")}
            for i, (p, lab) in enumerate(zip(paths, labels, strict=True))]
    manifest = write_manifest(root / "split.csv", rows, ["path", "label", "split"])
    tr = load_dataset(f"csv:{manifest}", "train")
    te = load_dataset(f"csv:{manifest}", "test")
    every = load_dataset(f"csv:{manifest}", "all")
    n_test = len(range(0, len(rows), 4))
    assert (len(tr), len(te), len(every)) == (len(rows) - n_test, n_test, len(rows))
    assert tr.class_names == te.class_names == tuple(str(d) for d in range(10))
    np.testing.assert_array_equal(te.labels, labels[::4])
    assert te.sample_ids[0] == f"{te.name}:test:0" and tr.name == te.name


def test_missing_split_lists_those_found(digits_files):
    root, paths, _, labels = digits_files
    rows = [{"path": str(paths[0]), "label": 0, "split": "train"}]
    manifest = write_manifest(root / "trainonly.csv", rows, ["path", "label", "split"])
    with pytest.raises(DataError, match=r"no rows with split 'test'.*holds train"):
        load_dataset(f"csv:{manifest}", "test")


def test_integer_labels_sort_numerically():
    assert sorted_class_names(["10", "2", "1", "2"]) == ("1", "2", "10")
    assert sorted_class_names(["dog", "cat", "10"]) == ("10", "cat", "dog")


def test_missing_column_names_those_found(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [{"file": "a.png", "label": "x"}],
                              ["file", "label"])
    with pytest.raises(DataError) as info:
        load_dataset(f"csv:{manifest}", "all")
    assert "missing column(s) path" in str(info.value) and "'file', 'label'" in str(info.value)
    assert str(manifest) in str(info.value)


def test_missing_file_names_the_row(digits_files):
    root, paths, _, _ = digits_files
    rows = [{"path": str(p.relative_to(root)), "label": "a"} for p in paths[:3]]
    rows.append({"path": "nowhere/9.png", "label": "b"})
    manifest = write_manifest(root / "missing.csv", rows, ["path", "label"])
    with pytest.raises(DataError) as info:
        load_dataset(f"csv:{manifest}", "all")
    assert "row 4 (line 5)" in str(info.value)
    assert str(root / "nowhere" / "9.png") in str(info.value)


def test_fifo_row_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    manifest = write_manifest(tmp_path / "f.csv", [{"path": "x.png", "label": "a"}],
                              ["path", "label"])
    with pytest.raises(DataError, match=r"row 1 .*x\.png is not a regular file"):
        load_dataset(f"csv:{manifest}", "all")


@pytest.mark.parametrize("content, expected", [
    ("", "is empty"),
    ("path,label\n", "lists no images"),
    ("path,label\n\n  \n", "lists no images"),
    ("path,label\na.png,\n", "row 1 (line 2): the label cell is empty"),
])
def test_empty_manifests(tmp_path, content, expected):
    manifest = tmp_path / "e.csv"
    manifest.write_text(content)
    with pytest.raises(DataError) as info:
        load_dataset(f"csv:{manifest}", "all")
    assert expected in str(info.value) and str(manifest) in str(info.value)


def test_unreadable_image_and_missing_manifest(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is text, not an image")
    manifest = write_manifest(tmp_path / "u.csv", [{"path": "bad.png", "label": "a"}],
                              ["path", "label"])
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "bad.png"))):
        load_dataset(f"csv:{manifest}", "all")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "none.csv"))):
        load_dataset(f"csv:{tmp_path / 'none.csv'}", "all")
