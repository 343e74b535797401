"""The content-addressed artifact store, on diskcache.

An artifact is a dict of numpy arrays plus a small JSON-able summary. It is
serialised as an ``.npz`` payload (no pickle) behind a sha256 digest:

    b"LOUPE1" + sha256(payload) + payload

diskcache writes a large value's file completely before it commits the row
that points at it, so a run killed mid-write leaves no entry at all; the
digest catches anything that was damaged later (a truncated or edited file),
and such an entry is logged, dropped and recomputed. diskcache's SQLite
index lets several readers (the dashboard) and a writer (the CLI) share one
folder.

What can go wrong with the folder is handled here and in :mod:`cache.index`:
a damaged index is moved aside and rebuilt (the results are recomputed); a
folder this process cannot write (read-only, full, another user's) still
serves what it holds, and a result that would need storing raises one
:class:`~cache.errors.CacheError` naming the folder and the fix; a failed
write leaves every stored entry as it was and no half-written file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import CacheError
from cache.index import (
    ReadOnlyIndex,
    inspect_index,
    is_damage,
    open_index,
    set_aside,
    write_failure,
)

log = logging.getLogger(__name__)

MAGIC = b"LOUPE1"
SUMMARY_KEY = "__summary__"
DEFAULT_SIZE_LIMIT_GB = 20.0


def default_size_limit_gb() -> float:
    """``$LOUPE_CACHE_LIMIT_GB`` or 20 GB."""
    value = os.environ.get("LOUPE_CACHE_LIMIT_GB")
    if value is None:
        return DEFAULT_SIZE_LIMIT_GB
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if limit <= 0:
        raise CacheError(f"LOUPE_CACHE_LIMIT_GB={value!r} must be a positive number of GB; "
                         "set it to e.g. 20 or unset it.")
    return limit


def default_cache_dir() -> Path:
    """``$LOUPE_CACHE`` or ``~/.cache/loupe/cache``."""
    env = os.environ.get("LOUPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loupe" / "cache"


class Artifact(dict):
    """A cached result: ``{name: np.ndarray}`` plus ``.summary`` (a JSON-able dict)."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None,
                 summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(arrays or {})
        self.summary: dict[str, Any] = dict(summary or {})


def encode(artifact: Artifact) -> bytes:
    """Serialise to ``MAGIC + digest + npz`` (object arrays are refused: no pickle)."""
    buf = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in artifact.items()}
    for name, arr in arrays.items():
        if arr.dtype == object:
            arrays[name] = arr.astype(str)
    arrays[SUMMARY_KEY] = np.array(json.dumps(artifact.summary, default=_json_default))
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).digest() + payload


