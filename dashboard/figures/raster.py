"""The population map as an image: datashader on the server, for maps of many points.

Past a few hundred thousand points a browser's WebGL scatter stalls, and a
JSON figure of a million points is tens of megabytes. Instead the points in
view are aggregated into a pixel grid (:func:`rasterize`), shaded with the
same colours the point map uses (the class palette of the legend, or the
numeric colour axis and its colour bar) and sent as one PNG in
``layout.images``, placed in data coordinates (``xref="x"``, ``sizing="stretch"``)
so the axes, zoom, pan and the selection tools keep working.

Hover and click on an image report nothing by themselves, so
:func:`hover_grid_trace` lays an invisible heatmap over the occupied cells:
plotly then reports the cell's centre, and the server finds the nearest
sample there. :func:`extent_trace` holds the map's full extent (two invisible
corners) so "reset axes" autoranges to the whole map even when no point trace
holds points.

Optional heavy dependency: ``datashader`` (imported lazily).
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dashboard.figures.population import ColorSpec

log = logging.getLogger(__name__)

# Pixels of the image: about the map's plot area on a laptop screen (it is stretched to it).
RASTER_SIZE = (960, 640)
# Side, in image pixels, of the invisible hover grid's cells: 120 x 80 cells (~6 screen
# pixels each on a laptop), 38 kB of float32 per image (4 px: 150 kB, a third of a pan's
# response).
HOVER_CELL = 8
# Isolated points are spread to up to this many pixels around them (dense areas are not).
SPREAD_PX = 2
MIN_ALPHA = 110  # of 255: the faintest occupied pixel still reads as its colour


@dataclass(frozen=True)
class Raster:
    """One rendering of the map.

    Attributes
    ----------
    source : str
        ``data:image/png;base64,...``; row 0 of the PNG is the top (``y_range[1]``).
    counts : (H, W) int64
        Samples per pixel; row 0 is the bottom (``y_range[0]``), column 0 the left.
    x_range, y_range : (float, float)
        The data rectangle the image covers.
    """

    source: str
    counts: np.ndarray
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape


def _datashader():
    try:
        import datashader
        import datashader.transfer_functions as tf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("The population map of more than ~50,000 points is drawn with "
                          "datashader: pip install datashader") from exc
    return datashader, tf


def category_colors(color: ColorSpec) -> list[str] | None:
    """The colour of each category ``i`` (value ``i``) of a categorical colouring, exactly
    as the point map draws it (its stepped colour scale); ``None`` for a numeric one."""
    scale = color.coloraxis.get("colorscale")
    if color.coloraxis.get("showscale") or not isinstance(scale, list):
        return None
    return [scale[2 * i][1] for i in range(len(scale) // 2)]


def numeric_colors(color: ColorSpec, steps: int = 64) -> list[str]:
    """The colour map of a numeric colouring as ``steps`` evenly spaced hex colours (what
    datashader interpolates), sampled from plotly's scale (``Viridis``) as plotly draws it."""
    import plotly.colors as pc

    scale = color.coloraxis.get("colorscale", "Viridis")
    if isinstance(scale, str):
        scale = pc.get_colorscale(scale)
    sampled = pc.sample_colorscale(scale, list(np.linspace(0, 1, steps)), colortype="rgb")
    return ["#" + "".join(f"{round(v):02x}" for v in pc.unlabel_rgb(c)) for c in sampled]


