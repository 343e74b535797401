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
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
        from analysis.errors import ConfigError

        raise ConfigError(f"LOUPE_CACHE_LIMIT_GB={value!r} must be a positive number of GB.")
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
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 size_limit_gb: float | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.size_limit_gb = size_limit_gb or default_size_limit_gb()
        self._cache = None

    @property
    def folder(self) -> Path:
        """The diskcache folder holding the artifacts."""
        return self.directory / "artifacts"

    def is_available(self) -> bool:
        """Whether the store's folder still exists (it may be deleted under a running reader)."""
        return self.folder.is_dir()

    @property
    def cache(self):
        if self._cache is None:
            import diskcache

            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.folder),
                size_limit=int(self.size_limit_gb * 1024**3),
                eviction_policy="least-recently-used",
                # Evict one entry per write: diskcache's default (10) can evict the entry
                # just written when the store holds few, large artifacts.
                cull_limit=1,
                timeout=60,
            )
            _fresh_connection_in_forked_children(self._cache)
        return self._cache

    def get(self, key: str) -> Artifact | None:
        """The artifact under ``key``, or ``None`` when absent or damaged (then dropped)."""
        try:
            blob = self.cache.get(key, default=None, retry=True)
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

    def put(self, key: str, artifact: Artifact) -> None:
        """Store ``artifact`` under ``key`` (replacing any previous value)."""
        self.cache.set(key, encode(artifact), retry=True)

    def delete(self, key: str) -> None:
        self.cache.delete(key, retry=True)

    def __contains__(self, key: str) -> bool:
        return key in self.cache

    def __len__(self) -> int:
        return len(self.cache)

    def volume_bytes(self) -> int:
        return int(self.cache.volume())

    def clear(self) -> None:
        self.cache.clear(retry=True)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
