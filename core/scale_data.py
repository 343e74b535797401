"""``mnist-scale:N``: N deterministic augmentations of the MNIST training images.

Sample ``i`` (``0 <= i < N``) is variant ``i // S`` of source image ``i % S``
(``S`` = 60,000 MNIST training images), so the first 60,000 samples cover every
source image once and ``--limit`` keeps MNIST's class mix. Each sample gets a
small affine map (rotation, shear, scale, shift) and an elastic distortion
(Simard et al. 2003: a random displacement field smoothed by a Gaussian),
drawn from a generator seeded by ``(SEED_SALT, i)`` alone. Pixels therefore
depend on ``i`` and the source image only: the same in any process, batch size
or ``N`` (``mnist-scale:1000`` is the first 1,000 samples of
``mnist-scale:2000``), and labels are the source images'. The rows are generated
batch by batch straight into a memory-mapped store (:mod:`core.image_store`),
never held whole; the store is built on first use and reused after.

Names
-----
``mnist-scale:N``
    Source: the MNIST idx files (``train`` split) found like ``mnist``
    (``--data-root``, ``$LOUPE_DATA``...). Dataset name ``mnist-scale-N``; sample
    ids ``mnist-scale-N:train:<i>`` (:func:`scale_origin` gives source and variant).
``mnist-scale:N:mnist-5k``
    Source: the 4,000 training digits of the embedded ``mnist-5k`` (no data
    files needed). Dataset name ``mnist-scale-N-of-mnist-5k``, so results never
    mix with the full source's. Never used silently in place of MNIST.

Split ``test`` is the real test set of the source, unaugmented (``mnist:test``
or ``mnist-5k:test``, under their own names and ids).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
from scipy import ndimage

from core.errors import ConfigError, DataError
from core.idx import CLASS_NAMES, find_idx_dir, load_embedded, load_idx_split, search_roots
from core.image_dataset import ImageDataset
from core.image_store import BatchSource, StoreSpec, build_store

log = logging.getLogger(__name__)

PREFIX = "mnist-scale:"
SOURCES = ("mnist", "mnist-5k")
GENERATOR_VERSION = 1  # bump when the pixels a sample index gives change
SEED_SALT = 0x5CA1E
MAX_SAMPLES = 2**31 - 1
BATCH_ROWS = 2048  # ~100 MB of float64 working arrays per batch (~50 KB a row)

# Augmentation ranges: "small", every digit stays recognisable.
MAX_ROTATION_DEG = 12.0
MAX_SHEAR = 0.15  # x += shear * y
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT_PX = 2.0
ELASTIC_ALPHA = 24.0  # displacement scale, pixels per unit of the smoothed field
ELASTIC_SIGMA = 4.0  # Gaussian smoothing of the field, pixels

HOW_TO_GET = ("Download train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (with the "
              "t10k files) from https://yann.lecun.com/exdb/mnist/ or a mirror into <root>/mnist/ "
              "and point --data-root or LOUPE_DATA at <root>; or use mnist-scale:{n}:mnist-5k "
              "to augment the 4,000 embedded training digits instead.")


def parse_scale_name(name: str) -> tuple[int, str]:
    """``mnist-scale:N[:SOURCE]`` -> ``(N, SOURCE)``.

    Raises
    ------
    ConfigError
        ``N`` is not a positive whole number, or ``SOURCE`` is unknown.
    """
    if not name.startswith(PREFIX):
        raise ConfigError(f"{name!r} is not an mnist-scale name; write mnist-scale:N, "
                          "e.g. mnist-scale:1000000.")
    count, _, source = name[len(PREFIX):].partition(":")
    source = source or "mnist"
    text = count.replace("_", "").replace(",", "")
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_SAMPLES:
        raise ConfigError(f"mnist-scale needs a positive whole number of samples, got {count!r} "
                          f"in {name!r}: write e.g. mnist-scale:100000 (at most {MAX_SAMPLES:,}).")
    if source not in SOURCES:
        raise ConfigError(f"Unknown mnist-scale source {source!r} in {name!r}: write "
                          f"mnist-scale:{int(text)} (MNIST's idx files) or "
                          f"mnist-scale:{int(text)}:mnist-5k (the embedded digits).")
    return int(text), source


def scale_dataset_name(n: int, source: str = "mnist") -> str:
    """The :attr:`ImageDataset.name` of ``mnist-scale:n[:source]`` (no ``:``, it is in ids)."""
    return f"mnist-scale-{n}" if source == "mnist" else f"mnist-scale-{n}-of-{source}"


def scale_origin(index: np.ndarray | int, n_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """``(source index, variant)`` of sample(s) ``index``: ``(i % S, i // S)``."""
    index = np.asarray(index, dtype=np.int64)
    return index % n_sources, index // n_sources


def scale_origin_ids(index: np.ndarray | int, n_sources: int) -> np.ndarray:
    """``scale-<source index>-<variant>`` for sample(s) ``index`` (object array)."""
    src, var = scale_origin(np.atleast_1d(index), n_sources)
    return np.array([f"scale-{s}-{v}" for s, v in zip(src.tolist(), var.tolist(),
                                                        strict=True)], dtype=object)


def augment(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Affine + elastic augmentation of each image, seeded by its sample index.

    Parameters
    ----------
    images : np.ndarray
        ``(B, H, W)`` uint8 source images.
    index : np.ndarray
        ``(B,)`` sample indices; image ``b`` depends on ``images[b]`` and
        ``index[b]`` only (not on ``B`` or its position in the batch).

    Returns
    -------
    np.ndarray
        ``(B, H, W)`` uint8.
    """
    b, h, w = images.shape
    index = np.asarray(index, dtype=np.int64)
    params = np.empty((b, 6))
    fields = np.empty((b, 2, h, w))
    for k, i in enumerate(index.tolist()):
        rng = np.random.default_rng((SEED_SALT, i))
        params[k] = rng.uniform(-1.0, 1.0, 6)
        fields[k] = rng.uniform(-1.0, 1.0, (2, h, w))
    # Smoothed per image (sigma 0 across images and the two components).
    disp = ndimage.gaussian_filter(fields, (0, 0, ELASTIC_SIGMA, ELASTIC_SIGMA), mode="constant")
    del fields  # working memory is per batch row: keep as few (B, 2, H, W) arrays as we can
    disp *= ELASTIC_ALPHA
    theta = np.deg2rad(MAX_ROTATION_DEG) * params[:, 0]
    shear = MAX_SHEAR * params[:, 1]
    lo, hi = SCALE_RANGE
    scale = lo + (hi - lo) * (params[:, 2] + 1.0) / 2.0
    shift = MAX_SHIFT_PX * params[:, 3:5]
    cos, sin = np.cos(theta), np.sin(theta)
    # Output pixel (r, c) reads the source at M @ ((r, c) - centre) / scale + centre - shift.
    m = np.empty((b, 2, 2))
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin + shear * cos, cos - shear * sin
    m /= scale[:, None, None]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).astype(np.float64)
    grid -= centre[:, None, None]
    coords = np.empty((3, b, h, w))
    coords[0] = np.arange(b, dtype=np.float64)[:, None, None]  # whole numbers: no mixing
    np.einsum("bij,jhw->ibhw", m, grid, out=coords[1:])
    disp += (centre - shift)[:, :, None, None]
    coords[1:] += disp.transpose(1, 0, 2, 3)
    del disp
    out = ndimage.map_coordinates(images.astype(np.float64), coords, order=1,
                                  mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_source(source: str, split: str, data_root: str | os.PathLike | None,
                n: int) -> ImageDataset:
    """The unaugmented ``source`` split (MNIST's idx files or the embedded digits)."""
    if source == "mnist-5k":
        return load_embedded(split)
    folder = find_idx_dir("mnist", data_root)
    if folder is None:
        raise DataError(f"mnist-scale:{n} augments the MNIST training images, whose idx files "
                        "were not found under: "
                        + ", ".join(str(r) for r in search_roots(data_root)) + ". "
                        + HOW_TO_GET.format(n=n))
    try:
        return load_idx_split("mnist", split, folder)
    except DataError as exc:
        raise DataError(f"{exc} (mnist-scale:{n} needs MNIST's {split} files.) "
                        + HOW_TO_GET.format(n=n)) from None


def scale_store_key(n: int, source: str, source_fingerprint: str) -> str:
    """Store folder name: the recipe's hash (source pixels, N, generator version)."""
    recipe = json.dumps({"kind": "mnist-scale", "version": GENERATOR_VERSION, "n": n,
                         "source": source, "source_fingerprint": source_fingerprint,
                         "salt": SEED_SALT}, sort_keys=True)
    return f"{scale_dataset_name(n, source)}-{hashlib.sha256(recipe.encode()).hexdigest()[:24]}"


def load_scale_dataset(name: str, split: str = "train",
                       data_root: str | os.PathLike | None = None, *,
                       store_root: str | os.PathLike | None = None,
                       batch_rows: int = BATCH_ROWS) -> ImageDataset:
    """``mnist-scale:N[:SOURCE]``: split ``train`` memory-mapped from its store (built
    on first use), split ``test`` the source's real test set.

    Parameters
    ----------
    name : str
        ``mnist-scale:N`` or ``mnist-scale:N:mnist-5k``.
    split : str
        ``train`` or ``test``.
    data_root : path, optional
        Where MNIST's idx files are looked for first (see :func:`core.datasets.search_roots`).
    store_root : path, optional
        Folder of image stores; default :func:`core.image_store.default_store_root`.
    batch_rows : int
        Samples generated per batch while building (peak memory ~40 KB per row).

    Raises
    ------
    ConfigError
        Bad ``N``, source or split.
    DataError
        MNIST's idx files are missing or damaged (the message says how to get them).
    """
    n, source = parse_scale_name(name)
    if split == "test":
        return load_source(source, "test", data_root, n)
    if split != "train":
        raise ConfigError(f"{name} has a 'train' split (the augmented images) and a 'test' "
                          f"split (the real test images), not {split!r}.")
    base = load_source(source, "train", data_root, n)
    return build_store(scale_spec(n, source, base), scale_rows(base), root=store_root,
                       batch_rows=batch_rows)


def scale_spec(n: int, source: str, base: ImageDataset) -> StoreSpec:
    """The store of ``n`` augmentations of ``base`` (the ``source`` training split)."""
    return StoreSpec(
        key=scale_store_key(n, source, base.fingerprint), name=scale_dataset_name(n, source),
        split="train", shape=(n, *base.images.shape[1:]), class_names=CLASS_NAMES[source],
        source=f"{n:,} augmentations of {base.key} ({base.source})",
        details={"kind": "mnist-scale", "generator_version": GENERATOR_VERSION,
                 "source": base.key, "source_fingerprint": base.fingerprint,
                 "n_sources": len(base), "seed_salt": SEED_SALT,
                 "origin": "sample i is variant i // n_sources of source image i % n_sources "
                           "(id scale-<i % n_sources>-<i // n_sources>)"})


def scale_rows(base: ImageDataset) -> BatchSource:
    """``rows(lo, hi)``: samples ``lo:hi`` as ``(images (B, 1, H, W) uint8, labels (B,))``."""
    pixels, labels, s = base.images[:, 0], base.labels, len(base)

    def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(lo, hi, dtype=np.int64)
        src, _ = scale_origin(index, s)
        return augment(pixels[src], index)[:, None], labels[src]

    return rows
