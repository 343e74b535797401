"""The map's rasteriser (dashboard/figures/raster.py) on point sets built in the test."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dashboard import figures
from dashboard.figures.population import BOOL_COLORS
from dashboard.figures.raster import (
    category_colors,
    hover_grid_trace,
    image_layout,
    numeric_colors,
    pixel_bins,
    rasterize,
    shade_categories,
)

NAMES = ["zero", "one", "two"]
SIZE = (40, 20)  # width, height: small enough to check every pixel


def png_pixels(raster) -> np.ndarray:
    """``(H, W, 4)`` uint8 of the raster's PNG (row 0 at the top)."""
    head, data = raster.source.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def pixel_centre(col: int, row: int, x_range=(0.0, 4.0), y_range=(0.0, 2.0), size=SIZE):
    """Data coordinates of the centre of pixel (col, row); row 0 at the bottom."""
    w, h = size
    return (x_range[0] + (col + 0.5) * (x_range[1] - x_range[0]) / w,
            y_range[0] + (row + 0.5) * (y_range[1] - y_range[0]) / h)


def test_counts_land_on_the_pixels_of_the_points():
    # 3 points in pixel (2, 1), 1 in (30, 15), 2 outside the rectangle.
    pts = [pixel_centre(2, 1)] * 3 + [pixel_centre(30, 15), (-1.0, 1.0), (2.0, 9.0)]
    coords = np.array(pts, dtype=np.float32)
    spec = figures.color_spec(np.zeros(len(pts), int), "class", "label", NAMES)
    raster = rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE)
    expected = np.zeros((20, 40), dtype=np.int64)
    expected[1, 2], expected[15, 30] = 3, 1
    np.testing.assert_array_equal(raster.counts, expected)
    assert raster.x_range == (0.0, 4.0) and raster.y_range == (0.0, 2.0)


def test_counts_equal_datashaders_canvas_points():
    """The bincount aggregation maps points to pixels as datashader's own does."""
    import datashader as ds
    import pandas as pd

    rng = np.random.default_rng(3)  # random points, some on the edges and outside
    coords = rng.uniform(-0.5, 4.5, size=(5000, 2)).astype(np.float32)
    coords[:10, 0] = 4.0
    coords[10:20, 1] = 0.0
    spec = figures.color_spec(np.zeros(5000, int), "class", "label", NAMES)
    raster = rasterize(coords, spec, (0.0, 4.0), (0.0, 4.0), size=SIZE)
    canvas = ds.Canvas(plot_width=SIZE[0], plot_height=SIZE[1], x_range=(0.0, 4.0),
                       y_range=(0.0, 4.0))
    theirs = canvas.points(pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1]}), "x", "y",
                           agg=ds.count()).values
    np.testing.assert_array_equal(raster.counts, theirs)


