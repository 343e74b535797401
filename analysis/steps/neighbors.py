"""``neighbors``: one k-nearest-neighbour graph over the embeddings.

Up to ``exact_max`` samples (200,000 by default) the graph is exact: on the GPU
a chunked matrix multiply + ``topk``; on the CPU :mod:`analysis.self_knn`, which
computes each distance once (half of faiss's ``IndexFlatL2`` work). Beyond it a
seeded faiss IVF-Flat index is used (:mod:`analysis.ann`), its recall against
exact kNN measured on a seeded sample of queries, stored in the summary and
logged (a warning below ``recall_floor``).
The graph is built once with ``graph_k`` neighbours (enough for t-SNE's
perplexity-30 affinities and UMAP) and reused by the projections, "fetch
similars" and the quality metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.ann import _drop_self, approximate_search, exact_search
from analysis.registry import Plan, Step, StepContext, register
from analysis.self_knn import self_knn
from cache import Artifact
from cache.keys import OMIT_AT_DEFAULT
from core.errors import ConfigError

log = logging.getLogger(__name__)


def _torch_knn(base: torch.Tensor, queries: torch.Tensor, k: int,
               chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared-L2 top-k by matrix multiply, in chunks of queries to bound memory."""
    base_sq = (base * base).sum(1)
    dists, idx = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        d = (q * q).sum(1, keepdim=True) - 2.0 * q @ base.T + base_sq[None]
        vals, ind = torch.topk(d, k, dim=1, largest=False)
        dists.append(vals.clamp_min(0))
        idx.append(ind)
    return torch.cat(dists), torch.cat(idx)


def knn_search(base: np.ndarray, queries: np.ndarray, k: int,
               device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest ``base`` rows of each query row.

    Parameters
    ----------
    base : (N, D) float array
    queries : (M, D) float array
    k : int
        ``1 <= k <= N``.

    Returns
    -------
    indices : (M, k) int64, nearest first
    distances : (M, k) float32, Euclidean, non-negative, ascending
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not 1 <= k <= len(base):
        raise ConfigError(f"k={k} neighbours asked for, but only {len(base)} samples exist.")
    device = torch.device(device)
    if device.type == "cpu":
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            return exact_search(base, queries, k)
    sq, idx = _torch_knn(torch.from_numpy(base).to(device), torch.from_numpy(queries).to(device), k)
    return idx.cpu().numpy().astype(np.int64), sq.sqrt().cpu().numpy().astype(np.float32)


def knn_graph(features: np.ndarray, k: int, device: torch.device | str = "cpu"
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(N, k)`` neighbour indices and distances, each sample excluding itself.

    On the CPU :func:`analysis.self_knn.self_knn` (each distance computed once).
    On the GPU, exact duplicates can push a sample out of its own top ``k + 1``;
    then the farthest candidate is dropped instead, so no row ever contains its
    own index.
    """
    n = len(features)
    if not 1 <= k < n:
        raise ConfigError(f"k={k} neighbours needs at least k+1 samples; the dataset has {n}.")
    if torch.device(device).type == "cpu":
        return self_knn(features, k)
    idx, dist = knn_search(features, features, k + 1, device)
    return _drop_self(idx, dist, np.arange(n), k)


def scaled_knn_graph(features: np.ndarray, k: int, device: torch.device | str = "cpu", *,
                     exact_max: int = 200_000, recall_floor: float = 0.9,
                     recall_queries: int = 1000, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`knn_graph` up to ``exact_max`` samples, an approximate IVF-Flat graph beyond.

    Returns
    -------
    indices : (N, k) int64, never the sample itself
    distances : (N, k) float32
    info : dict
        ``{"knn_method": "exact"}``, or for the approximate graph the method,
        ``nlist``, ``nprobe`` and its measured recall (see
        :func:`analysis.ann.approximate_search`), keys prefixed ``knn_``/``ann_``.
    """
    n = len(features)
    if not 1 <= k < n:
        raise ConfigError(f"k={k} neighbours needs at least k+1 samples; the dataset has {n}.")
    if n <= exact_max:
        idx, dist = knn_graph(features, k, device)
        return idx, dist, {"knn_method": "exact"}
    feats = np.ascontiguousarray(features, dtype=np.float32)
    idx, dist, info = approximate_search(feats, feats, k, recall_floor=recall_floor,
                                         recall_queries=recall_queries, seed=seed,
                                         exclude_self=True)
    return idx, dist, {"knn_method": info.pop("method"),
                       **{f"ann_{key}": value for key, value in info.items()}}


@register
class Neighbors(Step):
    """kNN graph over the inference embeddings: exact up to ``exact_max`` samples.

    Beyond ``exact_max`` the graph is approximate (seeded faiss IVF-Flat) and
    the summary holds its recall@graph_k against exact kNN on ``recall_queries``
    seeded queries (``ann_recall``), which is logged as a warning when below
    ``recall_floor``. The new options are left out of cache keys at their
    defaults, so results computed before they existed keep their keys.

    Artifact arrays
    ---------------
    indices : (N, graph_k) int64, nearest first, never the sample itself
    distances : (N, graph_k) float32, Euclidean in embedding space
    """

    name = "neighbors"
    version = 2  # 2: the CPU graph from analysis.self_knn (faiss's up to float32 rounding)
    requires = ("inference",)
    # Its (N, k) neighbour arrays are not sample-table columns: it declares none.
    order = 50

    @classmethod
    def plan_options(cls, plan: Plan) -> dict:
        return {"k": plan.k}

    @dataclass(frozen=True)
    class Config:
        k: int = 10
        graph_k: int = 90
        # Above this many samples the graph is approximate (IVF-Flat).
        exact_max: int = field(default=200_000, metadata=OMIT_AT_DEFAULT)
        # Recall@graph_k the approximate graph is tuned for; below it a warning.
        recall_floor: float = field(default=0.9, metadata=OMIT_AT_DEFAULT)
        # Seeded queries that tune nprobe, and as many others that measure the recall.
        recall_queries: int = field(default=1000, metadata=OMIT_AT_DEFAULT)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        emb = ctx.inputs["inference"]["embedding"]
        if config.k < 1:
            raise ConfigError(f"--k must be at least 1, got {config.k}.")
        if config.exact_max < 1 or config.recall_queries < 1:
            raise ConfigError(f"neighbors: exact_max ({config.exact_max}) and recall_queries "
                              f"({config.recall_queries}) must be at least 1.")
        k = min(max(config.k, config.graph_k), len(emb) - 1)
        idx, dist, info = scaled_knn_graph(emb, k, ctx.device, exact_max=config.exact_max,
                                           recall_floor=config.recall_floor,
                                           recall_queries=config.recall_queries)
        summary = {"graph_k": k}
        if info["knn_method"] != "exact":  # the exact summary is as it always was
            summary.update(info)
        return Artifact({"indices": idx, "distances": dist}, summary=summary)

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        k = min(config.k, artifact["indices"].shape[1])
        return {"nn_index": artifact["indices"][:, :k], "nn_distance": artifact["distances"][:, :k]}
