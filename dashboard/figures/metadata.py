"""Loss against metadata: binned mean loss with counts, and a two-column scatter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, class_palette

COLUMNS = ["group", "bin", "left", "right", "center", "mean_loss", "sem", "count"]


def binned_loss(values: np.ndarray, loss: np.ndarray, labels: np.ndarray | None = None,
                bins: int = 20) -> pd.DataFrame:
    """Mean loss per equal-width bin of ``values``, with its standard error.

    The bins span the 0.5th to 99.5th percentile of ``values`` (the rare values
    beyond fall into the first and last bins), so one far outlier does not
    squeeze every other sample into a few bins. Integer values with at most
    ``bins`` distinct values get one bin per value.

    Parameters
    ----------
    values : (N,) float, the metadata column
    loss : (N,) float, per-sample loss (higher is worse)
    labels : (N,) int, optional
        When given, bins are computed per class too (column ``group`` = class
        index; ``-1`` is all classes).
    bins : int

    Returns
    -------
    DataFrame
        ``group, bin, left, right, center, mean_loss, sem, count``; ``center``
        is the mean of the values in the bin, ``sem`` the standard error of the
        mean loss; empty bins dropped.
    """
    v = np.asarray(values, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(loss)
    if not ok.any():
        return pd.DataFrame(columns=COLUMNS)
    distinct = np.unique(v[ok])
    if len(distinct) <= bins and np.array_equal(distinct, np.round(distinct)):
        # A few integer values (mnist-sum's added number, a class index): one bin each.
        bins = len(distinct)
        which = np.clip(np.searchsorted(distinct, v), 0, bins - 1)
        lefts, rights = distinct - 0.5, distinct + 0.5
    else:
        lo, hi = np.percentile(v[ok], [0.5, 99.5])
        if not hi > lo:
            lo, hi = float(v[ok].min()), float(v[ok].max())
        if not hi > lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        which = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
        lefts, rights = edges[:-1], edges[1:]
    groups = [(-1, ok)]
    if labels is not None:
        labels = np.asarray(labels)
        groups += [(int(c), ok & (labels == c)) for c in np.unique(labels[ok])]
    rows = []
    for group, mask in groups:
        count = np.bincount(which[mask], minlength=bins)
        total = np.bincount(which[mask], weights=loss[mask], minlength=bins)
        squares = np.bincount(which[mask], weights=loss[mask] ** 2, minlength=bins)
        value_sum = np.bincount(which[mask], weights=v[mask], minlength=bins)
        for b in np.flatnonzero(count):
            mean = total[b] / count[b]
            var = max(squares[b] / count[b] - mean ** 2, 0.0) * count[b] / max(count[b] - 1, 1)
            rows.append((group, b, lefts[b], rights[b], value_sum[b] / count[b], mean,
                         float(np.sqrt(var / count[b])), int(count[b])))
    return pd.DataFrame(rows, columns=COLUMNS)


def loss_vs_metadata_figure(binned: pd.DataFrame, column: str, class_names: Sequence[str],
                            per_class: bool = False) -> go.Figure:
    """Mean loss per bin (lines, left axis) over the sample count per bin (bars, right axis)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    overall = binned[binned["group"] == -1]
    fig.add_trace(go.Bar(x=(overall["left"] + overall["right"]) / 2, y=overall["count"],
                         width=overall["right"] - overall["left"], name="samples per bin",
                         marker_color="rgba(108,117,125,0.25)",
                         hovertemplate="%{x:.3g}: %{y} samples<extra></extra>"),
                  secondary_y=True)
    palette = class_palette(len(class_names))
    if per_class:
        for c, part in binned[binned["group"] >= 0].groupby("group"):
            fig.add_trace(go.Scatter(
                x=part["center"], y=part["mean_loss"], mode="lines+markers",
                name=f"class {class_names[int(c)]}", line={"color": palette[int(c)]},
                customdata=part["count"],
                hovertemplate="%{x:.3g}: mean loss %{y:.4f} (n=%{customdata})<extra></extra>"),
                secondary_y=False)
    else:
        half = 1.96 * overall["sem"]
        fig.add_trace(go.Scatter(
            x=overall["center"], y=overall["mean_loss"], mode="lines+markers",
            name="all classes (± 95% CI)", line={"color": "#d62728", "width": 3},
            # A loss is never negative: the interval's lower arm stops at 0.
            error_y={"type": "data", "array": half,
                     "arrayminus": np.minimum(half, overall["mean_loss"]), "thickness": 1.2,
                     "width": 3, "color": "rgba(214,39,40,0.6)"},
            customdata=overall["count"],
            hovertemplate="%{x:.3g}: mean loss %{y:.4f} (n=%{customdata})<extra></extra>"),
            secondary_y=False)
    fig.update_xaxes(title_text=f"{column} (binned)")
    fig.update_yaxes(title_text="mean cross-entropy loss (nats)", secondary_y=False,
                     rangemode="tozero", range=[0, loss_axis_top(binned, per_class)])
    fig.update_yaxes(title_text="samples per bin", secondary_y=True, showgrid=False,
                     rangemode="tozero", tickmode="auto", tickformat=",d")
    fig.update_layout(**base_layout(height=420, bargap=0.05,
                                    legend={"orientation": "h", "y": 1.12, "x": 0},
                                    margin={"l": 60, "r": 60, "t": 50, "b": 50}))
    return fig


