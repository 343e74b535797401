"""Figures of the Insights page: what distinguishes a group, as paired bars.

Pure: evidence records (or anything with the same attributes) in, ``plotly``
figures out.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures.common import FONT, base_layout, empty_figure

INSIDE_COLOUR = "#d62728"
OUTSIDE_COLOUR = "#9aa0a6"
ROW_HEIGHT = 62
MAX_ROWS = 6


def is_numeric_evidence(evidence) -> bool:
    """Whether an evidence record compares two numbers (else two categories, shown as text)."""
    return all(isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(float(v))
               for v in (evidence.inside, evidence.outside))


def evidence_title(evidence) -> str:
    """``stroke thickness (px)``: the evidence's plain label and its unit, if any."""
    return f"{evidence.label} ({evidence.unit})" if evidence.unit else str(evidence.label)


def format_value(value: float) -> str:
    """A short number: 3 significant digits, no scientific notation for everyday sizes."""
    value = float(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def evidence_figure(evidence: Sequence, max_rows: int = MAX_ROWS) -> go.Figure:
    """Paired bars, inside vs outside the group, one small panel per numeric evidence.

    Each panel has its own axis (the columns have different units); panels are
    in the given order (most informative first), at most ``max_rows``.

    Parameters
    ----------
    evidence : sequence of :class:`analysis.insights.Evidence`
        Records with ``label``, ``unit``, ``inside``, ``outside``, ``score`` (mutual
        information, nats) and ``lift``; those whose values are not both finite
        numbers are skipped (the page lists them as text).
    max_rows : int

    Returns
    -------
    go.Figure
        ``len(rows)`` horizontal bar panels; an empty figure with a note when no
        evidence is numeric.
    """
    rows = [e for e in evidence if is_numeric_evidence(e)][:max_rows]
    if not rows:
        return empty_figure("No numeric measurement distinguishes this group.")
    titles = [f"{evidence_title(e)} · mutual information {e.score:.3f} nats" for e in rows]
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=titles,
                        vertical_spacing=min(0.5 / len(rows), 0.12))
    for r, e in enumerate(rows, start=1):
        values = [float(e.outside), float(e.inside)]
        fig.add_trace(go.Bar(
            x=values, y=["outside", "inside"], orientation="h",
            marker_color=[OUTSIDE_COLOUR, INSIDE_COLOUR],
            text=[format_value(v) + (f" {e.unit}" if e.unit else "") for v in values],
            textposition="outside", cliponaxis=False, showlegend=False,
            hovertemplate=f"{evidence_title(e)}<br>%{{y}}: %{{x:.4g}}<extra></extra>"),
            row=r, col=1)
        low = min(0.0, *values)
        high = max(0.0, *values)
        pad = 0.3 * (high - low or 1.0)  # room for the value written beside each bar
        fig.update_xaxes(range=[low - (pad if low < 0 else 0), high + (pad if high > 0 else 0)],
                         row=r, col=1)
    fig.update_layout(**base_layout(
        height=40 + ROW_HEIGHT * len(rows), bargap=0.25,
        margin={"l": 60, "r": 15, "t": 24, "b": 10}))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=True,
                     zerolinecolor="#ced4da", fixedrange=True)
    fig.update_yaxes(fixedrange=True, tickfont={**FONT, "size": 12})
    fig.update_annotations(font={**FONT, "size": 12}, xanchor="left", x=0)
    return fig


def mean_heatmaps_figure(inside: np.ndarray, outside: np.ndarray, n_inside: int,
                         n_outside: int, signed: bool = True) -> go.Figure:
    """The mean heatmap of the group beside the rest's, on one colour scale.

    Parameters
    ----------
    inside, outside : (H, W) float arrays
        Means of per-sample heatmaps already normalised to [-1, 1] (signed) or
        [0, 1] (magnitudes).
    n_inside, n_outside : int
        How many heatmaps each mean is over (for the titles).
    signed : bool
        Red for, blue against (signed) or white to red (magnitudes).
    """
    inside = np.asarray(inside, dtype=np.float32)
    outside = np.asarray(outside, dtype=np.float32)
    if inside.ndim != 2 or outside.shape != inside.shape:
        raise ValueError(f"two (H, W) heatmaps of one shape expected, got {inside.shape} "
                         f"and {outside.shape}")
    scale = float(max(np.abs(inside).max(), np.abs(outside).max(), 1e-6))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06,
                        subplot_titles=[f"inside: mean of {n_inside} heatmap(s)",
                                        f"outside: mean of {n_outside} heatmap(s)"])
    for c, heat in enumerate((inside, outside), start=1):
        fig.add_trace(go.Heatmap(z=heat[::-1], zmin=-scale if signed else 0.0, zmax=scale,
                                 colorscale="RdBu_r" if signed else "Reds",
                                 showscale=c == 2, hovertemplate="%{z:.3f}<extra></extra>"),
                      row=1, col=c)
    fig.update_layout(**base_layout(height=240, margin={"l": 10, "r": 10, "t": 30, "b": 10}))
    for c, y in ((1, "y"), (2, "y2")):  # square pixels in each panel
        fig.update_xaxes(visible=False, scaleanchor=y, constrain="domain", row=1, col=c)
    fig.update_yaxes(visible=False, constrain="domain")
    fig.update_annotations(font={**FONT, "size": 12})
    return fig
