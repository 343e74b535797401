"""``slices``: groups of samples where the model does worse, found two ways, each explained.

1. **Clusters** of the shared kNN graph (the ``neighbors`` artifact, made
   undirected), found with Leiden (igraph's ``community_leiden``, modularity
   with a resolution, i.e. RB-configuration, and a fixed seed): regions of the
   embedding space.
2. **Rules** over binned metadata (the class and every interpretable column of
   the metadata steps: the built-in image measurements and the user's
   ``--metadata`` columns, numbers as thresholds at their quintiles), found with
   SliceLine (Sagadeeva & Boehm 2021, the ``sliceline`` package) on the error
   indicator: ``label == 7 and stroke_thickness < 2.1``; each threshold is then
   moved to the quantile (of 40, within the rest of the rule) where Kulldorff's
   scan statistic (:func:`scan_llr`, the likelihood ratio of "a higher error
   rate inside") is highest: where the errors stop concentrating, rather than as
   far as the slice still has any excess errors.

Every slice tried (clusters and rules together) gets a one-sided Fisher exact
test of "more errors inside than outside"; the p-values are corrected with
Benjamini-Hochberg over all of them. Slices with ``q < fdr``, excess errors
(errors inside minus ``n`` times the outside error rate) above zero and at most
``max_share`` of the samples are kept, with two clean-ups:

- a slice is replaced by smaller ones lying (at least half) inside it, at a
  higher error rate, that together hold at least ``focus`` (half) of its excess
  errors *and* concentrate them more surely (a higher scan statistic; see
  :func:`dominated_slices`): the thin 7s rather than all thin, faint digits
  when the 7s hold most of the excess, or the thin 7s, the small 3s and the
  slanted 1s when "faint digits" is mostly their union; a random part of a
  homogeneous group, at the same error rate, has a lower statistic and does not
  replace it;
- of slices overlapping by more than ``max_overlap`` (Jaccard), the one with
  the highest scan statistic is the description kept (``label == 7 and
  stroke_thickness < 2.1`` rather than ``label == 7 and ink_area < 66``, when
  thickness tells the failing 7s apart better).

The distinct slices are ranked by excess errors; at most ``max_slices`` are
kept. Each is explained by :func:`analysis.explain.explain` (the metadata given
the class).
"""

from __future__ import annotations

import importlib.util
import logging
import random
import threading
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from analysis.explain import bin_table, compare_groups, explain, query_literal
from analysis.registry import Column, Step, StepContext, get_step, make_config, register
from cache import Artifact
from core.errors import ConfigError
from core.memory import release_freed_memory
from core.tasks import head_key

log = logging.getLogger(__name__)
EDGE_BLOCK = 1 << 18  # graph edges handed to igraph at a time
OVERLAP_BLOCK = 1 << 16  # samples per block when counting slice overlaps

# Steps whose interpretable columns the rules may use, when the project has them.
METADATA_STEPS = tuple(name for name in ("image_metadata", "user_metadata")
                       if importlib.util.find_spec(f"analysis.steps.{name}") is not None)
for _name in METADATA_STEPS:  # registers them, for the requirement to resolve
    importlib.import_module(f"analysis.steps.{_name}")


