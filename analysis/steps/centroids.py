"""Class-centroid Euclidean distances, in pixel space and in embedding space.

``pixel_centroids`` does not read the model, so it is computed once per dataset
and reused by every checkpoint. ``centroids`` adds the embedding space and the
per-sample columns (which need the predictions).

For an *extra* (out-of-distribution) dataset the centroids are those of the
in-distribution dataset (``ctx.reference``), so distances say how far each
sample is from what the model was shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.registry import Column, Step, StepContext, register
from cache import Artifact
from core.device import read_only_tensor
from core.tasks import head_key

BLOCK_VALUES = 1 << 22  # pixel values converted to float at a time (16 MB as float32)


def block_rows(images: np.ndarray, values: int = BLOCK_VALUES) -> int:
    """Images of ``(N, C, H, W)`` ``images`` per block of at most ``values`` pixel values
    (at least one)."""
    return max(1, values // max(1, int(np.prod(images.shape[1:]))))


def class_centroids(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, D)`` mean feature of each class (NaN rows for absent classes)."""
    sums, counts = class_sums(features, labels, num_classes)
    return centroids_from_sums(sums, counts)


def class_sums(features: np.ndarray, labels: np.ndarray, num_classes: int,
               sums: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, D)`` float64 sum of the ``(N, D)`` features of each class, added to ``sums``
    when given (one block of samples after another: each class's sum adds its samples in
    order either way, so blocks give the same numbers), and ``(C,)`` counts of these N."""
    feats = read_only_tensor(features, dtype=torch.float64)
    lab = read_only_tensor(labels)
    if sums is None:
        sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
    sums.index_add_(0, lab, feats)
    return sums, torch.bincount(lab, minlength=num_classes).to(torch.float64)


def centroids_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
    """``(C, D)`` float32 class means from :func:`class_sums` (NaN rows for absent classes)."""
    cents = sums / counts[:, None]
    cents[counts == 0] = float("nan")
    return cents.float().numpy()


def centroid_distances(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N, C)`` Euclidean distances from each ``(N, D)`` feature to each centroid (>= 0)."""
    # Direct differences, not the matrix-multiply expansion: exact near zero, and
    # cheap with only C centroids.
    d = torch.cdist(read_only_tensor(features, dtype=torch.float32)[None],
                    read_only_tensor(centroids, dtype=torch.float32)[None],
                    compute_mode="donot_use_mm_for_euclid_dist")[0]
    return d.clamp_min(0).numpy()


def pixel_centroids(images: np.ndarray, labels: np.ndarray, num_classes: int,
                    rows: int | None = None) -> np.ndarray:
    """``(C, C*H*W)`` float32 mean image (pixels in [0, 1]) of each class, from ``(N, C, H,
    W)`` images read ``rows`` at a time (default :func:`block_rows`); equal to
    :func:`class_centroids` of :func:`pixel_features` of all of them."""
    rows = rows or block_rows(images)
    sums, counts = None, torch.zeros(num_classes, dtype=torch.float64)
    for start in range(0, len(images), rows):
        sums, c = class_sums(pixel_features(images[start:start + rows]),
                             labels[start:start + rows], num_classes, sums)
        counts += c
    if sums is None:
        sums = torch.zeros(num_classes, int(np.prod(images.shape[1:])), dtype=torch.float64)
    return centroids_from_sums(sums, counts)


def pixel_distances(images: np.ndarray, centroids: np.ndarray,
                    rows: int | None = None) -> np.ndarray:
    """``(N, C)`` :func:`centroid_distances` of each image's :func:`pixel_features`, a block
    of ``rows`` images at a time (each distance is its own image's alone)."""
    rows = rows or block_rows(images)
    out = np.empty((len(images), len(centroids)), np.float32)
    for start in range(0, len(images), rows):
        out[start:start + rows] = centroid_distances(
            pixel_features(images[start:start + rows]), centroids)
    return out


def distance_columns(dist: np.ndarray, labels: np.ndarray, pred: np.ndarray,
                     prefix: str) -> dict[str, np.ndarray]:
    """Per-sample columns from an ``(N, C)`` distance matrix.

    ``{prefix}_dist_label`` to the ground-truth centroid, ``_dist_pred`` to the
    predicted class's, ``_dist_other`` to the nearest centroid of another class,
    ``_margin`` = other - label (negative: closer to another class; worse),
    ``_nearest_class`` the class of the nearest centroid.
    """
    n, c = dist.shape
    rows = np.arange(n)
    in_range = (labels >= 0) & (labels < c)
    safe = np.where(in_range, labels, 0)
    d_label = np.where(in_range, dist[rows, safe], np.nan).astype(np.float32)
    masked = dist.copy()
    masked[rows[in_range], safe[in_range]] = np.inf
    d_other = masked.min(1).astype(np.float32)
    return {
        f"{prefix}_dist_label": d_label,
        f"{prefix}_dist_pred": dist[rows, pred].astype(np.float32),
        f"{prefix}_dist_other": d_other,
        f"{prefix}_margin": (d_other - d_label).astype(np.float32),
        f"{prefix}_nearest_class": np.nanargmin(dist, axis=1).astype(np.int64),
    }


