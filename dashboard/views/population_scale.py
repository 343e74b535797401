"""The population map of a large run: an image while many points are in view.

A run with more samples than :func:`map_max_points` (default 50,000; the
Flask config key :data:`MAX_POINTS_KEY` changes it) gets a map that is drawn
per *view* (the axis ranges the user zoomed or panned to, kept in the page's
view store):

* more than the limit in view: the points in view rasterised on the server
  (:mod:`dashboard.figures.raster`), the point traces empty;
* at most the limit in view: WebGL points, only those in the view (and a little
  around it while that stays within the limit).

Either way the figure keeps the point map's traces in the same order (class
traces, the highlight overlay, legend keys) and appends two: the map's
extent (so "reset axes" shows all of it) and the invisible hover grid. As the
point traces then hold a subset, a point's (``curveNumber``,
``pointIndex``) no longer names a sample: hover and click are resolved by
coordinates (the nearest sample, :func:`nearest_sample`, a KD-tree per
projection), and box and lasso selections by their region against *all*
samples (:func:`region_indices`), in either mode.

A run within the limit keeps the plain point map of :mod:`dashboard.views.population`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from dashboard import figures
from dashboard.columns import numeric_columns
from dashboard.figures.raster import (
    extent_trace,
    hover_grid_trace,
    image_layout,
    rasterize,
    view_note,
)
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import checked_choice, first_point, point_index, selection_store

log = logging.getLogger(__name__)

# Points drawn as points (WebGL) at most; more in view are an image. Plotly redraws every
# WebGL point sent at the new range *before* it reports a zoom or pan, so the points sent
# bound the wait for the image at a zoom out. In a browser drawing WebGL in software
# (headless Chromium; a machine without a GPU) that redraw costs about linearly in points,
# ~0.25 s per 12,500 points on a loaded 2-core machine (benchmarks.map --browser):
# 50,000 keeps a zoom out from points near the 0.5 s goal there, a GPU browser far under.
DEFAULT_MAX_POINTS = 50_000
MAX_POINTS_KEY = "LOUPE_MAP_MAX_POINTS"  # Flask config of the app: points drawn as points
# Point mode also sends the points this far around the view (a share of its width and
# height on each side), so a small pan shows points at once, unless that would send more
# than the limit (the points sent, not those in view, are what a zoom out redraws).
PAD = 0.25
# A lasso of more vertices than this is not a hand-drawn lasso.
MAX_LASSO_VERTICES = 20_000

Range = tuple[float, float]


def map_max_points() -> int:
    """The most points drawn as points, from the serving app's config (default 50,000)."""
    from flask import current_app, has_app_context

    value = current_app.config.get(MAX_POINTS_KEY, DEFAULT_MAX_POINTS) \
        if has_app_context() else DEFAULT_MAX_POINTS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{MAX_POINTS_KEY} must be a positive integer, got {value!r}")
    return value


def is_large(entry: RunEntry, max_points: int) -> bool:
    """Whether ``entry``'s map has more samples than ``max_points`` (drawn per view)."""
    return len(entry.id_to_index) > max_points


# -- geometry ---------------------------------------------------------------------------------
def map_extent(entry: RunEntry, projection: str) -> tuple[Range, Range]:
    """``(x_range, y_range)`` of every finite point of the projection (memoised)."""
    def compute():
        xy = entry.session.projection(projection)
        ok = np.isfinite(xy).all(axis=1)
        if not ok.any():
            return (0.0, 1.0), (0.0, 1.0)
        lo, hi = xy[ok].min(axis=0), xy[ok].max(axis=0)
        return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))

    return entry.memo(("map-extent", projection), compute)


