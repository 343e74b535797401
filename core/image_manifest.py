"""``csv:FILE`` datasets: a manifest listing image files and their labels.

Format
------
A header row naming at least ``path`` and ``label`` (any order, any case;
extra columns are ignored), then one row per sample::

    path,label,split
    cats/001.png,cat,train
    /data/dogs/7.jpg,dog,test

``path`` is relative to the CSV file's folder, or absolute. ``label`` is a
class name; class names are sorted (numerically when every label is an
integer) over the whole file, so labels agree between splits. With a
``split`` column, ``--split`` keeps the rows whose split matches (``val`` and
``validation`` count as ``test``; ``--split all`` keeps every row); without
one the manifest is the single split ``all``. Samples keep the file's row
order. The dataset name is ``csv-<stem>-<6 hex of sha256(resolved path)>``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from core.errors import DataError
from core.image_dataset import SPLIT_ALIASES, ImageDataset
from core.image_files import (
    ShapeRequest,
    check_shape_request,
    is_regular_file,
    load_images,
    resolve_image_path,
)
from core.image_folder import dataset_name

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label")


def read_manifest(file: Path) -> tuple[list[dict[str, str]], bool]:
    """The manifest's rows (keys ``path``, ``label``, ``split``, ``line``) and whether it
    has a ``split`` column.

    Raises
    ------
    DataError
        Unreadable, no header, a required column missing (the message lists the
        columns found), an empty cell, or no rows.
    """
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{file} is empty: expected a header row "
                                "'path,label[,split]' and one row per image.")
            columns = {name.strip().lower(): i for i, name in enumerate(header)}
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{file}: missing column(s) {', '.join(missing)}; the header "
                                f"has {', '.join(repr(h) for h in header)}. The first row "
                                "must name the columns path,label (and optionally split).")
            has_split = "split" in columns
            rows = []
            for number, record in enumerate(reader, start=1):
                if not any(cell.strip() for cell in record):
                    continue  # blank line
                row = {"row": str(number), "line": str(reader.line_num)}
                for key in (*REQUIRED_COLUMNS, "split"):
                    if key not in columns:
                        continue
                    idx = columns[key]
                    value = record[idx].strip() if idx < len(record) else ""
                    if not value:
                        raise DataError(f"{file} row {number} (line {reader.line_num}): the "
                                        f"{key} cell is empty; fill it in or delete the row.")
                    row[key] = value
                rows.append(row)
    except OSError as exc:
        raise DataError(f"Cannot read manifest {file}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{file} is not a readable UTF-8 CSV file: {exc}.") from None
    if not rows:
        raise DataError(f"{file} lists no images: add one row per image under the header "
                        "'path,label'.")
    return rows, has_split


def sorted_class_names(labels: list[str]) -> tuple[str, ...]:
    """Distinct labels, sorted numerically when every one is an integer, else as text."""
    names = set(labels)
    try:
        return tuple(sorted(names, key=lambda n: (int(n), n)))
    except ValueError:
        return tuple(sorted(names))


def load_csv_manifest(file: str, split: str = "all", *, image_shape: ShapeRequest | None = None,
                      limit: int | None = None) -> ImageDataset:
    """Load ``csv:FILE`` (see the module docstring for the format).

    Raises
    ------
    DataError
        A malformed manifest, a split with no rows (the message lists the splits
        found), or an image that is missing, not a regular file, corrupt or too
        large (the message names the row and the path).
    """
    path = Path(file).expanduser()
    rows, has_split = read_manifest(path)
    class_names = sorted_class_names([r["label"] for r in rows])
    if has_split:
        for r in rows:
            r["split"] = SPLIT_ALIASES.get(r["split"].lower(), r["split"].lower())
        if split != "all":
            found = sorted({r["split"] for r in rows})
            rows = [r for r in rows if r["split"] == split]
            if not rows:
                raise DataError(f"{path} has no rows with split {split!r}: its split column "
                                f"holds {', '.join(found)}. Use --split with one of those.")
    elif split != "all":
        log.info("%s has no split column: serving all its rows as split 'all' for --split %s.",
                 path, split)
        split = "all"
    base = path.parent
    files = []
    for r in rows:
        image = resolve_image_path(base, r["path"])
        where = f"{path} row {r['row']} (line {r['line']})"
        if not image.exists():
            raise DataError(f"{where}: image {image} not found; fix the path (relative paths "
                            f"are read from {base}) or delete the row.")
        if not is_regular_file(image):
            raise DataError(f"{where}: {image} is not a regular file (a FIFO, socket, device "
                            "or folder); point the row at an image file.")
        files.append(str(image))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    images, native, conversion = load_images(files, check_shape_request(image_shape), limit)
    return ImageDataset(dataset_name("csv", path.stem, path), split, images,
                        labels[:images.shape[0]], class_names, str(path),
                        native_shape=native, conversion=conversion)
