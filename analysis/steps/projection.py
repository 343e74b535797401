"""2D population maps: UMAP (umap-learn) and t-SNE (openTSNE), fed the shared kNN graph.

Both are seeded and deterministic. Each artifact reports the map's
trustworthiness and kNN preservation (see :mod:`analysis.quality`).

Above ``fit_max`` samples (200,000 by default, the neighbors step's
``exact_max``) a map is fitted on a seeded, class-stratified sample of
``fit_sample`` samples (50,000 by default) and the others are placed with
the library's own out-of-sample method (umap-learn's ``UMAP.transform``,
openTSNE's ``TSNEEmbedding.transform``, which is ``prepare_partial`` and an
optimisation of the new points against the fixed fitted ones). The summary then
also reports the trustworthiness measured from fitted and from held-out query
samples separately (``trustworthiness_fitted``, ``trustworthiness_held_out``).
Measured on 70,000 MNIST vectors (PCA-50 of the pixels), sampling 50,000 costs
more CPU than fitting all (UMAP 59 s vs 30 s, t-SNE 70 s vs 57 s: the sample
needs its own kNN graph and the rest a search and an optimisation), which is
why it starts only where a full fit no longer scales.

For an extra (out-of-distribution) dataset the maps are *joint* (the
in-distribution and the extra samples on one map): see :mod:`analysis.steps.ood`;
these steps map one dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from analysis import apart
from analysis.maps import (
    _held_out,
    stratified_sample,
    tsne_map,
    tsne_sampled,
    umap_anywhere,
    umap_sampled_anywhere,
)
from analysis.quality import map_quality, trustworthiness
from analysis.registry import Column, Plan, Step, StepContext, register
from cache import Artifact
from cache.keys import OMIT_AT_DEFAULT
from core.errors import ConfigError

log = logging.getLogger(__name__)
PROJECTIONS = ("umap", "tsne")


def _map_columns(method: str, title: str) -> tuple[Column, ...]:
    return tuple(Column(f"{method}_{axis}", "numeric", "arbitrary units", words=f"{title} {axis}",
                        description=f"Position on the {title} map of the embeddings.")
                 for axis in ("x", "y"))


class _Projection(Step):
    requires = ("inference", "neighbors")
    calls_model = False  # the embeddings only: runs beside the steps that call the model
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
        if config.fit_sample < 5:
            raise ConfigError(f"{self.method}: fit_sample must be at least 5, got "
                              f"{config.fit_sample}.")
        k = min(10, len(feats) - 2)
        if len(feats) <= config.fit_max:
            coords = self.project(feats, graph["indices"], graph["distances"], config,
                                  ctx.progress)
            fitted = None
        else:
            fitted = stratified_sample(ctx.dataset.labels[:len(feats)],
                                       min(config.fit_sample, len(feats)), config.seed)
            log.info("%s: fitting %d of %d samples (class-stratified), placing the rest",
                     self.method, len(fitted), len(feats))
            coords = self.project_sampled(feats, fitted, config, ctx.progress)
        if not np.isfinite(coords).all():
            raise RuntimeError(f"{self.method} produced non-finite coordinates")
        quality = map_quality(feats, coords, graph["indices"], k=k, max_queries=2000)
        if fitted is None:
            return Artifact({"coords": coords}, summary=quality)
        quality.update(split_quality(feats, coords, fitted, graph["indices"], k))
        mask = np.zeros(len(feats), bool)
        mask[fitted] = True
        return Artifact({"coords": coords, "fitted": mask}, summary=quality)

    def columns(self, artifact: Artifact, config) -> dict[str, np.ndarray]:
        return {f"{self.method}_x": artifact["coords"][:, 0],
                f"{self.method}_y": artifact["coords"][:, 1]}


def split_quality(features: np.ndarray, coords: np.ndarray, fitted: np.ndarray,
                  high_knn: np.ndarray, k: int, queries: int = 1000, seed: int = 0
                  ) -> dict[str, float | int]:
    """Trustworthiness of a sampled map from fitted and from held-out query samples.

    Both are measured on the whole map (neighbourhoods among all N samples,
    ranks exact), each averaged over up to ``queries`` seeded rows of its part.

    Returns
    -------
    dict
        ``trustworthiness_fitted``, ``trustworthiness_held_out``, ``fitted_samples``,
        ``held_out_samples``, ``split_trust_queries``.
    """
    rest = _held_out(len(features), fitted)
    rng = np.random.default_rng(seed)
    out: dict[str, float | int] = {}
    for name, rows in (("fitted", np.asarray(fitted)), ("held_out", rest)):
        pick = np.sort(rng.choice(rows, min(queries, len(rows)), replace=False))
        out[f"trustworthiness_{name}"] = trustworthiness(
            features, coords, k, high_knn=high_knn, queries=pick)
    out.update(fitted_samples=len(fitted), held_out_samples=len(rest),
               split_trust_queries=min(queries, len(fitted), len(rest)))
    return out


def _fit_max():
    """The ``fit_max`` option: above this many samples a map is fitted on a sample."""
    return field(default=200_000, metadata=OMIT_AT_DEFAULT)


def _fit_sample():
    """The ``fit_sample`` option: the size of that class-stratified sample; the others
    are placed by the library's transform."""
    return field(default=50_000, metadata=OMIT_AT_DEFAULT)


