"""Explain a group of samples: which metadata distinguishes it, how the model does inside.

Used for every insight (a slice, a cluster) and for any selection a person
makes ("explain this selection"): the same numbers either way.

For each interpretable column of the sample table, numbers are cut into
quantile bins and class columns are taken as they are; the mutual information
(nats) between the binned column and membership ranks the columns, the bin (or
value) most over-represented inside gives the lift, and the typical value
inside vs outside says which way the group differs.

When the table has a ``label`` column, every other column is scored *given
the class*: the conditional mutual information I(member; column | label),
with each number cut into quantile bins of its own class, and compared with
the samples of the same classes outside. By the chain rule
I(member; label, column) = I(member; label) + I(member; column | label), so
the class's own evidence and what a column says beyond it add up. "The
thinnest 7s" are then explained by the class and by stroke thickness (thin
*for a 7*), not by measurements that only tell 7s from other digits (holes,
stroke length), nor against the mean thickness of all digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.evidence import Evidence
from core.errors import ConfigError

# Class columns usable as explanations without a declaration (the ground truth and
# the prediction); their ``*_name`` twin, when present, gives the words.
CLASS_COLUMNS = ("label", "pred")
N_BINS = 5
# The column the others are explained given (see the module docstring).
GIVEN = "label"


def interpretable_columns(table: pd.DataFrame) -> list[str]:
    """The table's columns a person can reason with: ``label``/``pred`` and every
    column whose declaration (:func:`analysis.registry.column_info`) says
    ``interpretable``."""
    from analysis.registry import column_info

    out = [c for c in CLASS_COLUMNS if c in table]
    for col in table.columns:
        if col in out:
            continue
        info = column_info(str(col))
        if info is not None and info.interpretable and info.kind in ("numeric", "class", "bool"):
            out.append(str(col))
    return out


def _is_class(table: pd.DataFrame, col: str) -> bool:
    from analysis.registry import column_info

    if col in CLASS_COLUMNS:
        return True
    info = column_info(col)
    if info is not None:
        return info.kind in ("class", "bool")
    values = table[col]
    return not pd.api.types.is_float_dtype(values.dtype)


def quantile_edges(values: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """The inner edges of ``bins`` quantile bins of ``values`` (NaN ignored), rounded to
    4 significant digits so a rule written with them reproduces the bins exactly; a
    minimum that fills more than one bin (a yes/no column with few yeses) is a bin of
    its own.

    Returns
    -------
    (B - 1,) float64, ascending and unique (fewer when values repeat)
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique([float(f"{q:.4g}") for q in qs])
    low = finite.min()
    above = finite[finite > low]
    if above.size and (edges.size == 0 or edges[0] <= low):
        # The minimum holds more than a bin's share (a yes/no column, a count that is
        # mostly 0): it gets a bin of its own, split off at the next value up.
        edges = np.unique(np.append(edges, float(f"{above.min():.4g}")))
    # An edge at the minimum would leave its lower bin empty.
    return edges[edges > low]


def bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 bin of each value: bin ``b`` holds ``edges[b-1] <= x < edges[b]``;
    NaN gets the extra code ``len(edges) + 1``."""
    codes = np.searchsorted(edges, values, side="right").astype(np.int64)
    codes[~np.isfinite(values)] = len(edges) + 1
    return codes


def bin_label(col: str, edges: np.ndarray, code: int) -> str:
    """The bin ``code`` as a pandas query condition (``1.2 <= stroke_thickness < 1.9``)."""
    if code > len(edges):
        return f"{col} != {col}"  # NaN
    if len(edges) == 0:
        return f"{col} == {col}"
    if code == 0:
        return f"{col} < {edges[0]:.4g}"
    if code == len(edges):
        return f"{col} >= {edges[-1]:.4g}"
    return f"{edges[code - 1]:.4g} <= {col} < {edges[code]:.4g}"


@dataclass(frozen=True)
class BinnedColumn:
    """One column cut into codes: ``codes`` (N,) int64 in ``[0, len(values))``; ``values``
    the value (class column) or the query condition (numeric bin) of each code; ``raw``
    (N,) the numbers (NaN-able float64) or the class values.

    ``given`` (N,) int64, the class of each sample (the ``label`` column's codes), and
    ``joint`` (N,) int64, the cell (class, value or bin *of that class*) of each sample,
    with ``joint_values`` the query condition of each cell, are set when the column is
    explained given the class (see the module docstring); ``None`` otherwise."""

    name: str
    is_class: bool
    codes: np.ndarray
    values: list[Any]
    raw: np.ndarray
    names: dict[Any, str]
    given: np.ndarray | None = None
    joint: np.ndarray | None = None
    joint_values: list[str] | None = None


def bin_table(table: pd.DataFrame, columns: Sequence[str] | None = None,
              bins: int = N_BINS) -> list[BinnedColumn]:
    """Cut each column once, so many groups of one table are explained fast.

    ``columns`` default to :func:`interpretable_columns`; numbers go into
    ``bins`` quantile bins (:func:`quantile_edges`), class columns stay as they are.
    When the table has a ``label`` column, every column but ``label`` is also cut
    given the class (``joint``: numbers in quantile bins of their own class).
    """
    cols = interpretable_columns(table) if columns is None else list(columns)
    missing = [c for c in cols if c not in table]
    if missing:
        raise ConfigError(f"explain: no column(s) {', '.join(missing)} in the sample table; "
                          f"it has {', '.join(map(str, table.columns))}.")
    classes = _Classes(table[GIVEN].to_numpy()) if GIVEN in table else None
    out = []
    for col in cols:
        values = table[col].to_numpy()
        if _is_class(table, col):
            codes, uniques = _class_codes(values)
            binned = BinnedColumn(col, True, codes, uniques, values, _class_names(table, col))
        else:
            x = values.astype(np.float64)
            edges = quantile_edges(x, bins)
            binned = BinnedColumn(col, False, bin_codes(x, edges),
                                  [bin_label(col, edges, c) for c in range(len(edges) + 2)],
                                  x, {})
        if classes is not None and col != GIVEN:
            binned = _with_class(binned, classes, bins)
        out.append(binned)
    return out


def _class_codes(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """``(N,)`` int64 codes of a class column and the value of each code."""
    if values.dtype.kind in "iub" and values.size and values.min() >= 0:
        # Small non-negative integers (class indices): their own codes, no sort.
        present = np.flatnonzero(np.bincount(values.astype(np.int64)))
        lookup = np.zeros(int(present[-1]) + 1, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        return lookup[values.astype(np.int64)], list(present)
    uniques, codes = np.unique(values.astype(str) if values.dtype == object else values,
                               return_inverse=True)
    return codes.astype(np.int64), list(uniques)


class _Classes:
    """The ``label`` column cut once: ``codes`` (N,) int64, ``n`` classes, each class's
    value as a query literal (``literal``), the samples sorted by class (``order``) and
    where each class starts in it (``bounds``, (n + 1,))."""

    def __init__(self, labels: np.ndarray) -> None:
        self.codes, values = _class_codes(labels)
        self.n = len(values)
        self.literal = [query_literal(v) for v in values]
        self.order = np.argsort(self.codes, kind="stable")
        self.bounds = np.searchsorted(self.codes[self.order], np.arange(self.n + 1))


def _with_class(col: BinnedColumn, classes: _Classes, bins: int) -> BinnedColumn:
    """``col`` with its cells given the class: a class column's (class, value) pairs, a
    number's (class, quantile bin of that class); each cell as a query condition."""
    given, n_classes, class_of = classes.codes, classes.n, classes.literal
    if col.is_class:
        width = len(col.values)
        joint = given * width + col.codes
        joint_values = [f"{GIVEN} == {class_of[c]} and {col.name} == "
                        f"{query_literal(col.values[v])}"
                        for c in range(n_classes) for v in range(width)]
    else:
        width = bins + 1  # at most bins - 1 edges: codes 0..bins-1, NaN's code
        joint = np.empty(len(given), dtype=np.int64)
        joint_values = [f"{GIVEN} == {class_of[c]} and {col.name} != {col.name}"
                        for c in range(n_classes) for _ in range(width)]
        for c in range(n_classes):
            idx = classes.order[classes.bounds[c]:classes.bounds[c + 1]]
            edges = quantile_edges(col.raw[idx], bins)
            codes = bin_codes(col.raw[idx], edges)
            codes[codes > len(edges)] = width - 1  # NaN
            joint[idx] = c * width + codes
            for code in range(len(edges) + 1):
                joint_values[c * width + code] = (f"{GIVEN} == {class_of[c]} and "
                                                  f"{bin_label(col.name, edges, code)}")
    return BinnedColumn(col.name, col.is_class, col.codes, col.values, col.raw, col.names,
                        given, joint, joint_values)


def _mutual_information(contingency: np.ndarray) -> float:
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(None, None, contingency=contingency))