def in_box(coords: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]
           ) -> np.ndarray:
    """``(N,)`` bool: the points inside the rectangle, edges included.

    Parameters
    ----------
    coords : (N, 2) float
    x_range, y_range : two numbers each, in either order
    """
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    x, y = coords[:, 0], coords[:, 1]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def in_lasso(coords: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """``(N,)`` bool: the points inside the closed polygon ``(xs[i], ys[i])`` (matplotlib's
    even-odd test; only the points within the polygon's bounding box are tested)."""
    from matplotlib.path import Path

    vertices = np.column_stack([np.asarray(xs, dtype=np.float64),
                                np.asarray(ys, dtype=np.float64)])
    out = np.zeros(len(coords), dtype=bool)
    if len(vertices) < 3:
        return out
    candidates = np.flatnonzero(in_box(coords, (vertices[:, 0].min(), vertices[:, 0].max()),
                                       (vertices[:, 1].min(), vertices[:, 1].max())))
    if len(candidates):
        path = Path(np.vstack([vertices, vertices[:1]]), closed=True)
        out[candidates] = path.contains_points(coords[candidates].astype(np.float64))
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _numbers(values: object, limit: int) -> list[float] | None:
    """A list of at most ``limit`` finite numbers, else ``None``."""
    if not isinstance(values, list | tuple) or len(values) > limit:
        return None
    out = [_number(v) for v in values]
    return None if any(v is None for v in out) else out


def region_indices(coords: np.ndarray, selected: object) -> np.ndarray | None:
    """Sorted ``(M,)`` indices of the samples in a box or lasso selection's region.

    Parameters
    ----------
    coords : (N, 2) float
    selected : the graph's ``selectedData``: ``range`` ``{"x": [x0, x1], "y": [y0, y1]}``
        for a box, ``lassoPoints`` ``{"x": [...], "y": [...]}`` for a lasso.

    Returns
    -------
    (M,) int64, or ``None`` when ``selected`` holds no usable region (a
    :class:`DashboardInputError` when it holds a malformed one).
    """
    if not isinstance(selected, Mapping):
        return None
    lasso, box = selected.get("lassoPoints"), selected.get("range")
    if isinstance(lasso, Mapping):
        xs = _numbers(lasso.get("x"), MAX_LASSO_VERTICES)
        ys = _numbers(lasso.get("y"), MAX_LASSO_VERTICES)
        if xs is None or ys is None or len(xs) != len(ys):
            raise DashboardInputError("The lasso selection is malformed: draw it again.")
        return np.flatnonzero(in_lasso(coords, xs, ys))
    if isinstance(box, Mapping):
        xs, ys = _numbers(box.get("x"), 2), _numbers(box.get("y"), 2)
        if xs is None or ys is None or len(xs) != 2 or len(ys) != 2:
            raise DashboardInputError("The box selection is malformed: draw it again.")
        return np.flatnonzero(in_box(coords, xs, ys))
    return None


# -- the view ---------------------------------------------------------------------------------
def checked_view(view: object, projection: str, run: str | None = None) -> dict | None:
    """The view store if it is a valid view of ``projection`` (and of run ``run``, when
    given), else ``None`` (the whole map)."""
    if not isinstance(view, Mapping) or view.get("projection") != projection \
            or view.get("run") != run:
        return None
    x, y = _numbers(view.get("x"), 2), _numbers(view.get("y"), 2)
    if x is None or y is None or len(x) != 2 or len(y) != 2:
        return None
    out = {"projection": projection, "x": sorted(x), "y": sorted(y)}
    return {"run": run, **out} if run is not None else out


def _axis_range(relayout: Mapping, axis: str) -> list[float] | str | None:
    """The new range of ``axis`` in ``relayoutData``: two numbers, ``"auto"`` (reset) or
    ``None`` (unchanged)."""
    if relayout.get(f"{axis}.autorange") is True:
        return "auto"
    both = relayout.get(f"{axis}.range")
    if both is not None:
        nums = _numbers(both, 2)
        return sorted(nums) if nums and len(nums) == 2 else None
    lo, hi = _number(relayout.get(f"{axis}.range[0]")), _number(relayout.get(f"{axis}.range[1]"))
    return sorted([lo, hi]) if lo is not None and hi is not None else None


def next_view(relayout: object, view: dict | None, projection: str,
              extent: tuple[Range, Range], run: str | None = None
              ) -> tuple[bool, dict | None]:
    """The view after a zoom, pan or reset (``relayoutData``).

    Returns
    -------
    changed : bool
        ``False`` for events that move no axis (``autosize``, drag mode, selections).
    view : dict or None
        ``{"projection", "x": [lo, hi], "y": [lo, hi]}`` (and ``"run": run`` when
        given); ``None`` is the whole map.
    """
    if not isinstance(relayout, Mapping):
        return False, view
    new = {axis: _axis_range(relayout, axis) for axis in ("xaxis", "yaxis")}
    if all(v is None for v in new.values()):
        return False, view
    current = view or {"x": list(extent[0]), "y": list(extent[1])}
    ranges = []
    for axis, key, full in (("xaxis", "x", extent[0]), ("yaxis", "y", extent[1])):
        value = new[axis]
        ranges.append(list(full) if value == "auto" else value if value else current[key])
    whole = ranges[0] == list(extent[0]) and ranges[1] == list(extent[1])
    result = None if whole else {"projection": projection, "x": ranges[0], "y": ranges[1]}
    if result is not None and run is not None:
        result = {"run": run, **result}
    return result != view, result


# -- figures ----------------------------------------------------------------------------------
def scaled_map_figure(entry: RunEntry, projection: str, color: str, size: str,
                      sample_store: dict | None, view: dict | None, max_points: int) -> dict:
    """The map of a large run for ``view`` (``None``: all of it), as a plotly figure dict.

    More than ``max_points`` samples in view: a datashader image of them (see
    :mod:`dashboard.figures.raster`); else WebGL points of the samples in the view and,
    while at most ``max_points`` in all, around it. Traces: ``C`` class traces, the
    overlay, legend keys, the map extent, the hover grid.
    """
    from dashboard.views.population import (
        NO_SIZE,
        checked_projection,
        highlight_of,
        make_color,
        make_sizes,
    )

    projection = checked_projection(entry, projection)
    size = checked_choice(size, [NO_SIZE] + numeric_columns(entry.table), "size column")
    coords = entry.session.projection(projection)
    extent = map_extent(entry, projection)
    view = checked_view(view, projection, entry.key)
    x_range, y_range = (view["x"], view["y"]) if view else extent
    inside = in_box(coords, x_range, y_range)
    visible = int(inside.sum())
    # The colouring of a million samples (its percentiles...) is kept per column.
    spec = entry.memo(("map-color", color), lambda: make_color(entry, color))
    highlight, focus = highlight_of(entry, sample_store)
    classes = len(entry.members)
    if visible > max_points:
        raster = _view_raster(entry, projection, color, spec, view)
        base = _image_frame_of(entry, projection, color, spec)
        data = list(base["data"])
        data[classes] = _svg(figures.highlight_trace(coords, highlight, focus).to_plotly_json())
        layout = dict(base["layout"])
    else:
        raster = None
        sent = _padded(coords, x_range, y_range, inside, max_points)
        members = [m[sent[m]] for m in entry.members]
        figure = figures.population_figure(coords, members, entry.class_names, spec,
                                           make_sizes(entry, size), projection, highlight,
                                           focus).to_plotly_json()
        data, layout = list(figure["data"]), dict(figure["layout"])
    if view is not None:
        # The view the user zoomed to, stated: a new figure's missing range would
        # autorange to the whole map (uirevision keeps no range the figure never had).
        for axis, key in (("xaxis", "x"), ("yaxis", "y")):
            layout[axis] = {**layout.get(axis, {}), "range": list(view[key]),
                            "autorange": False}
    layout["images"] = [image_layout(raster)] if raster is not None else []
    layout["annotations"] = [view_note(visible, len(coords), max_points, raster is not None)]
    data += [extent_trace(*extent), hover_grid_trace(raster)]
    return {"data": data, "layout": layout}


def _view_raster(entry: RunEntry, projection: str, color: str, spec, view: dict | None):
    """The image of ``view`` (``None``: the whole map, the same image for every visit and
    reset, memoised)."""
    coords = entry.session.projection(projection)
    if view is None:
        return entry.memo(("map-raster", projection, color),
                          lambda: rasterize(coords, spec, *map_extent(entry, projection)))
    return rasterize(coords, spec, view["x"], view["y"])


def _image_frame_of(entry: RunEntry, projection: str, color: str, spec) -> dict:
    """Everything of an image map but the image, the overlay and the view: the same for
    every view of this (projection, colour), so built (and validated by plotly) once."""
    return entry.memo(("map-image-frame", projection, color),
                      lambda: _image_frame(entry, entry.session.projection(projection), spec,
                                           projection))


def visible_count(entry: RunEntry, projection: str, view: dict | None) -> int:
    """How many samples ``view`` (a checked view; ``None``: the whole map) shows."""
    if view is None:
        return len(entry.session.projection(projection))
    return int(in_box(entry.session.projection(projection), view["x"], view["y"]).sum())


def image_view_patch(entry: RunEntry, projection: str, color: str, view: dict | None,
                     max_points: int, visible: int | None = None):
    """A :class:`dash.Patch` turning an image map into the image of ``view`` (a checked
    view of ``projection`` holding more than ``max_points`` samples; ``None``: the whole
    map): the image, the note, the axis ranges and the hover grid; the other traces
    (legend, overlay, extent) and the layout stay as they are in the browser.
    ``visible``: :func:`visible_count` of ``view`` when the caller has it.

    The same figure as :func:`scaled_map_figure` gives for ``view``, without resending
    the legend, overlay and layout, nor making plotly re-read them.
    """
    from dash import Patch

    from dashboard.views.population import make_color

    spec = entry.memo(("map-color", color), lambda: make_color(entry, color))
    raster = _view_raster(entry, projection, color, spec, view)
    grid_index = len(_image_frame_of(entry, projection, color, spec)["data"]) + 1
    patch = Patch()
    patch["layout"]["images"] = [image_layout(raster)]
    if visible is None:
        visible = visible_count(entry, projection, view)
    patch["layout"]["annotations"] = [view_note(visible,
                                                len(entry.session.projection(projection)),
                                                max_points, True)]
    for axis, key in (("xaxis", "x"), ("yaxis", "y")):
        if view is None:  # as the whole map's figure: no range, autoranged
            del patch["layout"][axis]["range"]
            del patch["layout"][axis]["autorange"]
        else:
            patch["layout"][axis]["range"] = list(view[key])
            patch["layout"][axis]["autorange"] = False
    patch["data"][grid_index] = hover_grid_trace(raster)
    return patch


def large_highlight_patch(entry: RunEntry, projection: str, sample_store: dict | None,
                          view: object, max_points: int):
    """The overlay (trace ``C``) of a large map replaced by the clicked sample and its
    similars, as :func:`dashboard.views.population.highlight_patch` does, but an SVG trace
    while the map of ``view`` is an image (no WebGL canvas to redraw at every pan)."""
    from dash import Patch

    from dashboard.views.population import checked_projection, highlight_of

    projection = checked_projection(entry, projection)
    highlight, focus = highlight_of(entry, sample_store)
    trace = figures.highlight_trace(entry.session.projection(projection), highlight,
                                    focus).to_plotly_json()
    if visible_count(entry, projection, checked_view(view, projection, entry.key)) \
            > max_points:
        trace = _svg(trace)
    patch = Patch()
    patch["data"][len(entry.members)] = trace
    return patch


def large_map_update(entry: RunEntry, projection: str, color: str, size: str,
                     sample_store: dict | None, view: object, max_points: int
                     ) -> tuple[dict, dict | None]:
    """The figure of a large map and its view store: ``view`` kept when it is a view of
    ``projection`` (a re-colour or re-size), else the whole map."""
    view = checked_view(view, projection, entry.key)
    return scaled_map_figure(entry, projection, color, size, sample_store, view,
                             max_points), view


def view_update(entry: RunEntry, relayout: object, projection: str, color: str, size: str,
                sample_store: dict | None, view: object, max_points: int
                ) -> tuple[dict, dict | None] | None:
    """After a zoom, pan or reset of a large map: its figure for the new view (a
    :func:`image_view_patch` when the map is an image before and after) and the new view
    store; ``None`` for a small map or an event that moves no axis."""
    from dashboard.views.population import checked_projection

    if not is_large(entry, max_points):
        return None
    projection = checked_projection(entry, projection)
    changed, new = next_view(relayout, checked_view(view, projection, entry.key),
                             projection, map_extent(entry, projection), entry.key)
    if not changed:
        return None
    old = checked_view(view, projection, entry.key)
    visible = visible_count(entry, projection, new)
    if visible > max_points and visible_count(entry, projection, old) > max_points:
        # an image before and after: only the image, the note, the ranges and the grid
        return image_view_patch(entry, projection, color, new, max_points, visible), new
    return scaled_map_figure(entry, projection, color, size, sample_store, new,
                             max_points), new


def _image_frame(entry: RunEntry, coords: np.ndarray, spec, projection: str) -> dict:
    """The figure around an image: class traces that draw nothing but keep the legend (no
    sizes: an image has none), an empty overlay, the legend keys, all SVG traces (see
    :func:`_svg`); legend clicks off (hiding a class trace would not hide its part of the
    image)."""
    members = [m[:0] for m in entry.members]
    figure = figures.population_figure(coords, members, entry.class_names, spec,
                                       figures.size_spec(None), projection).to_plotly_json()
    data = [_svg(trace) for trace in figure["data"]]
    data[:len(members)] = [_legend_only(trace, spec) for trace in data[:len(members)]]
    layout = dict(figure["layout"])
    layout["legend"] = {**layout.get("legend", {}), "itemclick": False,
                        "itemdoubleclick": False}
    return {"data": data, "layout": layout}


def _svg(trace: dict) -> dict:
    """A ``scattergl`` trace as an SVG ``scatter``: the traces around an image hold no or a
    few points, and every WebGL point is redrawn at each zoom and pan (in a browser drawing
    WebGL in software, before plotly even reports the relayout). The one WebGL trace left
    is the map extent's two invisible points (:func:`extent_trace`: it keeps the canvas)."""
    return {**trace, "type": "scatter"} if trace.get("type") == "scattergl" else trace


def _legend_only(trace: dict, spec) -> dict:
    """A class trace that draws nothing but still shows in the legend (an empty trace
    does not) and, for a numeric colouring, still carries the colour bar."""
    marker = dict(trace.get("marker", {}))
    if not isinstance(marker.get("color"), str):
        marker["color"] = [spec.coloraxis.get("cmin", 0)]
    marker["size"] = 9
    return {**trace, "x": [None], "y": [None], "marker": marker}


def _padded(coords: np.ndarray, x_range: Sequence[float], y_range: Sequence[float],
            inside: np.ndarray, limit: int) -> np.ndarray:
    """``(N,)`` bool: the points in the view grown by :data:`PAD` on each side, or only
    those in the view if the grown one holds more than ``limit``."""
    (x0, x1), (y0, y1) = sorted(x_range), sorted(y_range)
    dx, dy = PAD * (x1 - x0), PAD * (y1 - y0)
    grown = in_box(coords, (x0 - dx, x1 + dx), (y0 - dy, y1 + dy))
    return grown if grown.sum() <= limit else inside


# -- events -----------------------------------------------------------------------------------
def kd_tree(entry: RunEntry, projection: str):
    """A :class:`scipy.spatial.cKDTree` of the projection's points, built once per
    (run, projection) and kept in the entry's bounded memo."""
    from scipy.spatial import cKDTree

    def build():
        xy = np.asarray(entry.session.projection(projection), dtype=np.float64)
        return cKDTree(np.where(np.isfinite(xy), xy, np.inf))

    return entry.memo(("map-tree", projection), build)


def nearest_sample(entry: RunEntry, projection: str, x: float, y: float) -> int:
    """The index of the sample nearest to map position ``(x, y)``."""
    _, index = kd_tree(entry, projection).query([x, y])
    return int(index)


def map_point_index(entry: RunEntry, projection: str, event: object, max_points: int
                    ) -> int | None:
    """The sample a hover or click on the map names (``None``: none).

    A large map's points are resolved by position (the nearest sample to the
    hovered point or hover-grid cell); the overlay's points by their
    ``customdata``; a small map's by (``curveNumber``, ``pointIndex``).
    """
    from dashboard.views.population import checked_projection, clicked_index

    if not is_large(entry, max_points):
        return clicked_index(entry, event)
    point = first_point(event)
    if point is None:
        return None
    if point_index(point.get("curveNumber")) == len(entry.members):  # the overlay
        found = entry.points_to_indices([point])
        return int(found[0]) if len(found) else None
    x, y = _number(point.get("x")), _number(point.get("y"))
    if x is None or y is None:
        return None
    return nearest_sample(entry, checked_projection(entry, projection), x, y)


def selection_from_region(entry: RunEntry, projection: str, selected: object) -> dict | None:
    """The selection store for a box or lasso on a large map, resolved against all
    samples (``None``: no region in ``selected``).

    The same store a point selection of the same samples gives
    (:func:`dashboard.views.population.selection_from_points`): sorted indices, at
    most :func:`~dashboard.views.guard.selection_limit`, with a note when cut.
    """
    from dashboard.views.population import checked_projection

    coords = entry.session.projection(checked_projection(entry, projection))
    idx = region_indices(coords, selected)
    if idx is None:
        return None
    return selection_store(entry, idx, "map selection", "the selection")
