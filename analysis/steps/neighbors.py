"""``neighbors``: one exact k-nearest-neighbour graph over the embeddings.

On the GPU: a chunked matrix multiply + ``topk``; on the CPU: faiss's exact
``IndexFlatL2`` (torch when faiss is not installed). The graph is built once
with ``graph_k`` neighbours (enough for t-SNE's perplexity-30 affinities and
UMAP) and reused by the projections, "fetch similars" and the quality metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from analysis.registry import Plan, Step, StepContext, register
from cache import Artifact
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
            index = faiss.IndexFlatL2(base.shape[1])
            index.add(base)
            sq, idx = index.search(queries, k)
            return idx.astype(np.int64), np.sqrt(np.clip(sq, 0, None)).astype(np.float32)
    sq, idx = _torch_knn(torch.from_numpy(base).to(device), torch.from_numpy(queries).to(device), k)
    return idx.cpu().numpy().astype(np.int64), sq.sqrt().cpu().numpy().astype(np.float32)


def knn_graph(features: np.ndarray, k: int, device: torch.device | str = "cpu"
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(N, k)`` neighbour indices and distances, each sample excluding itself.

    Exact duplicates can push a sample out of its own top ``k + 1``; then the
    farthest candidate is dropped instead, so no row ever contains its own index.
    """
    n = len(features)
    if not 1 <= k < n:
        raise ConfigError(f"k={k} neighbours needs at least k+1 samples; the dataset has {n}.")
    idx, dist = knn_search(features, features, k + 1, device)
    is_self = idx == np.arange(n)[:, None]
    # Drop the self column where present, else the last column.
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


@register
class Neighbors(Step):
    """Exact kNN graph over the inference embeddings.

    Artifact arrays
    ---------------
    indices : (N, graph_k) int64, nearest first, never the sample itself
    distances : (N, graph_k) float32, Euclidean in embedding space
    """

    name = "neighbors"
    version = 1
    requires = ("inference",)
    order = 50

    @classmethod
    def plan_options(cls, plan: Plan) -> dict:
        return {"k": plan.k}

    @dataclass(frozen=True)
    class Config:
        k: int = 10
        graph_k: int = 90

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        emb = ctx.inputs["inference"]["embedding"]
        if config.k < 1:
            raise ConfigError(f"--k must be at least 1, got {config.k}.")
        k = min(max(config.k, config.graph_k), len(emb) - 1)
        idx, dist = knn_graph(emb, k, ctx.device)
        return Artifact({"indices": idx, "distances": dist}, summary={"graph_k": k})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        k = min(config.k, artifact["indices"].shape[1])
        return {"nn_index": artifact["indices"][:, :k], "nn_distance": artifact["distances"][:, :k]}