def explain(table: pd.DataFrame, inside: np.ndarray, columns: Sequence[str] | None = None,
            top: int = 5, bins: int = N_BINS,
            binned: Sequence[BinnedColumn] | None = None, min_p: float = 1e-3
            ) -> tuple[Evidence, ...]:
    """The metadata that distinguishes the samples ``inside`` from the rest.

    Parameters
    ----------
    table : DataFrame
        The sample table (one row per sample).
    inside : (N,) bool
        Membership of the group.
    columns : sequence of str, optional
        Columns to consider; default :func:`interpretable_columns`.
    top : int
        How many pieces of evidence to return.
    bins : int
        Quantile bins per numeric column.
    binned : sequence of BinnedColumn, optional
        :func:`bin_table` of ``table`` computed once for many groups
        (then ``columns`` and ``bins`` are not used).
    min_p : float
        Columns whose association with membership is not significant at this
        level (G-test) are left out.

    Returns
    -------
    tuple of Evidence
        Highest mutual information first; ``inside``/``outside`` are the means
        for a number, for a class column the most over-represented value inside
        and the most common value outside; ``condition`` is the
        over-represented bin or value as a query. With a ``label`` column, every
        other column's evidence is given the class (``given == "label"``):
        ``score`` is the conditional mutual information, ``outside`` is taken over
        the samples of the group's classes (a number: each class weighted as it is
        inside), ``condition`` is the cell (class and bin of that class) that adds
        the most information and ``lift`` its share of the group over the
        class's.
    """
    from scipy.stats import chi2

    from analysis.registry import column_info

    inside = np.asarray(inside, dtype=bool)
    if inside.shape != (len(table),):
        raise ConfigError(f"explain: membership has shape {inside.shape}, the table "
                          f"{len(table)} rows.")
    n_in = int(inside.sum())
    if n_in == 0 or n_in == len(table):
        return ()
    if binned is None:
        binned = bin_table(table, columns, bins)
    member = inside.astype(np.int64)
    out = []
    for col in binned:
        evidence = (_given_class(col, inside, member) if col.joint is not None
                    else _marginal(col, inside, member))
        if evidence is None:
            continue
        mi, dof = evidence[0], evidence[1]
        # G-test of independence (G = 2 N MI in nats, chi-squared): chance associations
        # of a big table are left out.
        if mi <= 1e-12 or chi2.sf(2 * len(table) * mi, max(dof, 1)) > min_p:
            continue
        info = column_info(col.name)
        out.append(Evidence(column=col.name, label=col.name.replace("_", " "),
                            unit=info.unit if info is not None else "",
                            inside=evidence[2], outside=evidence[3], score=mi,
                            lift=evidence[4], condition=evidence[5], given=evidence[6]))
    out.sort(key=lambda e: -e.score)
    return tuple(out[:top])


def _contingency(codes: np.ndarray, member: np.ndarray, k: int) -> np.ndarray:
    """``(2, k)`` counts of each code outside (row 0) and inside (row 1)."""
    return np.bincount(member * k + codes, minlength=2 * k).reshape(2, k)


def _marginal(col: BinnedColumn, inside: np.ndarray, member: np.ndarray) -> tuple | None:
    """(MI, dof, inside, outside, lift, condition, given) of a column on its own."""
    k = len(col.values)
    cont = _contingency(col.codes, member, k)
    mi = _mutual_information(cont)
    dof = int((cont.sum(0) > 0).sum()) - 1
    share = inside.mean()
    totals = cont.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(totals > 0, cont[1] / totals / share, 0.0)
    best = int(np.argmax(lift))
    if col.is_class:
        common_out = int(np.argmax(cont[0]))
        inside_v = _plain(col.names.get(col.values[best], col.values[best]))
        outside_v = _plain(col.names.get(col.values[common_out], col.values[common_out]))
        condition = f"{col.name} == {query_literal(col.values[best])}"
    else:
        inside_v, outside_v = _nanmean(col.raw[inside]), _nanmean(col.raw[~inside])
        condition = col.values[best]
    return mi, dof, inside_v, outside_v, float(lift[best]), condition, ""


def _given_class(col: BinnedColumn, inside: np.ndarray, member: np.ndarray) -> tuple | None:
    """(conditional MI, dof, inside, outside, lift, condition, ``"label"``) of a column
    given the class: I(member; cell) - I(member; class) over the (class, bin) cells; the
    outside value from the samples of the same classes (a number: the mean of each class,
    a class column: the most common value, each class weighted as it is inside); the
    condition the cell that adds the most information, its lift over the share of the
    group in its class."""
    assert col.given is not None and col.joint is not None and col.joint_values is not None
    k = len(col.joint_values)
    cont = _contingency(col.joint, member, k)
    n_classes = int(col.given.max()) + 1
    by_class = _contingency(col.given, member, n_classes)
    mi = max(_mutual_information(cont) - _mutual_information(by_class), 0.0)
    width = k // n_classes
    totals = cont.sum(0)
    # degrees of freedom: (cells - 1) summed over the classes that are split
    cells = (totals > 0).reshape(n_classes, width).sum(1)
    split = (by_class > 0).all(0)
    dof = int((cells[split] - 1).sum())
    class_share = np.repeat(by_class[1] / np.maximum(by_class.sum(0), 1), width)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_cell = np.where(totals > 0, cont[1] / totals, 0.0)
        gain = np.where(cont[1] > 0, cont[1] * np.log(p_cell / class_share), -np.inf)
    best = int(np.argmax(gain))
    lift = float(p_cell[best] / class_share[best])
    weights = by_class[1] / by_class[1].sum()  # the classes as they are inside
    same = split[col.given] & ~inside  # outside, in a class the group also has
    if col.is_class:
        # each outside sample weighted by its class's share inside over its class's count
        n_same = np.bincount(col.given[same], minlength=n_classes)
        w = weights[col.given[same]] / np.maximum(n_same[col.given[same]], 1)
        counts = np.bincount(col.codes[same], weights=w, minlength=len(col.values))
        common_out = int(np.argmax(counts)) if counts.any() else int(col.codes[~inside][0])
        value = col.values[best % width]
        inside_v = _plain(col.names.get(value, value))
        outside_v = _plain(col.names.get(col.values[common_out], col.values[common_out]))
    else:
        inside_v = _nanmean(col.raw[inside])
        outside_v = _class_matched_mean(col.raw, col.given, same, weights)
    return mi, dof, inside_v, outside_v, lift, col.joint_values[best], GIVEN


