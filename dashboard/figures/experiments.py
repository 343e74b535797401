"""Experiments figures: several runs' training curves, and the map of two runs' per-sample diff."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import PALETTE, base_layout, empty_figure

# (split, line dash): train solid, test dashed, one colour per run.
SPLIT_DASH = (("train", "solid"), ("test", "dash"))
# The diff map's traces, in order. ``flip`` values are those of analysis.compare.FLIP_LABELS;
# trace 0 holds every sample whose correctness did not change (context only, not clickable).
TO_WRONG, TO_RIGHT = "correct -> wrong", "wrong -> correct"
FLIP_TRACES = ((TO_WRONG, "correct → wrong", "triangle-down"),
               (TO_RIGHT, "wrong → correct", "triangle-up"))
UNCHANGED_COLOR = "#c3c8ce"


def runs_curves_figure(histories: Sequence[tuple[str, Sequence[dict]]],
                       color_slots: Sequence[int] | None = None) -> go.Figure:
    """Loss (nats) and accuracy (%) per epoch of several runs, overlaid.

    Parameters
    ----------
    histories : ``(run name, history)`` pairs
        ``history`` is ``run.json``'s list of dicts with ``epoch`` and
        ``{train,test}_{loss,acc}`` (accuracy in [0, 1]); a split missing from
        a run's history is skipped.
    color_slots : one palette index per run (default: the run's position in
        ``histories``); the page passes the run's position in the whole run
        list, so a run keeps its colour whatever is ticked.

    Returns
    -------
    go.Figure
        Two subplots (loss, accuracy); per run and split one trace in each, in
        the run's colour, train solid and test dashed (legend grouped by run).
    """
    if not any(h for _, h in histories):
        return empty_figure("No training history: the runs have no run.json history.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss (lower is better)",
                                                        "accuracy (higher is better)"))
    slots = list(range(len(histories))) if color_slots is None else list(color_slots)
    for (name, history), slot in zip(histories, slots, strict=True):
        color = PALETTE[int(slot) % len(PALETTE)]
        epochs = [h.get("epoch", e + 1) for e, h in enumerate(history)]
        for split, dash in SPLIT_DASH:
            loss = [h.get(f"{split}_loss") for h in history]
            acc = [h.get(f"{split}_acc") for h in history]
            if all(v is None for v in loss + acc):
                continue
            common = {"x": epochs, "mode": "lines+markers", "name": f"{name} · {split}",
                      "legendgroup": name, "line": {"color": color, "dash": dash},
                      "marker": {"size": 6}}
            fig.add_trace(go.Scatter(y=loss, **common, hovertemplate=(
                f"{name} {split}, epoch %{{x}}: %{{y:.4f}} nats<extra></extra>")), 1, 1)
            fig.add_trace(go.Scatter(
                y=[None if a is None else a * 100 for a in acc], **common, showlegend=False,
                hovertemplate=f"{name} {split}, epoch %{{x}}: %{{y:.2f}} %<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text="epoch", **epoch_ticks(histories))
    fig.update_yaxes(title_text="cross-entropy loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    fig.update_layout(**base_layout(height=400, legend={"title": {"text": "run · split"}}))
    return fig


def epoch_ticks(histories: Sequence[tuple[str, Sequence[dict]]], most: int = 10) -> dict:
    """Integer epoch ticks only (plotly's automatic ticks fall on half epochs, which
    ``tickformat="d"`` then prints as ``1 2 2 3 3``): a whole-number step giving at
    most ``most`` ticks."""
    epochs = [h.get("epoch", e + 1) for _, history in histories
              for e, h in enumerate(history)]
    numbers = [e for e in epochs if isinstance(e, int | float) and np.isfinite(e)]
    span = (max(numbers) - min(numbers)) if numbers else 0
    step = max(1, int(np.ceil(span / most)))
    return {"tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": "d"}


def flip_groups(flip: np.ndarray) -> list[np.ndarray]:
    """The diff map's trace members: ``[unchanged, correct -> wrong, wrong -> correct]``.

    Each is an ``(n_t,)`` int64 array of sample indices in ascending order; a
    point the browser reports as (``curveNumber``, ``pointIndex``) is sample
    ``groups[curveNumber][pointIndex]``.
    """
    flip = np.asarray(flip, dtype=object)
    flipped = [np.flatnonzero(flip == value) for value, _, _ in FLIP_TRACES]
    changed = np.zeros(len(flip), dtype=bool)
    for idx in flipped:
        changed[idx] = True
    return [np.flatnonzero(~changed), *flipped]


def diff_map_figure(coords: np.ndarray, flip: np.ndarray, loss_delta: np.ndarray,
                    hover: Sequence[str], projection: str = "umap") -> go.Figure:
    """Run B's population map with the samples whose correctness flipped highlighted.

    Parameters
    ----------
    coords : (N, 2) float
        Map coordinates (run B's embedding).
    flip : (N,) str
        ``analysis.compare`` flip labels (``correct -> wrong``, ``wrong -> correct``,
        ``both correct``, ``both wrong``).
    loss_delta : (N,) float
        Loss of B minus loss of A, in nats: positive = B is worse on the sample.
    hover : (N,) str
        Hover text per sample (only the flipped samples' is sent).
    projection : str
        Axis titles' name.

    Returns
    -------
    go.Figure
        Trace 0: unchanged samples, small and grey, not hoverable; traces 1 and 2
        (see :data:`FLIP_TRACES`): flipped samples, large and outlined, coloured
        by ``loss_delta`` on a diverging scale centred at 0 (red = B worse).
    """
    coords = np.asarray(coords, dtype=np.float32)
    delta = np.asarray(loss_delta, dtype=np.float64)
    groups = flip_groups(flip)
    changed = np.concatenate(groups[1:])
    finite = delta[changed][np.isfinite(delta[changed])]
    # A symmetric range puts 0 (no change) at the scale's white middle.
    span = float(np.max(np.abs(finite), initial=0.0)) or 1.0
    fig = go.Figure()
    rest = groups[0]
    fig.add_trace(go.Scattergl(
        x=coords[rest, 0], y=coords[rest, 1], mode="markers", name="unchanged",
        marker={"size": 4, "color": UNCHANGED_COLOR}, hoverinfo="skip"))
    for (_, label, symbol), idx in zip(FLIP_TRACES, groups[1:], strict=True):
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{label}: {len(idx)}",
            text=[hover[i] for i in idx], hovertemplate="%{text}<extra></extra>",
            marker={"size": 11, "symbol": symbol, "color": delta[idx].astype(np.float32),
                    "coloraxis": "coloraxis", "line": {"width": 1, "color": "#212529"}}))
    axis = {"title": {"text": f"{projection} 1"}, "showgrid": False, "zeroline": False}
    fig.update_layout(**base_layout(
        height=480, dragmode="pan", hovermode="closest",
        margin={"l": 50, "r": 10, "t": 30, "b": 45},
        xaxis=axis, yaxis={**axis, "title": {"text": f"{projection} 2"}},
        legend={"orientation": "h", "y": 1.01, "yanchor": "bottom", "x": 0},
        coloraxis={"colorscale": "RdBu_r", "cmin": -span, "cmax": span,
                   "colorbar": {"title": {"text": "loss B − A (nats)<br>red: B worse",
                                          "side": "right"}, "thickness": 12}}))
    return fig
