"""Real clicks, drags and downloads in headless Chromium.

The click test is the proof for the plotly-6 trap: the map's arrays go to the
browser base64-encoded, so ``clickData`` carries no ``customdata``; the sample
must still be identified (``curveNumber`` + ``pointIndex`` mapped server side).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from dash.testing.wait import until
from scipy.spatial import cKDTree
from selenium.webdriver.common.action_chains import ActionChains

from dashboard import ids
from tests.dashboard.map_helpers import drag

PIXEL_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[1]), r.top + ya._offset + ya.d2p(arguments[2])];
"""
DATA_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [xa.p2d(arguments[1] - r.left - xa._offset), ya.p2d(arguments[2] - r.top - ya._offset)];
"""
TRACE_LEN_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const t = gd && gd._fullData ? gd._fullData[arguments[1]] : null;
return t ? t.x.length : -1;
"""


def to_pixel(duo, graph_id, x, y) -> tuple[int, int]:
    px, py = duo.driver.execute_script(PIXEL_JS, graph_id, x, y)
    return int(round(px)), int(round(py))


def click_at(duo, x: int, y: int) -> None:
    actions = ActionChains(duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(x, y)
    actions.w3c_actions.pointer_action.click()
    actions.perform()


def wait_for_map(duo) -> None:
    duo.wait_for_element(f"#{ids.POPULATION_GRAPH} .nsewdrag", timeout=30)
    until(lambda: duo.driver.execute_script(TRACE_LEN_JS, ids.POPULATION_GRAPH, 0) > 0,
                   timeout=30)
    time.sleep(0.5)  # let the WebGL scene settle before pointing at it


def isolated_sample(entry) -> int:
    """A sample far from every other on the map, so a click cannot hit a neighbour."""
    xy = entry.session.projection("umap").astype(np.float64)
    xy = (xy - xy.min(0)) / np.ptp(xy, 0)
    inner = np.all((xy > 0.1) & (xy < 0.9), axis=1)
    dist, _ = cKDTree(xy).query(xy, k=2)
    score = np.where(inner, dist[:, 1], -1)
    return int(np.argmax(score))


def test_click_on_map_opens_sample_with_heatmap_and_similars(dash_duo, browser, app, entry):
    browser.open(app, "/")
    wait_for_map(dash_duo)
    target = isolated_sample(entry)
    xy = entry.session.projection("umap")[target]
    click_at(dash_duo, *to_pixel(dash_duo, ids.POPULATION_GRAPH, float(xy[0]), float(xy[1])))
    sample_id = entry.session.dataset.sample_ids[target]

    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=20)
    assert f"id={sample_id}" in dash_duo.driver.current_url
    dash_duo.wait_for_element(f"#{ids.SAMPLE_HEATMAP} .hm image", timeout=30)
    dash_duo.wait_for_element(f"#{ids.SIMILARS_GALLERY} a.loupe-thumb", timeout=20)
    expected, _ = entry.session.similars(target, 10)
    links = dash_duo.find_elements(f"#{ids.SIMILARS_GALLERY} a.loupe-thumb")
    assert [a.get_attribute("href").split("id=")[1] for a in links] == \
        entry.session.dataset.sample_ids[expected].tolist()
    # The similars (and the sample) are highlighted on the map: the overlay trace holds 11.
    overlay = len(entry.members)
    assert dash_duo.driver.execute_script(TRACE_LEN_JS, ids.SIMILARS_MAP, overlay) == 11
    browser.screenshot("sample-clicked")

    # A similar's thumbnail opens that sample; the main map highlights it too.
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", links[0])
    time.sleep(0.3)
    links[0].click()
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}",
                                    entry.session.dataset.sample_ids[expected[0]], timeout=20)
    dash_duo.driver.execute_script("window.scrollTo(0, 0);")
    browser.nav("/")
    wait_for_map(dash_duo)
    until(lambda: dash_duo.driver.execute_script(
        TRACE_LEN_JS, ids.POPULATION_GRAPH, overlay) == 11, timeout=20)
    assert dash_duo.get_logs() == []


def test_box_selection_fills_grid(dash_duo, browser, app, entry):
    browser.open(app, "/")
    wait_for_map(dash_duo)
    drag_el = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag")
    r = drag_el.rect
    start = (int(r["x"] + 0.3 * r["width"]), int(r["y"] + 0.3 * r["height"]))
    end = (int(r["x"] + 0.7 * r["width"]), int(r["y"] + 0.7 * r["height"]))
    drag(dash_duo, start, end)
    dash_duo.wait_for_element(f"#{ids.SELECTION_GRID} a.loupe-thumb", timeout=20)

    x0, y0 = dash_duo.driver.execute_script(DATA_JS, ids.POPULATION_GRAPH, *start)
    x1, y1 = dash_duo.driver.execute_script(DATA_JS, ids.POPULATION_GRAPH, *end)
    xy = entry.session.projection("umap")
    inside = ((xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1))
              & (xy[:, 1] >= min(y0, y1)) & (xy[:, 1] <= max(y0, y1)))
    text = dash_duo.find_element("#selection-stats").text
    count = int(text.split(" samples")[0].replace(",", ""))
    assert abs(count - int(inside.sum())) <= max(2, int(0.01 * inside.sum()))  # edge pixels
    shown = len(dash_duo.find_elements(f"#{ids.SELECTION_GRID} a.loupe-thumb"))
    assert shown == min(count, 80)
    browser.screenshot("population-selection")
    assert dash_duo.get_logs() == []


