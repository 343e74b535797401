"""Choosing the torch device from the ``--device auto|cpu|cuda`` flag."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from core.errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; "
                              "use --device cpu or auto.")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device {device!r} is not one of auto, cpu, cuda.")


def read_only_tensor(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.as_tensor(array, dtype)`` of an array that is only read, without torch's
    warning about read-only memory.

    Large results come back memory-mapped and read-only from the cache, and
    images from a read-only image store; torch shares such memory without a copy
    (or copies it when ``dtype`` differs) and warns that writing would be undefined.
    Only for tensors nothing writes into.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array, dtype=dtype)
