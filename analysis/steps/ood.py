"""Steps for out-of-distribution analysis: distances to the training data, joint maps.

``distances`` / ``mc_distances`` run on every dataset: the embedding distance
to the nearest in-distribution class centroid and to the k-th nearest
in-distribution sample (for the in-distribution set itself, excluding the
sample). The ``mc_`` variant uses the embedding averaged over the MC-dropout
passes, against the in-distribution set's MC-averaged embeddings.

``joint_*`` steps run on an *extra* dataset: the in-distribution and the extra
embeddings stacked (in-distribution first) in one kNN graph and one UMAP or
t-SNE, plain and MC-averaged, so the overlap can be seen and measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis import ann, apart
from analysis.maps import (
    stratified_sample,
    tsne_map,
    tsne_sampled,
    umap_anywhere,
    umap_sampled_anywhere,
)
from analysis.ood import neighbor_overlap
from analysis.quality import map_knn, map_quality
from analysis.registry import Column, Plan, Step, StepContext, register
from analysis.steps.centroids import centroid_distances, class_centroids
from analysis.steps.neighbors import knn_search, scaled_knn_graph
from analysis.steps.projection import split_quality
from cache import Artifact
from cache.keys import OMIT_AT_DEFAULT
from core.errors import ConfigError

# (artifact step, array key) of the plain and the MC-averaged embedding
SOURCES = {"plain": ("inference", "embedding"), "mc": ("mc_dropout", "mean_embedding")}


class _Distances(Step):
    variant: str

    @dataclass(frozen=True)
    class Config:
        k: int = 10
        # Exact kNN up to this many samples (or this many squared distances against the
        # in-distribution set); an IVF-Flat search with measured recall beyond.
        exact_max: int = field(default=200_000, metadata=OMIT_AT_DEFAULT)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        step, key = SOURCES[self.variant]
        feats = ctx.inputs[step][key]
        summary: dict = {}
        if ctx.reference:
            ref_feats = ctx.reference[step][key]
            ref_labels = ctx.reference["centroids"]["labels"]
            if config.k > len(ref_feats):
                raise ConfigError(f"k={config.k} is more than the {len(ref_feats)} "
                                  "in-distribution samples.")
            if len(ref_feats) * len(feats) <= config.exact_max ** 2:
                idx, dist = knn_search(ref_feats, feats, config.k, ctx.device)
            else:  # as many distances as an exact exact_max graph: IVF-Flat beyond
                idx, dist, info = ann.approximate_search(
                    np.ascontiguousarray(ref_feats, np.float32),
                    np.ascontiguousarray(feats, np.float32), config.k)
                summary = {"knn_method": info.pop("method"),
                           **{f"ann_{key}": value for key, value in info.items()}}
        else:
            ref_feats, ref_labels = feats, ctx.dataset.labels
            if "neighbors" in ctx.inputs:  # reuse the shared graph
                graph = ctx.inputs["neighbors"]
                idx, dist = graph["indices"][:, :config.k], graph["distances"][:, :config.k]
            else:
                idx, dist, summary = scaled_knn_graph(feats, config.k, ctx.device,
                                                      exact_max=config.exact_max)
        n_classes = int(ref_labels.max()) + 1
        cents = class_centroids(ref_feats, ref_labels, n_classes)
        return Artifact({
            "knn_distance": dist[:, -1].astype(np.float32),
            "reference_neighbors": idx.astype(np.int64),
            "reference_distances": dist.astype(np.float32),
            "centroid_distance": np.nanmin(centroid_distances(feats, cents), 1).astype(np.float32),
        }, summary=summary)

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        prefix = "mc_" if self.variant == "mc" else ""
        return {f"{prefix}knn_distance": artifact["knn_distance"],
                f"{prefix}centroid_distance": artifact["centroid_distance"]}


@register
class Distances(_Distances):
    """Distance to in-distribution data, plain embeddings. Higher = farther (more OOD)."""

    name = "distances"
    variant = "plain"
    requires = ("inference", "neighbors")
    uses_reference = ("inference", "centroids")
    order = 60
    declares = (
        Column("centroid_distance", "numeric", "L2, embedding space", worse="higher",
               score=True, mc_twin="mc_centroid_distance",
               words="distance to nearest class centroid",
               description="Distance of the embedding to the nearest in-distribution class "
                           "centroid."),
        Column("knn_distance", "numeric", "L2, embedding space", worse="higher", score=True,
               mc_twin="mc_knn_distance", words="distance to k-th in-distribution neighbour",
               description="Distance of the embedding to its k-th nearest in-distribution "
                           "sample."),
    )


@register
class MCDistances(_Distances):
    """Distance to in-distribution data, MC-averaged embeddings. Higher = farther."""

    name = "mc_distances"
    version = 2  # 2: its own graph from analysis.self_knn on the CPU
    variant = "mc"
    requires = ("mc_dropout",)
    order = 70
    declares = (
        Column("mc_centroid_distance", "numeric", "L2, embedding space", worse="higher",
               score=True, mc=True, words="distance to nearest class centroid",
               description="As centroid_distance, with the MC-averaged embedding."),
        Column("mc_knn_distance", "numeric", "L2, embedding space", worse="higher", score=True,
               mc=True, words="distance to k-th in-distribution neighbour",
               description="As knn_distance, with the MC-averaged embedding."),
    )

    uses_reference = ("mc_dropout", "centroids")

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return plan.mc_samples > 0


class _JointNeighbors(Step):
    variant: str
    version = 2  # 2: the CPU graph from analysis.self_knn
    datasets = ("extra",)

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return cls.variant == "plain" or plan.mc_samples > 0

    @dataclass(frozen=True)
    class Config:
        graph_k: int = 90
        # Exact up to this many samples in all, IVF-Flat with measured recall beyond.
        exact_max: int = field(default=200_000, metadata=OMIT_AT_DEFAULT)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if not ctx.reference:
            raise ConfigError(f"{self.name} runs on an extra dataset only (--extra-dataset).")
        step, key = SOURCES[self.variant]
        ref = ctx.reference[step][key]
        feats = np.concatenate([ref, ctx.inputs[step][key]])
        k = min(config.graph_k, len(feats) - 1)
        idx, dist, info = scaled_knn_graph(feats, k, ctx.device, exact_max=config.exact_max)
        return Artifact({"indices": idx, "distances": dist, "features": feats},
                        summary={"n_in": len(ref), "n_extra": len(feats) - len(ref), **info})


@register
class JointNeighbors(_JointNeighbors):
    """kNN graph over in-distribution + extra plain embeddings (in-distribution first)."""

    name = "joint_neighbors"
    variant = "plain"
    requires = ("inference",)
    uses_reference = ("inference",)
    order = 200


@register
class MCJointNeighbors(_JointNeighbors):
    """kNN graph over in-distribution + extra MC-averaged embeddings."""

    name = "mc_joint_neighbors"
    variant = "mc"
    requires = ("mc_dropout",)
    uses_reference = ("mc_dropout",)
    order = 230


class _JointMap(Step):
    method: str
    variant: str
    graph: str
    title: str  # how the dashboard names the map ("UMAP, MC dropout")
    version = 5  # 2: UMAP PCA init; 3: t-SNE Barnes-Hut below 5,000; 4: 150 iterations;
    # 5: map neighbours for the quality figures from a k-d tree (float64); 6, set in
    # _joint: t-SNE 125 early-exaggeration iterations (were 250), UMAP past fit_max the
    # rest placed in blocks
    datasets = ("extra",)
    calls_model = False  # the embeddings only

    def background(self, n: int, config) -> bool:  # the joint UMAP: see umap_anywhere and
        # umap_sampled_anywhere
        return self.method == "umap" and n >= apart.APART_MIN

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return cls.method in plan.projections and (cls.variant == "plain" or plan.mc_samples > 0)

    @dataclass(frozen=True)
    class Config:
        seed: int = 0
        overlap_k: int = 10
        # Past fit_max samples in all, the map is fitted on a sample of fit_sample
        # (stratified by dataset: in-distribution or extra) and the rest placed by the
        # library's transform, as for the one-dataset maps (analysis.steps.projection).
        fit_max: int = field(default=200_000, metadata=OMIT_AT_DEFAULT)
        fit_sample: int = field(default=50_000, metadata=OMIT_AT_DEFAULT)

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        g = ctx.inputs[self.graph]
        feats, idx, dist = g["features"], g["indices"], g["distances"]
        n_in = int(g.summary["n_in"])
        fitted = None
        if len(feats) <= config.fit_max:
            if self.method == "umap":
                coords = umap_anywhere(feats, idx, dist, seed=config.seed)
            else:
                coords = tsne_map(feats, idx, dist, seed=config.seed, progress=ctx.progress)
        else:
            group = (np.arange(len(feats)) >= n_in).astype(np.int64)
            fitted = stratified_sample(group, config.fit_sample, config.seed)
            sampled = umap_sampled_anywhere if self.method == "umap" else tsne_sampled
            coords = sampled(feats, fitted, seed=config.seed)
        k = min(config.overlap_k, len(feats) - 2)
        low = map_knn(coords, k)
        frac_2d = neighbor_overlap(low, n_in)
        frac_emb = neighbor_overlap(idx[:, :k], n_in)
        summary = map_quality(feats, coords, idx, k=k, max_queries=2000, low_knn=low)
        if fitted is not None:
            summary.update(split_quality(feats, coords, fitted, idx, k))
        summary.update({
            "n_in": n_in,
            "ood_in_dist_neighbors_2d": float(frac_2d[n_in:].mean()),
            "ood_in_dist_neighbors_embedding": float(frac_emb[n_in:].mean()),
            "in_in_dist_neighbors_2d": float(frac_2d[:n_in].mean()),
        })
        return Artifact({"coords": coords, "in_dist_fraction_2d": frac_2d,
                         "in_dist_fraction_embedding": frac_emb}, summary=summary)

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        n_in = artifact.summary["n_in"]
        c = artifact["coords"][n_in:]
        return {f"{self.name}_x": c[:, 0], f"{self.name}_y": c[:, 1],
                f"{self.name}_in_dist_nn": artifact["in_dist_fraction_2d"][n_in:]}


def _joint(name: str, method: str, variant: str, order: int) -> type[Step]:
    graph = "joint_neighbors" if variant == "plain" else "mc_joint_neighbors"
    source = SOURCES[variant][0]
    mc = variant == "mc"
    doc = (f"Joint {method.upper()} of in-distribution + extra "
           f"{'MC-averaged ' if mc else ''}embeddings. "
           "Artifact: coords (N_in + N_extra, 2), in-distribution rows first.")
    title = {"umap": "UMAP", "tsne": "t-SNE"}[method] + (", MC dropout" if mc else "")
    declares = (
        Column(f"{name}_x", "numeric", "arbitrary units", mc=mc, words=f"joint {title} x",
               description="Position on the joint map with the in-distribution data."),
        Column(f"{name}_y", "numeric", "arbitrary units", mc=mc, words=f"joint {title} y",
               description="Position on the joint map with the in-distribution data."),
        Column(f"{name}_in_dist_nn", "numeric", "0-1", worse="lower", mc=mc,
               words="in-distribution share of map neighbours",
               description="Share of the sample's nearest map neighbours that are "
                           "in-distribution."),
    )
    return register(type(name, (_JointMap,), {
        "name": name, "method": method, "variant": variant, "graph": graph, "__doc__": doc,
        "title": title, "order": order, "declares": declares,
        "version": 6,  # UMAP's 6: past fit_max, the rest placed in blocks (umap_sampled)
        "requires": (source, graph), "uses_reference": (source,)}))


JOINT_MAPS = {
    ("umap", "plain"): _joint("joint_umap", "umap", "plain", 210).name,
    ("tsne", "plain"): _joint("joint_tsne", "tsne", "plain", 220).name,
    ("umap", "mc"): _joint("mc_joint_umap", "umap", "mc", 240).name,
    ("tsne", "mc"): _joint("mc_joint_tsne", "tsne", "mc", 250).name,
}
