"""Real image data written as files for the folder and manifest tests.

scikit-learn's digits are 1,797 real 8x8 scans (values 0-16); scikit-image
bundles real photographs. Nothing here is synthetic pixels except where a test
says so.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(1797, 8, 8)`` uint8 digits scaled from 0-16 to 0-255, and their ``(1797,)`` labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * 255 / 16).astype(np.uint8), d.target.astype(np.int64)


def write_class_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                       indices: np.ndarray | None = None) -> list[Path]:
    """``root/<label>/<index:04d>.png`` for every image; returns the paths in input order.

    ``images`` is ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB; ``indices`` name the
    files (default ``0..N-1``).
    """
    indices = np.arange(len(images)) if indices is None else indices
    paths = []
    for image, label, index in zip(images, labels, indices, strict=True):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def folder_order(labels: np.ndarray) -> np.ndarray:
    """The order ImageFolder lists ``write_class_folder``'s files in (class, then index).

    Classes are folder names sorted as text; for the digits 0-9 that is numeric.
    """
    return np.lexsort((np.arange(len(labels)), labels.astype(str)))


def write_manifest(file: Path, rows: list[dict[str, object]], columns: list[str]) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return file


def photo_patches(size: int = 32, per_photo: int = 6) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(3 * per_photo, size, size, 3)`` uint8 patches of three of scikit-image's bundled
    photographs, their labels (index of the source photo) and the photo names."""
    from skimage import data

    names = ["astronaut", "chelsea", "coffee"]
    patches, labels = [], []
    for label, name in enumerate(names):
        photo = getattr(data, name)()[:, :, :3]
        for k in range(per_photo):
            y, x = 40 + 37 * k, 60 + 23 * k
            patches.append(np.ascontiguousarray(photo[y:y + size, x:x + size]))
            labels.append(label)
    return np.stack(patches), np.array(labels, dtype=np.int64), names