def click_confusion_cell(duo, true_name: str, pred_name: str) -> None:
    duo.wait_for_element(f"#{ids.CONFUSION_MATRIX} .hm image", timeout=30)
    time.sleep(0.3)
    click_at(duo, *to_pixel(duo, ids.CONFUSION_MATRIX, pred_name, true_name))


def confusion_count(entry, t: int, p: int) -> int:
    table = entry.table
    return int(((table["label"] == t) & (table["pred"] == p)).sum())


def off_diagonal_cell(entry) -> tuple[int, int]:
    """The second most confused cell: the page already shows the first one unclicked."""
    table = entry.table
    wrong = table[~table["correct"]]
    pair = wrong.groupby(["label", "pred"]).size().sort_values(ascending=False).index[1]
    return int(pair[0]), int(pair[1])


def test_confusion_cell_opens_its_samples(dash_duo, browser, app, entry):
    browser.open(app, "/errors")
    t, p = off_diagonal_cell(entry)
    names = entry.class_names
    click_confusion_cell(dash_duo, names[t], names[p])
    n = confusion_count(entry, t, p)
    until(lambda: dash_duo.find_element(f"#{ids.CELL_TITLE}").text
          == f"true {names[t]} → predicted {names[p]}: {n} samples"
          + (" (highest loss first)" if n > 1 else ""), timeout=20)
    thumbs = dash_duo.find_elements(f"#{ids.CELL_GRID} a.loupe-thumb")
    assert len(thumbs) == min(n, 120)
    table = entry.table.set_index("sample_id")
    for a in thumbs:
        row = table.loc[a.get_attribute("href").split("id=")[1]]
        assert (row["label"], row["pred"]) == (t, p)
    browser.screenshot("errors-cell")
    assert dash_duo.get_logs() == []


def wait_for_file(folder: str, pattern: str, timeout: float = 20) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        files = [f for f in Path(folder).glob(pattern) if not f.name.endswith(".crdownload")]
        if files:
            time.sleep(0.3)  # let the browser finish writing
            return files[0]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} downloaded to {folder}")


def test_csv_downloads_hold_the_right_rows(dash_duo, browser, app, entry):
    from analysis.export import export_frame

    expected = export_frame(entry.session)
    browser.open(app, "/export")
    dash_duo.wait_for_element(f"#{ids.EXPORT_CSV}").click()
    full = pd.read_csv(wait_for_file(dash_duo.download_path, "*.csv"))
    assert full["sample_id"].tolist() == expected["sample_id"].tolist()
    assert list(full.columns) == list(expected.columns)
    np.testing.assert_allclose(full["loss"], expected["loss"], rtol=1e-5)

    # A selection made on another page (a confusion cell) exports only its rows.
    browser.nav("/errors")
    t, p = off_diagonal_cell(entry)
    click_confusion_cell(dash_duo, entry.class_names[t], entry.class_names[p])
    until(lambda: dash_duo.find_element(f"#{ids.CELL_TITLE}").text.startswith(
        f"true {entry.class_names[t]} → predicted"), timeout=20)
    browser.nav("/export")
    button = dash_duo.wait_for_element(f"#{ids.EXPORT_SELECTION_CSV}")
    until(lambda: button.is_enabled(), timeout=10)
    for f in Path(dash_duo.download_path).glob("*.csv"):
        f.unlink()
    button.click()
    sel = pd.read_csv(wait_for_file(dash_duo.download_path, "*-selection.csv"))
    table = entry.table
    want = table[(table["label"] == t) & (table["pred"] == p)]["sample_id"].tolist()
    assert sel["sample_id"].tolist() == want
    assert list(sel.columns) == list(expected.columns)
    browser.screenshot("export")
    assert dash_duo.get_logs() == []


MARKER_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const t = gd._fullData[arguments[1]];
const c = t.marker.color, s = t.marker.size;
return {color: (typeof c === 'string') ? c : Array.from(c).slice(0, 5),
        n_color: (typeof c === 'string') ? 1 : c.length,
        size: (typeof s === 'number') ? s : Array.from(s).slice(0, 5),
        x0: t.x[0], showscale: !!(gd._fullLayout.coloraxis && gd._fullLayout.coloraxis.showscale)};
