"""The population map: one WebGL trace per class, colour and size by any column.

Trace ``c`` holds the samples of ground-truth class ``c`` (``members[c]``), in
index order; trace ``C`` (after the classes) is the highlight overlay (the
clicked sample and its similars); traces ``C + 1 ..`` are legend keys (no
points): the colours of a categorical colouring other than the true class
(``correct``/``wrong``, the predicted class). Re-colouring and re-sizing only
replace ``marker.color`` / ``marker.size`` and the legend entries (see
:func:`recolor_payload`), never the coordinates.

The legend stands in a fixed place, right of the plot; a numeric colouring's
colour bar sits under it, its title along the bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.common import base_layout, class_palette, typed_array

BOOL_COLORS = ("#d62728", "#9ecae1")  # wrong, correct
SIZE_RANGE = (3.0, 14.0)              # marker diameter in px
SIZE_RULE = "size: percentile rank of {column}, 3 px (lowest) to 14 px (highest)"
HIGHLIGHT_NAME = "sample + similars"
# Boolean columns whose yes/no reads better as correct/wrong, and their legend title.
CORRECTNESS_TITLES = {"correct": "prediction", "mc_correct": "MC-dropout prediction"}
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
    per_class : bool
        Colour = ground-truth class: one solid colour per trace (the traces are the legend).
    keys : tuple of (name, colour)
        The legend of any other categorical colouring (one key per category).
    legend_title : str
    """

    values: np.ndarray
    coloraxis: dict
    title: str
    per_class: bool = False
    keys: tuple = ()
    legend_title: str = "true class"


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
        palette = class_palette(n)
        # Categories are told by the legend (keys), never by a colour bar.
        axis = {"colorscale": _step_scale(palette), "cmin": -0.5, "cmax": n - 0.5,
                "showscale": False}
        per_class = title == "label"
        keys = () if per_class else tuple(zip((str(c) for c in class_names), palette,
                                              strict=True))
        legend = "true class" if per_class else title.replace("_", " ")
        return ColorSpec(vals.astype(np.float32), axis, title, per_class=per_class, keys=keys,
                         legend_title=legend)
    if kind == "bool":
        axis = {"colorscale": _step_scale(BOOL_COLORS), "cmin": -0.5, "cmax": 1.5,
                "showscale": False}
        if title in CORRECTNESS_TITLES:
            keys, legend = (("correct", BOOL_COLORS[1]), ("wrong", BOOL_COLORS[0])), \
                CORRECTNESS_TITLES[title]
        else:
            keys, legend = (("yes", BOOL_COLORS[1]), ("no", BOOL_COLORS[0])), \
                title.replace("_", " ")
        return ColorSpec(vals.astype(np.float32), axis, title, keys=keys, legend_title=legend)
    if kind != "numeric":
        raise ValueError(f"unknown colour kind {kind!r}")
    v = vals.astype(np.float32)
    finite = v[np.isfinite(v)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    # Under the legend, its title along the bar: a long column name costs no width.
    axis = {"colorscale": "Viridis", "cmin": float(lo), "cmax": float(hi), "showscale": True,
            "colorbar": {"title": {"text": title, "side": "right"}, "len": 0.6, "thickness": 14,
                         "x": 1.02, "xanchor": "left", "y": 0, "yanchor": "bottom"}}
    return ColorSpec(np.where(np.isfinite(v), v, lo).astype(np.float32), axis, title,
                     legend_title="")


def size_spec(values: np.ndarray | None, size_range: tuple[float, float] = SIZE_RANGE
              ) -> np.ndarray:
    """``(N,)`` float32 marker sizes in px; larger value, larger dot (``None``: constant).

    Linear in the value's percentile rank (ties share their mean rank; NaN is
    the smallest): a loss is heavily skewed (most samples near 0, a few
    huge), and a size linear in the value made ~95% of the points 2-px dots.
    The median sample is mid-sized, the top 10% nearly the largest. See
    :data:`SIZE_RULE`.
    """
    lo_px, hi_px = size_range
    if values is None:
        return np.float32(5.0)
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.full(v.shape, lo_px, dtype=np.float32)
    q = np.zeros(v.shape, dtype=np.float64)
    q[finite] = percentile_rank(v[finite])
    return (lo_px + (hi_px - lo_px) * q).astype(np.float32)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 in [0, 1]: the share of the other values below each (ties: mean rank)."""
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return np.full(v.shape, 0.5)
    return (rankdata(v, method="average") - 1) / (v.size - 1)


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
        name=HIGHLIGHT_NAME, hoverinfo="none", legendrank=2000,
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
            legendgroup=str(c), hoverinfo="none", showlegend=color.per_class,
            marker={"color": colors[c], "coloraxis": "coloraxis", "size": size_per[c],
                    "opacity": 0.8, "line": {"width": 0}},
        ))
    traces.append(highlight_trace(coords, highlight, focus))
    traces += [go.Scattergl(x=[None], y=[None], mode="markers", hoverinfo="skip", **key)
               for key in legend_keys(color, key_slots(len(members)))]
    name = PROJECTION_LABELS.get(projection, projection)
    layout = base_layout(
        coloraxis=color.coloraxis, dragmode="select", uirevision=projection,
        # A fixed place right of the plot, whatever it lists: under the plot it wrapped
        # onto the x-axis title once the highlight entry joined it.
        legend=legend_layout(color),
        xaxis={"title": {"text": f"{name} 1 (arbitrary units)"}, "zeroline": False},
        yaxis={"title": {"text": f"{name} 2 (arbitrary units)"}, "zeroline": False},
        margin={"l": 60, "r": 10, "t": 30, "b": 40},
        hovermode="closest",
    )
    return go.Figure(traces, layout)


def key_slots(num_classes: int) -> int:
    """Legend-key traces after the overlay: enough for any categorical colouring."""
    return max(num_classes, 2)


def legend_keys(color: ColorSpec, slots: int) -> list[dict]:
    """Per key trace: ``name``, ``showlegend`` and ``marker`` (unused slots hidden)."""
    out = []
    for k in range(slots):
        name, col = color.keys[k] if k < len(color.keys) else ("", "#000000")
        out.append({"name": name, "showlegend": k < len(color.keys), "legendrank": 1000 + k,
                    "marker": {"color": col, "size": 9}})
    return out


def legend_layout(color: ColorSpec) -> dict:
    return {"title": {"text": color.legend_title}, "itemsizing": "constant",
            "orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}


def recolor_payload(color: ColorSpec, members: Sequence[np.ndarray]
                    ) -> tuple[list[dict], dict]:
    """What a re-colour changes: per class trace, ``marker.color`` as a typed array.

    Returns
    -------
    per_trace : list of ``{"dtype", "bdata"}`` or colour strings (one per class trace)
    coloraxis : the new ``layout.coloraxis``

    The legend's changes are :func:`legend_keys` and :func:`legend_layout`.
    """
    return ([c if isinstance(c, str) else typed_array(c) for c in _trace_colors(color, members)],
            color.coloraxis)


def resize_payload(sizes: np.ndarray, members: Sequence[np.ndarray]) -> list:
    """Per class trace, the new ``marker.size`` (a typed array, or a number)."""
    if np.ndim(sizes) == 0:
        return [float(sizes)] * len(members)
    return [typed_array(v) for v in _per_trace(sizes, members)]
