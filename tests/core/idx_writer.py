"""Writers of small idx files (and damaged ones) for the dataset tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


def idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None
              ) -> bytes:
    """An idx payload: big-endian magic, the dimensions, then the uint8 values.

    ``magic`` and ``dims`` override the header (to build a lying file).
    """
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    if magic is None:
        magic = 0x0800 | len(dims)
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, **header) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array, **header)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "t10k",
                gz: bool = True) -> tuple[Path, Path]:
    """Write ``{prefix}-images-idx3-ubyte[.gz]`` and the labels file into ``folder``."""
    suffix = ".gz" if gz else ""
    img = write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
    lbl = write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return img, lbl


def tiny_digits(n: int = 12, fill: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 28, 28)`` uint8 images (pixel [0, 0] = ``fill``, a marker) and ``(n,)`` labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = fill
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


# -- bad files: (write it into a folder, what the DataError must say) ---------------------------
def _bad_truncated_gz(folder):
    images, labels = tiny_digits()
    img, _ = write_split(folder, images, labels)
    img.write_bytes(img.read_bytes()[:-20])
    return img


def _bad_magic(folder):
    images, labels = tiny_digits()
    img, _ = write_split(folder, images, labels)
    write_idx(img, images, magic=LABEL_MAGIC)
    return img


def _bad_shape(folder):
    images, labels = tiny_digits()
    img, _ = write_split(folder, images, labels)
    write_idx(img, images[:-1], dims=images.shape)  # header says 12 images, 11 present
    return img


def _bad_label(folder):
    images, labels = tiny_digits()
    labels[4] = 10
    return write_split(folder, images, labels)[1]


def _bad_count(folder):
    images, labels = tiny_digits()
    return write_split(folder, images, labels[:-2])[0]


def _missing_labels(folder):
    images, labels = tiny_digits()
    _, lbl = write_split(folder, images, labels)
    lbl.unlink()
    return lbl


BAD_IDX = {
    "truncated gz": (_bad_truncated_gz, "truncated or not gzip"),
    "wrong magic": (_bad_magic, "magic number 2049"),
    "mis-shaped payload": (_bad_shape, "header says shape"),
    "label out of range": (_bad_label, "label 10 is outside the class range 0..9"),
    "count mismatch": (_bad_count, "12 images but"),
    "missing labels": (_missing_labels, "Missing file"),
}
