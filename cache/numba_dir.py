"""numba's on-disk cache, in a private per-user folder outside every shared cache.

numba loads its cache index files (``*.nbi``) with :mod:`pickle`: whoever can
write to the folder it caches in gets code run in the next process that
compiles UMAP. So the folder must be one that only this user can write:
``$XDG_CACHE_HOME/loupe/numba-<uid>`` (``~/.cache/loupe/numba-<uid>``),
created with mode 0700, never Loupe's artifact cache (which may be shared).

numba reads ``NUMBA_CACHE_DIR`` when it is imported (and again when the
``NUMBA_*`` environment changes), and a jitted function picks its cache folder
when it is decorated (when ``umap`` is imported). So
:func:`configure_numba_cache` is called once, at process start, by the command
lines, before anything imports numba; nothing changes ``os.environ`` later.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "NUMBA_CACHE_DIR"


def default_numba_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/loupe/numba-<uid>``, or ``~/.cache/loupe/numba-<uid>``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "loupe" / f"numba-{os.geteuid()}"


def unsafe_reason(directory: Path) -> str | None:
    """Why ``directory`` must not hold numba's cache, or ``None`` when it is safe.

    Safe means: a directory owned by this process's user that neither its group
    nor others can write to (what they could write, numba would unpickle).
    """
    try:
        st = os.stat(directory)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by its group or by everyone (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _point_numba_at(directory: Path) -> None:
    os.environ[ENV] = str(directory)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:  # already imported: its config was read at import
        numba_config.CACHE_DIR = str(directory)


def _throwaway_dir() -> Path:
    """A fresh private folder (mode 0700), removed at exit: caching is off in effect.

    numba has no switch to turn ``cache=True`` off, and it raises when no
    folder is usable; an empty folder nobody else can write is the same as no
    cache, and nothing from another process is ever loaded from it.
    """
    path = Path(tempfile.mkdtemp(prefix="loupe-numba-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def configure_numba_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Point numba's cache at a private per-user folder; call once at process start.

    Parameters
    ----------
    directory : path, optional
        The folder to use. Default: ``$NUMBA_CACHE_DIR`` when the user set it,
        else :func:`default_numba_cache_dir` (created with mode 0700).

    Returns
    -------
    Path or None
        The folder numba caches in, or ``None`` when the folder was refused
        (owned by another user, or group/world-writable): then numba caches
        in a throw-away private folder for this process only, and a WARNING
        says why. Never raises for an unusable folder.
    """
    if directory is None:
        directory = os.environ.get(ENV) or default_numba_cache_dir()
    directory = Path(directory).expanduser()
    try:
        if not directory.exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
    except OSError as exc:
        reason: str | None = f"cannot be created ({exc.strerror})"
    else:
        reason = unsafe_reason(directory)
    if reason is not None:
        log.warning("numba cache folder %s %s: numba's compiled-code cache is off for this "
                    "process (UMAP compiles again); make the folder yours with mode 0700 or "
                    "set NUMBA_CACHE_DIR to one", directory, reason)
        _point_numba_at(_throwaway_dir())
        return None
    _point_numba_at(directory)
    return directory
