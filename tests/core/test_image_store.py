"""core/image_store.py: round trip of real digits, interrupted builds, damage, bounded memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cache.errors import CacheError
from core.datasets import ImageDataset, load_dataset
from core.errors import DataError
from core.image_files import convert_array
from core.image_store import (
    IMAGES_FILE,
    MANIFEST_FILE,
    PROGRESS_FILE,
    StoreSpec,
    build_store,
    convert_store,
    default_store_root,
    open_store,
    store_dataset,
    store_path,
)

REPO = Path(__file__).resolve().parents[2]
CLASSES = tuple(str(d) for d in range(10))


def synthetic_rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Data generated in the test: row i is filled with i % 251, label i % 10."""
    index = np.arange(lo, hi)
    images = np.broadcast_to((index % 251).astype(np.uint8)[:, None, None, None],
                             (hi - lo, 1, 28, 28))
    # A position-dependent pixel too, so a row written at the wrong offset is caught.
    images = images.copy()
    images[:, 0, 0, :4] = np.frombuffer(index.astype(">u4").tobytes(), np.uint8).reshape(-1, 4)
    return images, index % 10


def synthetic_spec(n: int, key: str = "synthetic") -> StoreSpec:
    return StoreSpec(key=key, name="synthetic", split="train", shape=(n, 1, 28, 28),
                     class_names=CLASSES, source="generated in the test")


def expected_synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_rows(0, n)


@pytest.fixture
def digits_slice(digits, data_root) -> ImageDataset:
    """3,000 real MNIST test digits (mnist-5k's 1,000 when MNIST is not found)."""
    return load_dataset(digits, "test", data_root=data_root, limit=3000)


def test_real_digits_round_trip_identically(digits_slice, tmp_path):
    stored = store_dataset(digits_slice, root=tmp_path, batch_rows=700)
    assert isinstance(stored.images, np.memmap) and not stored.images.flags.writeable
    assert np.array_equal(np.asarray(stored.images), digits_slice.images)
    assert stored.images.dtype == np.uint8 and stored.images.shape == digits_slice.images.shape
    assert np.array_equal(stored.labels, digits_slice.labels) and stored.labels.dtype == np.int64
    assert (stored.name, stored.split, stored.class_names) == \
        (digits_slice.name, digits_slice.split, digits_slice.class_names)
    assert stored.sample_ids.tolist() == digits_slice.sample_ids.tolist()
    # The manifest's fingerprint is the one ImageDataset computes over the same content.
    assert stored.fingerprint == digits_slice.fingerprint
    copy = ImageDataset(stored.name, stored.split, np.array(stored.images), stored.labels,
                        stored.class_names)
    assert copy.fingerprint == stored.fingerprint
    # head() of the memmap is a memmap slice with its own (recomputed) fingerprint.
    head = stored.head(10)
    assert isinstance(head.images, np.memmap)
    assert head.fingerprint == digits_slice.head(10).fingerprint != stored.fingerprint
    with pytest.raises(ValueError):
        stored.images[0, 0, 0, 0] = 1  # read-only


def test_the_batched_fingerprint_is_the_one_pass_digest(digits_slice, monkeypatch):
    # Cache keys hang on this digest: hashing in batches must not change it.
    import hashlib

    monkeypatch.setattr("core.datasets.FINGERPRINT_ROWS", 700)  # several batches, a ragged end
    h = hashlib.sha256(repr((digits_slice.images.shape, digits_slice.class_names)).encode())
    h.update(np.ascontiguousarray(digits_slice.images).data)
    h.update(np.ascontiguousarray(digits_slice.labels.astype(np.int64)).data)
    fresh = ImageDataset(digits_slice.name, digits_slice.split, digits_slice.images,
                         digits_slice.labels, digits_slice.class_names)
    assert fresh.fingerprint == h.hexdigest()


def test_a_memmapped_dataset_converts_batch_by_batch_into_its_own_store(digits_slice,
                                                                        tmp_path):
    stored = store_dataset(digits_slice, root=tmp_path)
    converted = convert_store(stored, (3, 32, 32), root=tmp_path, batch_rows=500)
    expected, text = convert_array(digits_slice.images, (3, 32, 32))
    assert isinstance(converted.images, np.memmap)
    assert np.array_equal(np.asarray(converted.images), expected)
    assert converted.conversion == text and text.startswith(f"resized {len(stored):,} images")
    assert converted.native_shape == (1, 28, 28) and converted.key == stored.key
    assert np.array_equal(converted.labels, stored.labels)
    assert converted.fingerprint == ImageDataset(
        "x", "y", expected, stored.labels, stored.class_names).fingerprint
    assert convert_store(stored, (1, 28, 28), root=tmp_path) is stored
    assert convert_store(stored, (None, None, None), root=tmp_path) is stored


