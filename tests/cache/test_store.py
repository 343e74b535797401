"""cache/store.py: encoding, corruption, a killed writer and a concurrent reader."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cache import Artifact, ArtifactStore, default_cache_dir
from cache.store import MAGIC, decode, encode

REPO = Path(__file__).resolve().parents[2]

dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3,
                                                                   max_side=6)))
summaries = st.dictionaries(st.text(max_size=6), st.one_of(
    st.integers(-1000, 1000), st.text(max_size=6), st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False)), max_size=4)
names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8).filter(lambda s: s != "__summary__")


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(names, arrays, max_size=4), summaries)
def test_encode_decode_round_trip(arrs, summary):
    back = decode(encode(Artifact(arrs, summary)))
    assert set(back) == set(arrs) and back.summary == summary
    for name, arr in arrs.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr)


def test_object_arrays_become_strings_and_numpy_summary_values():
    art = Artifact({"ids": np.array(["mnist:test:0", "mnist:test:1"], dtype=object)},
                   {"acc": np.float32(0.5), "n": np.int64(2), "v": np.arange(2)})
    back = decode(encode(art))
    assert back["ids"].tolist() == ["mnist:test:0", "mnist:test:1"]
    assert back.summary == {"acc": 0.5, "n": 2, "v": [0, 1]}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_any_flipped_byte_is_detected(position, flip):
    blob = bytearray(encode(Artifact({"x": np.arange(100, dtype=np.float32)}, {"a": 1})))
    position %= len(blob)
    blob[position] ^= flip
    with pytest.raises(ValueError):
        decode(bytes(blob))


def test_truncated_and_foreign_blobs_are_refused():
    blob = encode(Artifact({"x": np.ones(10)}))
    for bad in (blob[:-1], blob[:len(MAGIC) + 10], b"", b"LOUPE0" + blob[6:], "text"):
        with pytest.raises(ValueError):
            decode(bad)


def test_put_get_len_delete_and_size_limit(cache_dir):
    with ArtifactStore(cache_dir, size_limit_gb=0.5) as store:
        assert store.get("absent") is None
        store.put("k", Artifact({"a": np.arange(3)}, {"s": 1}))
        assert "k" in store and len(store) == 1
        assert store.get("k")["a"].tolist() == [0, 1, 2] and store.get("k").summary == {"s": 1}
        assert store.cache.size_limit == int(0.5 * 1024**3)
        store.delete("k")
        assert "k" not in store and len(store) == 0


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LOUPE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LOUPE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "loupe" / "cache"


def value_files(directory: Path) -> list[Path]:
    return sorted((directory / "artifacts").rglob("*.val"))


def flip_bytes_inside(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    for i in range(mid, mid + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupted_entry_is_detected_logged_and_dropped(cache_dir, caplog):
    store = ArtifactStore(cache_dir)
    big = np.random.default_rng(0).random(50_000).astype(np.float32)  # > diskcache's 32 KB
    store.put("key-one", Artifact({"x": big}))
    (val,) = value_files(cache_dir)
    flip_bytes_inside(val)
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        assert store.get("key-one") is None
    assert any("corrupted" in r.getMessage() for r in caplog.records)
    assert "key-one" not in store  # dropped, so the next run recomputes it
    store.put("key-one", Artifact({"x": big}))
    np.testing.assert_array_equal(store.get("key-one")["x"], big)
    store.close()


def test_missing_value_file_is_a_miss_and_rewritten(cache_dir):
    store = ArtifactStore(cache_dir)
    store.put("k", Artifact({"x": np.zeros(40_000)}))
    for val in value_files(cache_dir):
        val.unlink()
    # diskcache reads a vanished value file as a miss (it cannot tell it from a concurrent
    # replace), so the row is left for the recomputed value to overwrite.
    assert store.get("k") is None
    store.put("k", Artifact({"x": np.ones(40_000)}))
    assert store.get("k")["x"].sum() == 40_000 and len(value_files(cache_dir)) == 1
    store.close()


# -- processes --------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, signal, sys, time, numpy as np
    import diskcache.core
    from cache import Artifact, ArtifactStore
    directory, count, size, keys, kill_at = sys.argv[1:]
    count, size, keys, kill_at = int(count), int(size), int(keys), int(kill_at)

    def write_half_then_die(self, full_path, iterator, mode, encoding=None):
        data = b"".join(iterator)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        with open(full_path, mode) as fh:
            fh.write(data[:len(data) // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    store = ArtifactStore(directory)
    for i in range(count):
        x = np.random.default_rng(i).random(size).astype(np.float32)
        if i == kill_at:  # SIGKILL this process halfway through writing the value file
            diskcache.core.Disk._write = write_half_then_die
        store.put(f"entry-{i % keys}", Artifact({"x": x}, {"i": i}))
        print(i, flush=True)
        time.sleep(0.01)  # let a concurrent reader in between puts
""")


