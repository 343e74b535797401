"""Sample analysis figures: probability bars and attribution heatmaps over the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, fast_figure
from dashboard.images import to_display

# Transparent at zero so the digit shows through; red supports the target class, blue
# speaks against it (signed methods), yellow-to-red is magnitude (unsigned methods).
SIGNED_SCALE = [[0.0, "rgba(33,102,172,0.95)"], [0.25, "rgba(103,169,207,0.7)"],
                [0.5, "rgba(247,247,247,0)"], [0.75, "rgba(239,138,98,0.7)"],
                [1.0, "rgba(178,24,43,0.95)"]]
UNSIGNED_SCALE = [[0.0, "rgba(255,255,178,0)"], [0.3, "rgba(254,204,92,0.55)"],
                  [0.6, "rgba(253,141,60,0.8)"], [1.0, "rgba(227,26,28,0.95)"]]


def probability_figure(probs: np.ndarray, class_names: Sequence[str], label: int,
                       pred: int) -> go.Figure:
    """Horizontal bars of the ``(C,)`` softmax probabilities.

    The ground-truth bar is green, the predicted one (when wrong) red.
    """
    probs = np.asarray(probs, dtype=np.float64)
    colors = ["#adb5bd"] * len(probs)
    colors[int(pred)] = "#d62728" if pred != label else "#2ca02c"
    colors[int(label)] = "#2ca02c"
    names = [str(n) for n in class_names]
    bars = go.Bar(
        x=probs * 100, y=names, orientation="h", marker_color=colors,
        text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.2f} %<extra></extra>")
    return fast_figure([bars], base_layout(
        height=max(220, 24 * len(names) + 80), margin={"l": 80, "r": 40, "t": 30, "b": 45},
        xaxis={"title": {"text": "probability (%)"}, "range": [0, 115]},
        yaxis={"title": {"text": "class"}, "autorange": "reversed", "type": "category"},
        title={"text": "Predicted probabilities (green: ground truth)", "font": {"size": 13}},
    ))


def _overlay_traces(image: np.ndarray, heat: np.ndarray, signed: bool, opacity: float,
                    showscale: bool) -> list:
    grey = to_display(image)
    if grey.ndim == 2:
        grey = np.stack([grey] * 3, -1)
    zmin = -1.0 if signed else 0.0
    return [
        go.Image(z=grey, hoverinfo="skip"),
        go.Heatmap(z=np.asarray(heat, dtype=np.float32), zmin=zmin, zmax=1.0,
                   colorscale=SIGNED_SCALE if signed else UNSIGNED_SCALE, opacity=opacity,
                   showscale=showscale,
                   colorbar={"title": {"text": "attribution<br>(scaled)"}, "len": 0.8},
                   hovertemplate="x %{x}, y %{y}: %{z:.2f}<extra></extra>"),
    ]


def heatmap_figure(image: np.ndarray, heatmap: np.ndarray, signed: bool, title: str,
                   opacity: float = 1.0) -> go.Figure:
    """One heatmap over its image.

    Parameters
    ----------
    image : (C, H, W) uint8
    heatmap : (H, W) float32, already normalised to [-1, 1] (signed) or [0, 1]
    signed : bool
        Diverging colours centred on 0 when True.
    """
    return fast_figure(_overlay_traces(image, heatmap, signed, opacity, True), base_layout(
        title={"text": title, "font": {"size": 13}}, height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}))


def heatmap_grid_figure(image: np.ndarray, heatmaps: Sequence[np.ndarray], signed: bool,
                        titles: Sequence[str], columns: int = 5,
                        opacity: float = 1.0) -> go.Figure:
    """Small multiples: one heatmap per class, same colour range.

    Parameters
    ----------
    image : (C, H, W) uint8
    heatmaps : K arrays (H, W), normalised together so panels compare
    titles : K panel titles (class names with their probability)
    """
    k = len(heatmaps)
    rows = int(np.ceil(k / columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=list(titles),
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, heat in enumerate(heatmaps):
        for trace in _overlay_traces(image, heat, signed, opacity, i == 0):
            fig.add_trace(trace, row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(**base_layout(height=125 * rows + 50,
                                    margin={"l": 10, "r": 10, "t": 40, "b": 10}))
    fig.update_annotations(font_size=12)
    return fig