def test_a_complete_store_is_reused_not_rebuilt(tmp_path):
    build_store(synthetic_spec(100), synthetic_rows, root=tmp_path, batch_rows=30)
    calls = []
    ds = build_store(synthetic_spec(100), lambda lo, hi: calls.append(lo) or
                     synthetic_rows(lo, hi), root=tmp_path, batch_rows=30)
    assert calls == [] and len(ds) == 100


def test_a_writer_that_raises_leaves_no_store_and_the_next_build_resumes(tmp_path):
    n, batch = 1000, 128

    def failing(lo, hi):
        if lo >= 3 * batch:
            raise RuntimeError("simulated failure after 3 batches")
        return synthetic_rows(lo, hi)

    with pytest.raises(RuntimeError, match="simulated"):
        build_store(synthetic_spec(n), failing, root=tmp_path, batch_rows=batch)
    assert open_store("synthetic", tmp_path) is None
    assert not store_path("synthetic", tmp_path).exists()
    progress = json.loads((tmp_path / "synthetic.partial" / PROGRESS_FILE).read_text())
    assert progress["rows"] == 3 * batch

    asked = []
    ds = build_store(synthetic_spec(n), lambda lo, hi: asked.append((lo, hi)) or
                     synthetic_rows(lo, hi), root=tmp_path, batch_rows=batch)
    assert asked[0][0] == 3 * batch and asked[-1][1] == n  # resumed, not restarted
    images, labels = expected_synthetic(n)
    assert np.array_equal(np.asarray(ds.images), images) and np.array_equal(ds.labels, labels)
    assert not (tmp_path / "synthetic.partial").exists()
    fresh = build_store(synthetic_spec(n, "again"), synthetic_rows, root=tmp_path, batch_rows=n)
    assert fresh.fingerprint == ds.fingerprint


KILLED_BUILDER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from test_image_store import synthetic_rows, synthetic_spec
    from core.image_store import build_store

    def rows(lo, hi):
        if lo >= {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)  # as a user's kill -9 or the OOM killer
        return synthetic_rows(lo, hi)

    build_store(synthetic_spec({n}), rows, root={root!r}, batch_rows={batch})
""")


def test_a_killed_build_is_never_read_as_complete_and_the_next_run_resumes(tmp_path):
    n, batch = 2000, 256
    script = KILLED_BUILDER.format(repo=str(REPO), tests=str(Path(__file__).parent), n=n,
                                   batch=batch, kill_at=4 * batch, root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert open_store("synthetic", tmp_path) is None
    partial = tmp_path / "synthetic.partial"
    assert not (partial / MANIFEST_FILE).exists()
    assert json.loads((partial / PROGRESS_FILE).read_text())["rows"] == 4 * batch

    asked = []
    ds = build_store(synthetic_spec(n), lambda lo, hi: asked.append(lo) or
                     synthetic_rows(lo, hi), root=tmp_path, batch_rows=batch)
    assert asked[0] == 4 * batch
    images, labels = expected_synthetic(n)
    assert np.array_equal(np.asarray(ds.images), images) and np.array_equal(ds.labels, labels)


SLOW_BUILDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from test_image_store import synthetic_rows, synthetic_spec
    from core.image_store import build_store

    def rows(lo, hi):
        print(lo, flush=True)
        time.sleep(0.3)
        return synthetic_rows(lo, hi)

    build_store(synthetic_spec(400), rows, root={root!r}, batch_rows=100)
""")


def test_a_second_process_waits_for_the_builder_and_reads_its_store(tmp_path):
    script = SLOW_BUILDER.format(repo=str(REPO), tests=str(Path(__file__).parent),
                                 root=str(tmp_path))
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout.readline().strip() == "0"  # the other process holds the lock
        calls = []
        ds = build_store(synthetic_spec(400), lambda lo, hi: calls.append(lo) or
                         synthetic_rows(lo, hi), root=tmp_path, batch_rows=100)
        assert proc.wait(timeout=120) == 0
    assert calls == []  # waited, then read what the other process wrote
    assert np.array_equal(np.asarray(ds.images), expected_synthetic(400)[0])


