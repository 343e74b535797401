"""diskcache's index under the artifact store: opened safely, healed when damaged, or read-only.

diskcache keeps one SQLite index (``cache.db``: a row per key) and writes
values over 32 KB as files in hashed sub-folders (``ab/cd/<28 hex>.val``).
This module owns what can go wrong with them:

- :class:`SafeDisk` never unpickles (a row or key that would need pickle is
  refused: the folder may be shared, and pickle runs code), never reads a file
  outside the folder, and removes a value file whose write failed (disk full).
- :func:`open_index` checks the index before opening it; a damaged one is
  moved aside (``cache.db.damaged-<timestamp>``) and rebuilt empty, and the
  value files no row references any more are removed (else they would sit
  outside the size limit forever).
- :class:`ReadOnlyIndex` serves what a folder this process cannot write holds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_RAW

log = logging.getLogger(__name__)

VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
SQLITE_REASONS = {13: "full", 8: "read-only", 3: "permission", 14: "permission", 23: "permission"}
ERRNO_REASONS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only",
                 errno.EACCES: "permission", errno.EPERM: "permission"}


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` says the SQLite file itself is damaged (not busy, full or read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in SQLITE_DAMAGED:
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def write_failure(exc: BaseException) -> str | None:
    """``"full"``, ``"read-only"`` or ``"permission"`` when ``exc`` is one; else ``None``."""
    if isinstance(exc, OSError):
        return ERRNO_REASONS.get(exc.errno)
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return SQLITE_REASONS.get(code & 0xFF)
        text = str(exc)
        if "disk is full" in text:
            return "full"
        if "readonly" in text:
            return "read-only"
        if "unable to open" in text:
            return "permission"
    return None


def check_row(mode: int, filename: str | None) -> None:
    """Refuse a row Loupe never writes: a pickled value, or a file outside the folder."""
    if mode not in (MODE_RAW, MODE_BINARY):
        raise ValueError(f"value mode {mode} refused (Loupe stores raw bytes only, never pickle)")
    if mode == MODE_BINARY and not (isinstance(filename, str) and VALUE_FILE.fullmatch(filename)):
        raise ValueError(f"value file name {filename!r} refused")


def read_value_file(folder: str | os.PathLike, filename: str) -> bytes:
    """The bytes of value file ``filename`` under ``folder``, read only if it is a regular
    file inside the folder: a planted link (to ``/dev/zero``, outside the folder) or a
    FIFO is refused with ``ValueError`` instead of hanging or reading elsewhere."""
    with open_value_file(folder, filename) as fh:
        return fh.read()


def open_value_file(folder: str | os.PathLike, filename: str) -> BinaryIO:
    """Value file ``filename`` under ``folder`` opened for reading, with the checks of
    :func:`read_value_file` (inside the folder, not a link, a regular file)."""
    base = os.path.realpath(folder)
    path = os.path.join(base, filename)
    if not os.path.realpath(path).startswith(base + os.sep):
        raise ValueError(f"value file {filename!r} leads outside the cache folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise ValueError(f"value file {filename!r} is a link") from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise ValueError(f"value file {filename!r} is not a regular file")
    return fh


class SafeDisk(diskcache.Disk):
    """diskcache's ``Disk`` restricted to what Loupe stores: ``str`` keys and ``bytes`` values."""

    def __init__(self, directory, **kwargs) -> None:
        super().__init__(directory, **kwargs)
        self._written = threading.local()

    def get(self, key, raw):
        if not raw:
            raise ValueError("a pickled cache key was refused")
        return super().get(key, raw)

    def fetch(self, mode, filename, value, read):
        check_row(mode, filename)
        if mode == MODE_BINARY and not read:
            return read_value_file(self._directory, filename)
        return super().fetch(mode, filename, value, read)

    def _write(self, full_path, iterator, mode, encoding=None):
        self._written.path = None
        try:
            size = super()._write(full_path, iterator, mode, encoding)
        except FileExistsError:
            raise
        except BaseException:  # a half-written file is nobody's: remove it (disk full)
            with contextlib.suppress(OSError):
                os.remove(full_path)
            raise
        self._written.path = full_path
        return size

    def remove_last_written(self) -> None:
        """Remove the value file this thread wrote last (its row was never committed)."""
        path = getattr(self._written, "path", None)
        self._written.path = None
        if path is not None:
            with contextlib.suppress(OSError):
                os.remove(path)

    def forget_last_written(self) -> None:
        self._written.path = None


def _ro_uri(db: Path, immutable: bool = False) -> str:
    return f"file:{quote(str(db))}?{'immutable=1' if immutable else 'mode=ro'}"


