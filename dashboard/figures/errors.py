"""Error analysis figures: the confusion matrix and per-class accuracy and loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout


def confusion_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts; row = ground truth, column = prediction."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def confusion_figure(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str],
                     highlight: tuple[int, int] | None = None, title: str | None = None
                     ) -> go.Figure:
    """Clickable confusion matrix.

    Colour is the share of each true class (row-normalised, log-like contrast
    via the off-diagonal emphasis), the text the raw count. ``customdata`` is
    not needed: a click reports the cell's (x, y) class names.

    Parameters
    ----------
    labels, preds : (N,) int
        Ground truth and prediction of the counted samples (all, or a selection).
    class_names : sequence of str, length C
    highlight : ``(true index, predicted index)`` of the cell whose samples are
        shown: outlined in orange (``layout.shapes[0]``)
    title : a line above the matrix (e.g. ``199 selected samples``)
    """
    n = len(class_names)
    cm = confusion_counts(labels, preds, n)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = [str(c) for c in class_names]
    fig = go.Figure(go.Heatmap(
        z=np.sqrt(share).tolist(), x=names, y=names, text=cm.tolist(), texttemplate="%{text}",
        colorscale="Blues", showscale=False, xgap=1, ygap=1,
        hovertemplate="true %{y} → predicted %{x}: %{text} samples<extra></extra>"))
    shapes = []
    if highlight is not None:
        t, p = (int(v) for v in highlight)
        # Category axes put class k at k: the cell spans k - 0.5 .. k + 0.5.
        shapes.append({"type": "rect", "xref": "x", "yref": "y", "x0": p - 0.5, "x1": p + 0.5,
                       "y0": t - 0.5, "y1": t + 0.5, "line": {"color": "#fd7e14", "width": 3},
                       "fillcolor": "rgba(0,0,0,0)"})
    fig.update_layout(**base_layout(
        height=460, margin={"l": 70, "r": 10, "t": 30, "b": 60}, shapes=shapes,
        title={"text": title or "", "font": {"size": 12}, "x": 0.01, "y": 0.99},
        xaxis={"title": {"text": "predicted class"}, "type": "category", "side": "bottom"},
        yaxis={"title": {"text": "ground-truth class"}, "type": "category",
               "autorange": "reversed", "scaleanchor": "x"},
    ))
    return fig


def per_class_figure(labels: np.ndarray, correct: np.ndarray, loss: np.ndarray,
                     class_names: Sequence[str]) -> go.Figure:
    """Per ground-truth class: accuracy (%) and mean loss (nats), side by side."""
    n = len(class_names)
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    acc = np.bincount(labels, weights=np.asarray(correct, np.float64), minlength=n)
    mean_loss = np.bincount(labels, weights=np.asarray(loss, np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_loss = acc / counts * 100, mean_loss / counts
    names = [str(c) for c in class_names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy per class",
                                                        "mean loss per class"))
    fig.add_trace(go.Bar(x=names, y=acc, marker_color="#1f77b4", name="accuracy",
                         hovertemplate="class %{x}: %{y:.2f} %<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=mean_loss, marker_color="#d62728", name="mean loss",
                         hovertemplate="class %{x}: %{y:.4f} nats<extra></extra>"), 1, 2)
    # From 0: a zoomed axis makes 95% look like a failure next to 99%.
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 100.5], row=1, col=1)
    fig.update_yaxes(title_text="mean cross-entropy (nats)", row=1, col=2)
    fig.update_xaxes(title_text="ground-truth class", type="category")
    fig.update_layout(**base_layout(height=330, showlegend=False,
                                    margin={"l": 60, "r": 20, "t": 40, "b": 50}))
    return fig
