"""Approximate nearest neighbours at scale: a seeded faiss IVF-Flat index whose recall is measured.

Exact kNN costs ``N^2 D``; beyond a few hundred thousand samples an inverted
file index (IVF-Flat: k-means cells, each query scans its ``nprobe`` nearest
cells, distances within them exact) is used instead. Its parameters come from
``N``: ``nlist ~ 4 sqrt(N)`` cells, and ``nprobe`` doubled from a small value
until recall@k on a seeded *tuning* sample of queries reaches the floor. The
recall reported is then measured on a *separate* seeded sample of queries
against exact search, so it is not the number the tuning optimised.

Every step is deterministic: the k-means training sample and faiss's own seed
are fixed, and a query's result depends only on the index, not on threading.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IVFParams:
    """The IVF-Flat parameters chosen for a base of ``n`` vectors.

    Attributes
    ----------
    nlist : int
        Number of k-means cells, about ``4 sqrt(n)``.
    train_size : int
        Vectors the k-means is trained on (a seeded sample, ``64 * nlist`` at most).
    max_nprobe : int
        The most cells a query may scan while tuning: a quarter of ``nlist``
        (beyond it IVF is hardly cheaper than exact search), at least 8.
    """

    nlist: int
    train_size: int
    max_nprobe: int


def ivf_params(n: int) -> IVFParams:
    """IVF-Flat parameters for ``n`` base vectors (``n >= 2``)."""
    nlist = int(min(max(1, round(4 * math.sqrt(n))), max(1, n // 39)))
    return IVFParams(nlist=nlist, train_size=min(n, 64 * nlist),
                     max_nprobe=max(min(nlist, 8), nlist // 4))


def exact_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean kNN with faiss ``IndexFlatL2``.

    Returns
    -------
    indices : (M, k) int64
    distances : (M, k) float32, Euclidean, ascending
    """
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    sq, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx.astype(np.int64, copy=False), _euclidean(sq)


def _euclidean(sq: np.ndarray) -> np.ndarray:
    """float32 Euclidean distances from faiss's squared ones, in place (no copy of an
    ``(M, k)`` array: 364 MB each for a 1,000,000-sample graph)."""
    sq = sq.astype(np.float32, copy=False)
    np.clip(sq, 0, None, out=sq)
    return np.sqrt(sq, out=sq)


