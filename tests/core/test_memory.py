"""core/memory.py: freed heap memory goes back to the operating system."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from core.memory import release_freed_memory


def _anonymous_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("RssAnon"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc only")
def test_memory_freed_under_a_kept_allocation_is_returned():
    """Many small arrays freed under a kept one stay resident (glibc's heap cannot shrink
    past the kept one) until trimmed."""
    release_freed_memory()
    before = _anonymous_mb()
    small = [np.ones(1000) for _ in range(100_000)]  # 8 KB each, below the mmap threshold
    keep = np.ones(1000)  # allocated above them: the heap's top stays in use
    del small
    held = _anonymous_mb() - before
    assert held > 400  # 800 MB freed but still resident
    assert release_freed_memory() is True
    assert _anonymous_mb() - before < held / 4
    del keep


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc: Linux")
def test_mapped_pages_are_released_and_read_again(tmp_path):
    import psutil

    from core.memory import release_mapped_pages

    path = tmp_path / "column.npy"
    np.save(path, np.arange(32 << 20, dtype=np.float32).reshape(-1, 128))  # 128 MB
    mapped = np.load(path, mmap_mode="r")  # a read-only shared file mapping, as the cache's
    proc = psutil.Process()
    before = proc.memory_info().rss
    total = float(mapped.sum(dtype=np.float64))
    assert proc.memory_info().rss - before > 100 * 2**20  # its pages are now resident
    assert release_mapped_pages(mapped)
    assert proc.memory_info().rss - before < 16 * 2**20
    assert float(mapped.sum(dtype=np.float64)) == total  # read again from the file


def test_memory_that_is_not_a_file_mapping_is_left_alone():
    from core.memory import release_mapped_pages

    anonymous = np.arange(1 << 22, dtype=np.float32)
    assert not release_mapped_pages(anonymous)  # writeable
    anonymous.flags.writeable = False
    assert not release_mapped_pages(anonymous)  # read-only, but the heap: never zeroed
    np.testing.assert_array_equal(anonymous[-3:], [4194301, 4194302, 4194303])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc: Linux")
def test_release_mapped_arrays_releases_each_mapped_array_once(tmp_path):
    from core.memory import mapping_rss, release_mapped_arrays

    arrays = []
    for i in range(3):
        np.save(tmp_path / f"c{i}.npy", np.full((1 << 20,), i, dtype=np.float32))  # 4 MB
        arrays.append(np.load(tmp_path / f"c{i}.npy", mmap_mode="r"))
    sums = [float(a.sum()) for a in arrays]
    assert all(mapping_rss(a) >= 4 << 20 for a in arrays)
    heap = np.ones(1 << 20, dtype=np.float32)
    heap.flags.writeable = False  # read-only, so only the mapping check can refuse it
    assert release_mapped_arrays([*arrays, heap, None, "text"]) == 3
    assert all(mapping_rss(a) <= 2 * mmap.PAGESIZE for a in arrays)  # partial pages only
    assert [float(a.sum()) for a in arrays] == sums
    assert heap.sum() == 1 << 20
