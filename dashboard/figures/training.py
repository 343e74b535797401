"""Training curves from a run's history."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import base_layout, empty_figure

SERIES = (("train", "#1f77b4"), ("test", "#ff7f0e"))


def training_figure(history: Sequence[dict], head: str | None = None) -> go.Figure:
    """Loss (nats) and accuracy (%) per epoch for train and test.

    Parameters
    ----------
    history : list of dicts with ``epoch`` and ``{train,test}_{loss,acc}``
        Missing keys are skipped (a run without a test split has train only).
    head : str, optional
        A multi-head run's head: its ``{split}_acc_{head}`` and
        ``{split}_loss_{head}`` are drawn where recorded (the total loss otherwise).
    """
    if not history:
        return empty_figure("This run has no training history (a bare weights file).")
    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for split, color in SERIES:
        def pick(metric: str, split: str = split) -> list:
            own = f"{split}_{metric}_{head}"
            key = own if head and any(own in h for h in history) else f"{split}_{metric}"
            return [h.get(key) for h in history]

        loss, acc = pick("loss"), pick("acc")
        if all(v is None for v in loss):
            continue
        fig.add_trace(go.Scatter(x=epochs, y=loss, mode="lines+markers", name=split,
                                 legendgroup=split, line={"color": color},
                                 hovertemplate=f"{split} epoch %{{x}}: %{{y:.4f}} nats"
                                               "<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=epochs, y=[None if a is None else a * 100 for a in acc],
                                 mode="lines+markers", name=split, legendgroup=split,
                                 showlegend=False, line={"color": color},
                                 hovertemplate=f"{split} epoch %{{x}}: %{{y:.2f}} %"
                                               "<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="cross-entropy loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    fig.update_layout(**base_layout(height=380, legend={"title": {"text": "split"}}))
    return fig
