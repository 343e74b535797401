"""The Population map of a 200,000-sample run in headless Chromium: an image, a box
selected by dragging, a hover on the image, a zoom that switches to points, a reset.

The run is the shared 600-digit analysed run tiled to 200,000 samples
(:class:`benchmarks.map.TiledSession`: rows repeated, map positions
jittered); expected counts come from numpy on the same coordinates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.action_chains import ActionChains

from dashboard import ids
from dashboard.views.population_scale import DEFAULT_MAX_POINTS
from tests.dashboard.map_helpers import drag, polygon_contains

BIG = 200_000
SHOTS = Path(os.environ.get("LOUPE_SHOTS", "/tmp/shots-raster"))

GRAPH_JS = "return document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
STATE_JS = """
const gd = document.querySelector('#population-graph .js-plotly-plot');
if (!gd || !gd._fullLayout || !gd._fullData) return null;
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const classes = arguments[0];
let points = 0, inView = 0;
for (let c = 0; c < classes; c++) {
  const t = gd._fullData[c];
  const n = t && t.x ? t.x.length : 0;
  for (let i = 0; i < n; i++) {
    if (t.x[i] !== null && t.x[i] !== undefined) points++;
    if (t.x[i] >= xa.range[0] && t.x[i] <= xa.range[1] && t.y[i] >= ya.range[0]
        && t.y[i] <= ya.range[1]) inView++;
  }
}
const sel = gd._fullLayout.selections || [];
const grid = gd._fullData[gd._fullData.length - 1];
return {images: (gd._fullLayout.images || []).length, points: points, inView: inView,
        drawn: document.querySelectorAll('#population-graph .imagelayer image').length,
        x: xa.range.slice(), y: ya.range.slice(), dx: grid && grid.dx, dy: grid && grid.dy,
        note: (gd._fullLayout.annotations || []).map(a => a.text).join(' '),
        selections: sel.map(s => [s.x0, s.x1, s.y0, s.y1])};