def leiden_clusters(indices: np.ndarray, seed: int = 0, resolution: float = 1.0) -> np.ndarray:
    """Leiden communities of a kNN graph (igraph's ``community_leiden``, modularity).

    Modularity with a resolution is the RB-configuration quality. igraph's own
    Leiden is 13x faster than ``leidenalg``'s (0.76 s against 9.9 s on 70,000
    MNIST embeddings, modularity 0.871 against 0.870). Its random numbers come
    from a ``random.Random(seed)`` for the call (igraph's generator is
    process-wide: calls take turns, and the default is restored after).

    Parameters
    ----------
    indices : (N, k) int
        Each sample's neighbours (never itself); edges are taken as undirected.
    seed : int
    resolution : float
        Modularity resolution: higher = more, smaller clusters.

    Returns
    -------
    (N,) int64 cluster of each sample, 0 the largest (ties: the one whose first
    sample comes first).
    """
    import igraph

    n, k = indices.shape
    # Each undirected edge once, as the key lo * n + hi: sorted like (lo, hi) pairs.
    lo = np.repeat(np.arange(n, dtype=np.int64), k)
    hi = indices.reshape(-1).astype(np.int64)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    keys = np.unique(lo * n + hi)
    del lo, hi
    # igraph reads edges through Python objects (even from NumPy): add them a block at a
    # time, in order, so the graph is the same one as built whole.
    graph = igraph.Graph(n=n)
    for s in range(0, len(keys), EDGE_BLOCK):
        block = keys[s:s + EDGE_BLOCK]
        graph.add_edges(np.stack([block // n, block % n], 1))
    del keys
    with _IGRAPH_RNG:
        igraph.set_random_number_generator(random.Random(seed))
        try:
            part = graph.community_leiden(objective_function="modularity",
                                          resolution=resolution, n_iterations=2)
        finally:
            igraph.set_random_number_generator(random)
    return by_size(np.asarray(part.membership, dtype=np.int64))


_IGRAPH_RNG = threading.Lock()


def by_size(labels: np.ndarray) -> np.ndarray:
    """``(N,)`` labels renumbered 0, 1, ... from the largest group down (ties: the group
    whose first member comes first)."""
    _, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True,
                                          return_counts=True)
    order = np.lexsort((first, -counts))  # new number -> old group
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)]


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
    ``q_value``, ``scan_llr`` (:func:`scan_llr`, nats) and ``explanation`` as
    Evidence dicts), ``tried``, ``clusters``,
    ``rules``, ``columns`` (the metadata the rules could use).
    """

    name = "slices"
    datasets = ("main",)
    order = 120  # after the other insight steps, before the maps
    version = 3  # 3: igraph's Leiden (community_leiden) in place of leidenalg's
    requires = ("inference", "neighbors", *METADATA_STEPS)
    declares = (Column("slice", "class", description="Rank of the worst underperforming slice "
                       "(cluster or metadata rule) the sample belongs to; -1 for none.",
                       worse=None),)

    @dataclass(frozen=True)
    class Config:
        graph_k: int = 10  # neighbours per sample in the clustered graph
        resolution: float = 1.0  # Leiden modularity (RB-configuration) resolution
        seed: int = 0
        bins: int = 5  # quantile bins per numeric metadata column
        max_predicates: int = 2  # SliceLine's lattice depth
        alpha: float = 0.95  # SliceLine: weight of the error rate against the size
        min_support: float = 0.002  # smallest rule slice, as a share of the samples
        top_rules: int = 20
        min_size: int = 10
        fdr: float = 0.05  # Benjamini-Hochberg level
        max_overlap: float = 0.5  # Jaccard above which the less sure of two slices is dropped
        focus: float = 0.5  # a sub-slice with this share of a slice's excess errors and a
        # higher scan statistic replaces it
        max_slices: int = 10
        max_share: float = 0.5  # a "slice" of more than this share of the data is not one
        error: str = "error"  # SliceLine's error vector: "error" (0/1) or "loss"

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if config.error not in ("error", "loss"):
            raise ConfigError(f"slices: error must be 'error' or 'loss', got {config.error!r}.")
        table = slice_table(ctx, ctx.inputs)
        n = len(table)
        meta = [c for c in table.columns if c not in ("label", "pred", "correct", "loss")]
        groups: list[tuple[str, Membership, str]] = []
        graph = ctx.inputs["neighbors"]["indices"]
        clusters = leiden_clusters(graph[:, :min(config.graph_k, graph.shape[1])],
                                   config.seed, config.resolution)
        release_freed_memory()  # igraph's graph (about 0.9 GB at 1,000,000 samples)
        sizes = np.bincount(clusters)
        for c in np.flatnonzero((sizes >= config.min_size) & (sizes < n)):
            groups.append(("cluster", ClusterMembers(clusters, int(c)), ""))
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
    X : (N, F) codes starting at 0, of the smallest unsigned integer type that holds them
        (uint8 unless a class column has more than 256 values)
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
            features.append((~(col.raw < edge) | ~finite).astype(np.uint8))
            conditions.append([f"{col.name} < {edge:.4g}", f"{col.name} >= {edge:.4g}"])
    top = max((len(c) - 1 for c in conditions), default=0)
    X = np.empty((len(table), len(features)), dtype=np.min_scalar_type(top))
    for f, codes in enumerate(features):
        X[:, f] = codes
    return X, conditions


def rule_slices(table: pd.DataFrame, columns: list[str], config: Slices.Config
                ) -> list[tuple[str, np.ndarray, str]]:
    """SliceLine's top rules over :func:`rule_features`: (``"rule"``, mask, query)."""
    from analysis.slicefinder import BlockSlicefinder

    X, conditions = rule_features(table, columns, config.bins)
    wrong = ~table["correct"].to_numpy(dtype=bool)
    errors = wrong.astype(np.float64) if config.error == "error" \
        else np.nan_to_num(table["loss"].to_numpy())
    if errors.sum() == 0:
        return []
    min_sup = max(config.min_size, int(config.min_support * len(table)))
    finder = BlockSlicefinder(alpha=config.alpha, k=config.top_rules,
                              max_l=min(config.max_predicates, X.shape[1]),
                              min_sup=min_sup, verbose=False)
    finder.fit(X, errors)
    if finder.top_slices_ is None or len(finder.top_slices_) == 0:
        return []
    out = []
    for predicate in finder.top_slices_:
        parts = [conditions[f][int(code)] for f, code in enumerate(predicate)
                 if code is not None and not (isinstance(code, float) and np.isnan(code))]
        if parts:
            parts = refine_thresholds(table, parts, wrong, config.max_share)
            rule = " and ".join(parts)
            out.append(("rule", table.eval(rule).to_numpy(dtype=bool), rule))
    return out


