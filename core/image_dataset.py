"""The in-memory (or memory-mapped) image dataset every reader returns, and its fingerprint."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from core.errors import ConfigError

log = logging.getLogger(__name__)


SPLIT_ALIASES = {"t10k": "test", "val": "test", "valid": "test", "validation": "test"}
FINGERPRINT_ROWS = 8192


def fingerprint_header(shape: tuple[int, ...], class_names: tuple[str, ...]) -> bytes:
    """What :attr:`ImageDataset.fingerprint` hashes before the pixels and labels."""
    return repr((tuple(int(v) for v in shape), class_names)).encode()


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name : str
        Dataset name as used in sample ids (``mnist``, ``folder-letters-3f9a1c``...).
    split : str
        ``train``, ``test`` or ``all``.
    images : np.ndarray
        ``(N, C, H, W)`` uint8 pixels; for a dataset read from an image store
        (:mod:`core.image_store`) a read-only ``np.memmap``: slice it by batch,
        never copy it whole.
    labels : np.ndarray
        ``(N,)`` int64 class indices in ``[0, len(class_names))``.
    class_names : tuple of str
    source : str
        Where the data came from; server-side only, never sent to a browser.
    native_shape : (C, H, W) or None
        The shape of the data on disk; ``None`` when the image files differ in size.
    conversion : str
        What loading changed, e.g. ``resized 1,797 images from 8x8 to 28x28``;
        empty when the images are as stored.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str = field(default="", repr=False)
    native_shape: tuple[int, int, int] | None = None
    conversion: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def key(self) -> str:
        """``<dataset>:<split>``, the prefix of every sample id."""
        return f"{self.name}:{self.split}"

    @cached_property
    def sample_ids(self) -> np.ndarray:
        """``(N,)`` object array of stable ids ``<dataset>:<split>:<index>``."""
        return np.array([f"{self.key}:{i}" for i in range(len(self))], dtype=object)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over pixels, labels, shape and class names (content, not path).

        Read in batches of :data:`FINGERPRINT_ROWS` images (the same digest as one
        pass), so a memory-mapped dataset is never copied whole.
        """
        h = hashlib.sha256(fingerprint_header(self.images.shape, self.class_names))
        for lo in range(0, len(self.images), FINGERPRINT_ROWS):
            h.update(np.ascontiguousarray(self.images[lo:lo + FINGERPRINT_ROWS]).data)
        h.update(np.ascontiguousarray(self.labels.astype(np.int64)).data)
        return h.hexdigest()

    def head(self, limit: int | None) -> ImageDataset:
        """The first ``limit`` samples (ids unchanged); ``None`` keeps all."""
        if limit is None or limit >= len(self):
            return self
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive number of samples, got {limit}.")
        return replace(self, images=self.images[:limit], labels=self.labels[:limit])
