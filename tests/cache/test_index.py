"""cache/index.py through the store: a damaged index heals, an unwritable folder is read-only,
a failed write harms nothing, and no row is ever unpickled."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cache import Artifact, ArtifactStore, CacheError
from cache.columnar import default_columnar_min_mb
from cache.index import value_files
from cache.store import COLUMNS_SUFFIX

BIG = 50_000  # float32 values: 200 KB, over diskcache's 32 KB, so stored as a value file
# The value files filled_store leaves: one per big entry, plus the small one's Arrow file when
# every artifact is stored columnar (LOUPE_COLUMNAR_MIN_MB=0; a columns entry is always a file).
FILLED_FILES = 4 if default_columnar_min_mb() == 0 else 3


def big(i: int) -> np.ndarray:
    return np.full(BIG, i, np.float32)


def filled_store(directory: Path, n: int = 3) -> None:
    """``n`` entries with value files plus one small one kept inside the index."""
    with ArtifactStore(directory) as store:
        for i in range(n):
            store.put(f"k{i}", Artifact({"x": big(i)}, {"i": i}))
        store.put("small", Artifact({"x": np.arange(3)}))


def db_of(directory: Path) -> Path:
    return directory / "artifacts" / "cache.db"


def flip_header(db: Path) -> None:
    raw = bytearray(db.read_bytes())
    for i in range(0, 16):
        raw[i] ^= 0xFF
    db.write_bytes(bytes(raw))


def flip_pages(db: Path) -> None:
    """Every b-tree page header after the first: the file opens, its tables do not read."""
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    for start in range(page, len(raw), page):
        raw[start:start + 12] = b"\xa5" * 12
    db.write_bytes(bytes(raw))


def truncate(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 2)


DAMAGE = {"flipped header": flip_header, "flipped pages": flip_pages, "truncated": truncate,
          "emptied": lambda db: db.write_bytes(b""), "deleted": Path.unlink}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_is_set_aside_rebuilt_and_its_orphans_removed(cache_dir, caplog, damage):
    filled_store(cache_dir)
    folder = cache_dir / "artifacts"
    assert len(value_files(folder)) == FILLED_FILES
    DAMAGE[damage](db_of(cache_dir))
    with caplog.at_level(logging.WARNING, logger="cache"), ArtifactStore(cache_dir) as store:
        assert store.get("k0") is None and store.get("small") is None  # recomputed, not raised
        assert len(store) == 0
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert f"removed {FILLED_FILES} value files no index row refers to" in messages
        assert value_files(folder) == []  # nothing left outside the size limit
        if damage in ("flipped header", "flipped pages", "truncated"):
            (aside,) = [p for p in folder.glob("cache.db.damaged-*") if p.name[-1].isdigit()]
            assert f"was damaged: moved aside to {aside.name}" in messages
        else:
            assert list(folder.glob("cache.db.damaged-*")) == []
        store.put("k1", Artifact({"x": big(7)}))
        np.testing.assert_array_equal(store.get("k1")["x"], big(7))
    with ArtifactStore(cache_dir) as again:  # and the rebuilt index opens cleanly next time
        np.testing.assert_array_equal(again.get("k1")["x"], big(7))
        assert len(value_files(folder)) == 1


def test_damage_found_by_a_query_after_open_heals_then(cache_dir, caplog):
    filled_store(cache_dir)
    store = ArtifactStore(cache_dir)
    assert store.get("k1")["x"][0] == 1  # open and sound
    flip_pages(db_of(cache_dir))  # damaged under the open store's connection
    with caplog.at_level(logging.WARNING, logger="cache"):
        assert store.get("k2") is None
    assert any("moved aside" in r.getMessage() for r in caplog.records)
    store.put("k2", Artifact({"x": big(2)}))
    assert store.get("k2")["x"][0] == 2
    store.close()


def test_a_query_failing_as_damaged_on_an_open_index_heals(cache_dir, caplog, monkeypatch):
    """The damage is found by a query, not at open: the store heals there and carries on."""
    filled_store(cache_dir)
    store = ArtifactStore(cache_dir)
    assert len(store) == 4
    real = store.cache
    calls = []

    def damaged(*args, **kwargs):
        calls.append(1)
        err = sqlite3.DatabaseError("database disk image is malformed")
        err.sqlite_errorcode = 11
        raise err

    monkeypatch.setattr(real, "get", damaged)
    with caplog.at_level(logging.WARNING, logger="cache"):
        # reopened: the index passes SQLite's check (it was sound), so it is kept and serves
        np.testing.assert_array_equal(store.get("k0")["x"], big(0))
    assert calls == [1] and store.cache is not real
    assert "is damaged (database disk image is malformed)" in caplog.text
    assert "moved aside" not in caplog.text and len(store) == 4
    store.close()


# -- unpickling ------------------------------------------------------------------------------
class Boom:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["LOUPE_TEST_MARKER"]),))


def test_a_pickled_row_is_refused_never_loaded(cache_dir, tmp_path, monkeypatch, caplog):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LOUPE_TEST_MARKER", str(marker))
    filled_store(cache_dir)
    con = sqlite3.connect(db_of(cache_dir))
    con.execute("UPDATE Cache SET mode = 4, filename = NULL, value = ? WHERE key = 'small'",
                (pickle.dumps(Boom()),))
    con.execute("UPDATE Cache SET filename = '../../../etc/hostname' WHERE key IN (?, ?) "
                "AND filename IS NOT NULL", ("k0", "k0" + COLUMNS_SUFFIX))
    con.commit()
    con.close()
    with caplog.at_level(logging.WARNING, logger="cache.store"), ArtifactStore(cache_dir) as s:
        assert s.get("small") is None and s.get("k0") is None
        assert "value mode 4 refused" in caplog.text and "file name" in caplog.text
        assert s.get("k1")["x"][0] == 1  # the others are served
    assert not marker.exists()


# -- unwritable folders ---------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MB tmpfs (root and a working ``mount`` only) as ``remount(ro)``-able folder."""
    where = tmp_path / "mnt"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")

    def remount(*opts: str) -> None:
        subprocess.run(["mount", "-o", ",".join(("remount", *opts)), str(where)], check=True)

    yield where, remount
    subprocess.run(["umount", "-l", str(where)], check=False)


