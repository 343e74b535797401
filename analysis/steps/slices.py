"""``slices``: groups of samples where the model does worse, found two ways, each explained.

1. **Clusters** of the shared kNN graph (the ``neighbors`` artifact, made
   undirected), found with Leiden (``leidenalg``, RB-configuration quality with
   a fixed seed): regions of the embedding space.
2. **Rules** over binned metadata (the class and every interpretable column of
   the metadata steps, numbers in quantile bins), found with SliceLine
   (Sagadeeva & Boehm 2021, the ``sliceline`` package) on the error indicator:
   ``label == 7 and stroke_thickness < 1.9``; each threshold is then moved to
   the quantile (of 20, within the rest of the rule) with the most excess errors.

Every slice tried (clusters and rules together) gets a one-sided Fisher exact
test of "more errors inside than outside"; the p-values are corrected with
Benjamini-Hochberg over all of them. Slices with ``q < fdr`` and excess errors
(errors inside minus ``n`` times the outside error rate) above zero are kept,
ranked by excess errors, with two clean-ups: a slice is replaced by a smaller
one lying (at least half) inside it that holds at least ``focus`` (80%) of its excess
errors (``label == 7 and stroke_thickness < 1.9`` rather than all thin
digits, when the thin 7s hold most of the excess), and a slice overlapping a
better-ranked one by more than ``max_overlap`` (Jaccard) is dropped. At most
``max_slices`` are kept, none above ``max_share`` of the samples (with a very
easy remainder, "everything but the easiest" would otherwise show excess
errors). Each kept slice is explained by :func:`analysis.explain.explain`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from analysis.explain import bin_table, compare_groups, explain, query_literal
from analysis.registry import Column, Step, StepContext, get_step, make_config, register
from cache import Artifact
from core.errors import ConfigError
from core.tasks import head_key

log = logging.getLogger(__name__)

# Steps whose interpretable columns the rules may use, when the project has them.
METADATA_STEPS = tuple(name for name in ("image_metadata",)
                       if importlib.util.find_spec(f"analysis.steps.{name}") is not None)
for _name in METADATA_STEPS:  # registers them, for the requirement to resolve
    importlib.import_module(f"analysis.steps.{_name}")


def leiden_clusters(indices: np.ndarray, seed: int = 0, resolution: float = 1.0) -> np.ndarray:
    """Leiden communities of a kNN graph.

    Parameters
    ----------
    indices : (N, k) int
        Each sample's neighbours (never itself); edges are taken as undirected.
    seed : int
    resolution : float
        RB-configuration resolution: higher = more, smaller clusters.

    Returns
    -------
    (N,) int64 cluster of each sample, 0 the largest.
    """
    import igraph
    import leidenalg

    n, k = indices.shape
    src = np.repeat(np.arange(n), k)
    edges = np.stack([src, indices.reshape(-1)], 1)
    edges = np.unique(np.sort(edges, 1), axis=0)  # each undirected edge once
    graph = igraph.Graph(n=n, edges=edges.tolist())
    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                    resolution_parameter=resolution, seed=seed)
    return np.asarray(part.membership, dtype=np.int64)


def metadata_columns(inputs: dict[str, Artifact]) -> dict[str, np.ndarray]:
    """The interpretable numeric columns of the metadata steps among ``inputs``."""
    from analysis.registry import column_info

    out: dict[str, np.ndarray] = {}
    for name in METADATA_STEPS:
        if name not in inputs:
            continue
        cols = get_step(name).columns(inputs[name], make_config(name))
        for col, values in cols.items():
            info = column_info(col)
            if np.ndim(values) == 1 and info is not None and info.interpretable:
                out[col] = np.asarray(values)
    return out


@register
class Slices(Step):
    """Underperforming slices: Leiden clusters and SliceLine rules, tested and explained.

    Artifact arrays
    ---------------
    slice : (N,) int64, the rank (0 = worst) of the best-ranked kept slice a
        sample belongs to; -1 for none
    members : (M,) int64, the kept slices' sample indices, each slice's worst
        (highest loss) first, slice after slice
    offsets : (S + 1,) int64, slice ``r`` is ``members[offsets[r]:offsets[r + 1]]``

    Summary: ``slices`` (one dict per kept slice, by rank: ``kind`` cluster or
    rule, ``rule``, the :func:`analysis.explain.compare_groups` numbers,
    ``q_value`` and ``explanation`` as Evidence dicts), ``tried``, ``clusters``,
    ``rules``, ``columns`` (the metadata the rules could use).
    """

    name = "slices"
    datasets = ("main",)
    order = 120  # after the other insight steps, before the maps
    version = 1
    requires = ("inference", "neighbors", *METADATA_STEPS)
    declares = (Column("slice", "class", description="Rank of the worst underperforming slice "
                       "(cluster or metadata rule) the sample belongs to; -1 for none.",
                       worse=None),)

    @dataclass(frozen=True)
    class Config:
        graph_k: int = 10  # neighbours per sample in the clustered graph
        resolution: float = 1.0  # Leiden RB-configuration resolution
        seed: int = 0
        bins: int = 5  # quantile bins per numeric metadata column
        max_predicates: int = 2  # SliceLine's lattice depth
        alpha: float = 0.95  # SliceLine: weight of the error rate against the size
        min_support: float = 0.002  # smallest rule slice, as a share of the samples
        top_rules: int = 20
        min_size: int = 10
        fdr: float = 0.05  # Benjamini-Hochberg level
        max_overlap: float = 0.8  # Jaccard above which a worse-ranked slice is dropped
        focus: float = 0.8  # a sub-slice with this share of a slice's excess errors replaces it
        max_slices: int = 10
        max_share: float = 0.5  # a "slice" of more than this share of the data is not one
        error: str = "error"  # SliceLine's error vector: "error" (0/1) or "loss"

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if config.error not in ("error", "loss"):
            raise ConfigError(f"slices: error must be 'error' or 'loss', got {config.error!r}.")
        table = slice_table(ctx, ctx.inputs)
        n = len(table)
        meta = [c for c in table.columns if c not in ("label", "pred", "correct", "loss")]
        groups: list[tuple[str, np.ndarray, str]] = []
        graph = ctx.inputs["neighbors"]["indices"]
        clusters = leiden_clusters(graph[:, :min(config.graph_k, graph.shape[1])],
                                   config.seed, config.resolution)
        sizes = np.bincount(clusters)
        for c in np.flatnonzero((sizes >= config.min_size) & (sizes < n)):
            groups.append(("cluster", clusters == c, ""))
        n_clusters = len(groups)
        groups += rule_slices(table, ["label", *meta], config)
        explain_bins = bin_table(table, ["label", "pred", *meta], config.bins)
        kept = rank_slices(table, groups, config)
        labels = np.full(n, -1, dtype=np.int64)
        members, offsets, records = [], [0], []
        loss = table["loss"].to_numpy()
        for rank, (kind, mask, rule, stats) in enumerate(kept):
            idx = np.flatnonzero(mask)
            idx = idx[np.argsort(-np.nan_to_num(loss[idx], nan=-np.inf), kind="stable")]
            labels[idx[labels[idx] < 0]] = rank
            members.append(idx)
            offsets.append(offsets[-1] + len(idx))
            evidence = explain(table, mask, binned=explain_bins)
            records.append({"rank": rank, "kind": kind, "rule": rule, **stats,
                            "explanation": [asdict(e) for e in evidence]})
        return Artifact(
            {"slice": labels,
             "members": np.concatenate(members) if members else np.empty(0, np.int64),
             "offsets": np.asarray(offsets, dtype=np.int64)},
            summary={"slices": records, "tried": len(groups), "clusters": n_clusters,
                     "rules": len(groups) - n_clusters, "columns": meta})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        return {"slice": artifact["slice"]}


def slice_table(ctx: StepContext, inputs: dict[str, Artifact]) -> pd.DataFrame:
    """label, pred, correct, loss (the task's first head) and the metadata columns."""
    inf = inputs["inference"]
    head = ctx.model.task.heads[0].name
    label = inf[head_key("target", head)].astype(np.int64)
    pred = inf[head_key("pred", head)].astype(np.int64)
    table = pd.DataFrame({"label": label, "pred": pred, "correct": pred == label,
                          "loss": inf[head_key("loss", head)].astype(np.float64)})
    for col, values in metadata_columns(inputs).items():
        table[col] = values
    return table


def rule_features(table: pd.DataFrame, columns: list[str], bins: int
                  ) -> tuple[np.ndarray, list[list[str]]]:
    """SliceLine's input: class columns as they are; each numeric column as one
    two-valued feature per inner quantile edge ``e`` (``x < e`` / ``x >= e``), so a
    rule can say "thinner than" rather than only "in this bin".

    Returns
    -------
    X : (N, F) int64 codes starting at 0
    conditions : F lists, the query condition of each code of each feature
    """
    from analysis.explain import quantile_edges

    features, conditions = [], []
    for col in bin_table(table, columns, bins):
        if col.is_class:
            features.append(col.codes)
            conditions.append([f"{col.name} == {query_literal(v)}" for v in col.values])
            continue
        finite = np.isfinite(col.raw)
        for edge in quantile_edges(col.raw, bins):
            # NaN takes the code "not below the edge" (a third value would rarely help).
            features.append((~(col.raw < edge) | ~finite).astype(np.int64))
            conditions.append([f"{col.name} < {edge:.4g}", f"{col.name} >= {edge:.4g}"])
    return np.stack(features, 1), conditions


def rule_slices(table: pd.DataFrame, columns: list[str], config: Slices.Config
                ) -> list[tuple[str, np.ndarray, str]]:
    """SliceLine's top rules over :func:`rule_features`: (``"rule"``, mask, query)."""
    from sliceline import Slicefinder

    X, conditions = rule_features(table, columns, config.bins)
    errors = (~table["correct"].to_numpy()).astype(np.float64) if config.error == "error" \
        else np.nan_to_num(table["loss"].to_numpy())
    if errors.sum() == 0:
        return []
    min_sup = max(config.min_size, int(config.min_support * len(table)))
    finder = Slicefinder(alpha=config.alpha, k=config.top_rules,
                         max_l=min(config.max_predicates, X.shape[1]), min_sup=min_sup,
                         verbose=False)
    finder.fit(X, errors)
    if finder.top_slices_ is None or len(finder.top_slices_) == 0:
        return []
    out = []
    for predicate in finder.top_slices_:
        parts = [conditions[f][int(code)] for f, code in enumerate(predicate)
                 if code is not None and not (isinstance(code, float) and np.isnan(code))]
        if parts:
            parts = refine_thresholds(table, parts, errors, config.max_share)
            rule = " and ".join(parts)
            out.append(("rule", table.eval(rule).to_numpy(dtype=bool), rule))
    return out


def refine_thresholds(table: pd.DataFrame, parts: list[str], errors: np.ndarray,
                      max_share: float = 0.5, steps: int = 20) -> list[str]:
    """Move each ``column < t`` / ``column >= t`` of a rule to the one of its ``steps``
    quantiles *within the rest of the rule* that gives the most excess errors (the
    smallest slice within 5% of the best; none above ``max_share`` of the samples).

    The quintile thresholds are the whole dataset's; the group that fails is often a
    share of one class (the thinnest fifth of the 7s), whose quantiles differ.
    """
    parts = list(parts)
    err = errors > 0
    for i, part in enumerate(parts):
        col, op, _ = part.split(" ")
        if op not in ("<", ">="):
            continue
        others = np.ones(len(table), dtype=bool)
        for j, other in enumerate(parts):
            if j != i:
                others &= table.eval(other).to_numpy(dtype=bool)
        x = table[col].to_numpy(dtype=np.float64)
        finite = others & np.isfinite(x)
        if finite.sum() < 2:
            continue
        qs = np.quantile(x[finite], np.linspace(0, 1, steps + 1)[1:-1])
        tried = []  # (excess, size, condition)
        for t in np.unique([float(f"{q:.4g}") for q in qs]):
            inside = others & ((x < t) if op == "<" else (x >= t))
            n_in = int(inside.sum())
            if 0 < n_in <= max_share * len(table):
                tried.append((err[inside].sum() - n_in * err[~inside].mean(), n_in,
                              f"{col} {op} {t:.4g}"))
        if tried:
            # The excess is flat near the group's edge: take the smallest slice within
            # 5% of the best excess rather than the largest.
            top = max(e for e, _, _ in tried)
            parts[i] = min((n, c) for e, n, c in tried if e >= top - 0.05 * abs(top))[1]
    return parts


def rank_slices(table: pd.DataFrame, groups: list[tuple[str, np.ndarray, str]],
                config: Slices.Config) -> list[tuple[str, np.ndarray, str, dict]]:
    """Test every group, correct over all of them, keep and rank (see the module docstring)."""
    from scipy.stats import false_discovery_control

    if not groups:
        return []
    stats = [compare_groups(table, mask, alternative="greater") for _, mask, _ in groups]
    p = np.array([s["p_value"] for s in stats], dtype=np.float64)
    q = false_discovery_control(np.nan_to_num(p, nan=1.0))
    excess = np.array([np.nan_to_num(s["excess_errors"]) for s in stats])
    eligible = [i for i in range(len(groups)) if q[i] < config.fdr and excess[i] > 0
                and stats[i]["share"] <= config.max_share]
    dominated = {a for a in eligible for b in eligible
                 if _dominates(groups[b][1], excess[b], groups[a][1], excess[a], config.focus)}
    order = sorted((i for i in eligible if i not in dominated), key=lambda i: -excess[i])
    kept: list[tuple[str, np.ndarray, str, dict]] = []
    for i in order:
        kind, mask, rule = groups[i]
        if any(_jaccard(mask, other) > config.max_overlap for _, other, _, _ in kept):
            continue
        kept.append((kind, mask, rule, {**stats[i], "q_value": float(q[i])}))
        if len(kept) == config.max_slices:
            break
    return kept


def _dominates(inner: np.ndarray, inner_excess: float, outer: np.ndarray,
               outer_excess: float, focus: float) -> bool:
    """Whether the smaller slice ``inner``, lying (at least half) inside ``outer``, holds
    at least ``focus`` of its excess errors: then it is the better description."""
    n_in, n_out = np.count_nonzero(inner), np.count_nonzero(outer)
    return bool(n_in < n_out and inner_excess >= focus * outer_excess
                and np.count_nonzero(inner & outer) >= 0.5 * n_in)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0