"""
PIXEL_JS = """
const gd = document.querySelector('#population-graph .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[0]), r.top + ya._offset + ya.d2p(arguments[1])];
"""


@pytest.fixture
def big_registry(analysed_session):
    from benchmarks.map import TiledSession
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    registry.add(TiledSession(analysed_session, BIG, seed=1), "tiled")
    return registry


@pytest.fixture
def big_app(dash_config, big_registry):
    from dashboard.app import create_app

    return create_app(dash_config, big_registry)


def shot(duo, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    duo.driver.save_screenshot(str(SHOTS / f"{name}.png"))


def state(duo, classes: int) -> dict | None:
    return duo.driver.execute_script(STATE_JS, classes)


def to_pixel(duo, x: float, y: float) -> tuple[int, int]:
    px, py = duo.driver.execute_script(PIXEL_JS, float(x), float(y))
    return int(round(px)), int(round(py))


def move_to(duo, x: int, y: int) -> None:
    actions = ActionChains(duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(x, y)
    actions.perform()


def count_in(xy: np.ndarray, xs, ys) -> int:
    x0, x1 = sorted(xs)
    y0, y1 = sorted(ys)
    return int(((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0)
                & (xy[:, 1] <= y1)).sum())


def test_map_of_200k_points_is_an_image_that_selects_hovers_and_zooms_to_points(
        dash_duo, browser, big_app, big_registry):
    entry = big_registry.get(None)
    classes = len(entry.members)
    xy = entry.session.projection("umap")
    browser.open(big_app, "/")
    until(lambda: (state(dash_duo, classes) or {}).get("drawn") == 1, timeout=60)
    first = state(dash_duo, classes)
    assert first["images"] == 1 and first["points"] == 0
    assert "200,000 points in view, drawn as an image" in first["note"]
    time.sleep(0.5)
    shot(dash_duo, "map-200k-image")

    # A box dragged on the image selects every sample in it, as numpy counts them.
    area = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag").rect
    start = (int(area["x"] + 0.35 * area["width"]), int(area["y"] + 0.3 * area["height"]))
    end = (int(area["x"] + 0.6 * area["width"]), int(area["y"] + 0.6 * area["height"]))
    drag(dash_duo, start, end)
    dash_duo.wait_for_element(f"#{ids.SELECTION_GRID} a.loupe-thumb", timeout=30)
    box = state(dash_duo, classes)["selections"]
    assert len(box) == 1
    x0, x1, y0, y1 = box[0]
    expected = count_in(xy, (x0, x1), (y0, y1))
    assert 100 < expected < 100_000
    until(lambda: dash_duo.find_element("#selection-stats").text.startswith(f"{expected:,} "),
          timeout=30)
    shot(dash_duo, "map-200k-box-selected")

    # Hovering the image names a sample under the pointer (within one hover cell).
    target = int(np.flatnonzero(entry.table["label"].to_numpy() == 0)[0])
    px = to_pixel(dash_duo, *xy[target])
    move_to(dash_duo, *px)
    dash_duo.wait_for_element(f"#{ids.POPULATION_TOOLTIP} b", timeout=20)
    hovered = dash_duo.find_element(f"#{ids.POPULATION_TOOLTIP} b").text
    index = entry.index_of(hovered)
    hx, hy = to_pixel(dash_duo, *xy[index])
    cell = state(dash_duo, classes)
    cell_px = np.hypot(*np.subtract(to_pixel(dash_duo, x0 + cell["dx"], y0 + cell["dy"]),
                                    to_pixel(dash_duo, x0, y0)))
    assert np.hypot(hx - px[0], hy - px[1]) <= cell_px + 1.5
    shot(dash_duo, "map-200k-hover")

    # Zoom into a region of ~20,000 samples: the map switches to their points.
    centre = xy[target].astype(np.float64)
    span = xy.max(axis=0) - xy.min(axis=0)
    far = np.abs(xy - centre).astype(np.float64) / span
    half = np.partition(far.max(axis=1), 20_000)[20_000]
    corner0 = to_pixel(dash_duo, *(centre - half * span))
    corner1 = to_pixel(dash_duo, *(centre + half * span))
    move_to(dash_duo, *corner0)
    dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .modebar-btn[data-val='zoom']").click()
    drag(dash_duo, corner0, corner1)
    until(lambda: (state(dash_duo, classes) or {}).get("images") == 0
          and state(dash_duo, classes)["points"] > 0, timeout=60)
    zoomed = state(dash_duo, classes)
    in_view = count_in(xy, zoomed["x"], zoomed["y"])
    assert 1000 < in_view <= DEFAULT_MAX_POINTS
    assert zoomed["inView"] == in_view  # every sample in view is drawn as a point
    assert f"{in_view:,} of 200,000 points in view" in zoomed["note"]
    assert zoomed["drawn"] == 0
    time.sleep(0.5)
    shot(dash_duo, "map-200k-zoomed-points")

    # "Reset axes" in the mode bar: the whole map, as an image again.
    move_to(dash_duo, *to_pixel(dash_duo, *centre))
    dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .modebar-btn[data-val='reset']").click()
    until(lambda: (state(dash_duo, classes) or {}).get("drawn") == 1, timeout=60)
    reset = state(dash_duo, classes)
    assert reset["points"] == 0
    assert reset["x"][0] <= xy[:, 0].min() and reset["x"][1] >= xy[:, 0].max()
    shot(dash_duo, "map-200k-reset")
    assert dash_duo.get_logs() == []


def isolated_sample(xy: np.ndarray) -> int:
    """A sample far from every other, away from the map's edges."""
    from scipy.spatial import cKDTree

    unit = (xy - xy.min(0)) / np.ptp(xy, 0)
    inner = np.all((unit > 0.1) & (unit < 0.9), axis=1)
    dist, _ = cKDTree(unit).query(unit, k=2)
    return int(np.argmax(np.where(inner, dist[:, 1], -1)))


def test_image_of_a_real_run_lassoes_and_opens_the_clicked_sample(dash_duo, browser, app,
                                                                  entry):
    """The 600-sample run with the limit lowered to 100 (the app's config): drawn as an
    image, so a lasso and a click go through the image path, on samples whose Sample
    page is real."""
    from dashboard.views.population_scale import MAX_POINTS_KEY

    app.server.config[MAX_POINTS_KEY] = 100
    classes = len(entry.members)
    xy = entry.session.projection("umap")
    browser.open(app, "/")
    until(lambda: (state(dash_duo, classes) or {}).get("drawn") == 1, timeout=60)
    assert "600 points in view, drawn as an image" in state(dash_duo, classes)["note"]

    # A click on the image opens the sample under it (the nearest to the spot).
    target = isolated_sample(xy)
    move_to(dash_duo, *to_pixel(dash_duo, *xy[target]))
    dash_duo.wait_for_contains_text(f"#{ids.POPULATION_TOOLTIP} b",
                                    entry.session.dataset.sample_ids[target], timeout=20)
    shot(dash_duo, "map-600-as-image-hover")
    actions = ActionChains(dash_duo.driver)
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    sample_id = entry.session.dataset.sample_ids[target]
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=30)
    assert f"id={sample_id}" in dash_duo.driver.current_url
    shot(dash_duo, "map-600-as-image-clicked")
    browser.nav("/")
    until(lambda: (state(dash_duo, classes) or {}).get("drawn") == 1, timeout=60)

    # A lasso drawn by hand: the selection holds the samples inside its polygon.
    area = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag").rect
    move_to(dash_duo, int(area["x"] + area["width"] / 2), int(area["y"] + area["height"] / 2))
    dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .modebar-btn[data-val='lasso']").click()
    cx, cy = area["x"] + 0.5 * area["width"], area["y"] + 0.5 * area["height"]
    ring = [(int(cx + 0.3 * area["width"] * np.cos(a) * (1 + 0.3 * np.sin(3 * a))),
             int(cy + 0.3 * area["height"] * np.sin(a)))
            for a in np.linspace(0, 2 * np.pi, 24)]
    actions = ActionChains(dash_duo.driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(*ring[0])
    pointer.pointer_down()
    for point in ring[1:]:
        pointer.move_to_location(*point)
    pointer.pointer_up()
    actions.perform()
    dash_duo.wait_for_element(f"#{ids.SELECTION_GRID} a.loupe-thumb", timeout=30)
    path = dash_duo.driver.execute_script(
        "return document.querySelector('#population-graph .js-plotly-plot')"
        "._fullLayout.selections[0].path;")
    poly = np.array([[float(v) for v in pair.split(",")]
                     for pair in path.strip("MZ").replace("M", "L").split("L")])
    expected = int(polygon_contains(xy, poly).sum())
    assert 20 < expected < 600
    until(lambda: dash_duo.find_element("#selection-stats").text.startswith(f"{expected:,} "),
          timeout=30)
    shot(dash_duo, "map-600-as-image-lasso")

    # Coloured by a number, the image comes with the point map's colour bar.
    before = dash_duo.driver.execute_script(
        "return document.querySelector('#population-graph .imagelayer image')"
        ".getAttribute('href');")
    dash_duo.select_dcc_dropdown(f"#{ids.COLOR_SELECT}", value="loss")
    dash_duo.wait_for_element(f"#{ids.POPULATION_GRAPH} .colorbar", timeout=30)
    until(lambda: dash_duo.driver.execute_script(
        "return document.querySelector('#population-graph .imagelayer image')"
        ".getAttribute('href');") != before, timeout=30)
    time.sleep(0.5)
    shot(dash_duo, "map-600-as-image-by-loss")
    assert dash_duo.get_logs() == []
