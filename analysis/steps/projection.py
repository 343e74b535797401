"""2D population maps: UMAP (umap-learn) and t-SNE (openTSNE), fed the shared kNN graph.

Both are seeded and deterministic. Each artifact reports the map's
trustworthiness and kNN preservation (see :mod:`analysis.quality`).

For an extra (out-of-distribution) dataset the maps are *joint* (the
in-distribution and the extra samples on one map): see :mod:`analysis.steps.ood`;
these steps map one dataset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from analysis.quality import map_quality
from analysis.registry import Column, Plan, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError

log = logging.getLogger(__name__)
PROJECTIONS = ("umap", "tsne")


def with_self(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prepend each sample itself at distance 0 (umap-learn's kNN convention)."""
    n = len(indices)
    return (np.hstack([np.arange(n)[:, None], indices]).astype(np.int64),
            np.hstack([np.zeros((n, 1), np.float32), distances]).astype(np.float32))


def umap_map(features: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray, *,
             n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
             n_epochs: int | None = 200) -> np.ndarray:
    """``(N, 2)`` float32 UMAP coordinates from a precomputed exact kNN graph.

    ``n_epochs=200`` is what umap-learn itself uses above 10,000 samples; at
    exactly 10,000 its default would be 500 epochs for the same trustworthiness.
    ``init="pca"`` replaces the spectral initialisation: on 10k MNIST embeddings
    it is about twice as fast end to end with the same trustworthiness (0.9944).
    """
    import umap  # lazy: numba compiles on first import (cached: see cache.numba_dir)

    n_neighbors = min(n_neighbors, knn_idx.shape[1] + 1, len(features) - 1)
    idx, dist = with_self(knn_idx[:, :n_neighbors - 1], knn_dist[:, :n_neighbors - 1])
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                        precomputed_knn=(idx, dist), n_jobs=1, n_epochs=n_epochs,
                        init="pca")
    return reducer.fit_transform(np.asarray(features, np.float32)).astype(np.float32)


def tsne_map(features: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray, *,
             perplexity: float = 30.0, seed: int = 0, n_iter: int = 150,
             progress: bool = False) -> np.ndarray:
    """``(N, 2)`` float32 openTSNE coordinates from a precomputed exact kNN graph.

    250 early-exaggeration iterations, then ``n_iter`` normal ones, with FFT
    gradients from 5,000 samples up and Barnes-Hut below (measured here: 2.0 s vs
    7.9 s at 500 samples, 20 s vs 22 s at 5,000, 12.5 s vs 48 s at 10,000). On 10k
    MNIST embeddings 150 normal iterations give the trustworthiness of openTSNE's
    default 500 and of scikit-learn's TSNE (0.9981 vs 0.9982) and a map that looks
    the same, in 6 s instead of 12 s (250) or 33 s (500).
    """
    from openTSNE import TSNE, affinity, initialization
    from openTSNE.callbacks import Callback
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    n = len(features)
    perplexity = min(perplexity, (n - 1) / 3.0)
    k = min(knn_idx.shape[1], max(1, int(3 * perplexity)))
    aff = affinity.PerplexityBasedNN(
        perplexity=perplexity, knn_index=PrecomputedNeighbors(knn_idx[:, :k], knn_dist[:, :k]),
        n_jobs=os.cpu_count() or 1, random_state=seed)
    init = initialization.pca(np.asarray(features, np.float32), random_state=seed)
    bar = tqdm(total=250 + n_iter, desc="t-SNE", unit="it", disable=not progress, leave=False)

    class Progress(Callback):
        def __call__(self, iteration, error, embedding):
            bar.update(50)
            return False

    tsne = TSNE(n_iter=n_iter, early_exaggeration_iter=250, n_jobs=os.cpu_count() or 1,
                random_state=seed, negative_gradient_method="fft" if n >= 5000 else "bh",
                callbacks=[Progress()],
                callbacks_every_iters=50)
    coords = tsne.fit(affinities=aff, initialization=init)
    bar.close()
    return np.asarray(coords, dtype=np.float32)


def _map_columns(method: str, title: str) -> tuple[Column, ...]:
    return tuple(Column(f"{method}_{axis}", "numeric", "arbitrary units", words=f"{title} {axis}",
                        description=f"Position on the {title} map of the embeddings.")
                 for axis in ("x", "y"))


class _Projection(Step):
    requires = ("inference", "neighbors")
    method: str
    datasets = ("main",)

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return cls.method in plan.projections

    def _features(self, ctx: StepContext, config) -> np.ndarray:
        return ctx.inputs["inference"]["embedding"]

    def run(self, ctx: StepContext, config) -> Artifact:
        feats = self._features(ctx, config)
        graph = ctx.inputs["neighbors"]
        if len(feats) < 5:
            raise ConfigError(f"A {self.method} map needs at least 5 samples; got {len(feats)}.")
        coords = self.project(feats, graph["indices"], graph["distances"], config, ctx.progress)
        if not np.isfinite(coords).all():
            raise RuntimeError(f"{self.method} produced non-finite coordinates")
        quality = map_quality(feats, coords, graph["indices"], k=min(10, len(feats) - 2),
                              max_queries=2000)
        return Artifact({"coords": coords}, summary=quality)

    def columns(self, artifact: Artifact, config) -> dict[str, np.ndarray]:
        return {f"{self.method}_x": artifact["coords"][:, 0],
                f"{self.method}_y": artifact["coords"][:, 1]}


@register
class UMAPProjection(_Projection):
    """UMAP of the embeddings. Artifact: ``coords`` (N, 2) float32."""

    name = "umap"
    method = "umap"
    version = 2  # 2: PCA initialisation
    order = 130
    declares = _map_columns("umap", "UMAP")

    @dataclass(frozen=True)
    class Config:
        n_neighbors: int = 15
        min_dist: float = 0.1
        n_epochs: int = 200
        seed: int = 0

    def project(self, feats, idx, dist, config: Config, progress: bool) -> np.ndarray:
        return umap_map(feats, idx, dist, n_neighbors=config.n_neighbors,
                        min_dist=config.min_dist, seed=config.seed, n_epochs=config.n_epochs)


@register
class TSNEProjection(_Projection):
    """t-SNE of the embeddings. Artifact: ``coords`` (N, 2) float32."""

    name = "tsne"
    method = "tsne"
    version = 3  # 2: Barnes-Hut below 5,000 samples; 3: 150 iterations
    order = 140
    declares = _map_columns("tsne", "t-SNE")

    @dataclass(frozen=True)
    class Config:
        perplexity: float = 30.0
        n_iter: int = 150
        seed: int = 0

    def project(self, feats, idx, dist, config: Config, progress: bool) -> np.ndarray:
        return tsne_map(feats, idx, dist, perplexity=config.perplexity, seed=config.seed,
                        n_iter=config.n_iter, progress=progress)