def pixel_bins(coords: np.ndarray, x_range: tuple[float, float],
               y_range: tuple[float, float], size: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """The pixel of every point inside the rectangle, as datashader's ``Canvas.points``
    maps it: ``floor((x - x0) * width / (x1 - x0))``, the upper edges in the last pixel.

    Returns
    -------
    inside : (N,) bool
    flat : (M,) int64
        ``row * width + column`` of each inside point, row 0 at ``y_range[0]``.
    """
    width, height = size
    (x0, x1), (y0, y1) = x_range, y_range
    xy = np.asarray(coords)
    x, y = xy[:, 0], xy[:, 1]
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    col = np.minimum(((x[inside] - x0) * (width / (x1 - x0))).astype(np.int64), width - 1)
    row = np.minimum(((y[inside] - y0) * (height / (y1 - y0))).astype(np.int64), height - 1)
    return inside, row * width + col


def rasterize(coords: np.ndarray, color: ColorSpec, x_range: tuple[float, float],
              y_range: tuple[float, float], size: tuple[int, int] = RASTER_SIZE) -> Raster:
    """Aggregate and shade the points in a data rectangle.

    Parameters
    ----------
    coords : (N, 2) float
        Map coordinates of every sample (those outside the rectangle are dropped).
    color : ColorSpec
        The colouring of the point map. Categorical (classes, yes/no): each pixel
        mixes its samples' category colours, weighted by count, its opacity
        growing with the count (histogram-equalised). Numeric: the mean value of
        the pixel's samples through the colour axis's scale and range
        (``cmin``..``cmax``, clipped), so the colour bar reads the same.
    x_range, y_range : (low, high)
    size : (width, height) in pixels

    Returns
    -------
    Raster

    Notes
    -----
    The per-pixel counts and means are ``np.bincount`` s over datashader's pixel
    mapping (:func:`pixel_bins`), not ``Canvas.points``: datashader compiles its
    aggregation with numba once per process *and per number of categories*,
    3-7 s each on 2 cores, which alone broke the 3 s goal of a first render;
    ``bincount`` is as fast (~60 ms at 1,000,000 points) and compiles nothing.
    datashader shades the numeric mean (``shade``), spreads isolated pixels
    (``dynspread``) and makes the image (``to_pil``).
    """
    import xarray as xr

    _, tf = _datashader()
    width, height = int(size[0]), int(size[1])
    x_range, y_range = _proper(x_range), _proper(y_range)
    inside, flat = pixel_bins(coords, x_range, y_range, (width, height))
    counts = np.bincount(flat, minlength=width * height).reshape(height, width)
    grid = {"dims": ("y", "x"),
            "coords": {"y": y_range[0] + (np.arange(height) + 0.5) * (y_range[1] - y_range[0])
                       / height,
                       "x": x_range[0] + (np.arange(width) + 0.5) * (x_range[1] - x_range[0])
                       / width}}
    palette = category_colors(color)
    if palette is not None:
        codes = np.asarray(color.values)[inside]
        known = np.isfinite(codes) & (codes >= 0) & (codes < len(palette))
        per_category = np.bincount(flat[known] * len(palette) + codes[known].astype(np.int64),
                                   minlength=width * height * len(palette))
        per_category = per_category.reshape(height, width, len(palette))
        # the samples of known category per pixel: ``counts`` itself when all are known
        # (summing the (H, W, C) grid instead took a third of a 1,000,000-point image)
        known_total = counts if known.all() else np.bincount(
            flat[known], minlength=width * height).reshape(height, width)
        image = tf.Image(shade_categories(per_category, palette, total=known_total), **grid)
    else:
        lo, hi = float(color.coloraxis["cmin"]), float(color.coloraxis["cmax"])
        values = np.asarray(color.values, dtype=np.float64)[inside]
        sums = np.bincount(flat, weights=values, minlength=width * height).reshape(height, width)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / counts, np.nan)
        # A value past the range takes the end colour, as plotly draws it.
        image = tf.shade(xr.DataArray(np.clip(mean, lo, hi), **grid),
                         cmap=numeric_colors(color), how="linear", span=(lo, hi))
    image = tf.dynspread(image, threshold=0.5, max_px=SPREAD_PX)
    return Raster(png_data_uri(image.to_pil()), counts, x_range, y_range)


def shade_categories(counts: np.ndarray, palette: Sequence[str],
                     min_alpha: int = MIN_ALPHA, total: np.ndarray | None = None
                     ) -> np.ndarray:
    """Colour a per-category count grid: each pixel the count-weighted mix of its
    categories' colours, its opacity from ``min_alpha`` (fewest samples) to opaque (most)
    by histogram equalisation of the pixel totals, so sparse and dense regions both read.

    Parameters
    ----------
    counts : (H, W, C) int
    palette : C colours ``#rrggbb``
    min_alpha : opacity (of 255) of the least occupied pixels
    total : (H, W) int, optional
        ``counts.sum(axis=2)`` when the caller has it already.

    Returns
    -------
    (H, W) uint32
        Packed RGBA (datashader's image layout; little-endian ``R`` first); empty
        pixels fully transparent.

    datashader's own ``shade`` of a ``count_cat`` aggregate does about the same in ~0.4 s
    at 960x640x10 pixels; this takes ~0.05 s.
    """
    rgb = np.array([_rgb(c) for c in palette], dtype=np.float32)
    total = counts.sum(axis=2) if total is None else total
    occupied = total > 0
    per = total[occupied]
    mix = (counts[occupied].astype(np.float32) @ rgb) / per[:, None].astype(np.float32)
    # Equalised opacity: the share of occupied pixels with at most this many samples.
    cdf = np.cumsum(np.bincount(per)) / max(len(per), 1)
    level = cdf[per]
    low = cdf[per.min()] if len(per) else 0.0
    level = (level - low) / (1 - low) if low < 1 else np.ones_like(level)
    alpha = min_alpha + (255 - min_alpha) * level
    rgba = np.zeros(total.shape + (4,), dtype=np.uint8)
    rgba[occupied, :3] = np.clip(np.rint(mix), 0, 255).astype(np.uint8)
    rgba[occupied, 3] = np.clip(np.rint(alpha), 0, 255).astype(np.uint8)
    return rgba.view(np.uint32).reshape(total.shape)