def assert_read_only_store_serves_and_refuses(directory: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cache"), ArtifactStore(directory) as store:
        assert store.get("k1")["x"][0] == 1 and store.get("small")["x"].tolist() == [0, 1, 2]
        assert store.read_only and "k2" in store and len(store) == 4
        assert store.volume_bytes() > 3 * 4 * BIG
        assert store.get("absent") is None
        with pytest.raises(CacheError) as err:
            store.put("new", Artifact({"x": big(9)}), what="step umap of mnist:test")
        assert str(err.value) == (f"cache folder {directory} is read-only and holds no result "
                                  "for step umap of mnist:test; pass --cache-dir to a writable "
                                  "folder.")
        assert err.value.exit_code == 2
    assert "serving the results it holds" in caplog.text


def test_a_read_only_mount_serves_what_it_holds(tmpfs, caplog):
    where, remount = tmpfs
    filled_store(where / "c")
    before = {p: p.read_bytes() for p in (where / "c").rglob("*") if p.is_file()}
    remount("ro")
    assert_read_only_store_serves_and_refuses(where / "c", caplog)
    assert {p: p.read_bytes() for p in (where / "c").rglob("*") if p.is_file()} == before


def test_a_read_only_folder_simulated_without_mount(cache_dir, caplog, monkeypatch):
    """Where ``mount`` is not allowed: every write at the folder fails with EROFS."""
    filled_store(cache_dir)
    import cache.index

    def erofs(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache.index, "open_index", erofs)
    monkeypatch.setattr("cache.store.open_index", erofs)
    assert_read_only_store_serves_and_refuses(cache_dir, caplog)


def test_a_read_only_empty_folder_refuses_at_put_not_at_open(tmpfs):
    where, remount = tmpfs
    remount("ro")
    store = ArtifactStore(where / "never-made")
    assert store.get("k") is None and len(store) == 0 and "k" not in store
    with pytest.raises(CacheError, match=r"read-only and holds no result for key k"):
        store.put("k", Artifact({"x": np.ones(2)}))
    store.close()


def stored_state(directory: Path) -> dict:
    with ArtifactStore(directory) as store:
        return {k: store.get(k).summary.get("i") for k in store.keys()}


def test_disk_full_on_a_real_tmpfs_names_the_folder_and_harms_nothing(tmpfs):
    where, _ = tmpfs
    directory = where / "c"
    filled_store(directory)  # ~600 KB of 4 MB
    before = stored_state(directory)
    store = ArtifactStore(directory)
    with pytest.raises(CacheError) as err:
        store.put("huge", Artifact({"x": np.ones(2_000_000, np.float32)}), what="step tsne")
    message = str(err.value)
    assert message.startswith(f"cache folder {directory}: the disk is full (No space left on "
                              "device), so the result for step tsne cannot be stored")
    assert "--cache-dir" in message and err.value.exit_code == 2
    assert "huge" not in store
    store.close()
    assert stored_state(directory) == before
    assert len(value_files(directory / "artifacts")) == FILLED_FILES  # no half-written file
    with ArtifactStore(directory) as again:  # and a value that fits is still stored
        again.put("fits", Artifact({"x": big(5)}))
        assert again.get("fits")["x"][0] == 5


@pytest.mark.parametrize("code, fragment", [
    (errno.ENOSPC, "the disk is full (No space left on device)"),
    (errno.EACCES, "is not writable by this user (Permission denied) and holds no result"),
])
def test_a_failing_value_write_names_the_folder_and_harms_nothing(cache_dir, monkeypatch,
                                                                   code, fragment):
    filled_store(cache_dir)
    before = stored_state(cache_dir)
    import diskcache.core

    real_write = diskcache.core.Disk._write

    def half_then_fail(self, full_path, iterator, mode, encoding=None):
        def chunks():
            yield b"x" * 1000
            raise OSError(code, os.strerror(code))
        return real_write(self, full_path, chunks(), mode, encoding)

    store = ArtifactStore(cache_dir)
    monkeypatch.setattr(diskcache.core.Disk, "_write", half_then_fail)
    with pytest.raises(CacheError) as err:
        store.put("k1", Artifact({"x": big(99)}), what="step inference")  # replacing k1
    assert str(err.value).startswith(f"cache folder {cache_dir}")
    assert fragment in str(err.value) and "step inference" in str(err.value)
    monkeypatch.undo()
    store.close()
    assert stored_state(cache_dir) == before  # k1 still holds its old value
    assert len(value_files(cache_dir / "artifacts")) == FILLED_FILES


def test_a_full_disk_at_commit_leaves_no_orphan_value_file(cache_dir, monkeypatch):
    """SQLite reports the full disk when the row is committed: the value file goes too."""
    filled_store(cache_dir)
    store = ArtifactStore(cache_dir)
    real_insert = type(store.cache)._row_insert

    def full(self, *args):
        err = sqlite3.OperationalError("database or disk is full")
        err.sqlite_errorcode = 13
        raise err

    monkeypatch.setattr(type(store.cache), "_row_insert", full)
    with pytest.raises(CacheError, match="the disk is full"):
        store.put("new", Artifact({"x": big(4)}))
    monkeypatch.setattr(type(store.cache), "_row_insert", real_insert)
    assert "new" not in store and len(value_files(cache_dir / "artifacts")) == FILLED_FILES
    store.close()


def test_an_unknown_open_failure_is_a_cache_error(cache_dir):
    cache_dir.mkdir()
    (cache_dir / "artifacts").write_text("a file where the folder should be")
    with pytest.raises(CacheError, match=f"cache folder {cache_dir} cannot be opened"):
        ArtifactStore(cache_dir).get("k")



def test_a_value_file_replaced_by_a_link_or_a_fifo_is_refused_not_read(tmp_path):
    """A cache folder someone sent: a value file linked to /dev/zero (endless) or replaced
    by a FIFO (blocks on open) is refused; the entry is recomputed, nothing hangs."""
    import os
    import signal

    import numpy as np

    from cache import Artifact, ArtifactStore

    store = ArtifactStore(tmp_path / "c")
    big = Artifact({"x": np.arange(20_000, dtype=np.float64)})  # over diskcache's inline size
    store.put("a", big)
    store.put("b", big)
    store.close()
    values = sorted(p for p in (tmp_path / "c").rglob("*.val"))
    assert len(values) == 2
    values[0].unlink()
    values[0].symlink_to("/dev/zero")
    values[1].unlink()
    os.mkfifo(values[1])
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hung")))
    signal.alarm(20)
    try:
        again = ArtifactStore(tmp_path / "c")
        assert again.get("a") is None and again.get("b") is None
    finally:
        signal.alarm(0)


def test_a_compressed_npz_payload_is_refused():
    import hashlib
    import io

    import numpy as np
    import pytest

    from cache.store import MAGIC, decode

    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros(10_000))
    payload = buf.getvalue()
    with pytest.raises(ValueError, match="compressed"):
        decode(MAGIC + hashlib.sha256(payload).digest() + payload)