def inspect_index(db: Path) -> str:
    """``"ok"``, ``"missing"`` (absent, empty or without diskcache's table) or ``"damaged"``."""
    if not db.exists():
        return "missing"
    try:
        con = sqlite3.connect(_ro_uri(db), uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            if "Cache" not in tables:
                return "missing"
            result = con.execute("PRAGMA quick_check").fetchall()
            con.execute("SELECT count(*) FROM Cache").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return "damaged"
        raise
    return "ok" if result == [("ok",)] else "damaged"


def set_aside(db: Path) -> Path:
    """Rename a damaged index (and its write-ahead log) to ``cache.db.damaged-<timestamp>``."""
    aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(db, aside)
    wal = db.with_name(db.name + "-wal")
    if wal.exists():  # never replay a damaged index's log into the new one
        os.replace(wal, aside.with_name(aside.name + "-wal"))
    with contextlib.suppress(FileNotFoundError):
        db.with_name(db.name + "-shm").unlink()
    return aside


def value_files(folder: Path) -> list[Path]:
    """Every diskcache value file under ``folder`` (``ab/cd/<28 hex>.val``)."""
    return [p for p in folder.glob("??/??/*.val")
            if VALUE_FILE.fullmatch(p.relative_to(folder).as_posix())]


def sweep_orphans(cache: diskcache.Cache) -> int:
    """Remove the value files that no row of ``cache`` references; returns how many."""
    folder = Path(cache.directory)
    with cache.transact(retry=True):  # no row can be committed while the files are listed
        rows = cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
        referenced = {name for (name,) in rows}
        removed = 0
        for path in value_files(folder):
            if path.relative_to(folder).as_posix() not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    for sub in sorted(folder.glob("??/??"), reverse=True) + sorted(folder.glob("??")):
        with contextlib.suppress(OSError):
            sub.rmdir()  # only empty ones go
    return removed


def open_index(folder: Path, **settings) -> diskcache.Cache:
    """Open (creating) the diskcache under ``folder``; a damaged index is rebuilt empty.

    Raises the ``OSError`` or ``sqlite3`` error of a folder that cannot be
    written (see :func:`write_failure`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    # SQLite says "unable to open" for a read-only folder; a file of our own says why.
    tempfile.TemporaryFile(dir=folder).close()
    db = folder / DBNAME
    state = inspect_index(db)
    if state == "damaged":
        aside = set_aside(db)
        log.warning("cache index %s was damaged: moved aside to %s and rebuilt empty; the "
                    "results it indexed are recomputed", db, aside.name)
    cache = diskcache.Cache(str(folder), disk=SafeDisk, **settings)
    if state != "ok":
        removed = sweep_orphans(cache)
        if removed:
            log.warning("cache folder %s: removed %d value files no index row refers to",
                        folder, removed)
    return cache


class ReadOnlyIndex:
    """Reads a diskcache folder this process cannot write: what it holds, and nothing else.

    SQLite is opened read-only (``mode=ro``; ``immutable=1`` when the folder
    cannot even take SQLite's shared-memory file). Rows are vetted with
    :func:`check_row`; a damaged index reads as empty, with a WARNING.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._local = threading.local()
        self._warned = False

    def _con(self) -> sqlite3.Connection | None:
        if getattr(self._local, "pid", None) == os.getpid():
            return self._local.con
        con = None
        db = self.folder / DBNAME
        if db.exists():
            for immutable in (False, True):
                try:
                    con = sqlite3.connect(_ro_uri(db, immutable), uri=True)
                    con.execute("SELECT count(*) FROM Cache").fetchall()
                    break
                except sqlite3.DatabaseError as exc:
                    con = None
                    if is_damage(exc) or immutable:
                        self._warn_unreadable(exc)
                        break
        self._local.con, self._local.pid = con, os.getpid()
        return con

    def _warn_unreadable(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cache index %s cannot be read (%s) and the folder cannot be written "
                        "to repair it: it serves nothing", self.folder / DBNAME, exc)

    def _query(self, sql: str, args: tuple = ()) -> list:
        con = self._con()
        if con is None:
            return []
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            self._warn_unreadable(exc)
            return []

    def get(self, key: str) -> bytes | None:
        """The stored bytes under ``key``, or ``None``; raises ``ValueError`` for a refused row."""
        rows = self._query("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
                           " AND (expire_time IS NULL OR expire_time > ?)", (key, time.time()))
        if not rows:
            return None
        ((mode, filename, value),) = rows
        check_row(mode, filename)
        if mode == MODE_RAW:
            return bytes(value)
        try:
            return read_value_file(self.folder, filename)
        except FileNotFoundError:
            return None

    def open_file(self, key: str) -> BinaryIO | None:
        """The value file stored under ``key`` opened for reading, or ``None`` when absent;
        raises ``ValueError`` for a refused row or one whose value is not a file."""
        rows = self._query("SELECT mode, filename FROM Cache WHERE key = ? AND raw = 1"
                           " AND (expire_time IS NULL OR expire_time > ?)", (key, time.time()))
        if not rows:
            return None
        ((mode, filename),) = rows
        check_row(mode, filename)
        if mode != MODE_BINARY:
            raise ValueError(f"cache entry {key[:12]} is not a file")
        try:
            return open_value_file(self.folder, filename)
        except FileNotFoundError:
            return None

    def __contains__(self, key: str) -> bool:
        return bool(self._query("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (key,)))

    def keys(self) -> list[str]:
        """Every key, in insertion order."""
        return [k for (k,) in self._query("SELECT key FROM Cache WHERE raw = 1 ORDER BY rowid")]

    def __len__(self) -> int:
        rows = self._query("SELECT count(*) FROM Cache")
        return int(rows[0][0]) if rows else 0

    def volume(self) -> int:
        """Bytes used: the index file plus the value files (as diskcache counts)."""
        rows = self._query("SELECT value FROM Settings WHERE key = 'size'")
        db = self.folder / DBNAME
        return (db.stat().st_size if db.exists() else 0) + (int(rows[0][0]) if rows else 0)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None and getattr(self._local, "pid", None) == os.getpid():
            con.close()
        self._local = threading.local()