def loss_axis_top(binned: pd.DataFrame, per_class: bool) -> float:
    """The top of the mean-loss axis: the highest drawn value (with its interval) + 5%."""
    shown = binned[binned["group"] >= 0] if per_class else binned[binned["group"] == -1]
    if shown.empty:
        return 1.0
    top = shown["mean_loss"] if per_class else shown["mean_loss"] + 1.96 * shown["sem"]
    top = float(np.nanmax(top.to_numpy(dtype=np.float64)))
    return top * 1.05 if np.isfinite(top) and top > 0 else 1.0


def scatter_figure(x: np.ndarray, y: np.ndarray, labels: np.ndarray,
                   class_names: Sequence[str], x_name: str, y_name: str,
                   sample_ids: np.ndarray | None = None) -> go.Figure:
    """``y`` against ``x`` (both ``(N,)``), WebGL, one trace per ground-truth class.

    Trace ``c`` holds the samples of class ``c`` in table order, as the
    population map does, so a click maps back to its sample the same way
    (:meth:`~dashboard.state.RunEntry.points_to_indices`). ``sample_ids``
    ``(N,)`` are shown on hover. An axis whose values are all >= 0 (a loss, a
    distance) never shows negative values.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    labels = np.asarray(labels)
    palette = class_palette(len(class_names))
    ids = np.asarray(sample_ids, dtype=object) if sample_ids is not None else None
    traces = [go.Scattergl(x=x[labels == c], y=y[labels == c], mode="markers",
                           name=str(name), marker={"size": 4, "color": palette[c],
                                                   "opacity": 0.6},
                           text=ids[labels == c] if ids is not None else None,
                           hovertemplate=("%{text}<br>" if ids is not None else "")
                           + f"class {name}<br>{x_name} %{{x:.3g}}<br>"
                             f"{y_name} %{{y:.3g}}<extra></extra>")
              for c, name in enumerate(class_names)]

    def axis(values: np.ndarray, title: str) -> dict:
        finite = values[np.isfinite(values)]
        nonnegative = finite.size and finite.min() >= 0
        return {"title": {"text": title}, "rangemode": "nonnegative" if nonnegative else "normal"}

    return go.Figure(traces, base_layout(
        height=420, xaxis=axis(x, x_name), yaxis=axis(y, y_name), clickmode="event",
        hovermode="closest",
        legend={"title": {"text": "ground truth"}, "itemsizing": "constant"}))
