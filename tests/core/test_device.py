"""core/device.py: --device auto|cpu|cuda."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from core.device import read_only_tensor, resolve_device
from core.errors import ConfigError


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_a_read_only_array_becomes_a_tensor_without_a_warning(tmp_path, dtype):
    """A memory-mapped, read-only array (as the cache and the image stores give) is read
    into a tensor with its values and no warning; other warnings still show."""
    path = tmp_path / "a.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    mapped = np.load(path, mmap_mode="r")
    assert not mapped.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = read_only_tensor(mapped, dtype=dtype)
    assert t.dtype == (dtype or torch.float32)
    np.testing.assert_array_equal(t.numpy(), mapped)
    with pytest.warns(UserWarning, match="still shown"):
        read_only_tensor(mapped)
        warnings.warn("still shown", UserWarning, stacklevel=1)
