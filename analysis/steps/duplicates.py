"""``duplicates``: exact and near-duplicate images, and leakage between two splits.

Model-independent: everything is in pixel space (images scaled to [0, 1]).

- **Exact** duplicates share the BLAKE2b hash of their pixel bytes (same shape).
- **Near** duplicates: a sample's nearest other sample lies closer than
  ``threshold`` (default 0.1) x the dataset's *typical* nearest-neighbour
  distance, the median over all samples (robust: a few duplicates do not move
  it). On real MNIST no two different images of the test set come closer
  than 0.22 x the median (the closest are plain 1s), so 0.1 flags only copies
  (re-saved, re-compressed, slightly noisy or shifted by a fraction of a grey
  level).

Candidate neighbours are searched on average-pooled pixels (at most
``max_dims`` values, 7x7 for MNIST) and every candidate is then measured at
full resolution. Up to ``EXACT_LIMIT`` samples the candidate search is exact
(faiss ``IndexFlatL2``, torch without faiss); above, faiss's inverted-file
index (``2 sqrt(N)`` cells, the ``nprobe`` nearest probed). Average pooling
never increases a distance, so an image's copy is among its nearest pooled
neighbours; the inverted file could only miss a copy lying in a cell that is
not among the probed ones, which needs it to sit on a cell border.

Columns: ``duplicate_of``, the sample id of the earliest sample of the
sample's duplicate group (exact or near pairs, joined transitively), empty for
the earliest itself and for samples with no duplicate (so dropping the rows
with a ``duplicate_of`` de-duplicates); ``near_duplicate_distance``, the
nearest other sample's distance divided by the typical one (0 = an exact
copy; lower = more duplicate).

:func:`find_leakage` reports the pairs spanning two datasets (train vs test).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from analysis.registry import Column, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError

log = logging.getLogger(__name__)
EXACT_LIMIT = 5_000  # candidate search exact up to this many base samples
CHUNK_VALUES = 1 << 24  # candidate pixel values compared at a time (64 MB as float32)


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """``(N,)`` ``S16`` BLAKE2b digests of each image's bytes (and shape)."""
    shape = repr(images.shape[1:]).encode()
    return np.array([hashlib.blake2b(shape + np.ascontiguousarray(im).tobytes(),
                                     digest_size=16).digest() for im in images], dtype="S16")


def full_pixels(images: np.ndarray) -> np.ndarray:
    """``(N, C*H*W)`` float32 pixels in [0, 1]."""
    x = images.reshape(len(images), -1)
    return x.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else \
        x.astype(np.float32)


