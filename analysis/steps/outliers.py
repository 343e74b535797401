"""``outliers``: how unusual each sample is in the model's embedding space.

``outlier_score`` is the Euclidean distance from a sample's embedding to its
``k``-th nearest other sample (default ``k = 10``), read from the shared
``neighbors`` graph: a sample far from even its tenth neighbour lies where
the model has seen little like it. Higher = more unusual. (A kth-neighbour
distance, as in Ramaswamy, Rastogi & Shim 2000, "Efficient algorithms for
mining outliers from large data sets".)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.registry import Column, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError


def kth_neighbour_distance(distances: np.ndarray, k: int) -> np.ndarray:
    """``(N,)`` the ``k``-th column (1-based) of an ascending ``(N, K)`` neighbour-distance
    matrix."""
    if not 1 <= k <= distances.shape[1]:
        raise ConfigError(f"outliers: k={k} must be between 1 and the {distances.shape[1]} "
                          "neighbours the neighbors step keeps (its graph_k).")
    return distances[:, k - 1].astype(np.float32)


@register
class Outliers(Step):
    """Distance to the ``k``-th neighbour in the embedding.

    Artifact arrays
    ---------------
    outlier_score : (N,) float32, higher = more unusual
    """

    name = "outliers"
    datasets = ("main",)
    order = 110
    version = 1
    requires = ("neighbors",)
    declares = (
        Column("outlier_score", "numeric", unit="L2, embedding space",
               description="Distance from the sample's embedding to its 10th nearest "
                           "neighbour: higher = more unusual.", worse="higher"),
    )

    @dataclass(frozen=True)
    class Config:
        k: int = 10

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        dist = ctx.inputs["neighbors"]["distances"]
        return Artifact({"outlier_score": kth_neighbour_distance(dist, config.k)},
                        summary={"k": config.k})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        return {"outlier_score": artifact["outlier_score"]}