"""


def set_prop(duo, component_id: str, **props) -> None:
    duo.driver.execute_script("window.dash_clientside.set_props(arguments[0], arguments[1]);",
                              component_id, props)


def test_recolour_and_resize_patch_the_map_in_the_browser(dash_duo, browser, app, entry):
    browser.open(app, "/")
    wait_for_map(dash_duo)
    before = dash_duo.driver.execute_script(MARKER_JS, ids.POPULATION_GRAPH, 1)
    assert before["color"] == "#ff7f0e" and not before["showscale"]
    set_prop(dash_duo, ids.COLOR_SELECT, value="uncertainty")
    until(lambda: dash_duo.driver.execute_script(MARKER_JS, ids.POPULATION_GRAPH, 1)["n_color"]
          == len(entry.members[1]), timeout=20)
    after = dash_duo.driver.execute_script(MARKER_JS, ids.POPULATION_GRAPH, 1)
    want = entry.table["uncertainty"].to_numpy()[entry.members[1][:5]]
    np.testing.assert_allclose(after["color"], want, rtol=1e-5)  # typed arrays decoded
    assert after["showscale"] and after["x0"] == before["x0"]
    set_prop(dash_duo, ids.SIZE_SELECT, value="none")
    until(lambda: dash_duo.driver.execute_script(MARKER_JS, ids.POPULATION_GRAPH, 1)["size"]
          == 5, timeout=20)
    # Hovering a point shows its thumbnail.
    target = isolated_sample(entry)
    xy = entry.session.projection("umap")[target]
    actions = ActionChains(dash_duo.driver)
    px = to_pixel(dash_duo, ids.POPULATION_GRAPH, float(xy[0]), float(xy[1]))
    actions.w3c_actions.pointer_action.move_to_location(px[0] - 30, px[1] - 30)
    actions.w3c_actions.pointer_action.move_to_location(*px)
    actions.perform()
    dash_duo.wait_for_contains_text(f"#{ids.POPULATION_TOOLTIP}",
                                    entry.session.dataset.sample_ids[target], timeout=20)
    assert dash_duo.find_element(f"#{ids.POPULATION_TOOLTIP} img").get_attribute(
        "src").startswith("data:image/png;base64,")
    browser.screenshot("population-recoloured")
    assert dash_duo.get_logs() == []


def test_all_classes_heatmaps_as_small_multiples(dash_duo, browser, app, entry):
    sid = entry.session.dataset.sample_ids[3]
    browser.open(app, f"/sample?id={sid}")
    dash_duo.wait_for_element(f"#{ids.SAMPLE_HEATMAP} .hm image", timeout=30)
    set_prop(dash_duo, ids.HEATMAP_TARGET, value="all")
    until(lambda: len(dash_duo.find_elements(f"#{ids.SAMPLE_HEATMAP} .hm image"))
          == len(entry.class_names), timeout=60)
    set_prop(dash_duo, ids.HEATMAP_METHOD, value="gradcam")
    dash_duo.wait_for_text_to_equal(f"#{ids.HEATMAP_STATUS}", "", timeout=60)
    until(lambda: len(dash_duo.find_elements(f"#{ids.SAMPLE_HEATMAP} .hm image"))
          == len(entry.class_names), timeout=60)
    browser.screenshot("sample-all-classes")
    assert dash_duo.get_logs() == []


def test_switching_runs_clears_the_selection(dash_duo, browser, dash_config, analysed_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    first = registry.add(analysed_session, "runs/a/tiny_cnn")
    second = registry.add(analysed_session, "runs/b/tiny_cnn")
    app = create_app(dash_config, registry)
    browser.open(app, "/")
    wait_for_map(dash_duo)
    r = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag").rect
    drag(dash_duo, (int(r["x"] + 0.2 * r["width"]), int(r["y"] + 0.2 * r["height"])),
         (int(r["x"] + 0.8 * r["width"]), int(r["y"] + 0.8 * r["height"])))
    dash_duo.wait_for_element("#selection-stats", timeout=20)
    assert dash_duo.find_element(f"#{ids.RUN_SELECT}").text.startswith(first.label)
    # Choose the second run in the navbar's selector (Dash 4 dropdown: open, pick).
    dash_duo.find_element(f"#{ids.RUN_SELECT}").click()
    xpath = f"//*[normalize-space(text())='{second.label}']"
    until(lambda: dash_duo.driver.find_elements("xpath", xpath), timeout=10)
    dash_duo.driver.find_elements("xpath", xpath)[-1].click()
    dash_duo.wait_for_contains_text(f"#{ids.SELECTION_SUMMARY}", "Drag a box", timeout=20)
    assert second.label in dash_duo.find_element(f"#{ids.RUN_SELECT}").text
    until(lambda: dash_duo.driver.execute_script(TRACE_LEN_JS, ids.POPULATION_GRAPH, 0) > 0,
          timeout=20)
    assert dash_duo.get_logs() == []