def pooled_pixels(images: np.ndarray, max_dims: int = 64, rows: int | None = None
                  ) -> np.ndarray:
    """``(N, D <= max_dims)`` float32 average-pooled pixels (zero-padded to whole blocks) of
    ``(N, C, H, W)`` images, converted ``rows`` images at a time (default
    :func:`~analysis.steps.centroids.block_rows`; each image is pooled alone)."""
    from analysis.steps.centroids import block_rows

    n, c, h, w = images.shape
    f = 1
    while c * -(-h // f) * -(-w // f) > max_dims:
        f += 1
    hp, wp = -(-h // f) * f, -(-w // f) * f
    out = np.empty((n, c * (hp // f) * (wp // f)), np.float32)
    rows = rows or block_rows(images)
    for start in range(0, n, rows):
        x = full_pixels(images[start:start + rows])
        m = len(x)
        x = x.reshape(m, c, h, w)
        if (hp, wp) != (h, w):
            x = np.pad(x, ((0, 0), (0, 0), (0, hp - h), (0, wp - w)))
        out[start:start + m] = x.reshape(m, c, hp // f, f, wp // f, f).mean((3, 5)).reshape(m, -1)
    return out


def candidate_neighbours(base: np.ndarray, queries: np.ndarray, k: int, nprobe: int = 8,
                         seed: int = 0) -> np.ndarray:
    """``(M, k)`` indices of candidate nearest ``base`` rows of each query (pooled space):
    exact up to :data:`EXACT_LIMIT` base rows, faiss's inverted file above."""
    from analysis.steps.neighbors import knn_search

    k = min(k, len(base))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is None or len(base) <= EXACT_LIMIT:
        return knn_search(base, queries, k)[0]
    base = np.ascontiguousarray(base, dtype=np.float32)
    nlist = max(1, min(int(2 * np.sqrt(len(base))), len(base) // 39))
    quantizer = faiss.IndexFlatL2(base.shape[1])
    index = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist)
    train = base[np.random.default_rng(seed).choice(len(base), min(len(base), 40 * nlist),
                                                    replace=False)]
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(train)
    index.add(base)
    index.nprobe = nprobe
    _, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx.astype(np.int64)


def candidate_distances(base: np.ndarray, queries: np.ndarray, cand: np.ndarray,
                        chunk: int = 2048, values: int = CHUNK_VALUES) -> np.ndarray:
    """``(M, k)`` full-resolution Euclidean distances from each of ``M`` queries to its
    candidates among the ``base`` rows (``inf`` where a candidate is missing, ``-1``).

    ``base`` and ``queries`` are images (``(N, C, H, W)``, uint8 or float in [0, 1]) or
    their :func:`full_pixels`; the pixels are converted to float for one chunk of
    queries at a time (at most ``chunk`` queries and ``values`` candidate pixel values).
    """
    dims = int(np.prod(queries.shape[1:]))
    chunk = max(1, min(chunk, values // max(1, cand.shape[1] * dims)))
    out = np.empty(cand.shape, np.float32)
    for s in range(0, len(queries), chunk):
        c = cand[s:s + chunk]
        q = full_pixels(queries[s:s + chunk])
        b = full_pixels(base[np.maximum(c, 0).ravel()]).reshape(*c.shape, dims)
        diff = b - q[:, None, :]
        out[s:s + chunk] = np.sqrt(np.einsum("mkd,mkd->mk", diff, diff))
    out[cand < 0] = np.inf
    return out


def nearest_others(images: np.ndarray, candidates: int = 5, max_dims: int = 64,
                   nprobe: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's candidate neighbours (itself excluded) and their full-resolution distances.

    Returns
    -------
    indices : (N, k) int64, ``-1`` where fewer candidates were found
    distances : (N, k) float32, ``inf`` for missing candidates, ascending
    """
    n = len(images)
    if n < 2:
        raise ConfigError(f"duplicates needs at least 2 samples, got {n}.")
    pooled = pooled_pixels(images, max_dims)
    cand = candidate_neighbours(pooled, pooled, candidates + 1, nprobe)
    del pooled
    cand = np.where(cand == np.arange(n)[:, None], -1, cand)
    dist = candidate_distances(images, images, cand)
    order = np.argsort(dist, 1, kind="stable")
    return np.take_along_axis(cand, order, 1), np.take_along_axis(dist, order, 1)


def exact_groups(hashes: np.ndarray) -> np.ndarray:
    """``(N,)`` the index of the first sample with the same hash."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def duplicate_groups(n: int, first_same: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(N,)`` the earliest index of each sample's group, joining exact copies
    (``first_same``) and ``(P, 2)`` near pairs transitively."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([np.arange(n), pairs[:, 0]])
    cols = np.concatenate([first_same, pairs[:, 1]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    earliest = np.full(comp.max() + 1, n)
    np.minimum.at(earliest, comp, np.arange(n))
    return earliest[comp]


def find_duplicates(images: np.ndarray, threshold: float = 0.1, candidates: int = 5,
                    max_dims: int = 64, nprobe: int = 8) -> dict[str, np.ndarray | float]:
    """Exact and near duplicates within ``(N, C, H, W)`` images (see the module docstring).

    Returns
    -------
    dict with ``earliest`` (N,) int64 (the group's first index; itself when alone or first),
    ``ratio`` (N,) float32 (nearest other / typical distance), ``nearest`` (N,) int64,
    ``typical`` float (median nearest-neighbour distance, pixels in [0, 1]).
    """
    if not threshold > 0:
        raise ConfigError(f"duplicates threshold must be > 0, got {threshold}.")
    n = len(images)
    idx, dist = nearest_others(images, candidates, max_dims, nprobe)
    same = exact_groups(pixel_hashes(images))
    nearest, nn = idx[:, 0], dist[:, 0].astype(np.float64)
    has_copy = same != np.arange(n)
    copies = np.bincount(same, minlength=n)[same] > 1
    nn = np.where(copies, 0.0, nn)  # an exact copy missed by the candidates is still a copy
    typical = float(np.median(nn[np.isfinite(nn)])) if np.isfinite(nn).any() else 0.0
    if typical <= 0:  # most samples have copies: the median is 0; use the non-zero ones
        positive = nn[np.isfinite(nn) & (nn > 0)]
        typical = float(np.median(positive)) if positive.size else 1.0
    ratio = (nn / typical).astype(np.float32)
    close = (dist / typical) < threshold
    rows, cols = np.nonzero(close & (idx >= 0))
    pairs = np.stack([rows, idx[rows, cols]], 1)
    earliest = duplicate_groups(n, same, pairs)
    log.info("duplicates: %d exact copies, %d samples in near-duplicate groups",
             int(has_copy.sum()), int((earliest != np.arange(n)).sum()))
    return {"earliest": earliest.astype(np.int64), "ratio": ratio,
            "nearest": nearest.astype(np.int64), "typical": typical}


def find_leakage(ds_a, ds_b, threshold: float = 0.1, candidates: int = 5,
                 max_dims: int = 64, nprobe: int = 8) -> list[tuple[str, str, float]]:
    """Pairs of near-identical images spanning two datasets (e.g. train and test splits).

    Parameters
    ----------
    ds_a, ds_b : ImageDataset
        Images of the same ``(C, H, W)`` shape.
    threshold : float
        A pair is reported when its distance is below ``threshold`` x the
        typical distance from a ``ds_b`` image to its nearest ``ds_a`` image
        (the median over ``ds_b``).
    candidates : int
        Nearest ``ds_a`` images (pooled pixels) measured at full resolution per ``ds_b`` image.

    Returns
    -------
    list of (id_a, id_b, distance_ratio)
        Sample ids of ``ds_a`` and ``ds_b`` and the pair's distance over the
        typical one (0.0 for exact copies), sorted by ratio then ids. Exact
        copies are all reported; near pairs among each ``ds_b`` image's candidates.
    """
    if ds_a.images.shape[1:] != ds_b.images.shape[1:]:
        raise ConfigError(f"Leakage needs images of one shape: {ds_a.key} has "
                          f"{ds_a.images.shape[1:]}, {ds_b.key} {ds_b.images.shape[1:]}.")
    ids_a, ids_b = ds_a.sample_ids, ds_b.sample_ids
    found: dict[tuple[int, int], float] = {}
    by_hash: dict[bytes, list[int]] = {}
    for i, h in enumerate(pixel_hashes(ds_a.images)):
        by_hash.setdefault(bytes(h), []).append(i)
    for j, h in enumerate(pixel_hashes(ds_b.images)):
        for i in by_hash.get(bytes(h), ()):
            found[(i, j)] = 0.0
    cand = candidate_neighbours(pooled_pixels(ds_a.images, max_dims),
                                pooled_pixels(ds_b.images, max_dims), candidates, nprobe)
    dist = candidate_distances(ds_a.images, ds_b.images, cand)
    nn = dist.min(1)
    typical = float(np.median(nn[np.isfinite(nn)]))
    if typical <= 0:
        positive = nn[np.isfinite(nn) & (nn > 0)]
        typical = float(np.median(positive)) if positive.size else 1.0
    rows, cols = np.nonzero((dist / typical < threshold) & (cand >= 0))
    for j, c in zip(rows, cols, strict=True):
        found.setdefault((int(cand[j, c]), int(j)), float(dist[j, c] / typical))
    return sorted(((str(ids_a[i]), str(ids_b[j]), r) for (i, j), r in found.items()),
                  key=lambda t: (t[2], t[0], t[1]))


@register
class Duplicates(Step):
    """Exact and near-duplicate images (see the module docstring).

    Artifact arrays
    ---------------
    duplicate_of : (N,) str, sample id of the group's earliest sample, or ""
    near_duplicate_distance : (N,) float32, nearest other sample / typical distance
    nearest : (N,) int64, index of the nearest other sample found
    """

    name = "duplicates"
    datasets = ("main",)
    order = 100
    version = 1
    uses_model = False
    declares = (
        Column("duplicate_of", "text", description="Sample id of the earliest exact or near "
               "copy of this image; empty when it has none or is the earliest."),
        Column("near_duplicate_distance", "numeric", unit="x typical nearest-neighbour "
               "distance", description="Pixel distance to the nearest other image over the "
               "dataset's median one: 0 = exact copy, below 0.1 = near duplicate.",
               worse="lower"),
    )

    @dataclass(frozen=True)
    class Config:
        threshold: float = 0.1
        candidates: int = 5
        max_dims: int = 64
        nprobe: int = 8

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        found = find_duplicates(ctx.dataset.images, config.threshold, config.candidates,
                                config.max_dims, config.nprobe)
        n = len(ctx.dataset)
        earliest = found["earliest"]
        ids = ctx.dataset.sample_ids.astype(str)
        dup_of = np.where(earliest != np.arange(n), ids[earliest], "")
        return Artifact({"duplicate_of": dup_of, "near_duplicate_distance": found["ratio"],
                         "nearest": found["nearest"]},
                        summary={"typical_distance": found["typical"],
                                 "n_duplicates": int((earliest != np.arange(n)).sum())})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        return {"duplicate_of": artifact["duplicate_of"].astype(object),
                "near_duplicate_distance": artifact["near_duplicate_distance"]}
