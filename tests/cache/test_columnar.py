"""cache/columnar.py through the store: per-sample arrays in an Arrow file, read mapped.

The arrays are generated in the tests (seeded random numbers, ranges).
"""

from __future__ import annotations

import errno
import gc
import json
import logging
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from cache import Artifact, ArtifactStore, CacheError, columnar
from cache.index import value_files
from cache.store import COLUMNS_SUFFIX, MANIFEST_MAGIC, _encode

MB = 1024**2


def mixed(n: int = 300, seed: int = 0) -> Artifact:
    """Every kind of array an artifact holds, with leading dimensions n and others."""
    rng = np.random.default_rng(seed)
    return Artifact({
        "embedding": rng.standard_normal((n, 16)).astype(np.float32),
        "probs": rng.random((n, 4, 3)),  # float64, 3-D
        "neighbors": rng.integers(0, n, (n, 5)).astype(np.int32),
        "correct": rng.random(n) > 0.5,
        "mask": rng.random((n, 2)) > 0.5,  # bool, 2-D
        "pred": rng.integers(0, 10, n).astype(np.int64),
        "half": rng.random(n).astype(np.float16),
        "small_u8": np.arange(n, dtype=np.uint8),
        "centroids": rng.random((10, 16)).astype(np.float32),  # another leading dim: npz
        "names": np.array([f"s{i}" for i in range(n)]),  # text: npz
        "scalar": np.array(3.5),
        "empty_cols": np.zeros((n, 0), np.float32),  # no values per row: npz
    }, {"step": "test", "n": n, "nested": {"a": [1, 2]}})


@pytest.fixture
def store(cache_dir):
    s = ArtifactStore(cache_dir, columnar_min_mb=0)
    yield s
    s.close()


def columns_file(store: ArtifactStore, key: str) -> Path:
    (filename,) = store.cache._sql("SELECT filename FROM Cache WHERE key = ?",
                                   (key + COLUMNS_SUFFIX,)).fetchone()
    return Path(store.cache.directory) / filename


def test_row_count_and_split():
    art = mixed(50)
    assert columnar.row_count(art) == 50
    cols, rest = columnar.split(art, 50)
    assert set(cols) == {"embedding", "probs", "neighbors", "correct", "mask", "pred", "half",
                         "small_u8"}
    assert set(rest) == {"centroids", "names", "scalar", "empty_cols"}
    # ties between leading dimensions: the larger one
    assert columnar.row_count({"a": np.ones(4), "b": np.ones(9)}) == 9
    assert columnar.row_count({"t": np.array(["x", "y"]), "s": np.array(1.0)}) is None


def test_round_trip_equal_and_read_only(store):
    art = mixed()
    assert store.put("k", art) is True
    back = store.get("k")
    assert set(back) == set(art) and back.summary == art.summary
    for name, value in art.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value)
    cols, rest = columnar.split(art, 300)
    for name in cols:
        assert not back[name].flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            back[name][0] = 0
    for name in rest:  # the small entry's arrays are decoded from npz, as before
        assert back[name].flags.writeable
    assert len(store) == 1 and store.keys() == ["k"]


def test_a_small_artifact_stays_one_npz_entry(cache_dir):
    with ArtifactStore(cache_dir, columnar_min_mb=1) as s:
        assert s.put("k", mixed(100)) is False  # well under 1 MB
        assert list(s.cache.iterkeys()) == ["k"]
        assert s.get("k")["embedding"].flags.writeable
        big = Artifact({"x": np.zeros(300_000, np.float32)})  # 1.14 MB
        assert s.put("big", big) is True
        assert (s.cache.get("big", read=False) or b"")[:6] == MANIFEST_MAGIC


def test_threshold_from_the_environment(cache_dir, monkeypatch):
    monkeypatch.setenv("LOUPE_COLUMNAR_MIN_MB", "0")
    assert ArtifactStore(cache_dir).columnar_min_mb == 0
    monkeypatch.delenv("LOUPE_COLUMNAR_MIN_MB")
    assert ArtifactStore(cache_dir).columnar_min_mb == columnar.DEFAULT_COLUMNAR_MIN_MB
    monkeypatch.setenv("LOUPE_COLUMNAR_MIN_MB", "lots")
    with pytest.raises(CacheError, match="LOUPE_COLUMNAR_MIN_MB='lots'"):
        ArtifactStore(cache_dir)


def test_writing_holds_no_second_copy_of_the_arrays(store):
    """Contiguous arrays go to Arrow without a copy: Arrow's pool never holds their bytes."""
    rng = np.random.default_rng(1)
    art = Artifact({"e": rng.random((200_000, 16)).astype(np.float32),  # 12.8 MB
                    "p": rng.random(200_000)})
    pool = pa.default_memory_pool()
    before = pool.max_memory()
    store.put("k", art)
    assert pool.max_memory() - before < MB


def test_reading_maps_lazily_only_touched_columns_are_paged_in(store):
    n = 12_000_000  # two 48 MB float32 columns
    store.put("k", Artifact({"a": np.full(n, 1, np.float32), "b": np.full(n, 2, np.float32)}))
    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    back = store.get("k")  # checks the sha256 by chunked reads, maps, reads nothing else
    rss1 = proc.memory_info().rss
    assert rss1 - rss0 < 8 * MB
    assert float(back["a"].sum(dtype=np.float64)) == n
    rss2 = proc.memory_info().rss
    assert 40 * MB < rss2 - rss1 < 60 * MB  # column a is paged in, column b is not


def flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


@pytest.mark.parametrize("damage", [flip_middle, truncate, lambda p: p.write_bytes(b"")],
                         ids=["bit flipped", "truncated", "emptied"])
def test_a_damaged_columns_file_reads_as_absent_and_is_dropped(store, caplog, damage):
    store.put("k", mixed())
    damage(columns_file(store, "k"))
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        assert store.get("k") is None
    assert "cache entry k is corrupted" in caplog.text
    assert "k" not in store and "k" + COLUMNS_SUFFIX not in store  # both dropped
    store.put("k", mixed())  # recomputed and stored again
    np.testing.assert_array_equal(store.get("k")["embedding"], mixed()["embedding"])


def test_a_manifest_whose_columns_entry_was_evicted_reads_as_absent(store, caplog):
    store.put("k", mixed())
    store.cache.delete("k" + COLUMNS_SUFFIX)
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        assert store.get("k") is None
    assert "columns entry is gone" in caplog.text and "k" not in store


def test_a_columns_file_removed_under_the_index_reads_as_absent(store):
    store.put("k", mixed())
    columns_file(store, "k").unlink()
    assert store.get("k") is None and "k" not in store


def plant(store: ArtifactStore, key: str, table: pa.Table, manifest: dict) -> None:
    """A columns entry holding ``table`` and a small entry whose manifest says ``manifest``
    (with the planted file's true sha256: only the schema check can refuse it)."""
    assert store.cache is not None  # opened: the folder exists
    sink = store.folder / "planted.arrow"
    with pa.OSFile(str(sink), "wb") as out, ipc.new_file(out, table.schema) as writer:
        writer.write_table(table)
    with open(sink, "rb") as fh:
        manifest = {**manifest, "sha256": columnar.sha256_of(fh)}
        store._set(key + COLUMNS_SUFFIX, fh)
    store._set(key, _encode({}, {}, manifest))


FLOATS = {"rows": 4, "columns": {"x": {"dtype": "float32", "shape": [4]}}}
META = {columnar.METADATA_KEY: json.dumps(FLOATS)}


@pytest.mark.parametrize("table, why", [
    (pa.table({"x": pa.array(["a", "b", "c", "d"])}, metadata=META), "has type string"),
    (pa.table({"x": pa.array([1.0, 2.0, 3.0, 4.0], pa.float64())}, metadata=META),
     "has type double, expected float"),
    (pa.table({"x": pa.array([1.0, None, 3.0, 4.0], pa.float32())}, metadata=META),
     "has nulls"),
    (pa.table({"x": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32())}),
     "metadata differ from the manifest"),
    (pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ones((4, 1), np.float32))},
              metadata=META), "has type extension<arrow.fixed_shape_tensor"),
    (pa.table({"x": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
               "y": pa.array([1, 2, 3, 4])}, metadata=META), "differ from the manifest's"),
], ids=["string", "float64 for float32", "nulls", "no metadata", "extension", "extra"])
def test_a_foreign_columns_file_is_refused(store, caplog, table, why):
    plant(store, "k", table, FLOATS)
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        assert store.get("k") is None
    assert "cache entry k is corrupted" in caplog.text and why in caplog.text
    assert "k" not in store


def test_a_planted_loupe_like_file_is_served(store):
    """The refusals above come from the schema check, not from the planting: a table Loupe
    would write, planted the same way, is served."""
    plant(store, "k", pa.table({"x": pa.array([1, 2, 3, 4], pa.float32())}, metadata=META),
          FLOATS)
    assert store.get("k")["x"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_a_columns_key_is_not_an_artifact(store):
    store.put("k", mixed())
    assert store.get("k" + COLUMNS_SUFFIX) is None
    assert store.get("k") is not None  # the lookup above dropped nothing
    with pytest.raises(ValueError, match="reserved"):
        store.put("x" + COLUMNS_SUFFIX, mixed())


def test_eviction_under_the_size_limit_still_works(cache_dir):
    limit = 2_000_000
    with ArtifactStore(cache_dir, size_limit_gb=limit / 1024**3, columnar_min_mb=0) as s:
        for i in range(30):
            s.put(f"k{i}", Artifact({"x": np.full(50_000, i, np.float32)}))  # ~200 KB
            assert s.get(f"k{i}")["x"][0] == i  # what was just written is served
        assert s.volume_bytes() <= limit + 300_000
        assert 5 <= len(s) < 30 and len(value_files(s.folder)) < 15
        served = [k for k in s.keys() if s.get(k) is not None]
        assert "k29" in served and "k0" not in served
        for k in served:
            assert s.get(k)["x"][0] == int(k[1:])


def test_a_read_only_folder_serves_columnar_artifacts(cache_dir, monkeypatch):
    with ArtifactStore(cache_dir, columnar_min_mb=0) as s:
        s.put("k", mixed())

    def erofs(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("cache.store.open_index", erofs)
    with ArtifactStore(cache_dir, columnar_min_mb=0) as ro:
        assert ro.read_only and len(ro) == 1 and ro.keys() == ["k"]
        back = ro.get("k")
        np.testing.assert_array_equal(back["probs"], mixed()["probs"])
        assert not back["probs"].flags.writeable