def expected_entry(i: int, size: int) -> np.ndarray:
    return np.random.default_rng(i).random(size).astype(np.float32)


def start_writer(directory: Path, count: int, size: int, keys: int | None = None,
                 kill_at: int = -1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(directory), str(count), str(size), str(keys or count), str(kill_at)]
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def check_every_entry(store: ArtifactStore, size: int, keys: int | None = None) -> dict:
    """Each entry read back is complete and right; returns ``{key: writer's index}``."""
    seen = {}
    for key in list(store.cache.iterkeys()):
        art = store.get(key)
        if art is None:
            continue
        i = art.summary["i"]
        assert key == f"entry-{i % (keys or 10**9)}"
        np.testing.assert_array_equal(art["x"], expected_entry(i, size))
        seen[key] = i
    return seen


def test_writer_killed_at_a_random_moment(cache_dir):
    size = 6_000_000  # 24 MB a value: a put takes long enough to be killed inside it
    writer = start_writer(cache_dir, 50, size)
    assert writer.stdout.readline().strip() == "0"
    time.sleep(0.15)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    store = ArtifactStore(cache_dir)
    seen = check_every_entry(store, size)
    assert 1 <= len(seen) < 50 and len(seen) == len(store)
    store.put("after", Artifact({"x": np.ones(3)}))  # and the store still takes writes
    assert store.get("after")["x"].tolist() == [1.0, 1.0, 1.0]
    store.close()


@pytest.mark.parametrize("keys", [None, 1], ids=["new key", "replacing a key"])
def test_writer_killed_inside_the_value_file_write(cache_dir, keys):
    size = 200_000
    writer = start_writer(cache_dir, 3, size, keys=keys, kill_at=2)
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == -signal.SIGKILL and out.split() == ["0", "1"]
    full = 4 * size  # float32 payload bytes; a finished value file is a little larger
    half_written = [p for p in value_files(cache_dir) if p.stat().st_size < 0.6 * full]
    assert half_written, "the writer should have died with a half-written value file"
    store = ArtifactStore(cache_dir)
    seen = check_every_entry(store, size, keys)
    # the two finished puts are intact; the killed one left no entry (or the old value)
    assert seen == ({"entry-0": 0, "entry-1": 1} if keys is None else {"entry-0": 1})
    assert len(store) == len(seen)
    store.close()


def test_concurrent_reader_while_a_writer_writes(cache_dir):
    size = 400_000
    writer = start_writer(cache_dir, 40, size)
    reader = ArtifactStore(cache_dir)
    reads = 0
    deadline = time.monotonic() + 120
    while writer.poll() is None and time.monotonic() < deadline:
        reads += len(check_every_entry(reader, size))
    writer.wait(timeout=30)
    assert writer.returncode == 0
    assert reads > 0  # the reader saw entries while the writer was still writing
    assert len(check_every_entry(reader, size)) == 40
    reader.close()


def test_size_limit_evicts_least_recently_used(cache_dir):
    limit = 1_000_000
    with ArtifactStore(cache_dir, size_limit_gb=limit / 1024**3) as store:
        for i in range(30):
            store.put(f"k{i}", Artifact({"x": np.full(25_000, i, np.float32)}))  # ~100 KB
            # what was just written is never evicted by its own put
            assert store.get(f"k{i}")["x"][0] == i
            if i == 5:
                assert store.get("k0")["x"][0] == 0  # used: now more recent than k1..k5
            if i == 12:  # over the limit since about the 10th put
                assert "k0" in store and "k1" not in store  # the least recently used went
        assert 5 <= len(store) < 30 and store.volume_bytes() <= limit + 150_000


def test_a_forked_child_never_touches_the_parents_connection(tmp_path):
    """Dash's background jobs are forks: the child opens its own sqlite connection and
    leaves the parent's open and usable."""
    store = ArtifactStore(tmp_path)
    store.put("a", Artifact({"x": np.arange(3)}))
    parent_con = store.cache._local.con
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it inherited a connection, then use the store
        inherited = getattr(store.cache._local, "con", None) is not None
        ok = store.get("a") is not None
        store.put("b", Artifact({"y": np.ones(2)}))
        os.write(write, f"{int(inherited)}{int(ok)}".encode())
        os._exit(0)
    os.close(write)
    report = os.read(read, 2).decode()
    os.waitpid(pid, 0)
    assert report == "01"  # no inherited connection; the child could read
    assert store.cache._local.con is parent_con  # the parent's connection is still its own
    started = time.perf_counter()
    store.put("c", Artifact({"z": np.zeros(1)}))
    assert store.get("b") is not None and store.get("c") is not None
    assert time.perf_counter() - started < 5  # no lock left behind
