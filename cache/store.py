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
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cache import columnar
from cache.errors import CacheError, env_number
from cache.index import (
    ReadOnlyIndex,
    inspect_index,
    is_damage,
    open_index,
    open_value_file,
    set_aside,
    write_failure,
)

log = logging.getLogger(__name__)

MAGIC = b"LOUPE1"
MANIFEST_MAGIC = b"LOUPE2"  # an entry whose per-sample arrays are in its columns entry
SUMMARY_KEY = "__summary__"
COLUMNS_KEY = "__columns__"
COLUMNS_SUFFIX = ":columns"
DEFAULT_SIZE_LIMIT_GB = 20.0


def default_size_limit_gb() -> float:
    """``$LOUPE_CACHE_LIMIT_GB`` or 20 GB."""
    return env_number("LOUPE_CACHE_LIMIT_GB", DEFAULT_SIZE_LIMIT_GB, positive=True, unit="GB",
                      example="20")


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
    return _encode(artifact, artifact.summary)


def _encode(arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any],
            columns: Mapping[str, Any] | None = None) -> bytes:
    """``MAGIC + digest + npz``; with ``columns`` (the manifest of the per-sample
    arrays stored apart, see :mod:`cache.columnar`) ``MANIFEST_MAGIC`` instead, so an
    older Loupe drops the entry rather than serve an artifact without its columns."""
    buf = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, arr in arrays.items():
        if arr.dtype == object:
            arrays[name] = arr.astype(str)
    arrays[SUMMARY_KEY] = np.array(json.dumps(summary, default=_json_default))
    if columns is not None:
        arrays[COLUMNS_KEY] = np.array(json.dumps(columns))
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return (MAGIC if columns is None else MANIFEST_MAGIC) + hashlib.sha256(payload).digest() \
        + payload


def decode(blob: bytes) -> Artifact:
    """Inverse of :func:`encode`; raises ``ValueError`` on any damage."""
    arrays, summary, columns = _decode(blob)
    if columns is not None:
        raise ValueError("a manifest of columns stored apart: read it with ArtifactStore.get")
    return Artifact(arrays, summary)


