"""How faithful a 2D map is to the embedding space: trustworthiness and kNN preservation."""

from __future__ import annotations

import numpy as np
import torch

from analysis.steps.neighbors import knn_graph


def trustworthiness(features: np.ndarray, coords: np.ndarray, k: int = 10,
                    high_knn: np.ndarray | None = None, low_knn: np.ndarray | None = None,
                    max_queries: int | None = None, seed: int = 0, chunk: int = 128) -> float:
    """Venna & Kaski trustworthiness, as scikit-learn defines it, in bounded memory.

    Ranks are exact over all N samples; with ``max_queries`` the sum runs over
    a seeded random subset of query samples (an estimate, for large N).

    Parameters
    ----------
    features : (N, D) float array, the original space
    coords : (N, 2) float array, the map
    k : int
    high_knn, low_knn : (N, >=k) int arrays, optional
        Precomputed neighbour indices (self excluded) in each space.

    Returns
    -------
    float
        In [0, 1]; 1 means every map neighbour is a true neighbour (higher is better).
    """
    n = len(features)
    if high_knn is None:
        high_knn = knn_graph(features, k)[0]
    if low_knn is None:
        low_knn = knn_graph(coords, k)[0]
    high_knn, low_knn = high_knn[:, :k], low_knn[:, :k]
    queries = np.arange(n)
    if max_queries is not None and max_queries < n:
        queries = np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    penalty = 0.0
    for start in range(0, len(queries), chunk):
        rows = torch.as_tensor(queries[start:start + chunk])
        d = torch.cdist(x[rows], x)
        d[torch.arange(len(rows)), rows] = float("inf")  # a sample is not its own neighbour
        low = torch.as_tensor(low_knn[rows.numpy()])
        d_low = d.gather(1, low)  # (B, k) original distances of the map neighbours
        # rank (1-based) of each map neighbour among the original-space neighbours
        ranks = (d[:, None, :] < d_low[:, :, None]).sum(-1) + 1
        in_high = (low[:, :, None] == torch.as_tensor(high_knn[rows.numpy()])[:, None, :]).any(-1)
        penalty += torch.where(in_high, 0, (ranks - k).clamp_min(0)).sum().item()
    m = len(queries)
    return float(1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def knn_preservation(high_knn: np.ndarray, low_knn: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours that are kept in the map."""
    high, low = high_knn[:, :k], low_knn[:, :k]
    shared = (low[:, :, None] == high[:, None, :]).any(-1).sum(1)
    return float(shared.mean() / k)


def map_quality(features: np.ndarray, coords: np.ndarray, high_knn: np.ndarray,
                k: int = 10, max_queries: int | None = None) -> dict[str, float]:
    """Trustworthiness and kNN preservation of a map, from the shared kNN graph.

    kNN preservation is always exact; trustworthiness is exact when
    ``max_queries`` is None, else averaged over that many seeded query samples
    (ranks still exact over all N; ``trust_queries`` in the result says which).
    """
    low_knn = knn_graph(coords, k)[0]
    return {
        "trustworthiness": trustworthiness(features, coords, k, high_knn, low_knn,
                                           max_queries=max_queries),
        "knn_preservation": knn_preservation(high_knn, low_knn, k),
        "quality_k": k,
        "trust_queries": min(len(features), max_queries or len(features)),
    }
