"""``folder:PATH`` datasets: torchvision's ``ImageFolder`` layout, walked safely.

Layouts
-------
``PATH/<class>/.../<image>``
    One split, reported as ``all``; any ``--split`` serves it (logged once).
``PATH/{train,test}/<class>/.../<image>``
    Sub-folders named ``train`` and ``test`` (``val``, ``valid`` or
    ``validation`` stand for ``test``), each in ``ImageFolder`` layout; every
    non-hidden sub-folder of ``PATH`` must be one of these. ``--split`` picks
    one; the class names are the union over the splits, sorted, so labels
    agree between them.

The walk keeps ``ImageFolder``'s semantics (class = sorted sub-folder names,
files in sorted path order, the same extensions, symbolic links followed) with
these differences: hidden files and folders (``.ipynb_checkpoints``, macOS
``._x.png``) are skipped; a directory already walked for a class is not walked
again, so a link loop cannot multiply samples; and entries that are not regular
files (a FIFO named ``x.png``) are skipped with a warning, never opened.

The dataset name is ``folder-<basename>-<6 hex of sha256(resolved path)>``, so
two folders with the same basename never share sample ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from core.image_dataset import ImageDataset
from core.image_files import (
    IMG_EXTENSIONS,
    ShapeRequest,
    check_shape_request,
    has_image_extension,
    load_images,
)

log = logging.getLogger(__name__)

#: Sub-folder names of a split layout, and the split each one serves.
SPLIT_DIRS = {"train": "train", "test": "test", "val": "test", "valid": "test",
              "validation": "test"}


def dataset_name(kind: str, stem: str, path: Path) -> str:
    """``<kind>-<stem>-<6 hex of sha256 of the resolved absolute path>``.

    ``:`` is the sample-id separator, so it is replaced in ``stem``.
    """
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]
    return f"{kind}-{(stem or 'root').replace(':', '_')}-{digest}"


def _scandir_sorted(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"Cannot list {folder}: {exc.strerror or exc}; check that it exists "
                        "and is readable.") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symbolic links, as ImageFolder does
    except OSError:
        return False


def class_dirs(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    return [e.name for e in _scandir_sorted(folder) if _is_dir(e) and not e.name.startswith(".")]


@dataclass
class WalkResult:
    """Image files found under one class folder, and what was passed over."""

    files: list[str]
    skipped: list[str]  # not regular files (FIFO, socket, device)
    revisits: list[str]  # directories reached again through a link
    outside: list[str] = field(default_factory=list)  # links leaving the root


def walk_class(class_dir: Path, root: Path | None = None) -> WalkResult:
    """Image files under ``class_dir`` in ``ImageFolder``'s order, walked safely.

    Directories are identified by ``(st_dev, st_ino)``; one already walked for
    this class is not walked again (a link to a parent cannot loop). Files
    are checked with ``stat`` (following links) and only regular ones kept.
    A link (to a file or a directory) that resolves outside ``root`` (default
    ``class_dir``) is not followed: a dataset someone sent cannot pull in the
    rest of the disk.
    """
    inside = os.path.realpath(root or class_dir)

    def leaves_root(path: str) -> bool:
        real = os.path.realpath(path)
        return real != inside and not real.startswith(inside + os.sep)

    visited: set[tuple[int, int]] = set()
    per_dir: list[tuple[str, list[str]]] = []
    result = WalkResult([], [], [])
    # Real directories are walked before linked ones, so a directory reachable
    # both ways is listed under its real path.
    stack, linked = [str(class_dir)], []
    while stack or linked:
        folder = stack.pop() if stack else linked.pop(0)
        try:
            info = os.stat(folder)
        except OSError as exc:
            raise DataError(f"Cannot read {folder}: {exc.strerror or exc}.") from None
        if (info.st_dev, info.st_ino) in visited:
            result.revisits.append(folder)
            continue
        visited.add((info.st_dev, info.st_ino))
        names = []
        for entry in _scandir_sorted(Path(folder)):
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            if entry.is_symlink() and leaves_root(path):
                result.outside.append(path)
                continue
            if _is_dir(entry):
                (linked if entry.is_symlink() else stack).append(path)
            elif has_image_extension(entry.name):
                try:
                    mode = entry.stat().st_mode  # follows links; never opens the file
                except OSError as exc:
                    raise DataError(f"Cannot read {path}: {exc.strerror or exc} (a broken "
                                    "link?); remove it or fix the link.") from None
                if stat.S_ISREG(mode):
                    names.append(entry.name)
                else:
                    result.skipped.append(path)
        per_dir.append((folder, names))
    # ImageFolder sorts os.walk's (root, dirs, files) tuples: by directory path, then name.
    for folder, names in sorted(per_dir):
        result.files.extend(os.path.join(folder, n) for n in names)
    return result


def find_split_dirs(folder: Path) -> dict[str, Path]:
    """``{"train": ..., "test": ...}`` when ``folder`` has a split layout, else ``{}``."""
    subdirs = {d.lower(): d for d in class_dirs(folder)}
    if not subdirs or any(d not in SPLIT_DIRS for d in subdirs):
        return {}
    found: dict[str, Path] = {}
    # ``test`` wins over its aliases; then val, valid, validation in that order.
    for name in SPLIT_DIRS:
        if name in subdirs and SPLIT_DIRS[name] not in found:
            found[SPLIT_DIRS[name]] = folder / subdirs[name]
        elif name in subdirs:
            log.info("%s: using %s for the test split; %s is not used.", folder,
                     found[SPLIT_DIRS[name]], folder / subdirs[name])
    return found


def list_samples(split_dir: Path, class_names: list[str]) -> tuple[list[str], list[int]]:
    """Every image file of one split and its label index into ``class_names``."""
    files: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    revisits: list[str] = []
    outside: list[str] = []
    for label, cls in enumerate(class_names):
        if not (split_dir / cls).is_dir():
            continue
        walk = walk_class(split_dir / cls, split_dir)
        files += walk.files
        labels += [label] * len(walk.files)
        skipped += walk.skipped
        revisits += walk.revisits
        outside += walk.outside
    if skipped:
        log.warning("Skipped %d entries that are not regular files (FIFO, socket or device): "
                    "%s. Remove them from %s.", len(skipped), ", ".join(skipped[:5]), split_dir)
    if outside:
        log.warning("Not following %d symbolic links that lead outside %s: %s.",
                    len(outside), split_dir, ", ".join(outside[:5]))
    if revisits:
        log.warning("Not walking %d directories again (reached through a symbolic link to a "
                    "directory already walked): %s.", len(revisits), ", ".join(revisits[:5]))
    return files, labels


def load_image_folder(path: str, split: str = "all", *, image_shape: ShapeRequest | None = None,
                      limit: int | None = None) -> ImageDataset:
    """Load ``folder:PATH`` (see the module docstring for the layouts).

    Parameters
    ----------
    path : str
        The folder.
    split : str
        ``train``, ``test`` or ``all`` (already normalised).
    image_shape : (C, H, W), optional
        ``None`` entries keep the native value (see :func:`core.image_files.load_images`).
    limit : int, optional
        Decode only the first ``limit`` images.

    Raises
    ------
    DataError
        Not a folder, no images, the split is missing (the message lists the
        ones found), or an image file is unreadable, corrupt or too large.
    """
    folder = Path(path).expanduser()
    spec = f"folder:{path}"
    if not folder.is_dir():
        raise DataError(f"{spec}: {folder} is not a directory (expected an ImageFolder "
                        "layout: one sub-folder of images per class).")
    splits = find_split_dirs(folder)
    if splits:
        if split == "all":
            raise ConfigError(f"{spec} has split sub-folders "
                              f"{', '.join(f'{p.name}/' for p in splits.values())}; pick one "
                              f"with --split {' or --split '.join(sorted(splits))}.")
        if split not in splits:
            raise DataError(f"{spec} has no {split} split: found "
                            f"{', '.join(str(p) for p in splits.values())}. Use --split "
                            f"{' or --split '.join(sorted(splits))}, or add {folder}/{split}/.")
        class_names = sorted({c for d in splits.values() for c in class_dirs(d)})
        split_dir = splits[split]
    else:
        if split != "all":
            log.info("%s has no train/ or test/ sub-folders: serving its one split 'all' for "
                     "--split %s.", spec, split)
        split, split_dir = "all", folder
        class_names = class_dirs(folder)
    if not class_names:
        raise DataError(f"{spec}: no class folders in {split_dir} (expected "
                        f"{split_dir}/<class>/<image>).")
    files, labels = list_samples(split_dir, class_names)
    if not files:
        raise DataError(f"{spec}: no image files under {split_dir} (expected "
                        f"{split_dir}/<class>/<image> with one of {', '.join(IMG_EXTENSIONS)}).")
    images, native, conversion = load_images(files, check_shape_request(image_shape), limit)
    n = images.shape[0]
    return ImageDataset(dataset_name("folder", folder.resolve().name, folder), split, images,
                        np.asarray(labels[:n], dtype=np.int64), tuple(class_names), str(folder),
                        native_shape=native, conversion=conversion)