def _decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any], dict | None]:
    """``(arrays, summary, columns manifest or None)``; ``ValueError`` on any damage."""
    if not isinstance(blob, bytes | bytearray) or blob[:len(MAGIC)] not in (MAGIC,
                                                                            MANIFEST_MAGIC):
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
    columns = arrays.pop(COLUMNS_KEY, None)
    if (columns is None) != (blob[:len(MAGIC)] == MAGIC):
        raise ValueError("columns manifest and header disagree")
    return arrays, summary, None if columns is None else json.loads(str(columns))


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
    columnar_min_mb : float, optional
        An artifact whose arrays total more than this many MB keeps its
        per-sample arrays in an Arrow file read memory-mapped (see
        :mod:`cache.columnar`); default
        :func:`~cache.columnar.default_columnar_min_mb` (``$LOUPE_COLUMNAR_MIN_MB``
        or 8). ``0``: every artifact with per-sample arrays.

    Notes
    -----
    Opening is lazy (first use). A folder that cannot be written is opened
    read-only: :meth:`get` serves what it holds and :meth:`put` raises a
    :class:`~cache.errors.CacheError`. A damaged index is healed at open or at
    the first query that finds the damage.

    A columnar artifact is two diskcache entries: its small entry under
    ``key`` (the other arrays, the summary and the manifest of the columns
    with their file's sha256) and the Arrow file under ``key + ":columns"``.
    Both count towards the size limit and are evicted like any entry; a
    small entry whose columns entry is gone or damaged reads as absent.
    Arrays read from the Arrow file are read-only.
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 size_limit_gb: float | None = None,
                 columnar_min_mb: float | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.size_limit_gb = size_limit_gb or default_size_limit_gb()
        if columnar_min_mb is None:
            columnar_min_mb = columnar.default_columnar_min_mb()
        self.columnar_min_mb = float(columnar_min_mb)
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
        """The artifact under ``key``, or ``None`` when absent or damaged (then dropped).

        ``key + ":columns"`` names the Arrow file of a columnar artifact, not an
        artifact: it reads as ``None`` (and is kept).
        """
        self._open()
        if key.endswith(COLUMNS_SUFFIX):
            return None
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
            arrays, summary, manifest = _decode(blob)
            if manifest is not None:
                arrays.update(self._read_columns(key, manifest))
            return Artifact(arrays, summary)
        except (ValueError, OSError, EOFError, KeyError, TypeError, AttributeError) as exc:
            log.warning("cache entry %s is corrupted (%s); dropping it and recomputing",
                        key[:12], exc)
            self.delete(key)
            return None

    def _read_columns(self, key: str, manifest: dict) -> dict[str, np.ndarray]:
        """The memory-mapped columns of ``key``; ``ValueError`` when gone or damaged."""
        ckey = key + COLUMNS_SUFFIX
        if self._reader is not None:
            fh = self._reader.open_file(ckey)
        else:
            handle = self._healing(lambda c: c.get(ckey, default=None, read=True, retry=True))
            if handle is not None and not hasattr(handle, "fileno"):
                raise ValueError("columns entry is not a file")
            fh = None
            if handle is not None:
                with handle:
                    filename = os.path.relpath(handle.name, self.folder)
                try:
                    fh = open_value_file(self.folder, filename)
                except FileNotFoundError:
                    fh = None
        if fh is None:
            raise ValueError("its columns entry is gone (evicted or deleted)")
        with fh:
            return columnar.read(fh, manifest)

    def put(self, key: str, artifact: Artifact, what: str | None = None) -> bool:
        """Store ``artifact`` under ``key`` (replacing any previous value).

        Parameters
        ----------
        key : str
            The content key.
        artifact : Artifact
            What to store.
        what : str, optional
            What the result is (e.g. a step name), for the error message.

        Returns
        -------
        bool
            Whether its per-sample arrays were stored columnar: :meth:`get`
            then returns them memory-mapped, and the caller may drop its own.

        Raises
        ------
        CacheError
            When the folder is read-only, full or not writable by this user;
            the entry is then absent and every other entry is as it was.
        """
        what = what or f"key {key[:12]}"
        if key.endswith(COLUMNS_SUFFIX):
            raise ValueError(f"key {key!r}: keys ending in {COLUMNS_SUFFIX!r} are reserved")
        self._open()
        if self._reader is not None:
            raise self._write_error(self._unwritable or "read-only", what)
        arrays = {k: np.asarray(v) for k, v in artifact.items()}
        rows = None
        if sum(a.nbytes for a in arrays.values()) > self.columnar_min_mb * 1024**2:
            rows = columnar.row_count(arrays)
        try:
            if rows is None:
                self._set(key, _encode(arrays, artifact.summary))
                return False
            cols, rest = columnar.split(arrays, rows)
            # The columns entry first: a put stopped between the two leaves no small entry.
            manifest = self._put_columns(key + COLUMNS_SUFFIX, cols)
            self._set(key, _encode(rest, artifact.summary, manifest))
            return True
        except (OSError, sqlite3.DatabaseError) as exc:
            reason = write_failure(exc)
            if reason is None:
                raise
            raise self._write_error(reason, what, exc) from exc

    def _set(self, key: str, value: bytes | BinaryIO) -> None:
        read = not isinstance(value, bytes)

        def store(cache) -> None:
            if read:
                value.seek(0)
            cache.disk.forget_last_written()
            try:
                cache.set(key, value, read=read, retry=True)
            except BaseException:
                cache.disk.remove_last_written()  # written, but its row never committed
                raise

        self._healing(store)

    def _put_columns(self, ckey: str, cols: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Write ``cols`` as an Arrow file (a temp file in the folder, streamed into
        diskcache under ``ckey``); the manifest with the file's sha256."""
        with tempfile.NamedTemporaryFile(dir=self.folder, prefix="columns-",
                                         suffix=".arrow.tmp") as tmp:
            manifest = columnar.write(cols, tmp.name)
            with open(tmp.name, "rb") as fh:
                manifest["sha256"] = columnar.sha256_of(fh)
                self._set(ckey, fh)
        return manifest

    def delete(self, key: str) -> None:
        """Drop ``key`` and its columns entry (nothing in a read-only folder, where it is
        only skipped)."""
        self._open()
        if self._reader is None:
            self._healing(lambda c: c.delete(key, retry=True))
            self._healing(lambda c: c.delete(key + COLUMNS_SUFFIX, retry=True))

    def __contains__(self, key: str) -> bool:
        self._open()
        if self._reader is not None:
            return key in self._reader
        return self._healing(lambda c: key in c)

    def keys(self) -> list[str]:
        """The keys of the stored artifacts (their columns entries left out)."""
        self._open()
        if self._reader is not None:
            keys = self._reader.keys()
        else:
            keys = self._healing(lambda c: list(c.iterkeys()))
        return [k for k in keys if isinstance(k, str) and not k.endswith(COLUMNS_SUFFIX)]

    def __len__(self) -> int:
        """The number of stored artifacts (a columnar one counts once)."""
        return len(self.keys())

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