def pixel_features(images: np.ndarray) -> np.ndarray:
    """``(N, C*H*W)`` float32 pixels scaled to [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _distance_declarations(prefix: str, unit: str, words: str) -> tuple[Column, ...]:
    """The declarations of :func:`distance_columns`' columns for one space."""
    return (
        Column(f"{prefix}_dist_label", "numeric", unit, worse="higher", per_head=True,
               words="to its true class's centroid",
               description=f"Distance ({words}) to the centroid of the labelled class."),
        Column(f"{prefix}_dist_pred", "numeric", unit, per_head=True,
               words="to the predicted class's centroid",
               description=f"Distance ({words}) to the centroid of the predicted class."),
        Column(f"{prefix}_dist_other", "numeric", unit, per_head=True,
               words="to the nearest other centroid",
               description=f"Distance ({words}) to the nearest centroid of another class."),
        Column(f"{prefix}_margin", "numeric", unit, worse="lower", per_head=True,
               words="other minus own (negative: nearer another class)",
               description="Nearest other centroid's distance minus the own class's."),
        Column(f"{prefix}_nearest_class", "class", per_head=True,
               words="nearest centroid's class",
               description=f"The class whose centroid is nearest ({words})."),
    )


@register
class PixelCentroids(Step):
    """Mean image per class and every sample's distance to each (``(N, C)``)."""

    name = "pixel_centroids"
    version = 2  # 2: exact distances
    uses_model = False
    order = 30
    uses_reference = ("pixel_centroids",)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        images = ctx.dataset.images  # (N, C, H, W), read a block at a time
        if "pixel_centroids" in ctx.reference:
            cents = ctx.reference["pixel_centroids"]["centroids"]
        else:
            cents = pixel_centroids(images, ctx.dataset.labels, ctx.dataset.num_classes)
        return Artifact({"centroids": cents, "distances": pixel_distances(images, cents)})


@register
class Centroids(Step):
    """Distances to class centroids in pixel space and, per head, in embedding space.

    Each head partitions the embeddings by its own targets (the ``sum`` head
    of ``mnist-sum`` has 19 centroids, its ``digit`` head 10).

    Artifact arrays (``h`` = each head)
    -----------------------------------
    embedding_centroids@h : (C_h, D) float32
    embedding_distances@h : (N, C_h) float32
    target@h, pred@h : (N,) int64
    pixel_distances : (N, C) float32, to the dataset's per-label mean images
    labels : (N,) int64, the dataset's labels
    """

    name = "centroids"
    version = 3  # 3: per head
    requires = ("inference", "pixel_centroids")
    uses_reference = ("centroids",)
    order = 40
    declares = (_distance_declarations("embedding", "L2, embedding space", "embedding L2")
                + _distance_declarations("pixel", "L2, pixels in [0, 1]", "pixel L2"))

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        inf = ctx.inputs["inference"]
        emb = inf["embedding"]
        labels = ctx.dataset.labels
        pixel = ctx.inputs["pixel_centroids"]["distances"]
        arrays = {"pixel_distances": pixel, "labels": labels}
        pixel_heads = []
        for head in ctx.model.task.heads:
            target = inf[head_key("target", head.name)]
            key = head_key("embedding_centroids", head.name)
            if "centroids" in ctx.reference:
                cents = ctx.reference["centroids"][key]
            else:
                cents = class_centroids(emb, target, head.num_classes)
            arrays[key] = cents
            arrays[head_key("embedding_distances", head.name)] = centroid_distances(emb, cents)
            arrays[head_key("target", head.name)] = target
            arrays[head_key("pred", head.name)] = inf[head_key("pred", head.name)]
            # Pixel centroids are per dataset label: they fit the heads that predict it.
            if pixel.shape[1] == head.num_classes and np.array_equal(target, labels):
                pixel_heads.append(head.name)
        return Artifact(arrays, summary={"heads": ctx.model.task.head_names,
                                         "pixel_heads": pixel_heads})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for head in artifact.summary["heads"]:
            target = artifact[head_key("target", head)]
            pred = artifact[head_key("pred", head)]
            cols = distance_columns(artifact[head_key("embedding_distances", head)], target,
                                    pred, "embedding")
            if head in artifact.summary["pixel_heads"]:
                cols.update(distance_columns(artifact["pixel_distances"], target, pred, "pixel"))
            out.update({head_key(c, head): v for c, v in cols.items()})
        return out
