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


MADV_DONTNEED = 4  # Linux


@functools.lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def _shared_file_mappings() -> list[tuple[int, int]]:
    """``(start, end)`` of this process's read-only shared mappings of files
    (``/proc/self/maps``: permissions ``r--s``/``r-xs`` and a path)."""
    ranges = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                perms, path = parts[1], parts[5].strip() if len(parts) > 5 else ""
                if perms[1] == "-" and perms[3] == "s" and path.startswith("/"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
    except (OSError, ValueError, IndexError):
        return []
    return ranges


def _shared_file_mapping(start: int, end: int,
                         ranges: list[tuple[int, int]] | None = None) -> bool:
    """Whether ``[start, end)`` lies in one read-only shared mapping of a file."""
    ranges = _shared_file_mappings() if ranges is None else ranges
    return any(lo <= start and end <= hi for lo, hi in ranges)


def release_mapped_pages(array, _ranges: list[tuple[int, int]] | None = None) -> bool:
    """Drop this process's resident pages of a read-only array mapped from a file.

    A memory-mapped cache column (see :mod:`cache.columnar`) stays resident once
    read: the inference step's kept trunk (512 MB for 1,000,000 samples) counted
    in the process's memory long after MC dropout had read it. ``madvise(
    MADV_DONTNEED)`` unmaps the pages wholly inside the array; they are read
    again from the file (or the page cache) if touched. Only a C-contiguous
    array lying in a read-only *shared file* mapping is released (checked in
    ``/proc/self/maps``: on an anonymous mapping the call would zero data); any
    other array, or a system without ``madvise``, is left alone (False).

    Parameters
    ----------
    array : numpy.ndarray

    Returns
    -------
    bool
        Whether the pages were released.
    """
    madvise = _madvise()
    if madvise is None or array.flags.writeable or not array.flags.c_contiguous \
            or array.nbytes == 0:
        return False
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    if not _shared_file_mapping(start, end, _ranges):
        return False
    import mmap

    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page  # the pages wholly inside
    return hi > lo and madvise(lo, hi - lo, MADV_DONTNEED) == 0


def release_mapped_arrays(arrays) -> int:
    """:func:`release_mapped_pages` of each array (``/proc/self/maps`` read once).

    The engine calls it on a step's inputs and its dataset's images after the
    step ran: whatever the step read of memory-mapped cache columns and of the
    image store stops counting in the process's resident memory (a 1,000,000-
    sample run held about 2.8 GB of such pages at its peak).

    Parameters
    ----------
    arrays : iterable of numpy.ndarray (anything else is skipped)

    Returns
    -------
    int
        How many arrays were released.
    """
    import numpy as np

    arrays = [a for a in arrays if isinstance(a, np.ndarray)]
    if not arrays or _madvise() is None:
        return 0
    ranges = _shared_file_mappings()
    return sum(release_mapped_pages(a, ranges) for a in arrays)


def mapping_rss(array) -> int:
    """Resident bytes of the whole mapping that holds ``array`` (``/proc/self/smaps``'s
    ``Rss``), or -1 when it cannot be read (not Linux)."""
    address = array.__array_interface__["data"][0]
    try:
        with open("/proc/self/smaps") as fh:
            inside = False
            for line in fh:
                head = line.split(maxsplit=1)[0]
                if not head.endswith(":"):  # a mapping's first line: "lo-hi perms ..."
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = lo <= address < hi
                elif inside and head == "Rss:":
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return -1
