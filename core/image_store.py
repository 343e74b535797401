"""On-disk, memory-mapped image stores: a dataset written once, read in batches.

A store is a folder of plain files, never code (no pickle anywhere)::

    <root>/<key>/images.npy      (N, C, H, W) uint8, read back as a read-only np.memmap
    <root>/<key>/labels.npy      (N,) int64
    <root>/<key>/manifest.json   shape, dtype, class names, fingerprint, ... "complete": true

``<root>`` is :func:`default_store_root`: the ``image-stores`` sub-folder of the
analysis cache folder (``$LOUPE_CACHE`` or ``~/.cache/loupe/cache``).

How a build survives being killed: batches are appended to
``<root>/<key>.partial/`` and, after each batch is on disk (``fsync``), the
number of rows written is recorded in ``progress.json``. Only when every row is
written does the builder compute the content fingerprint from the files, write
``manifest.json`` (with ``"complete": true``, last) and rename the folder to
``<root>/<key>`` in one step. A reader only opens ``<root>/<key>`` with a
complete manifest whose files have the declared sizes, so a build killed at any
point is never read as a store; the next build (under an ``flock`` on
``<root>/<key>.lock``, so two processes never write one store) resumes the
partial folder from its last recorded row. Rows are produced by index, so a
resumed store is byte-identical to one built in one go.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import CacheError
from core.errors import ConfigError, DataError
from core.image_dataset import ImageDataset, fingerprint_header

log = logging.getLogger(__name__)

STORE_DIRNAME = "image-stores"
FORMAT = "loupe-image-store"
FORMAT_VERSION = 1
IMAGES_FILE, LABELS_FILE = "images.npy", "labels.npy"
MANIFEST_FILE, PROGRESS_FILE = "manifest.json", "progress.json"
DEFAULT_BATCH_ROWS = 4096
READ_CHUNK_BYTES = 1 << 20  # fingerprinting reads the written file in 1 MB pieces

BatchSource = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""``source(start, stop)`` -> ``(images (stop - start, C, H, W) uint8, labels (stop - start,))``."""


