"""Uncertainty and out-of-distribution figures: score histograms, the joint map.

Pure functions: arrays in, ``plotly`` figures out. Every score is oriented as
in :mod:`analysis.ood`: **higher means more likely out-of-distribution**.

The joint map has exactly two data traces, the in-distribution samples
(trace 0, in dataset order) and the extra dataset's (trace 1, in its order),
then an overlay (trace 2) for a highlighted sample. A click's
(``curveNumber``, ``pointIndex``) is therefore (dataset, row) directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, class_palette

IN_COLOR = "#1f77b4"   # in-distribution samples: blue, as on the joint map
OOD_COLOR = "#d62728"  # clothing: red
IN_TRACE, OOD_TRACE, OVERLAY_TRACE = 0, 1, 2
@dataclass(frozen=True)
class ScoreFamily:
    """One row of the histogram grid: a score without and with MC dropout.

    Attributes
    ----------
    label : str
        What the score measures (the row's x-axis title).
    plain, mc : str or None
        Column names without / with MC dropout (``None``: no such variant).
    """

    label: str
    plain: str | None
    mc: str | None


def score_bins(values: Sequence[np.ndarray], bins: int = 40) -> np.ndarray:
    """``(bins + 1,)`` edges spanning every finite value of ``values`` (shared by a row)."""
    finite = np.concatenate([np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in values])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def percent_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(len(edges) - 1,)`` share of ``values`` (in %) per bin; datasets of any size compare."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts, _ = np.histogram(v, edges)
    return 100.0 * counts / max(len(v), 1)


def histogram_title(name: str, auroc: float | None) -> str:
    """``<column> · AUROC 0.873`` (OOD = positive; 0.5 is chance); the name alone without one."""
    return name if auroc is None else f"{name} · AUROC {auroc:.3f}"


def uncertainty_histograms_figure(in_scores: Mapping[str, np.ndarray],
                                  ood_scores: Mapping[str, np.ndarray], in_name: str,
                                  ood_name: str, mc_samples: int = 0,
                                  aurocs: Mapping[str, float] | None = None,
                                  families: Sequence[ScoreFamily] = (),
                                  bins: int = 40, log_y: bool = False) -> go.Figure:
    """Histograms of each score, in-distribution vs the extra dataset.

    One row per score family with data, two columns: without MC dropout (left)
    and with it (right), sharing the row's bins and x range. Each panel's
    title carries the AUROC of the score (higher score = more OOD).

    Parameters
    ----------
    in_scores, ood_scores : mapping column -> (N_in,) / (N_ood,) float
        Score columns of the two sample tables; absent columns leave a panel empty.
    in_name, ood_name : legend names of the two datasets
    mc_samples : MC-dropout passes T (column title); 0 when the model has none
    aurocs : mapping column -> float, optional
        The AUROC of each score (OOD = positive), shown in its panel's title.
    families : sequence of ScoreFamily
        The rows of the grid (a score without and with MC dropout each).
    log_y : logarithmic y axes, so the OOD tail shows next to the in-distribution peak

    Returns
    -------
    go.Figure
        Overlaid ``bar`` traces (percent of each dataset per bin).
    """
    rows = [f for f in families
            if any(c in in_scores and c in ood_scores for c in (f.plain, f.mc) if c)]
    if not rows:
        raise ValueError("no score column present in both tables")
    titles = []
    for fam in rows:
        for col in (fam.plain, fam.mc):
            if col is None:
                titles.append("(exists only with MC dropout)")
            elif col in in_scores and col in ood_scores:
                titles.append(histogram_title(col, (aurocs or {}).get(col)))
            else:
                titles.append(f"{col}: not computed (needs a model with dropout)")
    fig = make_subplots(rows=len(rows), cols=2, subplot_titles=titles, shared_xaxes="rows",
                        horizontal_spacing=0.08, vertical_spacing=0.42 / len(rows))
    fig.update_annotations(font_size=12)
    for r, fam in enumerate(rows, start=1):
        cols = [c for c in (fam.plain, fam.mc) if c and c in in_scores and c in ood_scores]
        edges = score_bins([in_scores[c] for c in cols] + [ood_scores[c] for c in cols], bins)
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        for c, col in enumerate((fam.plain, fam.mc), start=1):
            if col not in cols:
                continue
            for values, name, color in ((in_scores[col], in_name, IN_COLOR),
                                        (ood_scores[col], ood_name, OOD_COLOR)):
                fig.add_trace(go.Bar(
                    x=centers, y=percent_histogram(values, edges), width=width, name=name,
                    legendgroup=name, showlegend=r == 1 and c == len(cols), marker_color=color,
                    opacity=0.6, marker_line_width=0,
                    hovertemplate=f"{name}<br>{col} %{{x:.3g}}: %{{y:.1f}} %<extra></extra>"),
                    row=r, col=c)
            fig.update_xaxes(title_text=fam.label, title_font_size=11, row=r, col=c)
        fig.update_yaxes(title_text="% of samples", title_font_size=11, row=r, col=1)
    if log_y:
        fig.update_yaxes(type="log", dtick=1, exponentformat="none")
    head = ["without MC dropout", f"with MC dropout (T={mc_samples})" if mc_samples
            else "with MC dropout (the model has no dropout)"]
    for c, text in enumerate(head):
        fig.add_annotation(text=f"<b>{text}</b>", x=0.22 + 0.56 * c, y=1.0, xref="paper",
                           yref="paper", yshift=34, showarrow=False, font={"size": 14})
    fig.update_layout(**base_layout(
        barmode="overlay", bargap=0, height=230 * len(rows) + 90,
        margin={"l": 60, "r": 20, "t": 95, "b": 50},
        legend={"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "top",
                "yref": "container"}))
    return fig


CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"


def correctness_histograms_figure(scores: Mapping[str, np.ndarray],
                                  correct: Mapping[str, np.ndarray],
                                  titles: Mapping[str, str],
                                  aurocs: Mapping[str, float] | None = None,
                                  bins: int = 30) -> go.Figure:
    """In-distribution uncertainty: each score's histogram, correct vs wrong predictions.

    One panel per score, side by side; each bar is the share of its group (in %)
    so a few wrong predictions compare with many correct ones. A panel's title
    gives how well the score ranks wrong above correct predictions (AUROC,
    wrong = positive; 0.5 is chance).

    Parameters
    ----------
    scores : mapping column -> (N,) float
        Uncertainty scores, higher = less sure.
    correct : mapping column -> (N,) bool
        Whether the prediction the score belongs to is right (the MC-dropout
        prediction for ``mc_*`` scores).
    titles : mapping column -> str
        The x-axis title of each panel (what the score measures, with its unit).
    aurocs : mapping column -> float, optional
        How well each score ranks wrong above correct predictions (AUROC,
        wrong = positive), shown in its panel's title; absent: the name alone.

    Returns
    -------
    go.Figure
        Overlaid ``bar`` traces, two per panel (correct, wrong).
    """
    cols = list(scores)
    if not cols:
        raise ValueError("no uncertainty score to draw")
    aurocs = aurocs or {}
    heads = [f"{col} · AUROC wrong vs correct {aurocs[col]:.3f}" if col in aurocs else col
             for col in cols]
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=heads, horizontal_spacing=0.07)
    fig.update_annotations(font_size=12)
    for c, col in enumerate(cols, start=1):
        ok = np.asarray(correct[col], dtype=bool)
        v = np.asarray(scores[col], dtype=np.float64)
        edges = score_bins([v], bins)
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        for part, name, color in ((ok, "correct", CORRECT_COLOR), (~ok, "wrong", WRONG_COLOR)):
            label = f"{name} predictions ({int(part.sum()):,})"
            fig.add_trace(go.Bar(
                x=centers, y=percent_histogram(v[part], edges), width=width, name=label,
                legendgroup=name, showlegend=c == 1, marker_color=color, opacity=0.6,
                marker_line_width=0,
                hovertemplate=f"{name}<br>{col} %{{x:.3g}}: %{{y:.1f}} % of {name} predictions"
                              "<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text=titles.get(col, col), title_font_size=11, row=1, col=c)
    fig.update_yaxes(title_text="% of the group", title_font_size=11, row=1, col=1)
    fig.update_layout(**base_layout(
        barmode="overlay", bargap=0, height=330, margin={"l": 60, "r": 20, "t": 62, "b": 55},
        legend={"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "top",
                "yref": "container"}))
    return fig


def joint_map_figure(coords: np.ndarray, n_in: int, in_name: str, ood_name: str,
                     color_by: str = "dataset", classes: np.ndarray | None = None,
                     class_names: Sequence[str] = (), values: np.ndarray | None = None,
                     value_title: str = "", map_name: str = "joint_tsne", map_label: str = "",
                     highlight: Sequence[int] = (), focus: int | None = None) -> go.Figure:
    """The joint map of the in-distribution and the extra dataset.

    Parameters
    ----------
    coords : (N_in + N_ood, 2) float32
        Joint projection, in-distribution rows first.
    n_in : int
        Number of in-distribution rows.
    color_by : {"dataset", "class", "score"}
        ``dataset``: one colour per dataset. ``class``: ``classes`` (N_in + N_ood,)
        class indices (e.g. the model's prediction) on the class palette.
        ``score``: ``values`` (N_in + N_ood,) on Viridis. Datasets then differ by
        marker symbol (in-distribution circles, OOD diamonds).
    highlight, focus : joint row indices to ring, and one to star (the open sample)

    Returns
    -------
    go.Figure
        ``scattergl`` traces: 0 in-distribution, 1 extra dataset, 2 overlay.
    """
    coords = np.asarray(coords, dtype=np.float32)
    parts = (slice(0, n_in), slice(n_in, len(coords)))
    colors, axis = map_colors(n_in, color_by, classes, class_names, values, value_title)
    layout_extra = {"coloraxis": axis} if axis else {}
    traces = []
    for t, (part, name, symbol) in enumerate(zip(parts, (in_name, ood_name),
                                                 ("circle", "diamond"), strict=True)):
        marker = {"color": colors[t], "size": 4 if t == 0 else 5, "opacity": 0.65,
                  "symbol": symbol, "line": {"width": 0}}
        if axis:
            marker["coloraxis"] = "coloraxis"
        traces.append(go.Scattergl(x=coords[part, 0], y=coords[part, 1], mode="markers",
                                   name=f"{name} ({part.stop - part.start:,})", marker=marker,
                                   hoverinfo="none"))
    traces.append(overlay_trace(coords, highlight, focus))
    label = (map_label or map_name).split(",")[0]
    fig = go.Figure(traces, base_layout(
        dragmode="zoom", hovermode="closest", uirevision=map_name,
        legend={"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom",
                "itemsizing": "constant"},
        xaxis={"title": {"text": f"{label} 1 (arbitrary units)"}, "zeroline": False},
        yaxis={"title": {"text": f"{label} 2 (arbitrary units)"}, "zeroline": False},
        margin={"l": 60, "r": 10, "t": 55, "b": 50}, **layout_extra))
    return fig


def map_colors(n_in: int, color_by: str = "dataset", classes: np.ndarray | None = None,
               class_names: Sequence[str] = (), values: np.ndarray | None = None,
               value_title: str = "") -> tuple[list, dict | None]:
    """Marker colours of the map's two data traces and the colour axis (``None``: solid).

    See :func:`joint_map_figure` for the parameters. Returns ``([in, ood], coloraxis)``
    where each entry is a colour string or an ``(n,)`` float32 array.
    """
    if color_by == "dataset":
        return [IN_COLOR, OOD_COLOR], None
    if color_by == "class":
        n = len(class_names)
        v = np.asarray(classes, dtype=np.float32)
        scale = []
        for i, col in enumerate(class_palette(n)):
            scale += [[i / n, col], [(i + 1) / n, col]]
        axis = {"colorscale": scale, "cmin": -0.5, "cmax": n - 0.5,
                "colorbar": {"title": {"text": value_title or "class"},
                             "tickvals": list(range(n)), "ticktext": list(class_names),
                             "len": 0.8, "y": 0.4}}
    elif color_by == "score":
        v = np.asarray(values, dtype=np.float32)
        finite = v[np.isfinite(v)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        v = np.nan_to_num(v, nan=float(lo))
        axis = {"colorscale": "Viridis", "cmin": float(lo), "cmax": float(max(hi, lo + 1e-6)),
                "colorbar": {"title": {"text": value_title}, "len": 0.8, "y": 0.4}}
    else:
        raise ValueError(f"unknown color_by {color_by!r}; valid: dataset, class, score")
    return [v[:n_in], v[n_in:]], axis


def overlay_trace(coords: np.ndarray, indices: Sequence[int], focus: int | None = None
                  ) -> go.Scattergl:
    """Rings on ``indices`` and a star on ``focus`` (joint rows); plain lists, so clickable."""
    idx = [int(i) for i in indices]
    symbols, sizes = ["circle-open"] * len(idx), [13] * len(idx)
    if focus is not None:
        idx, symbols, sizes = [int(focus)] + idx, ["star"] + symbols, [20] + sizes
    xy = np.asarray(coords, dtype=np.float32)[idx] if idx else np.zeros((0, 2), np.float32)
    return go.Scattergl(x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), customdata=idx,
                        mode="markers", name="sample + nearest in-distribution",
                        hoverinfo="none", showlegend=bool(idx),
                        marker={"symbol": symbols, "size": sizes, "color": "#000000",
                                "line": {"width": 2, "color": "#000000"}})


def ood_probability_figure(probs: np.ndarray, class_names: Sequence[str],
                           mc_probs: np.ndarray | None = None) -> go.Figure:
    """What the model thought an out-of-distribution sample was.

    Parameters
    ----------
    probs : (C,) softmax probabilities of the plain pass
    mc_probs : (C,) mean probabilities over the MC-dropout passes, optional

    There is no ground truth among the model's classes, so no bar is green.
    """
    names = [str(n) for n in class_names]
    probs = np.asarray(probs, dtype=np.float64)
    traces = [go.Bar(x=probs * 100, y=names, orientation="h", name="without MC dropout",
                     marker_color=OOD_COLOR, text=[f"{p:.1%}" for p in probs],
                     textposition="outside", cliponaxis=False,
                     hovertemplate="%{y}: %{x:.2f} %<extra>without MC</extra>")]
    if mc_probs is not None:
        mc = np.asarray(mc_probs, dtype=np.float64)
        traces.append(go.Bar(x=mc * 100, y=names, orientation="h",
                             name="with MC dropout (mean)", marker_color="#ff9896",
                             text=[f"{p:.1%}" for p in mc], textposition="outside",
                             cliponaxis=False,
                             hovertemplate="%{y}: %{x:.2f} %<extra>MC mean</extra>"))
    fig = go.Figure(traces, base_layout(
        barmode="group", height=max(260, (44 if mc_probs is not None else 24) * len(names) + 90),
        margin={"l": 80, "r": 40, "t": 30, "b": 45},
        xaxis={"title": {"text": "probability (%)"}, "range": [0, 118]},
        yaxis={"title": {"text": "the model's classes"}, "autorange": "reversed",
               "type": "category"},
        legend={"orientation": "h", "y": -0.22, "x": 0},
        title={"text": "What the model thought it was", "font": {"size": 13}}))
    return fig