class IVFIndex:
    """A seeded faiss IVF-Flat index over ``base``.

    Parameters
    ----------
    base : (N, D) float array
    seed : int
        Seeds the k-means training sample and faiss's k-means.
    params : IVFParams, optional
        Defaults to :func:`ivf_params` of ``N``.
    """

    def __init__(self, base: np.ndarray, seed: int = 0, params: IVFParams | None = None) -> None:
        import faiss

        self.base = np.ascontiguousarray(base, dtype=np.float32)
        n, d = self.base.shape
        self.params = params or ivf_params(n)
        p = self.params
        quantizer = faiss.IndexFlatL2(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, p.nlist)
        self.index.cp.seed = seed
        self.index.cp.max_points_per_centroid = max(256, -(-p.train_size // p.nlist))
        rows = np.arange(n)
        if p.train_size < n:
            rows = np.sort(np.random.default_rng(seed).choice(n, p.train_size, replace=False))
        self.index.train(self.base[rows])
        self.index.add(self.base)
        self.nprobe = 1

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate kNN of ``queries`` (M, D): indices (M, k) int64, distances (M, k) float32.

        A query whose scanned cells hold fewer than ``k`` vectors gets index -1
        and distance inf in the missing places.
        """
        self.index.nprobe = int(nprobe or self.nprobe)
        sq, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        dist = _euclidean(sq)
        dist[idx < 0] = np.inf
        return idx.astype(np.int64, copy=False), dist


def recall_at_k(approx_dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Mean fraction of the true k nearest neighbours that an approximate search found.

    Counted by distance (an approximate neighbour counts when it is no farther
    than the true k-th neighbour), so ties between equidistant samples, such as
    exact duplicates, do not count as misses.

    Parameters
    ----------
    approx_dist, exact_dist : (M, k) float arrays
        Euclidean distances, ascending per row; missing approximate neighbours are inf.
    """
    kth = exact_dist[:, -1:].astype(np.float64)
    found = approx_dist.astype(np.float64) <= kth * (1 + 1e-5) + 1e-6
    return float(np.minimum(found.sum(1), exact_dist.shape[1]).mean() / exact_dist.shape[1])


def _query_samples(n: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint seeded samples of row numbers (sorted), each at most its size."""
    perm = np.random.default_rng(seed + 1).permutation(n)
    out, start = [], 0
    for size in sizes:
        out.append(np.sort(perm[start:start + size]))
        start += size
    return out


def approximate_search(base: np.ndarray, queries: np.ndarray, k: int, *,
                       recall_floor: float = 0.9, recall_queries: int = 1000, seed: int = 0,
                       exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """kNN of ``queries`` among ``base`` through a tuned IVF-Flat index, with measured recall.

    Parameters
    ----------
    base : (N, D) float array
    queries : (M, D) float array
        With ``exclude_self``, ``queries`` must be ``base`` itself (the kNN graph).
    k : int
        Neighbours per query (``k + 1`` are searched with ``exclude_self``).
    recall_floor : float
        Target recall@k; a measured recall below it is logged as a warning.
    recall_queries : int
        Size of each seeded query sample: one tunes ``nprobe``, another,
        disjoint, measures the recall that is reported.
    seed : int

    Returns
    -------
    indices : (M, k) int64
    distances : (M, k) float32
    info : dict
        ``method`` ("ivf_flat"), ``nlist``, ``nprobe``, ``recall`` (recall@k on the
        held-out query sample), ``recall_at_10``, ``recall_queries``, ``recall_floor``.
    """
    n, m = len(base), len(queries)
    extra = 1 if exclude_self else 0
    if not 1 <= k + extra <= n:
        raise ConfigError(f"k={k} neighbours asked for, but only {n} samples exist.")
    if not 0.0 < recall_floor <= 1.0:
        raise ConfigError(f"recall_floor must be in (0, 1], got {recall_floor}.")
    index = IVFIndex(base, seed=seed)
    tune_rows, check_rows = _query_samples(m, (recall_queries, recall_queries), seed)
    if len(check_rows) == 0:  # fewer queries than one sample: measure on the tuning rows
        check_rows = tune_rows

    def exact_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = exact_search(base, queries[rows], k + extra)
        return _drop_self(idx, dist, rows, k) if exclude_self else (idx, dist)

    def approx_rows(rows: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = index.search(queries[rows], k + extra, nprobe)
        return _drop_self(idx, dist, rows, k) if exclude_self else (idx, dist)

    tune_exact = exact_rows(tune_rows)[1]
    nprobe, recall = 1, 0.0
    top = index.params.max_nprobe
    target = min(1.0, recall_floor + 0.01)  # a margin: the reported recall is on other queries
    while True:  # the smallest doubling nprobe that reaches the target on the tuning sample
        recall = recall_at_k(approx_rows(tune_rows, nprobe)[1], tune_exact)
        if recall >= target or nprobe >= top:
            break
        nprobe = min(2 * nprobe, top)
    index.nprobe = nprobe
    idx, dist = index.search(queries, k + extra)
    if exclude_self:
        idx, dist = _drop_self(idx, dist, np.arange(m), k)
    if (idx < 0).any():  # a query whose scanned cells held too few vectors: search exactly
        bad = np.flatnonzero((idx < 0).any(1))
        idx[bad], dist[bad] = exact_rows(bad)
    check_exact = exact_rows(check_rows)[1]
    recall = recall_at_k(dist[check_rows], check_exact)
    k10 = min(10, k)
    info = {"method": "ivf_flat", "nlist": index.params.nlist, "nprobe": nprobe,
            "recall": recall, "recall_at_10": recall_at_k(dist[check_rows, :k10],
                                                          check_exact[:, :k10]),
            "recall_k": k, "recall_queries": len(check_rows), "recall_floor": recall_floor}
    if recall < recall_floor:
        log.warning(
            "Approximate kNN recall@%d is %.3f on %d sampled queries, below the floor %.2f "
            "(IVF-Flat, nlist=%d, nprobe=%d, the most tuning allows). Raise the neighbors "
            "step's exact_max above %d to use exact kNN, or lower its recall_floor.",
            k, recall, len(check_rows), recall_floor, index.params.nlist, nprobe, n)
    else:
        log.info("approximate kNN (IVF-Flat, nlist=%d, nprobe=%d): recall@%d %.3f on %d queries",
                 index.params.nlist, nprobe, k, recall, len(check_rows))
    return idx, dist, info


DROP_CHUNK = 65_536  # rows per block of _drop_self


def _drop_self(idx: np.ndarray, dist: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row's own index (``rows``) from ``k + 1`` neighbours, else the last column.

    Exact duplicates can push a sample out of its own top ``k + 1``; then the
    farthest candidate is dropped instead, so no row ever contains its own index.
    """
    m = len(idx)
    rows = np.asarray(rows)
    out_idx, out_dist = np.empty((m, k), idx.dtype), np.empty((m, k), dist.dtype)
    for start in range(0, m, DROP_CHUNK):  # in row blocks: no (M, k) temporaries
        sl = slice(start, start + DROP_CHUNK)
        block = idx[sl]
        is_self = block == rows[sl, None]
        drop = np.where(is_self.any(1), is_self.argmax(1), k)
        keep = np.ones_like(block, dtype=bool)
        keep[np.arange(len(block)), drop] = False
        out_idx[sl] = block[keep].reshape(-1, k)
        out_dist[sl] = dist[sl][keep].reshape(-1, k)
    return out_idx, out_dist


def search(base: np.ndarray, queries: np.ndarray, k: int, *, exact_max: int = 200_000,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """kNN of ``queries`` among ``base``: exact while ``M * N <= exact_max ** 2``, else IVF-Flat.

    The same budget of distance computations as an exact ``exact_max``-sample
    graph. The approximate path tunes ``nprobe`` for recall 0.9 (logged).

    Returns
    -------
    indices : (M, k) int64
    distances : (M, k) float32, Euclidean, ascending
    """
    if len(base) * len(queries) <= exact_max ** 2:
        return exact_search(base, queries, k)
    idx, dist, _ = approximate_search(base, queries, k, seed=seed)
    return idx, dist