def scan_llr(errors_in: np.ndarray | float, n_in: np.ndarray | float, errors_total: float,
             n_total: float) -> np.ndarray:
    """Kulldorff's Bernoulli scan statistic: the log-likelihood ratio of "the error rate
    inside differs from outside" against "one rate everywhere", 0 where the rate inside
    is not higher (Kulldorff 1997, "A spatial scan statistic").

    Parameters
    ----------
    errors_in, n_in : (K,) arrays or floats
        Errors and samples inside each of K groups.
    errors_total, n_total : float
        The same over all samples.

    Returns
    -------
    (K,) float64 (nats), higher = the errors concentrate in the group more surely:
    it grows with the group's size *and* with how much higher its error rate is.
    """
    from scipy.special import xlogy

    a = np.asarray(errors_in, dtype=np.float64)
    n = np.asarray(n_in, dtype=np.float64)
    c, m = errors_total - a, n_total - n

    def loglik(k, t):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(t > 0, xlogy(k, k / np.where(t > 0, t, 1))
                            + xlogy(t - k, (t - k) / np.where(t > 0, t, 1)), 0.0)

    llr = loglik(a, n) + loglik(c, m) - loglik(errors_total, n_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        higher = a * m > c * n  # a / n > c / m without dividing by zero
    return np.where(higher & (n > 0), np.maximum(llr, 0.0), 0.0)


def refine_thresholds(table: pd.DataFrame, parts: list[str], wrong: np.ndarray,
                      max_share: float = 0.5, steps: int = 40) -> list[str]:
    """Move each ``column < t`` / ``column >= t`` of a rule to the one of its ``steps``
    quantiles *within the rest of the rule* where the errors concentrate most surely:
    the highest scan statistic (:func:`scan_llr`; none above ``max_share`` of the samples).

    The quintile thresholds are the whole dataset's; the group that fails is often a
    share of one class (the thinnest fifth of the 7s), whose quantiles differ. The
    scan statistic puts the edge where the error rate falls back: the total of excess
    errors would keep growing with any slice whose error rate is above the outside
    one, so it would extend a slice far into the easier samples around it.
    """
    parts = list(parts)
    wrong = np.asarray(wrong, dtype=bool)
    n_total, errors_total = len(table), float(wrong.sum())
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
        cuts = np.unique([float(f"{q:.4g}") for q in qs])
        inside = others[:, None] & ((x[:, None] < cuts) if op == "<" else (x[:, None] >= cuts))
        n_in = inside.sum(0)
        score = scan_llr(inside[wrong].sum(0), n_in, errors_total, n_total)
        score[(n_in == 0) | (n_in > max_share * n_total)] = -1.0
        if score.max() > 0:
            parts[i] = f"{col} {op} {cuts[int(np.argmax(score))]:.4g}"
    return parts


class ClusterMembers:
    """The ``(N,)`` bool membership of one cluster, made when asked for.

    A mask is a byte per sample: with many clusters of ``min_size`` (a higher
    ``resolution``, a lower ``min_size``, large data) masks for all of them would
    hold gigabytes, though only the few that pass the test are kept. (On
    ``mnist-scale:1000000`` at the defaults Leiden gives 15 such clusters.)
    """

    def __init__(self, clusters: np.ndarray, cluster: int) -> None:
        self.clusters, self.cluster = clusters, cluster

    def mask(self) -> np.ndarray:
        return self.clusters == self.cluster


Membership = np.ndarray | ClusterMembers


def as_mask(members: Membership) -> np.ndarray:
    """A group's ``(N,)`` bool mask (made now for a :class:`ClusterMembers`)."""
    return members.mask() if isinstance(members, ClusterMembers) else members


def rank_slices(table: pd.DataFrame, groups: list[tuple[str, Membership, str]],
                config: Slices.Config) -> list[tuple[str, np.ndarray, str, dict]]:
    """Test every group, correct over all of them, keep and rank (see the module docstring).

    Only the groups that pass the test hold a mask at once (see :class:`ClusterMembers`).
    """
    from scipy.stats import false_discovery_control

    if not groups:
        return []
    valid, wrong = _valid_wrong(table)
    stats, errors_in, valid_in = [], [], []
    for _, members, _ in groups:
        mask = as_mask(members)
        stats.append(compare_groups(table, mask, alternative="greater"))
        errors_in.append(np.count_nonzero(mask & wrong))
        valid_in.append(np.count_nonzero(mask & valid))
    p = np.array([s["p_value"] for s in stats], dtype=np.float64)
    q = false_discovery_control(np.nan_to_num(p, nan=1.0))
    excess = np.array([np.nan_to_num(s["excess_errors"]) for s in stats])
    # the scan statistic, samples whose correctness is unknown left out
    llr = scan_llr(np.array(errors_in, np.float64), np.array(valid_in, np.float64),
                   float(wrong.sum()), float(valid.sum()))
    eligible = [i for i in range(len(groups)) if q[i] < config.fdr and excess[i] > 0
                and stats[i]["share"] <= config.max_share]
    masks = {i: as_mask(groups[i][1]) for i in eligible}
    dominated = dominated_slices(table, [masks[i] for i in eligible], llr[eligible],
                                 config.focus)
    dominated = {eligible[j] for j in dominated}
    # Of near-identical slices, the one where the errors concentrate most surely describes
    # the group; the distinct ones are then ranked by excess errors.
    distinct: list[int] = []
    for i in sorted((i for i in eligible if i not in dominated), key=lambda i: -llr[i]):
        if all(_jaccard(masks[i], masks[j]) <= config.max_overlap for j in distinct):
            distinct.append(i)
    kept: list[tuple[str, np.ndarray, str, dict]] = []
    for i in sorted(distinct, key=lambda i: -excess[i])[:config.max_slices]:
        kind, _, rule = groups[i]
        kept.append((kind, masks[i], rule, {**stats[i], "q_value": float(q[i]),
                                        "scan_llr": float(llr[i])}))
    return kept


def _valid_wrong(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` bool: samples whose correctness is known, and those of them wrong."""
    correct = table["correct"].to_numpy(dtype=np.float64)
    valid = np.isfinite(correct)
    return valid, valid & (correct == 0)


def dominated_slices(table: pd.DataFrame, masks: list[np.ndarray], llr: np.ndarray,
                     focus: float) -> set[int]:
    """The slices better described by smaller ones inside them.

    The *parts* of slice ``a`` are the smaller slices lying (at least half) inside it
    with a higher error rate than ``a``'s. Taking them surest first (highest scan
    statistic), ``a``'s samples in the first parts (their union ``U``) that explain at
    least ``focus`` of its excess errors (its excess minus the excess left in ``a``
    without ``U``, both against the error rate outside ``a``) dominate it when they
    concentrate the errors more surely than ``a`` does (``U``'s scan statistic is
    higher than ``a``'s). One part holding half the excess is enough
    ("the thin 7s" in "all faint digits"); so are several ("the thin 7s", "the small
    3s" and "the slanted 1s" when the broad slice is mostly their union). A random
    part of a homogeneous group, at the same error rate, has a lower statistic than
    the whole: the group stays.

    Parameters
    ----------
    table : DataFrame
        The sample table (``correct``; NaN where unknown).
    masks : list of (N,) bool
    llr : (S,) float
        The slices' scan statistics (:func:`scan_llr`, samples of unknown correctness left
        out).
    focus : float

    Returns
    -------
    set of int, indices into ``masks``
    """
    if not masks:
        return set()
    valid, wrong = _valid_wrong(table)
    sizes, inter, n_valid, n_wrong = _overlaps(masks, valid, wrong)
    rate = n_wrong / np.maximum(n_valid, 1)
    total_err, total_n = float(wrong.sum()), float(valid.sum())
    out = set()
    for a, mask in enumerate(masks):
        parts = np.flatnonzero((sizes < sizes[a]) & (inter[:, a] >= 0.5 * sizes)
                               & (rate > rate[a]))
        outside = ~mask & valid
        rate_out = np.count_nonzero(wrong & outside) / max(np.count_nonzero(outside), 1)
        excess = np.count_nonzero(wrong & mask) - np.count_nonzero(mask & valid) * rate_out
        if excess <= 0:
            continue
        covered = np.zeros_like(mask)
        for b in parts[np.argsort(-llr[parts], kind="stable")]:  # surest parts first
            covered |= mask & masks[b]
            rest = mask & ~covered
            left = np.count_nonzero(wrong & rest) - np.count_nonzero(rest & valid) * rate_out
            if excess - left >= focus * excess:
                covered_llr = scan_llr(np.count_nonzero(wrong & covered),
                                       np.count_nonzero(valid & covered), total_err, total_n)
                if covered_llr > llr[a]:
                    out.add(a)
                break
    return out


def _overlaps(masks: list[np.ndarray], valid: np.ndarray, wrong: np.ndarray,
              block: int = OVERLAP_BLOCK) -> tuple[np.ndarray, ...]:
    """Sizes ``(S,)``, samples in common ``(S, S)``, valid samples ``(S,)`` and errors ``(S,)``
    of ``S`` groups given as ``(N,)`` bool masks, counted ``block`` samples at a time.

    float32, as one product of the whole ``(S, N)`` matrix gave them: counts below 2**24
    are exact in float32, so the blocks' sums are the same numbers.
    """
    s = len(masks)
    sizes, n_valid, n_wrong = (np.zeros(s, np.float32) for _ in range(3))
    inter = np.zeros((s, s), np.float32)
    for start in range(0, len(valid), block):
        part = np.stack([m[start:start + block] for m in masks]).astype(np.float32)
        sizes += part.sum(1)
        inter += part @ part.T
        n_valid += part @ valid[start:start + block].astype(np.float32)
        n_wrong += part @ wrong[start:start + block].astype(np.float32)
    return sizes, inter, n_valid, n_wrong


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0