def _class_matched_mean(x: np.ndarray, given: np.ndarray, outside: np.ndarray,
                        weights: np.ndarray) -> float:
    """Mean of ``x`` over the ``outside`` samples, each class weighted by ``weights``
    (the classes' shares inside the group), NaN ignored."""
    ok = outside & np.isfinite(x)
    n = np.bincount(given[ok], minlength=len(weights))
    total = np.bincount(given[ok], weights=x[ok], minlength=len(weights))
    has = n > 0
    if not (has & (weights > 0)).any():
        return float("nan")
    w = np.where(has, weights, 0.0)
    return float((w[has] * total[has] / n[has]).sum() / w.sum())


def _class_names(table: pd.DataFrame, col: str) -> dict[Any, str]:
    """Class index -> name from the ``<col>_name`` twin column, when the table has it."""
    twin = f"{col}_name"
    if twin not in table:
        return {}
    pairs = pd.DataFrame({"v": table[col].to_numpy(), "n": table[twin].to_numpy()})
    pairs = pairs.drop_duplicates("v")
    return {v: str(n) for v, n in zip(pairs["v"], pairs["n"], strict=True) if str(n)}


def _plain(value: Any) -> float | str:
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, float | str) else str(value)


def query_literal(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def compare_groups(table: pd.DataFrame, inside: np.ndarray, alternative: str = "two-sided"
                   ) -> dict[str, float]:
    """Error rate and mean loss inside vs outside a group, with a test of the difference.

    Parameters
    ----------
    table : DataFrame
        The sample table; uses ``correct`` and ``loss`` (NaN where undefined,
        e.g. an out-of-distribution dataset: then the rates are NaN).
    inside : (N,) bool
    alternative : str
        ``two-sided`` (any selection) or ``greater`` (is the error rate higher
        inside? what a slice search asks).

    Returns
    -------
    dict
        ``n``, ``share``, ``errors``, ``error_rate_inside``/``_outside``,
        ``mean_loss_inside``/``_outside``, ``excess_errors`` (errors inside
        minus ``n`` times the outside rate; higher is worse) and ``p_value``
        (Fisher's exact test on the 2x2 table of errors; NaN when undefined).
    """
    from scipy.stats import fisher_exact

    inside = np.asarray(inside, dtype=bool)
    if inside.shape != (len(table),):
        raise ConfigError(f"compare_groups: membership has shape {inside.shape}, the table "
                          f"{len(table)} rows.")
    n = int(inside.sum())
    out: dict[str, float] = {"n": n, "share": n / max(len(table), 1)}
    correct = table["correct"].to_numpy(dtype=np.float64) if "correct" in table else \
        np.full(len(table), np.nan)
    loss = table["loss"].to_numpy(dtype=np.float64) if "loss" in table else \
        np.full(len(table), np.nan)
    valid = np.isfinite(correct)
    err = valid & (correct == 0)
    a, b = err[inside].sum(), (valid & inside).sum() - err[inside].sum()
    c, d = err[~inside].sum(), (valid & ~inside).sum() - err[~inside].sum()
    rate_in = a / (a + b) if a + b else float("nan")
    rate_out = c / (c + d) if c + d else float("nan")
    out.update({
        "errors": int(a),
        "error_rate_inside": float(rate_in), "error_rate_outside": float(rate_out),
        "mean_loss_inside": _nanmean(loss[inside]), "mean_loss_outside": _nanmean(loss[~inside]),
        "excess_errors": float(a - (a + b) * rate_out) if c + d else float("nan"),
    })
    if a + b and c + d:
        out["p_value"] = float(fisher_exact([[a, b], [c, d]], alternative=alternative).pvalue)
    else:
        out["p_value"] = float("nan")
    return out


def _nanmean(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")
