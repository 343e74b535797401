"""The population map of a large run (dashboard/views/population_scale.py).

The large run is the shared 600-digit analysed run tiled to 200,000 samples
(:class:`benchmarks.map.TiledSession`: rows repeated, map positions
jittered); expected selections and nearest samples are computed here with
plain numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.views import population_scale as scale
from dashboard.views.guard import MAX_SELECTION
from dashboard.views.population import selection_from_points
from tests.dashboard.map_helpers import polygon_contains

BIG = 200_000
LIMIT = 100_000


@pytest.fixture(scope="module")
def big_entry(analysed_session):
    from benchmarks.map import TiledSession
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    return registry.add(TiledSession(analysed_session, BIG, seed=1), "tiled")


def plotly_points(entry, indices: np.ndarray) -> list[dict]:
    """What a point map's ``selectedData`` lists for these samples: (curve, pointIndex)."""
    out = []
    for c, members in enumerate(entry.members):
        for p in np.flatnonzero(np.isin(members, indices)):
            out.append({"curveNumber": c, "pointIndex": int(p)})
    return out


def box_of(xy: np.ndarray, lo: float, hi: float) -> dict:
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = high - low
    return {"x": [float(low[0] + lo * span[0]), float(low[0] + hi * span[0])],
            "y": [float(low[1] + lo * span[1]), float(low[1] + hi * span[1])]}


def test_box_selection_on_the_image_equals_the_point_selection(big_entry):
    xy = big_entry.session.projection("umap")
    box = box_of(xy, 0.3, 0.6)
    mask = ((xy[:, 0] >= box["x"][0]) & (xy[:, 0] <= box["x"][1])
            & (xy[:, 1] >= box["y"][0]) & (xy[:, 1] <= box["y"][1]))
    assert 1000 < mask.sum() < MAX_SELECTION  # a real selection, under the store's limit
    raster = scale.selection_from_region(big_entry, "umap", {"points": [], "range": box})
    point = selection_from_points(big_entry, {"points": plotly_points(big_entry,
                                                                      np.flatnonzero(mask))})
    assert raster == point
    assert big_entry.indices_of(raster["ids"]).tolist() == np.flatnonzero(mask).tolist()


