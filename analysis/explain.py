"""Explain a group of samples: which metadata distinguishes it, how the model does inside.

Used for every insight (a slice, a cluster) and for any selection a person
makes ("explain this selection"): the same numbers either way.

For each interpretable column of the sample table, numbers are cut into
quantile bins and class columns are taken as they are; the mutual information
(nats) between the binned column and membership ranks the columns, the bin (or
value) most over-represented inside gives the lift, and the typical value
inside vs outside says which way the group differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.insights import Evidence
from core.errors import ConfigError

# Class columns usable as explanations without a declaration (the ground truth and
# the prediction); their ``*_name`` twin, when present, gives the words.
CLASS_COLUMNS = ("label", "pred")
N_BINS = 5


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
    4 significant digits so a rule written with them reproduces the bins exactly.

    Returns
    -------
    (B - 1,) float64, ascending and unique (fewer when values repeat)
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique([float(f"{q:.4g}") for q in qs])
    # An edge at the minimum would leave its lower bin empty.
    return edges[edges > finite.min()]


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
    (N,) the numbers (NaN-able float64) or the class values."""

    name: str
    is_class: bool
    codes: np.ndarray
    values: list[Any]
    raw: np.ndarray
    names: dict[Any, str]


def bin_table(table: pd.DataFrame, columns: Sequence[str] | None = None,
              bins: int = N_BINS) -> list[BinnedColumn]:
    """Cut each column once, so many groups of one table are explained fast.

    ``columns`` default to :func:`interpretable_columns`; numbers go into
    ``bins`` quantile bins (:func:`quantile_edges`), class columns stay as they are.
    """
    cols = interpretable_columns(table) if columns is None else list(columns)
    missing = [c for c in cols if c not in table]
    if missing:
        raise ConfigError(f"explain: no column(s) {', '.join(missing)} in the sample table; "
                          f"it has {', '.join(map(str, table.columns))}.")
    out = []
    for col in cols:
        values = table[col].to_numpy()
        if _is_class(table, col):
            if values.dtype.kind in "iub" and values.size and values.min() >= 0:
                # Small non-negative integers (class indices): their own codes, no sort.
                present = np.flatnonzero(np.bincount(values.astype(np.int64)))
                lookup = np.zeros(int(present[-1]) + 1, dtype=np.int64)
                lookup[present] = np.arange(len(present))
                codes, uniques = lookup[values.astype(np.int64)], list(present)
            else:
                uniques, codes = np.unique(values.astype(str) if values.dtype == object
                                           else values, return_inverse=True)
                uniques = list(uniques)
            out.append(BinnedColumn(col, True, codes.astype(np.int64), uniques, values,
                                    _class_names(table, col)))
        else:
            x = values.astype(np.float64)
            edges = quantile_edges(x, bins)
            out.append(BinnedColumn(col, False, bin_codes(x, edges),
                                    [bin_label(col, edges, c) for c in range(len(edges) + 2)],
                                    x, {}))
    return out


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
        over-represented bin or value as a query.
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
    share = n_in / len(table)
    member = inside.astype(np.int64)
    out = []
    for col in binned:
        k = len(col.values)
        cont = np.bincount(member * k + col.codes, minlength=2 * k).reshape(2, k)
        mi = _mutual_information(cont)
        # G-test of independence (G = 2 N MI in nats, chi-squared with k-1 dof): chance
        # associations of a big table are left out.
        dof = max(int((cont.sum(0) > 0).sum()) - 1, 1)
        if mi <= 1e-12 or chi2.sf(2 * len(table) * mi, dof) > min_p:
            continue
        totals = cont.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(totals > 0, cont[1] / totals / share, 0.0)
        best = int(np.argmax(lift))
        info = column_info(col.name)
        if col.is_class:
            common_out = int(np.argmax(cont[0]))
            inside_v = _plain(col.names.get(col.values[best], col.values[best]))
            outside_v = _plain(col.names.get(col.values[common_out], col.values[common_out]))
            condition = f"{col.name} == {query_literal(col.values[best])}"
        else:
            inside_v, outside_v = _nanmean(col.raw[inside]), _nanmean(col.raw[~inside])
            condition = col.values[best]
        out.append(Evidence(column=col.name, label=col.name.replace("_", " "),
                            unit=info.unit if info is not None else "", inside=inside_v,
                            outside=outside_v, score=mi, lift=float(lift[best]),
                            condition=condition))
    out.sort(key=lambda e: -e.score)
    return tuple(out[:top])


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
