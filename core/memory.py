"""Giving memory the process has freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> bool:
    """Return the heap memory freed so far to the OS (glibc's ``malloc_trim(0)``).

    glibc keeps freed memory in the process for reuse, and a large structure
    freed in the middle of the heap stays resident: after the ``slices`` step's
    Leiden run on a 200,000-sample graph the process held 278 MB more than
    before, 30 MB after trimming (900 MB at 1,000,000 samples). The engine calls
    this after each computed step, so the next one starts from what is really in
    use. A no-op (False) where the C library is not glibc.

    Returns
    -------
    bool
        Whether any memory was returned.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