def test_lasso_selection_on_the_image_equals_the_point_selection(big_entry):
    xy = big_entry.session.projection("umap").astype(np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 0.3 + 0.1 * np.sin(5 * angle)  # a star-ish, non-convex lasso
    poly = np.column_stack([(low[0] + high[0]) / 2 + radius * np.cos(angle) * (high - low)[0],
                            (low[1] + high[1]) / 2 + radius * np.sin(angle) * (high - low)[1]])
    expected = np.flatnonzero(polygon_contains(xy, poly))
    assert 1000 < len(expected) < MAX_SELECTION
    selected = {"points": [], "lassoPoints": {"x": poly[:, 0].tolist(), "y": poly[:, 1].tolist()}}
    raster = scale.selection_from_region(big_entry, "umap", selected)
    point = selection_from_points(big_entry, {"points": plotly_points(big_entry, expected)})
    assert raster == point
    assert big_entry.indices_of(raster["ids"]).tolist() == expected.tolist()


def test_a_selection_past_the_limit_is_cut_as_a_point_selection_is(big_entry):
    xy = big_entry.session.projection("umap")
    everything = {"points": [], "range": box_of(xy, -0.1, 1.1)}
    store = scale.selection_from_region(big_entry, "umap", everything)
    assert len(store["ids"]) == MAX_SELECTION and "limit" in store["note"]
    assert store["ids"] == big_entry.session.dataset.sample_ids[:MAX_SELECTION].tolist()


@pytest.mark.parametrize("selected", [
    {"range": {"x": [0, "a"], "y": [0, 1]}},
    {"lassoPoints": {"x": [0, 1, 2], "y": [0, 1]}},
    {"lassoPoints": {"x": [0.0] * (scale.MAX_LASSO_VERTICES + 1),
                     "y": [0.0] * (scale.MAX_LASSO_VERTICES + 1)}},
    {"range": {"x": [0, float("nan")], "y": [0, 1]}},
])
def test_malformed_regions_are_refused(big_entry, selected):
    from dashboard.state import DashboardInputError

    with pytest.raises(DashboardInputError, match="malformed"):
        scale.selection_from_region(big_entry, "umap", selected)


def test_no_region_is_no_selection(big_entry):
    assert scale.selection_from_region(big_entry, "umap", {"points": []}) is None
    assert scale.selection_from_region(big_entry, "umap", "junk") is None


def test_whole_map_is_an_image_and_a_zoom_shows_only_the_points_in_view(big_entry):
    members = big_entry.members
    classes = len(members)
    figure = scale.scaled_map_figure(big_entry, "umap", "label", "loss", None, None, LIMIT)
    assert len(figure["layout"]["images"]) == 1
    assert figure["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    # the class traces draw nothing but keep their legend entries
    assert all(t["x"] == [None] and t["showlegend"] for t in figure["data"][:classes])
    assert figure["data"][-1]["type"] == "heatmap" and figure["data"][-1]["z"]["bdata"]
    assert figure["data"][-2]["name"] == "map extent"
    # one WebGL trace around the image, the extent's two points: it keeps the canvas for
    # a zoom in to points; every other trace is SVG (nothing else redrawn at a pan)
    gl = [t for t in figure["data"] if t["type"] == "scattergl"]
    assert len(gl) == 1 and gl[0]["name"] == "map extent" and len(gl[0]["x"]) == 2
    assert "drawn as an image" in figure["layout"]["annotations"][0]["text"]

    xy = big_entry.session.projection("umap")
    centre = xy[0]
    half = (xy.max(axis=0) - xy.min(axis=0)) * 0.04
    view = {"run": big_entry.key, "projection": "umap",
            "x": [float(centre[0] - half[0]), float(centre[0] + half[0])],
            "y": [float(centre[1] - half[1]), float(centre[1] + half[1])]}
    inside = scale.in_box(xy, view["x"], view["y"])
    assert 0 < inside.sum() <= LIMIT
    figure = scale.scaled_map_figure(big_entry, "umap", "label", "loss", None, view, LIMIT)
    assert figure["layout"]["images"] == [] and figure["data"][-1]["z"] == []
    sent = 0
    for c in range(classes):
        x = decode(figure["data"][c]["x"])
        sent += len(x)
        # every point in view is sent, with its class, and the points sent are near the view
        want = xy[members[c][inside[members[c]]]]
        assert np.isin(want[:, 0], x).all()
    assert inside.sum() <= sent <= LIMIT  # never more than the limit
    assert f"{int(inside.sum()):,} of {BIG:,} points in view" == \
        figure["layout"]["annotations"][0]["text"]
    assert figure["layout"]["xaxis"]["range"] == view["x"]  # stated: no autorange
    # the same ranges stored by another run (or another projection) are the whole map
    for other in ({**view, "run": "another"}, {**view, "projection": "tsne"}):
        figure = scale.scaled_map_figure(big_entry, "umap", "label", "loss", None, other, LIMIT)
        assert len(figure["layout"]["images"]) == 1


def decode(spec) -> np.ndarray:
    import base64

    if isinstance(spec, dict):
        return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    return np.asarray(spec)


def apply_patch(figure: dict, patch) -> dict:
    """What Dash's renderer does with a Patch's Assign and Delete operations, written out
    here (a deep copy of ``figure`` changed at each operation's location)."""
    import copy

    out = copy.deepcopy(figure)
    for op in patch.to_plotly_json()["operations"]:
        *parents, last = op["location"]
        node = out
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        if op["operation"] == "Assign":
            node[last] = op["params"]["value"]
        elif op["operation"] == "Delete":
            node.pop(last, None)
        else:
            raise AssertionError(f"unexpected patch operation {op['operation']}")
    return out


def test_a_pan_between_images_is_a_patch_that_gives_the_full_figure(big_entry):
    """Zoom from the whole map to a view of many points, pan, then reset: each move
    between images is a Patch (no legend or layout resent) whose result in the browser
    is exactly the figure of the new view."""
    from dash import Patch

    xy = big_entry.session.projection("umap")
    low, high = xy.min(axis=0), xy.max(axis=0)
    zoom = {"xaxis.range[0]": float(low[0]),
            "xaxis.range[1]": float(low[0] + 0.85 * (high[0] - low[0])),
            "yaxis.range[0]": float(low[1]), "yaxis.range[1]": float(high[1])}
    shift = float(high[0] - low[0]) * 0.1
    pan = {**zoom, "xaxis.range[0]": zoom["xaxis.range[0]"] + shift,
           "xaxis.range[1]": zoom["xaxis.range[1]"] + shift}
    reset = {"xaxis.autorange": True, "yaxis.autorange": True}
    figure = scale.scaled_map_figure(big_entry, "umap", "label", "loss", None, None, LIMIT)
    view = None
    for relayout in (zoom, pan, reset):
        patch, view = scale.view_update(big_entry, relayout, "umap", "label", "loss", None,
                                        view, LIMIT)
        assert isinstance(patch, Patch)
        # a view of more than the limit: still an image
        assert scale.visible_count(big_entry, "umap", view) > LIMIT
        full = scale.scaled_map_figure(big_entry, "umap", "label", "loss", None, view, LIMIT)
        patched = apply_patch(figure, patch)
        assert patched == full
        # nothing but the image, note, ranges and hover grid is sent
        sent = {tuple(op["location"][:2]) for op in patch.to_plotly_json()["operations"]}
        assert sent <= {("layout", "images"), ("layout", "annotations"), ("layout", "xaxis"),
                        ("layout", "yaxis"), ("data", len(full["data"]) - 1)}
        figure = patched
    assert view is None and "range" not in figure["layout"]["xaxis"]
    # a zoom to few points is the full figure of points, not a patch
    centre = xy[0]
    half = (high - low) * 0.04
    close = {"xaxis.range[0]": float(centre[0] - half[0]),
             "xaxis.range[1]": float(centre[0] + half[0]),
             "yaxis.range[0]": float(centre[1] - half[1]),
             "yaxis.range[1]": float(centre[1] + half[1])}
    points, _ = scale.view_update(big_entry, close, "umap", "label", "loss", None, None, LIMIT)
    assert isinstance(points, dict) and points["layout"]["images"] == []


def test_the_highlight_on_an_image_is_svg_and_on_points_webgl(big_entry):
    """A click's overlay: an SVG trace on an image (no WebGL points to redraw at a pan), a
    WebGL one on points; the same samples either way."""
    xy = big_entry.session.projection("umap")
    store = {"run": big_entry.key, "id": big_entry.session.dataset.sample_ids[5]}
    centre, half = xy[5], (xy.max(axis=0) - xy.min(axis=0)) * 0.04
    close = {"run": big_entry.key, "projection": "umap",
             "x": [float(centre[0] - half[0]), float(centre[0] + half[0])],
             "y": [float(centre[1] - half[1]), float(centre[1] + half[1])]}
    traces = {}
    for name, view in (("image", None), ("points", close)):
        ops = scale.large_highlight_patch(big_entry, "umap", store, view,
                                          LIMIT).to_plotly_json()["operations"]
        assert [op["location"] for op in ops] == [["data", len(big_entry.members)]]
        traces[name] = ops[0]["params"]["value"]
    assert traces["image"]["type"] == "scatter" and traces["points"]["type"] == "scattergl"
    assert traces["image"]["customdata"] == traces["points"]["customdata"]
    assert 5 in list(traces["image"]["customdata"])
    # the image map's own traces are all SVG but the extent's two WebGL points
    figure = scale.scaled_map_figure(big_entry, "umap", "label", "loss", store, None, LIMIT)
    assert {t["type"] for t in figure["data"][:-2]} == {"scatter"}
    assert [t["type"] for t in figure["data"][-2:]] == ["scattergl", "heatmap"]


def test_recolouring_the_image_by_a_number_shows_a_colour_bar(big_entry):
    figure = scale.scaled_map_figure(big_entry, "umap", "loss", "none", None, None, LIMIT)
    assert figure["layout"]["coloraxis"]["showscale"] is True
    assert len(figure["layout"]["images"]) == 1


def test_hover_on_the_image_names_the_nearest_sample(big_entry):
    xy = big_entry.session.projection("umap").astype(np.float64)
    rng = np.random.default_rng(0)
    heatmap_curve = len(big_entry.members) + 1 + 10  # anything but the overlay
    for target in rng.integers(BIG, size=5):
        spot = xy[target] + [0.01, -0.02]
        event = {"points": [{"curveNumber": heatmap_curve, "x": spot[0], "y": spot[1]}]}
        found = scale.map_point_index(big_entry, "umap", event, LIMIT)
        assert found == int(np.argmin(((xy - spot) ** 2).sum(axis=1)))
    # the overlay's points carry their sample in customdata
    overlay = {"points": [{"curveNumber": len(big_entry.members), "pointIndex": 0,
                           "customdata": 123456, "x": 0.0, "y": 0.0}]}
    assert scale.map_point_index(big_entry, "umap", overlay, LIMIT) == 123456
    assert scale.map_point_index(big_entry, "umap", {"points": [{"x": "a", "y": 1}]},
                                 LIMIT) is None
    assert scale.map_point_index(big_entry, "umap", None, LIMIT) is None


def test_a_small_map_keeps_its_point_events(entry):
    """Within the limit, nothing changes: (curve, pointIndex) names the sample."""
    assert not scale.is_large(entry, LIMIT)
    event = {"points": [{"curveNumber": 1, "pointIndex": 2, "x": 0, "y": 0}]}
    assert scale.map_point_index(entry, "umap", event, LIMIT) == int(entry.members[1][2])
    assert scale.view_update(entry, {"xaxis.range[0]": 0, "xaxis.range[1]": 1}, "umap",
                             "label", "loss", None, None, LIMIT) is None


EXTENT = ((0.0, 10.0), (-5.0, 5.0))


@pytest.mark.parametrize("relayout, view, expected", [
    ({"autosize": True}, None, (False, None)),
    ({"dragmode": "lasso"}, None, (False, None)),
    ({"xaxis.range[0]": 1, "xaxis.range[1]": 2, "yaxis.range[0]": 3, "yaxis.range[1]": -1},
     None, (True, {"projection": "umap", "x": [1.0, 2.0], "y": [-1.0, 3.0]})),
    ({"xaxis.range": [4, 3]}, None,
     (True, {"projection": "umap", "x": [3.0, 4.0], "y": [-5.0, 5.0]})),
    ({"yaxis.range[0]": 0, "yaxis.range[1]": 1},
     {"projection": "umap", "x": [1.0, 2.0], "y": [3.0, 4.0]},
     (True, {"projection": "umap", "x": [1.0, 2.0], "y": [0.0, 1.0]})),
    ({"xaxis.autorange": True, "yaxis.autorange": True},
     {"projection": "umap", "x": [1.0, 2.0], "y": [3.0, 4.0]}, (True, None)),
    ({"xaxis.autorange": True, "yaxis.autorange": True}, None, (False, None)),
    ({"xaxis.range[0]": "x", "xaxis.range[1]": 2}, None, (False, None)),
    ({"xaxis.range[0]": 1, "xaxis.range[1]": 2},
     {"projection": "umap", "x": [1.0, 2.0], "y": [-5.0, 5.0]},
     (False, {"projection": "umap", "x": [1.0, 2.0], "y": [-5.0, 5.0]})),
    ("junk", None, (False, None)),
])
def test_next_view_follows_zoom_pan_and_reset(relayout, view, expected):
    assert scale.next_view(relayout, view, "umap", EXTENT) == expected


@pytest.mark.parametrize("view", [None, "x", {"projection": "tsne", "x": [0, 1], "y": [0, 1]},
                                  {"projection": "umap", "x": [0, True], "y": [0, 1]},
                                  {"projection": "umap", "x": [0], "y": [0, 1]}])
def test_a_bad_view_store_is_the_whole_map(view):
    assert scale.checked_view(view, "umap") is None


def test_region_indices_against_numpy():
    rng = np.random.default_rng(5)
    xy = rng.normal(size=(20_000, 2))
    box = scale.region_indices(xy, {"range": {"x": [0.5, -0.5], "y": [-1, 0.2]}})
    want = np.flatnonzero((np.abs(xy[:, 0]) <= 0.5) & (xy[:, 1] >= -1) & (xy[:, 1] <= 0.2))
    np.testing.assert_array_equal(box, want)
    tri = np.array([[-1.0, -1.0], [1.5, -0.5], [0.0, 1.2]])
    lasso = scale.region_indices(xy, {"lassoPoints": {"x": tri[:, 0].tolist(),
                                                      "y": tri[:, 1].tolist()}})
    np.testing.assert_array_equal(lasso, np.flatnonzero(polygon_contains(xy, tri)))


def test_max_points_comes_from_the_app_config(app):
    assert scale.map_max_points() == scale.DEFAULT_MAX_POINTS  # no app: the default
    app.server.config[scale.MAX_POINTS_KEY] = 5000
    with app.server.app_context():
        assert scale.map_max_points() == 5000
        app.server.config[scale.MAX_POINTS_KEY] = 0
        with pytest.raises(ValueError, match=scale.MAX_POINTS_KEY):
            scale.map_max_points()