def test_a_build_killed_between_its_manifest_and_the_rename_is_finished(tmp_path):
    build_store(synthetic_spec(300), synthetic_rows, root=tmp_path, batch_rows=100)
    # The state a kill right after _finish leaves: a complete partial folder, no store.
    os.replace(store_path("synthetic", tmp_path), tmp_path / "synthetic.partial")
    assert open_store("synthetic", tmp_path) is None
    calls = []
    ds = build_store(synthetic_spec(300), lambda lo, hi: calls.append(lo) or
                     synthetic_rows(lo, hi), root=tmp_path, batch_rows=100)
    assert calls == [] and np.array_equal(np.asarray(ds.images), expected_synthetic(300)[0])


def test_an_unwritable_store_folder_is_a_cache_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the stores' folder should be")
    with pytest.raises(CacheError, match=r"not-a-folder/synthetic.*LOUPE_CACHE"):
        build_store(synthetic_spec(10), synthetic_rows, root=blocker)


def test_a_partial_build_of_another_spec_is_discarded(tmp_path):
    with pytest.raises(RuntimeError):
        build_store(synthetic_spec(500), lambda lo, hi: (_ for _ in ()).throw(RuntimeError()) if
                    lo else synthetic_rows(lo, hi), root=tmp_path, batch_rows=100)
    # Same key, another shape: the leftover rows must not be reused.
    ds = build_store(synthetic_spec(300), synthetic_rows, root=tmp_path, batch_rows=100)
    assert np.array_equal(np.asarray(ds.images), expected_synthetic(300)[0])


@pytest.mark.parametrize("damage", ["truncate", "incomplete", "garbage"])
def test_a_damaged_store_is_not_read_and_is_rebuilt(tmp_path, caplog, damage):
    build_store(synthetic_spec(200), synthetic_rows, root=tmp_path, batch_rows=64)
    folder = store_path("synthetic", tmp_path)
    if damage == "truncate":
        with open(folder / IMAGES_FILE, "r+b") as fh:
            fh.truncate(os.path.getsize(folder / IMAGES_FILE) - 784)
    else:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest.pop("complete")
        (folder / MANIFEST_FILE).write_text("{not json" if damage == "garbage"
                                            else json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="core.image_store"):
        assert open_store("synthetic", tmp_path) is None
    assert "rebuilt" in caplog.text
    ds = build_store(synthetic_spec(200), synthetic_rows, root=tmp_path, batch_rows=64)
    assert np.array_equal(np.asarray(ds.images), expected_synthetic(200)[0])


def test_rows_of_the_wrong_shape_or_labels_raise_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"Rows 0:10 .*expected \(10, 1, 28, 28\)"):
        build_store(synthetic_spec(10), lambda lo, hi: (np.zeros((hi - lo, 28, 28), np.uint8),
                                                        np.zeros(hi - lo)), root=tmp_path)
    with pytest.raises(DataError, match="label is outside 0..9"):
        build_store(synthetic_spec(10), lambda lo, hi: (synthetic_rows(lo, hi)[0],
                                                        np.full(hi - lo, 10)), root=tmp_path)
    assert open_store("synthetic", tmp_path) is None


def test_stores_live_under_the_cache_folder(monkeypatch, tmp_path):
    from cache.store import default_cache_dir

    monkeypatch.setenv("LOUPE_CACHE", str(tmp_path / "c"))
    assert default_store_root() == default_cache_dir() / "image-stores"
    monkeypatch.delenv("LOUPE_CACHE")
    assert default_store_root() == default_cache_dir() / "image-stores"


def test_store_files_are_plain_data(tmp_path):
    build_store(synthetic_spec(50), synthetic_rows, root=tmp_path)
    folder = store_path("synthetic", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == \
        ["images.npy", "labels.npy", "manifest.json"]
    for name in ("images.npy", "labels.npy"):
        np.load(folder / name, allow_pickle=False)  # raises if an object array were stored


def test_peak_memory_of_a_build_is_bounded_by_the_batch_not_the_store(tmp_path):
    n, batch = 50_000, 1000
    array_bytes = n * 784  # 39 MB
    tracemalloc.start()
    try:
        ds = build_store(synthetic_spec(n), synthetic_rows, root=tmp_path, batch_rows=batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A batch is 0.8 MB of pixels and ~1.6 MB of labels and temporaries; the bound fails
    # if anything held a tenth of the store at once.
    assert peak < array_bytes / 10, f"peak {peak / 1e6:.1f} MB"
    assert len(ds) == n and int(ds.images[n - 1, 0, 5, 5]) == (n - 1) % 251
