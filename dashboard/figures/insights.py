"""Figures of the Insights page: what distinguishes a group, as paired bars.

Pure: evidence records (or anything with the same attributes) in, ``plotly``
figures out.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import FONT, base_layout, empty_figure, fast_figure

INSIDE_COLOUR = "#d62728"
OUTSIDE_COLOUR = "#9aa0a6"
ROW_HEIGHT = 62
MAX_ROWS = 6
# The outside bar's name when the evidence compares the group with its own classes.
SAME_CLASSES = "same classes"


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


def _axis(n: int) -> str:
    """Plotly's name of the ``n``-th axis (1-based): ``""``, ``"2"``, ``"3"``..."""
    return "" if n == 1 else str(n)


def _title(text: str, x: float, y: float) -> dict:
    """A panel title just above ``(x, y)`` (paper coordinates)."""
    return {"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": "left",
            "yanchor": "bottom", "showarrow": False, "font": {**FONT, "size": 12}}


def evidence_figure(evidence: Sequence, max_rows: int = MAX_ROWS) -> go.Figure:
    """Paired bars, inside vs outside the group, one small panel per numeric evidence.

    Each panel has its own axis (the columns have different units); panels are
    in the given order (most informative first), at most ``max_rows``. Built
    without plotly.py's validation (:func:`fast_figure`): ten validated cards took
    15 s, as plain dicts they take milliseconds.

    Parameters
    ----------
    evidence : sequence of :class:`analysis.insights.Evidence`
        Records with ``label``, ``unit``, ``inside``, ``outside``, ``score`` (mutual
        information, nats), ``lift`` and optionally ``given`` (``"label"``: the outside
        bar is the samples of the same classes, the score given the class); those
        whose values are not both finite numbers are skipped (the page lists them as
        text).
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
    n = len(rows)
    gap = min(0.5 / n, 0.12)  # paper fraction between panels, room for a title
    height = (1.0 - gap * (n - 1)) / n
    data, layout = [], base_layout(height=40 + ROW_HEIGHT * n, bargap=0.25, showlegend=False,
                                   margin={"l": 60, "r": 15, "t": 24, "b": 10}, annotations=[])
    for r, e in enumerate(rows):
        a = _axis(r + 1)
        top = 1.0 - r * (height + gap)
        values = [float(e.outside), float(e.inside)]
        given = bool(getattr(e, "given", ""))
        data.append(go.Bar(
            x=values, y=[SAME_CLASSES if given else "outside", "inside"], orientation="h",
            xaxis=f"x{a}", yaxis=f"y{a}",
            marker={"color": [OUTSIDE_COLOUR, INSIDE_COLOUR]},
            text=[format_value(v) + (f" {e.unit}" if e.unit else "") for v in values],
            textposition="outside", cliponaxis=False,
            hovertemplate=f"{evidence_title(e)}<br>%{{y}}: %{{x:.4g}}<extra></extra>"))
        low, high = min(0.0, *values), max(0.0, *values)
        pad = 0.3 * (high - low or 1.0)  # room for the value written beside each bar
        layout[f"xaxis{a}"] = {
            "anchor": f"y{a}", "domain": [0.0, 1.0], "fixedrange": True,
            "range": [low - (pad if low < 0 else 0), high + (pad if high > 0 else 0)],
            "showticklabels": False, "showgrid": False, "zeroline": True,
            "zerolinecolor": "#ced4da"}
        layout[f"yaxis{a}"] = {"anchor": f"x{a}", "domain": [max(top - height, 0.0), top],
                               "fixedrange": True, "tickfont": {**FONT, "size": 12}}
        layout["annotations"].append(_title(
            f"{evidence_title(e)} · MI {e.score:.3f} nats" + (" within class" if given else ""),
            0.0, top))
    return fast_figure(data, layout)


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
    layout = base_layout(height=220, margin={"l": 5, "r": 5, "t": 24, "b": 5},
                         annotations=[])
    data = []
    for c, (heat, domain, what, count) in enumerate(
            ((inside, [0.0, 0.44], "inside", n_inside),
             (outside, [0.48, 0.92], "outside", n_outside)), start=1):
        a = _axis(c)
        data.append(go.Heatmap(z=heat[::-1], zmin=-scale if signed else 0.0, zmax=scale,
                               colorscale="RdBu_r" if signed else "Reds", showscale=c == 2,
                               colorbar={"thickness": 10, "len": 0.9},
                               xaxis=f"x{a}", yaxis=f"y{a}",
                               hovertemplate="%{z:.3f}<extra></extra>"))
        # square pixels in each panel
        layout[f"xaxis{a}"] = {"anchor": f"y{a}", "domain": domain, "visible": False,
                               "scaleanchor": f"y{a}", "constrain": "domain"}
        layout[f"yaxis{a}"] = {"anchor": f"x{a}", "domain": [0.0, 1.0], "visible": False,
                               "constrain": "domain"}
        layout["annotations"].append({**_title(f"{what}, {count} heatmap{'s' * (count != 1)}",
                                               sum(domain) / 2, 1.0), "xanchor": "center"})
    return fast_figure(data, layout)
