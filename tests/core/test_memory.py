"""core/memory.py: freed heap memory goes back to the operating system."""

from __future__ import annotations

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
