"""How faithful a 2D map is to the embedding space: trustworthiness and kNN preservation."""

from __future__ import annotations

import numpy as np
import torch

from analysis.ann import _drop_self
from analysis.steps.neighbors import knn_graph, knn_search
from core.device import read_only_tensor


def trustworthiness(features: np.ndarray, coords: np.ndarray, k: int = 10,
                    high_knn: np.ndarray | None = None, low_knn: np.ndarray | None = None,
                    max_queries: int | None = None, seed: int = 0, chunk: int = 128,
                    queries: np.ndarray | None = None) -> float:
    """Venna & Kaski trustworthiness, as scikit-learn defines it, in bounded memory.

    Ranks are exact over all N samples; with ``max_queries`` the sum runs over
    a seeded random subset of query samples (an estimate, for large N), with
    ``queries`` over those rows.

    Parameters
    ----------
    features : (N, D) float array, the original space
    coords : (N, 2) float array, the map
    k : int
    high_knn, low_knn : (N, >=k) int arrays, optional
        Precomputed neighbour indices (self excluded) in each space. Without
        ``low_knn`` and with ``queries``, only the queries' map neighbours are searched.
    queries : (M,) int array, optional
        The query rows (overrides ``max_queries``).

    Returns
    -------
    float
        In [0, 1]; 1 means every map neighbour is a true neighbour (higher is better).
    """
    n = len(features)
    if queries is None:
        queries = np.arange(n)
        if max_queries is not None and max_queries < n:
            queries = np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))
    queries = np.asarray(queries, dtype=np.int64)
    if high_knn is None:
        high_knn = knn_graph(features, k)[0]
    if low_knn is None:
        low_rows = _rows_knn(coords, queries, k)
    else:
        low_rows = low_knn[queries, :k]
    high_rows = high_knn[queries, :k]
    x = read_only_tensor(np.asarray(features, dtype=np.float32))
    # (B, k, N) comparisons per chunk: at most about 2**25 of them, whatever N is
    chunk = max(1, min(chunk, 2 ** 25 // (max(k, 1) * n)))
    penalty = 0.0
    for start in range(0, len(queries), chunk):
        rows = torch.as_tensor(queries[start:start + chunk])
        d = torch.cdist(x[rows], x)
        d[torch.arange(len(rows)), rows] = float("inf")  # a sample is not its own neighbour
        low = torch.as_tensor(low_rows[start:start + chunk])
        d_low = d.gather(1, low)  # (B, k) original distances of the map neighbours
        # rank (1-based) of each map neighbour among the original-space neighbours
        ranks = (d[:, None, :] < d_low[:, :, None]).sum(-1) + 1
        high = torch.as_tensor(high_rows[start:start + chunk])
        in_high = (low[:, :, None] == high[:, None, :]).any(-1)
        penalty += torch.where(in_high, 0, (ranks - k).clamp_min(0)).sum().item()
    m = len(queries)
    return float(1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def _rows_knn(coords: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """``(M, k)`` map neighbours (self excluded) of the samples ``rows`` among all N."""
    idx, dist = knn_search(coords, np.asarray(coords)[rows], k + 1)
    return _drop_self(idx, dist, rows, k)[0]


def knn_preservation(high_knn: np.ndarray, low_knn: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours that are kept in the map."""
    high, low = high_knn[:, :k], low_knn[:, :k]
    shared = (low[:, :, None] == high[:, None, :]).any(-1).sum(1)
    return float(shared.mean() / k)


def map_knn(coords: np.ndarray, k: int, exact_max: int = 200_000) -> np.ndarray:
    """``(N, k)`` exact neighbours of each map point (self excluded).

    faiss's flat search up to ``exact_max`` points (as always); beyond it a
    k-d tree, which in 2D costs ``N log N`` instead of ``N^2``.
    """
    n = len(coords)
    if n <= exact_max:
        return knn_graph(coords, k)[0]
    from scipy.spatial import cKDTree

    pts = np.asarray(coords, dtype=np.float64)
    _, idx = cKDTree(pts).query(pts, k + 1, workers=-1)
    return _drop_self(idx.astype(np.int64), np.zeros(idx.shape, np.float32), np.arange(n), k)[0]


def map_quality(features: np.ndarray, coords: np.ndarray, high_knn: np.ndarray,
                k: int = 10, max_queries: int | None = None) -> dict[str, float]:
    """Trustworthiness and kNN preservation of a map, from the shared kNN graph.

    kNN preservation is always exact; trustworthiness is exact when
    ``max_queries`` is None, else averaged over that many seeded query samples
    (ranks still exact over all N; ``trust_queries`` in the result says which).
    """
    low_knn = map_knn(coords, k)
    return {
        "trustworthiness": trustworthiness(features, coords, k, high_knn, low_knn,
                                           max_queries=max_queries),
        "knn_preservation": knn_preservation(high_knn, low_knn, k),
        "quality_k": k,
        "trust_queries": min(len(features), max_queries or len(features)),
    }