def default_store_root() -> Path:
    """``<cache folder>/image-stores``; the cache folder is resolved as the artifact
    cache's (``$LOUPE_CACHE`` or ``~/.cache/loupe/cache``, see ``cache.store``)."""
    env = os.environ.get("LOUPE_CACHE")
    cache = Path(env).expanduser() if env else Path.home() / ".cache" / "loupe" / "cache"
    return cache / STORE_DIRNAME


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds, known before a row is written.

    Attributes
    ----------
    key : str
        Folder name under the root; a content key (a fingerprint or a recipe's hash).
    name, split : str
        The :class:`~core.datasets.ImageDataset` name and split it loads as.
    shape : (N, C, H, W)
    class_names : tuple of str
    source : str
        Where the rows come from (server-side text).
    details : dict
        JSON-able facts kept in the manifest (e.g. a generator's parameters).
    conversion : str
        What loading changed (see :attr:`ImageDataset.conversion`); kept as is.
    native_shape : (C, H, W), optional
        The shape of the data before any conversion; default ``shape[1:]``.
    """

    key: str
    name: str
    split: str
    shape: tuple[int, int, int, int]
    class_names: tuple[str, ...]
    source: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    conversion: str = ""
    native_shape: tuple[int, int, int] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "key": self.key, "name": self.name,
                "split": self.split, "shape": list(self.shape), "dtype": "uint8",
                "labels_dtype": "int64", "class_names": list(self.class_names),
                "source": self.source, "details": dict(self.details),
                "conversion": self.conversion,
                "native_shape": list(self.native_shape or self.shape[1:]),
                "sample_ids": f"{self.name}:{self.split}:<row>"}


def check_key(key: str) -> str:
    if not key or key.startswith(".") or any(c in key for c in "/\\\0") or \
            key.endswith((".partial", ".lock")):
        raise ConfigError(f"Image store key {key!r} is not a plain folder name.")
    return key


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_store_root()


def store_path(key: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of the complete store ``key`` (it may not exist yet)."""
    return _root(root) / check_key(key)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete store in ``folder``, else ``None`` (logged when damaged)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        n, c, h, w = (int(v) for v in manifest["shape"])
        complete = manifest.get("complete") is True and manifest.get("format") == FORMAT
        sizes_ok = (_npy_rows(folder / IMAGES_FILE, (c, h, w), np.uint8) == n
                    and _npy_rows(folder / LABELS_FILE, (), np.int64) == n)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Image store %s is damaged (%s); it will be rebuilt.", folder, exc)
        return None
    if not (complete and sizes_ok):
        log.warning("Image store %s is incomplete or its files do not match its manifest; "
                    "it will be rebuilt.", folder)
        return None
    return manifest


def _npy_rows(path: Path, row_shape: tuple[int, ...], dtype: type) -> int:
    """Rows of an ``.npy`` file whose header and size match ``row_shape`` and ``dtype``,
    else -1."""
    with open(path, "rb") as fh:
        shape, fortran, got = _read_npy_header(fh)
        offset = fh.tell()
    if fortran or got != np.dtype(dtype) or tuple(shape[1:]) != row_shape:
        return -1
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    return int(shape[0]) if path.stat().st_size == expected else -1


def open_store(key: str, root: str | os.PathLike | None = None) -> ImageDataset | None:
    """The complete store ``key`` as an :class:`ImageDataset`, or ``None`` when there is none.

    ``images`` is a read-only ``np.memmap`` ``(N, C, H, W)`` uint8 (nothing is read
    until sliced); ``labels`` ``(N,)`` int64 is read into memory; ``fingerprint`` is
    the manifest's (the same sha256 :attr:`ImageDataset.fingerprint` computes).
    """
    folder = store_path(key, root)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    images = np.load(folder / IMAGES_FILE, mmap_mode="r", allow_pickle=False)
    labels = np.load(folder / LABELS_FILE, allow_pickle=False)
    ds = ImageDataset(manifest["name"], manifest["split"], images, labels,
                      tuple(manifest["class_names"]), manifest["source"],
                      native_shape=tuple(manifest.get("native_shape") or manifest["shape"][1:]),
                      conversion=manifest.get("conversion", ""))
    # cached_property stores in the instance dict; replace() (head) drops it again.
    ds.__dict__["fingerprint"] = manifest["fingerprint"]
    return ds


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: released by the OS when the holder dies."""
    with open(path, "a+b") as fh:
        t0 = time.monotonic()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("Waiting for another process that builds %s.", path.with_suffix(""))
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("Waited %.1f s for %s.", time.monotonic() - t0, path.with_suffix(""))
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_store(spec: StoreSpec, source: BatchSource, *,
                root: str | os.PathLike | None = None,
                batch_rows: int = DEFAULT_BATCH_ROWS) -> ImageDataset:
    """Open store ``spec.key``, building it (or finishing a killed build) first when needed.

    Parameters
    ----------
    spec : StoreSpec
    source : callable
        ``source(start, stop)`` returns rows ``start:stop``: images ``(B, C, H, W)``
        uint8 and labels ``(B,)`` integer. Called in order; must depend on the
        indices only (a resumed build asks for the remaining rows only).
    root : path, optional
        Folder of the stores; default :func:`default_store_root`.
    batch_rows : int
        Rows per call of ``source``: peak memory is about that many rows of
        ``source``'s working arrays, whatever ``N``.

    Raises
    ------
    DataError
        ``source`` returned rows of the wrong shape or labels out of range.
    CacheError
        The store's folder cannot be written (read-only, full, not a folder).
    """
    if batch_rows <= 0:
        raise ConfigError(f"batch_rows must be a positive number of rows, got {batch_rows}.")
    base = _root(root)
    final = store_path(spec.key, root)
    ds = open_store(spec.key, root)
    if ds is not None:
        return ds
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _locked(base / f"{spec.key}.lock"):
            ds = open_store(spec.key, root)  # another process may have built it meanwhile
            if ds is None:
                _build_locked(base, spec, source, batch_rows)
    except OSError as exc:
        size = np.prod(spec.shape, dtype=np.int64) / 1e9
        raise CacheError(f"Cannot write the image store {final}: {exc.strerror or exc}. It "
                         f"needs about {size:.2f} GB; free space there or point LOUPE_CACHE at "
                         "a writable folder.", base) from None
    ds = open_store(spec.key, root)
    if ds is None:
        raise DataError(f"The image store {final} was built but cannot be read back; delete "
                        "the folder and run again.")
    return ds


def _build_locked(base: Path, spec: StoreSpec, source: BatchSource, batch_rows: int) -> None:
    """Build ``spec`` under ``base`` (the caller holds the store's lock)."""
    final = base / spec.key
    if final.exists():  # damaged or incomplete: never read, set aside and rebuilt
        aside = base / f"{spec.key}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    partial = base / f"{spec.key}.partial"
    t0 = time.monotonic()
    done = _resume_point(partial, spec)
    _write_rows(partial, spec, source, done, batch_rows)
    _finish(partial, spec)
    os.replace(partial, final)
    _fsync_dir(base)
    log.info("Built image store %s (%s rows) in %.1f s.", final, f"{spec.shape[0]:,}",
             time.monotonic() - t0)


def _resume_point(partial: Path, spec: StoreSpec) -> int:
    """Rows already written by an earlier, interrupted build of the same spec (else 0)."""
    if partial.is_dir():
        if read_manifest(partial) is not None:  # killed between the manifest and the rename
            return spec.shape[0]
        try:
            progress = json.loads((partial / PROGRESS_FILE).read_text())
            if progress["spec"] == spec.as_json():
                rows = int(progress["rows"])
                log.info("Resuming the interrupted build of %s at row %s of %s.",
                         partial, f"{rows:,}", f"{spec.shape[0]:,}")
                return rows
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log.info("Discarding the unusable partial build %s.", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    n, c, h, w = spec.shape
    _write_npy_header(partial / IMAGES_FILE, (n, c, h, w), np.uint8)
    _write_npy_header(partial / LABELS_FILE, (n,), np.int64)
    _write_progress(partial, spec, 0)
    return 0


def _write_npy_header(path: Path, shape: tuple[int, ...], dtype: type) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)


def _read_npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an open ``.npy`` file, left at its data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        _read_npy_header(fh)
        return fh.tell()


def _write_progress(partial: Path, spec: StoreSpec, rows: int) -> None:
    tmp = partial / (PROGRESS_FILE + ".tmp")
    tmp.write_text(json.dumps({"spec": spec.as_json(), "rows": rows}))
    os.replace(tmp, partial / PROGRESS_FILE)


def _write_rows(partial: Path, spec: StoreSpec, source: BatchSource, start: int,
                batch_rows: int) -> None:
    """Append rows ``start:N`` with plain writes (no mapping: the page cache is not RSS)."""
    n, c, h, w = spec.shape
    img_path, lbl_path = partial / IMAGES_FILE, partial / LABELS_FILE
    img_off, lbl_off = _data_offset(img_path), _data_offset(lbl_path)
    row_bytes = c * h * w
    with open(img_path, "r+b") as fi, open(lbl_path, "r+b") as fl:
        for lo in range(start, n, batch_rows):
            hi = min(lo + batch_rows, n)
            images, labels = source(lo, hi)
            images, labels = _checked(images, labels, spec, lo, hi)
            fi.seek(img_off + lo * row_bytes)
            fi.write(memoryview(images).cast("B"))
            fl.seek(lbl_off + lo * 8)
            fl.write(memoryview(labels).cast("B"))
            for fh in (fi, fl):  # on disk before the progress says so
                fh.flush()
                os.fsync(fh.fileno())
            _write_progress(partial, spec, hi)
            log.debug("%s: %s / %s rows", partial.name, f"{hi:,}", f"{n:,}")


def _checked(images: np.ndarray, labels: np.ndarray, spec: StoreSpec, lo: int,
             hi: int) -> tuple[np.ndarray, np.ndarray]:
    want = (hi - lo, *spec.shape[1:])
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(np.asarray(labels).astype(np.int64, copy=False))
    if images.shape != want or images.dtype != np.uint8 or labels.shape != (hi - lo,):
        raise DataError(f"Rows {lo}:{hi} of image store {spec.key}: got images "
                        f"{images.shape} {images.dtype} and labels {labels.shape}, expected "
                        f"{want} uint8 and ({hi - lo},).")
    k = len(spec.class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise DataError(f"Rows {lo}:{hi} of image store {spec.key}: a label is outside "
                        f"0..{k - 1}.")
    return images, labels


def _finish(partial: Path, spec: StoreSpec) -> None:
    """Fingerprint what is on disk, then write the manifest, ``complete`` last."""
    h = hashlib.sha256(fingerprint_header(spec.shape, spec.class_names))
    for path in (partial / IMAGES_FILE, partial / LABELS_FILE):
        with open(path, "rb") as fh:
            fh.seek(_data_offset(path))
            while chunk := fh.read(READ_CHUNK_BYTES):
                h.update(chunk)
    manifest = {**spec.as_json(), "fingerprint": h.hexdigest(),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest["complete"] = True  # last key of the file
    path = partial / MANIFEST_FILE
    with open(path, "w") as fh:
        fh.write(json.dumps(manifest, indent=1))
        fh.flush()
        os.fsync(fh.fileno())
    (partial / PROGRESS_FILE).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_dataset(ds: ImageDataset, *, root: str | os.PathLike | None = None,
                  batch_rows: int = DEFAULT_BATCH_ROWS) -> ImageDataset:
    """``ds`` written to (or found in) the store keyed by its content fingerprint.

    Returns the memory-mapped copy: same name, split, pixels, labels, class
    names and fingerprint as ``ds``.
    """
    spec = StoreSpec(key=f"{_safe(ds.name)}-{ds.split}-{ds.fingerprint[:24]}", name=ds.name,
                     split=ds.split, shape=tuple(int(v) for v in ds.images.shape),
                     class_names=tuple(ds.class_names), source=ds.source,
                     details={"stored_from": "dataset"}, conversion=ds.conversion)

    def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return ds.images[lo:hi], ds.labels[lo:hi]

    return build_store(spec, rows, root=root, batch_rows=batch_rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def convert_store(ds: ImageDataset, request: tuple[int | None, int | None, int | None], *,
                  root: str | os.PathLike | None = None,
                  batch_rows: int = DEFAULT_BATCH_ROWS) -> ImageDataset:
    """``ds`` converted to ``request`` (see :func:`core.image_files.convert_array`) batch by
    batch into its own store (keyed by ``ds``'s fingerprint and the target shape), so a
    memory-mapped dataset is converted without holding either copy whole.

    ``ds`` itself is returned when nothing changes.
    """
    from core.image_files import convert_array

    n, c, h, w = (int(v) for v in ds.images.shape)
    first, text = convert_array(ds.images[:1], request)
    if not text:
        return ds
    tc, th, tw = first.shape[1:]
    # convert_array counts the images it was given (one); the store holds n of them.
    text = text.replace("resized 1 images", f"resized {n:,} images")
    spec = StoreSpec(key=f"{_safe(ds.name)}-{ds.split}-{ds.fingerprint[:24]}-as-{tc}x{th}x{tw}",
                     name=ds.name, split=ds.split, shape=(n, tc, th, tw),
                     class_names=tuple(ds.class_names), source=ds.source,
                     details={"converted_from": ds.fingerprint, "from_shape": [c, h, w]},
                     conversion="; ".join(t for t in (ds.conversion, text) if t),
                     native_shape=ds.native_shape or (c, h, w))

    def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return convert_array(ds.images[lo:hi], request)[0], ds.labels[lo:hi]

    return build_store(spec, rows, root=root, batch_rows=batch_rows)