def decode(blob: bytes) -> Artifact:
    """Inverse of :func:`encode`; raises ``ValueError`` on any damage."""
    if not isinstance(blob, bytes | bytearray) or blob[:len(MAGIC)] != MAGIC:
        raise ValueError("not a Loupe artifact")
    digest, payload = blob[len(MAGIC):len(MAGIC) + 32], blob[len(MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch")
    # np.savez stores members uncompressed; a compressed one could inflate without bound.
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            if any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist()):
                raise ValueError("compressed members refused")
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not an npz payload ({exc})") from None
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    summary = json.loads(str(arrays.pop(SUMMARY_KEY)))
    return Artifact(arrays, summary)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _fresh_connection_in_forked_children(cache) -> None:
    """Give a forked child (Dash's background jobs) its own sqlite connection.

    diskcache notices the new pid and *closes* the connection the child
    inherited, which is the parent's (SQLite: never use or close a connection
    across a fork). Forgetting it instead leaves the parent's untouched; the
    child opens a fresh one on first use. ``_local`` is diskcache's
    per-thread connection holder.
    """
    ref = weakref.ref(cache)

    def forget() -> None:
        c = ref()
        if c is not None:
            c._local = threading.local()

    os.register_at_fork(after_in_child=forget)


class ArtifactStore:
    """Content-addressed store of analysis results.

    Parameters
    ----------
    directory : path, optional
        Defaults to :func:`default_cache_dir`.
    size_limit_gb : float, optional
        diskcache evicts least-recently-used entries beyond this size
        (default :func:`default_size_limit_gb`).

    Notes
    -----
    Opening is lazy (first use). A folder that cannot be written is opened
    read-only: :meth:`get` serves what it holds and :meth:`put` raises a
    :class:`~cache.errors.CacheError`. A damaged index is healed at open or at
    the first query that finds the damage.
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 size_limit_gb: float | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.size_limit_gb = size_limit_gb or default_size_limit_gb()
        self._cache = None
        self._reader: ReadOnlyIndex | None = None
        self._unwritable: str | None = None  # "read-only", "full" or "permission"
        self._open_lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The diskcache folder holding the artifacts."""
        return self.directory / "artifacts"

    def is_available(self) -> bool:
        """Whether the store's folder still exists (it may be deleted under a running reader)."""
        return self.folder.is_dir()

    @property
    def read_only(self) -> bool:
        """Whether this store can only serve what it holds (its folder cannot be written)."""
        self._open()
        return self._reader is not None

    @property
    def cache(self):
        """The writable ``diskcache.Cache``; a :class:`CacheError` when the folder is not."""
        self._open()
        if self._cache is None:
            raise self._write_error(self._unwritable or "read-only", "anything")
        return self._cache

    def _open(self) -> None:
        if self._cache is not None or self._reader is not None:
            return
        with self._open_lock:
            if self._cache is not None or self._reader is not None:
                return
            try:
                self._cache = open_index(
                    self.folder,
                    size_limit=int(self.size_limit_gb * 1024**3),
                    eviction_policy="least-recently-used",
                    # Evict one entry per write: diskcache's default (10) can evict the entry
                    # just written when the store holds few, large artifacts.
                    cull_limit=1,
                    timeout=60,
                )
            except (OSError, sqlite3.DatabaseError) as exc:
                reason = write_failure(exc)
                if reason is None:
                    raise CacheError(f"cache folder {self.directory} cannot be opened ({exc}); "
                                     "pass --cache-dir to another folder.", self.directory) from exc
                self._unwritable = reason
                self._reader = ReadOnlyIndex(self.folder)
                log.warning("cache folder %s cannot be written (%s): serving the results it "
                            "holds, storing nothing new", self.directory, _REASONS[reason])
                return
            _fresh_connection_in_forked_children(self._cache)

    def _heal(self, exc: BaseException, force: bool) -> None:
        """Reopen after ``exc`` said the index is damaged; a damaged one is rebuilt empty.

        :func:`~cache.index.open_index` moves aside an index that fails SQLite's
        quick check. One that passes it (another process may have rebuilt it
        already) is kept unless ``force``: the query failed again on it.
        """
        db = self.folder / "cache.db"
        log.warning("cache index %s is damaged (%s)", db, exc)
        self.close()
        if force and db.exists() and _passes_check(db):
            aside = set_aside(db)
            log.warning("cache index %s moved aside to %s and rebuilt empty; the results it "
                        "indexed are recomputed", db, aside.name)
        self._open()

    def _healing(self, operation):
        """``operation(cache)``, healing a damaged index and trying again (twice at most)."""
        for attempt in range(3):
            try:
                return operation(self.cache)
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc) or attempt == 2:
                    raise
                self._heal(exc, force=attempt == 1)

    def _write_error(self, reason: str, what: str, exc: BaseException | None = None) -> CacheError:
        detail = f" ({exc.strerror if isinstance(exc, OSError) else exc})" if exc else ""
        where = self.directory
        if reason == "full":
            text = (f"cache folder {where}: the disk is full{detail}, so the result for {what} "
                    "cannot be stored (what the cache held is intact); free some space or pass "
                    "--cache-dir to a folder on another disk.")
        elif reason == "permission":
            text = (f"cache folder {where} is not writable by this user{detail} and holds no "
                    f"result for {what}; fix its permissions or pass --cache-dir to a writable "
                    "folder.")
        else:
            text = (f"cache folder {where} is read-only and holds no result for {what}; pass "
                    "--cache-dir to a writable folder.")
        return CacheError(text, where)

    def get(self, key: str) -> Artifact | None:
        """The artifact under ``key``, or ``None`` when absent or damaged (then dropped)."""
        self._open()
        try:
            if self._reader is not None:
                blob = self._reader.get(key)
            else:
                blob = self._healing(lambda c: c.get(key, default=None, retry=True))
        except (OSError, EOFError, ValueError) as exc:  # the value's file is gone or unreadable
            log.warning("cache entry %s unreadable (%s); recomputing", key[:12], exc)
            self.delete(key)
            return None
        if blob is None:
            return None
        try:
            return decode(blob)
        except (ValueError, OSError, EOFError, KeyError) as exc:
            log.warning("cache entry %s is corrupted (%s); dropping it and recomputing",
                        key[:12], exc)
            self.delete(key)
            return None

    def put(self, key: str, artifact: Artifact, what: str | None = None) -> None:
        """Store ``artifact`` under ``key`` (replacing any previous value).

        Parameters
        ----------
        key : str
            The content key.
        artifact : Artifact
            What to store.
        what : str, optional
            What the result is (e.g. a step name), for the error message.

        Raises
        ------
        CacheError
            When the folder is read-only, full or not writable by this user;
            the entry is then absent and every other entry is as it was.
        """
        what = what or f"key {key[:12]}"
        self._open()
        if self._reader is not None:
            raise self._write_error(self._unwritable or "read-only", what)
        blob = encode(artifact)

        def store(cache) -> None:
            cache.disk.forget_last_written()
            try:
                cache.set(key, blob, retry=True)
            except BaseException:
                cache.disk.remove_last_written()  # written, but its row never committed
                raise

        try:
            self._healing(store)
        except (OSError, sqlite3.DatabaseError) as exc:
            reason = write_failure(exc)
            if reason is None:
                raise
            raise self._write_error(reason, what, exc) from exc

    def delete(self, key: str) -> None:
        """Drop ``key`` (nothing in a read-only folder, where it is only skipped)."""
        self._open()
        if self._reader is None:
            self._healing(lambda c: c.delete(key, retry=True))

    def __contains__(self, key: str) -> bool:
        self._open()
        if self._reader is not None:
            return key in self._reader
        return self._healing(lambda c: key in c)

    def __len__(self) -> int:
        self._open()
        if self._reader is not None:
            return len(self._reader)
        return self._healing(len)

    def volume_bytes(self) -> int:
        self._open()
        if self._reader is not None:
            return self._reader.volume()
        return int(self._healing(lambda c: c.volume()))

    def clear(self) -> None:
        self._healing(lambda c: c.clear(retry=True))

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REASONS = {"full": "the disk is full", "read-only": "read-only",
            "permission": "permission denied"}


def _passes_check(db: Path) -> bool:
    try:
        return inspect_index(db) == "ok"
    except sqlite3.DatabaseError:
        return False