def test_png_is_drawn_top_down_where_the_points_are():
    coords = np.array([pixel_centre(0, 19), pixel_centre(39, 0)], dtype=np.float32)
    spec = figures.color_spec(np.array([0, 1]), "class", "label", NAMES)
    px = png_pixels(rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    assert px.shape == (20, 40, 4)
    # the top-left point (highest y) is in the PNG's first row, the other in its last
    assert px[0, 0, 3] > 0 and px[19, 39, 3] > 0
    assert px[10, 20, 3] == 0  # empty pixels are transparent


def test_class_colours_are_the_legend_colours():
    # Each class in its own corner, far apart (spreading must not mix them).
    corners = {0: (3, 3), 1: (35, 3), 2: (20, 16)}
    pts, labels = [], []
    for c, (col, row) in corners.items():
        pts += [pixel_centre(col, row)] * (c + 1)
        labels += [c] * (c + 1)
    coords, labels = np.array(pts, dtype=np.float32), np.array(labels)
    spec = figures.color_spec(labels, "class", "label", NAMES)
    members = [np.flatnonzero(labels == c) for c in range(3)]
    fig = figures.population_figure(coords, members, NAMES, spec, figures.size_spec(None))
    legend = [trace.marker.color for trace in fig.data[:3]]  # the point map's legend
    assert category_colors(spec) == legend == figures.class_palette(3)
    px = png_pixels(rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    for c, (col, row) in corners.items():
        assert tuple(px[19 - row, col, :3]) == hex_rgb(legend[c])
        assert px[19 - row, col, 3] > 100
    # a pixel holding two classes mixes their colours by count (3 of class 0, 1 of class 1)
    mixed = np.array([pixel_centre(20, 5)] * 4, dtype=np.float32)
    spec = figures.color_spec(np.array([0, 0, 0, 1]), "class", "label", NAMES)
    px = png_pixels(rasterize(mixed, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    want = (3 * np.array(hex_rgb(legend[0])) + np.array(hex_rgb(legend[1]))) / 4
    np.testing.assert_allclose(px[14, 20, :3], want, atol=1)


def test_other_categorical_colourings_use_their_legend_keys():
    coords = np.array([pixel_centre(5, 5), pixel_centre(30, 10)], dtype=np.float32)
    spec = figures.color_spec(np.array([False, True]), "bool", "correct")
    keys = dict(spec.keys)  # the legend: correct / wrong
    assert category_colors(spec) == [keys["wrong"], keys["correct"]] == list(BOOL_COLORS)
    px = png_pixels(rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    assert tuple(px[14, 5, :3]) == hex_rgb(keys["wrong"])
    assert tuple(px[9, 30, :3]) == hex_rgb(keys["correct"])
    # the predicted class: the class palette under the legend title "pred"
    spec = figures.color_spec(np.array([2, 1]), "class", "pred", NAMES)
    px = png_pixels(rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    assert tuple(px[14, 5, :3]) == hex_rgb(dict(spec.keys)["two"])


def test_numeric_colours_follow_the_colour_bar():
    values = np.array([0.0, 10.0, 5.0, 99.0] + [5.0] * 50)  # 99: past the colour bar's top
    spec = figures.color_spec(values, "numeric", "loss")
    lo, hi = spec.coloraxis["cmin"], spec.coloraxis["cmax"]
    assert spec.coloraxis["showscale"] and category_colors(spec) is None
    cols = [2, 12, 22, 32]
    coords = np.array([pixel_centre(c, 10) for c in cols] + [pixel_centre(22, 10)] * 50,
                      dtype=np.float32)
    # pixel of value 0 -> the value clipped to cmin -> the scale's first colour
    spec = figures.ColorSpec(np.clip(values, lo, None).astype(np.float32), spec.coloraxis,
                             spec.title)
    px = png_pixels(rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE))
    scale = numeric_colors(spec)
    assert scale[0] == "#440154" and scale[-1] == "#fde725"  # Viridis, as plotly draws it
    assert tuple(px[9, 2, :3]) == hex_rgb(scale[0])
    assert tuple(px[9, 32, :3]) == hex_rgb(scale[-1])  # past the top: the top colour
    mid = (5.0 - lo) / (hi - lo)
    import plotly.colors as pc

    want = pc.unlabel_rgb(pc.sample_colorscale("Viridis", [mid])[0])
    np.testing.assert_allclose(px[9, 22, :3], want, atol=6)


def test_pixel_bins_put_the_upper_edges_in_the_last_pixel():
    coords = np.array([[0.0, 0.0], [4.0, 2.0], [4.0001, 1.0]], dtype=np.float64)
    inside, flat = pixel_bins(coords, (0.0, 4.0), (0.0, 2.0), SIZE)
    assert inside.tolist() == [True, True, False]
    assert flat.tolist() == [0, 19 * 40 + 39]


def test_shade_categories_is_transparent_where_empty_and_opaque_where_densest():
    counts = np.zeros((2, 3, 2), dtype=np.int64)
    counts[0, 0, 0], counts[1, 2, 1] = 1, 50
    rgba = shade_categories(counts, ["#ff0000", "#0000ff"]).view(np.uint8).reshape(2, 3, 4)
    assert rgba[0, 1, 3] == 0 and tuple(rgba[0, 0, :3]) == (255, 0, 0)
    assert rgba[1, 2, 3] == 255 and tuple(rgba[1, 2, :3]) == (0, 0, 255)
    assert 0 < rgba[0, 0, 3] < 255


def test_hover_grid_marks_the_occupied_cells_at_their_centres():
    coords = np.array([pixel_centre(9, 9)] * 2, dtype=np.float32)
    spec = figures.color_spec(np.zeros(2, int), "class", "label", NAMES)
    raster = rasterize(coords, spec, (0.0, 4.0), (0.0, 2.0), size=SIZE)
    trace = hover_grid_trace(raster, cell=4)
    z = np.frombuffer(base64.b64decode(trace["z"]["bdata"]), np.float32).reshape(5, 10)
    assert trace["z"]["shape"] == "5, 10"
    assert np.isnan(z).sum() == 49 and z[2, 2] == 2  # pixel (9, 9) is in cell (2, 2)
    cx, cy = trace["x0"] + 2 * trace["dx"], trace["y0"] + 2 * trace["dy"]
    assert abs(cx - coords[0, 0]) <= trace["dx"] / 2 and abs(cy - coords[0, 1]) <= trace["dy"] / 2
    assert trace["opacity"] == 0 and trace["hoverongaps"] is False
    assert hover_grid_trace(None)["z"] == []


def test_image_layout_stretches_over_the_data_rectangle():
    spec = figures.color_spec(np.zeros(1, int), "class", "label", NAMES)
    raster = rasterize(np.array([[1.0, 1.0]]), spec, (-2.0, 6.0), (1.0, -3.0), size=SIZE)
    img = image_layout(raster)
    assert (img["x"], img["y"], img["sizex"], img["sizey"]) == (-2.0, 1.0, 8.0, 4.0)
    assert img["xref"] == "x" and img["yref"] == "y" and img["sizing"] == "stretch"
    assert img["xanchor"] == "left" and img["yanchor"] == "top"


@pytest.mark.parametrize("bounds", [(1.0, 1.0), (3.0, 3.0)])
def test_a_single_point_range_is_widened(bounds):
    spec = figures.color_spec(np.zeros(1, int), "class", "label", NAMES)
    raster = rasterize(np.array([[bounds[0], bounds[0]]]), spec, bounds, bounds, size=SIZE)
    assert raster.x_range[1] > raster.x_range[0] and raster.counts.sum() == 1
