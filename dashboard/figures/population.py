"""The population map: one WebGL trace per class, colour and size by any column.

Trace ``c`` holds the samples of ground-truth class ``c`` (``members[c]``), in
index order; trace ``C`` (after the classes) is the highlight overlay (the
clicked sample and its similars). Re-colouring and re-sizing only replace
``marker.color`` / ``marker.size`` (see :func:`recolor_payload`), never the
coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, class_palette, typed_array

BOOL_COLORS = ("#d62728", "#9ecae1")  # wrong, correct
SIZE_RANGE = (3.0, 14.0)              # marker diameter in px
PROJECTION_LABELS = {"umap": "UMAP", "tsne": "t-SNE"}


@dataclass(frozen=True)
class ColorSpec:
    """How points are coloured.

    Attributes
    ----------
    values : (N,) float32
        One number per sample, mapped through ``coloraxis``.
    coloraxis : dict
        Plotly ``layout.coloraxis`` (colourscale, range, colour bar).
    title : str
    """

    values: np.ndarray
    coloraxis: dict
    title: str
    per_class: bool = False  # colour = ground-truth class: one solid colour per trace


def _step_scale(colors: Sequence[str]) -> list:
    """A stepped colourscale giving integer ``i`` the colour ``colors[i]``."""
    n = len(colors)
    scale = []
    for i, col in enumerate(colors):
        scale += [[i / n, col], [(i + 1) / n, col]]
    return scale


def color_spec(values: np.ndarray, kind: str, title: str,
               class_names: Sequence[str] = ()) -> ColorSpec:
    """Colour settings for a column.

    Parameters
    ----------
    values : (N,) array
        Class indices (``kind="class"``), booleans (``"bool"``) or numbers (``"numeric"``).
    kind : {"class", "bool", "numeric"}
    title : str
        Colour bar title (the column name, with its unit).
    class_names : sequence of str
        Needed for ``kind="class"``.
    """
    vals = np.asarray(values)
    if kind == "class":
        n = len(class_names)
        axis = {"colorscale": _step_scale(class_palette(n)), "cmin": -0.5, "cmax": n - 0.5,
                "showscale": title != "label",
                "colorbar": {"title": {"text": title}, "tickvals": list(range(n)),
                             "ticktext": list(class_names), "len": 0.9}}
        return ColorSpec(vals.astype(np.float32), axis, title, per_class=title == "label")
    if kind == "bool":
        axis = {"colorscale": _step_scale(BOOL_COLORS), "cmin": -0.5, "cmax": 1.5,
                "showscale": True,
                "colorbar": {"title": {"text": title}, "tickvals": [0, 1],
                             "ticktext": ["no", "yes"], "len": 0.5}}
        return ColorSpec(vals.astype(np.float32), axis, title)
    if kind != "numeric":
        raise ValueError(f"unknown colour kind {kind!r}")
    v = vals.astype(np.float32)
    finite = v[np.isfinite(v)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    axis = {"colorscale": "Viridis", "cmin": float(lo), "cmax": float(hi), "showscale": True,
            "colorbar": {"title": {"text": title}, "len": 0.9}}
    return ColorSpec(np.where(np.isfinite(v), v, lo).astype(np.float32), axis, title)


def size_spec(values: np.ndarray | None, size_range: tuple[float, float] = SIZE_RANGE
              ) -> np.ndarray:
    """``(N,)`` float32 marker sizes in px; larger value, larger dot (``None``: constant).

    The square root of the value clipped to its 1st-99th percentiles, so a few
    huge losses do not shrink every other dot.
    """
    lo_px, hi_px = size_range
    if values is None:
        return np.float32(5.0)
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.full(v.shape, lo_px, dtype=np.float32)
    lo, hi = np.percentile(finite, [1, 99])
    if not hi > lo:
        return np.full(v.shape, (lo_px + hi_px) / 2, dtype=np.float32)
    t = np.sqrt(np.clip((np.nan_to_num(v, nan=lo) - lo) / (hi - lo), 0.0, 1.0))
    return (lo_px + (hi_px - lo_px) * t).astype(np.float32)


def _trace_colors(color: ColorSpec, members: Sequence[np.ndarray]) -> list:
    """Per class trace: a solid colour string (ground truth, so the legend shows it) or values."""
    if color.per_class:
        return class_palette(len(members))
    return _per_trace(color.values, members)


def _per_trace(values, members: Sequence[np.ndarray]):
    if np.ndim(values) == 0:
        return [values] * len(members)
    return [np.asarray(values)[m] for m in members]


def highlight_trace(coords: np.ndarray, indices: Sequence[int], focus: int | None = None
                    ) -> go.Scattergl:
    """The overlay of highlighted samples; ``customdata`` holds their indices as a plain list.

    Parameters
    ----------
    coords : (N, 2) float32
    indices : sample indices to ring (the similars)
    focus : the clicked sample (drawn as a larger star), optional
    """
    idx = [int(i) for i in indices]
    symbols = ["circle-open"] * len(idx)
    sizes = [14] * len(idx)
    if focus is not None:
        idx, symbols, sizes = [int(focus)] + idx, ["star"] + symbols, [20] + sizes
    xy = np.asarray(coords, dtype=np.float32)[idx] if idx else np.zeros((0, 2), np.float32)
    return go.Scattergl(
        x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), customdata=idx, mode="markers",
        name="sample + similars", hoverinfo="none",
        marker={"symbol": symbols, "size": sizes, "color": "#000000",
                "line": {"width": 2, "color": "#000000"}},
    )


def population_figure(coords: np.ndarray, members: Sequence[np.ndarray],
                      class_names: Sequence[str], color: ColorSpec, sizes: np.ndarray,
                      projection: str = "umap", highlight: Sequence[int] = (),
                      focus: int | None = None) -> go.Figure:
    """The 2D embedding map.

    Parameters
    ----------
    coords : (N, 2) float32
        Projected embeddings.
    members : list of (n_c,) int arrays
        Sample indices of each class trace (ground-truth classes).
    class_names : sequence of str, length C
    color : ColorSpec
    sizes : (N,) float32 marker sizes in px, or a scalar
    projection : ``umap`` or ``tsne`` (axis titles)
    highlight, focus : see :func:`highlight_trace`

    Returns
    -------
    go.Figure
        ``C + 1`` ``scattergl`` traces; float32 coordinates.
    """
    coords = np.asarray(coords, dtype=np.float32)
    colors = _trace_colors(color, members)
    size_per = _per_trace(sizes, members)
    traces = []
    for c, idx in enumerate(members):
        traces.append(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=str(class_names[c]),
            legendgroup=str(c), hoverinfo="none",
            marker={"color": colors[c], "coloraxis": "coloraxis", "size": size_per[c],
                    "opacity": 0.8, "line": {"width": 0}},
        ))
    traces.append(highlight_trace(coords, highlight, focus))
    name = PROJECTION_LABELS.get(projection, projection)
    layout = base_layout(
        coloraxis=color.coloraxis, dragmode="select", uirevision=projection,
        # Legend under the plot: the colour bar (numeric colourings) keeps the right side
        # and the mode bar the top.
        legend={"title": {"text": "true class "}, "itemsizing": "constant",
                "orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.12,
                "yanchor": "top"},
        xaxis={"title": {"text": f"{name} 1 (arbitrary units)"}, "zeroline": False},
        yaxis={"title": {"text": f"{name} 2 (arbitrary units)"}, "zeroline": False},
        margin={"l": 60, "r": 10, "t": 30, "b": 40},
        hovermode="closest",
    )
    return go.Figure(traces, layout)


def recolor_payload(color: ColorSpec, members: Sequence[np.ndarray]
                    ) -> tuple[list[dict], dict]:
    """What a re-colour changes: per class trace, ``marker.color`` as a typed array.

    Returns
    -------
    per_trace : list of ``{"dtype", "bdata"}`` or colour strings (one per class trace)
    coloraxis : the new ``layout.coloraxis``
    """
    return ([c if isinstance(c, str) else typed_array(c) for c in _trace_colors(color, members)],
            color.coloraxis)


def resize_payload(sizes: np.ndarray, members: Sequence[np.ndarray]) -> list:
    """Per class trace, the new ``marker.size`` (a typed array, or a number)."""
    if np.ndim(sizes) == 0:
        return [float(sizes)] * len(members)
    return [typed_array(v) for v in _per_trace(sizes, members)]