# Both options are left out of cache keys at their defaults, so results computed
# before they existed keep their keys.


@register
class UMAPProjection(_Projection):
    """UMAP of the embeddings. Artifact: ``coords`` (N, 2) float32 (and, above
    ``fit_max`` samples, ``fitted`` (N,) bool: the ``fit_sample`` rows the map was fitted on)."""

    name = "umap"
    method = "umap"
    version = 4  # 2: PCA initialisation; 3: quality map neighbours from a k-d tree;
    # 4: past fit_max, the rest placed in blocks (umap_sampled)
    order = 130
    declares = _map_columns("umap", "UMAP")

    @dataclass(frozen=True)
    class Config:
        n_neighbors: int = 15
        min_dist: float = 0.1
        n_epochs: int = 200
        seed: int = 0
        fit_max: int = _fit_max()
        fit_sample: int = _fit_sample()

    def background(self, n: int, config: Config) -> bool:
        return n >= apart.APART_MIN  # umap_anywhere's or umap_sampled_anywhere's child

    def project(self, feats, idx, dist, config: Config, progress: bool) -> np.ndarray:
        return umap_anywhere(feats, idx, dist, n_neighbors=config.n_neighbors,
                             min_dist=config.min_dist, seed=config.seed,
                             n_epochs=config.n_epochs)

    def project_sampled(self, feats, fitted, config: Config, progress: bool) -> np.ndarray:
        return umap_sampled_anywhere(feats, fitted, n_neighbors=config.n_neighbors,
                                     min_dist=config.min_dist, seed=config.seed,
                                     n_epochs=config.n_epochs)


@register
class TSNEProjection(_Projection):
    """t-SNE of the embeddings. Artifact: ``coords`` (N, 2) float32 (and, above
    ``fit_max`` samples, ``fitted`` (N,) bool: the ``fit_sample`` rows it was fitted on)."""

    name = "tsne"
    method = "tsne"
    version = 5  # 2: Barnes-Hut below 5,000 samples; 3: 150 iterations; 4: k-d tree quality;
    # 5: 125 early-exaggeration iterations (were 250)
    order = 140
    declares = _map_columns("tsne", "t-SNE")

    @dataclass(frozen=True)
    class Config:
        perplexity: float = 30.0
        n_iter: int = 150
        exaggeration_iter: int = 125
        seed: int = 0
        fit_max: int = _fit_max()
        fit_sample: int = _fit_sample()

    def project(self, feats, idx, dist, config: Config, progress: bool) -> np.ndarray:
        return tsne_map(feats, idx, dist, perplexity=config.perplexity, seed=config.seed,
                        n_iter=config.n_iter, exaggeration_iter=config.exaggeration_iter,
                        progress=progress)

    def project_sampled(self, feats, fitted, config: Config, progress: bool) -> np.ndarray:
        return tsne_sampled(feats, fitted, perplexity=config.perplexity, seed=config.seed,
                            n_iter=config.n_iter, exaggeration_iter=config.exaggeration_iter,
                            progress=progress)