def _rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` or ``rgb(r, g, b)`` as three ints."""
    if color.startswith("#") and len(color) == 7:
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    import plotly.colors as pc

    return tuple(int(round(v)) for v in pc.unlabel_rgb(color))


def _proper(bounds: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` with ``high > low`` (a single point's range is widened)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if hi < lo:
        lo, hi = hi, lo
    if not hi > lo:
        pad = max(abs(lo) * 1e-3, 1e-3)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def png_data_uri(image) -> str:
    """A PIL image as a ``data:image/png;base64,`` URI (fast compression: it is sent at once
    and never stored)."""
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_layout(raster: Raster) -> dict:
    """The ``layout.images`` entry drawing ``raster`` over its data rectangle, under the
    traces (the highlight overlay stays on top)."""
    (x0, x1), (y0, y1) = raster.x_range, raster.y_range
    return {"source": raster.source, "xref": "x", "yref": "y", "x": x0, "y": y1,
            "sizex": x1 - x0, "sizey": y1 - y0, "sizing": "stretch", "xanchor": "left",
            "yanchor": "top", "layer": "below", "opacity": 1}


def hover_grid_trace(raster: Raster | None, cell: int = HOVER_CELL) -> dict:
    """An invisible heatmap of ``cell`` x ``cell`` pixel cells over the occupied part of
    the image: hovering or clicking an occupied cell reports its centre (``x``, ``y``);
    empty cells are gaps and report nothing (``hoverongaps=False``).

    ``None`` gives the same trace, empty (the map shows points).
    """
    trace = {"type": "heatmap", "name": "map image", "hoverinfo": "none", "showscale": False,
             "hoverongaps": False, "opacity": 0, "zsmooth": "fast", "showlegend": False,
             "colorscale": [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]]}
    if raster is None:
        return {**trace, "z": []}
    height, width = raster.shape
    rows, cols = height // cell, width // cell
    counts = raster.counts[:rows * cell, :cols * cell]
    per_cell = counts.reshape(rows, cell, cols, cell).sum(axis=(1, 3)).astype(np.float32)
    per_cell[per_cell == 0] = np.nan
    (x0, x1), (y0, y1) = raster.x_range, raster.y_range
    dx, dy = (x1 - x0) * cell / width, (y1 - y0) * cell / height
    return {**trace, "z": _typed_2d(per_cell), "x0": x0 + dx / 2, "dx": dx,
            "y0": y0 + dy / 2, "dy": dy}


def _typed_2d(values: np.ndarray) -> dict:
    arr = np.ascontiguousarray(values, dtype=np.float32)
    return {"dtype": "f4", "bdata": base64.b64encode(arr.tobytes()).decode("ascii"),
            "shape": f"{arr.shape[0]}, {arr.shape[1]}"}


def extent_trace(x_range: tuple[float, float], y_range: tuple[float, float]) -> dict:
    """Two invisible corners of the whole map: "reset axes" autoranges to all of it.

    A WebGL trace (two transparent 1 px markers, never hovered; a selection is resolved
    by its region, not its points): it keeps plotly's WebGL canvas alive while the map
    is an image, so a zoom in to points does not create it anew, which costs ~0.7 s in
    a browser drawing WebGL in software (``benchmarks.map --browser``); redrawing two
    points at a pan about the image costs next to nothing.
    """
    return {"type": "scattergl", "mode": "markers", "name": "map extent",
            "hoverinfo": "skip", "showlegend": False,
            "marker": {"size": 1, "opacity": 0, "color": "rgba(0,0,0,0)"},
            "x": [float(x_range[0]), float(x_range[1])],
            "y": [float(y_range[0]), float(y_range[1])]}


def view_note(visible: int, total: int, limit: int, image: bool) -> dict:
    """A small note in the map's top-left corner saying how it is drawn."""
    if image:
        text = (f"{visible:,} points in view, drawn as an image; zoom in to {limit:,} or "
                "fewer to see them as points")
    else:
        text = f"{visible:,} of {total:,} points in view"
    return {"text": text, "xref": "paper", "yref": "paper", "x": 0, "y": 1.0,
            "xanchor": "left", "yanchor": "bottom", "showarrow": False,
            "font": {"size": 11, "color": "#6c757d"}}


def warm_up() -> None:
    """Compile datashader's shading and spreading (numba) on a few points, so the first
    real map does not pay for it (~0.5 s)."""
    from dashboard.figures.population import color_spec

    coords = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    for spec in (color_spec(np.array([0, 1]), "class", "label", ["a", "b"]),
                 color_spec(np.array([0.0, 1.0]), "numeric", "v")):
        rasterize(coords, spec, (0.0, 1.0), (0.0, 1.0), size=(8, 8))
