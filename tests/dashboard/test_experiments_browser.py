"""The Experiments page in headless Chromium: the runs table, sorting, curves, the diff of
two runs (its map built in a background job) and opening a flipped sample."""

from __future__ import annotations

import time

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.action_chains import ActionChains
from test_experiments_views import experiment_runs, experiments_config, sum_runs
from test_heads_browser import pick

from dashboard import ids

# _fullData: the arrays decoded (plotly sends them base64-encoded, gd.data keeps them so).
TRACE_LENGTHS_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd._fullData ? gd._fullData.map(t => (t.x || []).length) : [];
"""
PIXEL_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[1]), r.top + ya._offset + ya.d2p(arguments[2])];
"""
A, B = "tiny_base", "tiny_bn"
# Records the pending line's text each time it is shown (display block, text set).
PENDING_WATCH_JS = """
window.__pendingSeen = [];
const box = document.getElementById(arguments[0]);
const look = () => {
  const text = box.textContent.trim();
  if (box.style.display === 'block' && text) { window.__pendingSeen.push(text); }
};
new MutationObserver(look).observe(box, {attributes: true, childList: true, subtree: true,
                                         characterData: true});
"""


@pytest.fixture
def experiments_app(tmp_path_factory, digits, data_root):
    """An app with no run open: the page needs only ``--runs-dir``."""
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    base = tmp_path_factory.getbasetemp() / "experiments"
    base.mkdir(exist_ok=True)
    config = experiments_config(base, digits, data_root, experiment_runs(base, digits, data_root))
    return create_app(config, RunRegistry()), config


# The grid's run-name cells in display order (a sorted grid moves rows by row-index).
RUN_NAMES_JS = """
return [...document.querySelectorAll('#' + arguments[0] + ' .ag-cell[col-id="key"]')]
  .map(c => [+c.closest('.ag-row').getAttribute('row-index'), c.textContent.trim()])
  .sort((a, b) => a[0] - b[0]).map(p => p[1]);
"""
# Each curve trace's name and line colour.
CURVE_COLOURS_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd._fullData ? gd._fullData.map(t => [t.name, t.line.color]) : [];
"""
# The first subplot's x tick labels as drawn.
XTICKS_JS = """
const layer = document.querySelector('#' + arguments[0] + ' .xaxislayer-above');
return layer ? [...layer.querySelectorAll('.xtick text')].map(t => t.textContent) : [];
"""


def run_names(duo) -> list[str]:
    return duo.driver.execute_script(RUN_NAMES_JS, ids.RUNS_TABLE)


def tick(duo, name: str) -> None:
    """Tick the checkbox of run ``name``'s row (wherever sorting put it)."""
    boxes = duo.find_elements(f"#{ids.RUNS_TABLE} .ag-row[row-id='{name}'] "
                              "input.ag-checkbox-input")
    assert boxes, f"no checkbox for {name}"
    boxes[0].click()


def curve_colours(duo) -> dict[str, str]:
    return dict(duo.driver.execute_script(CURVE_COLOURS_JS, ids.RUNS_CURVES))


def trace_lengths(duo, graph_id: str) -> list[int]:
    return duo.driver.execute_script(TRACE_LENGTHS_JS, graph_id)


def open_and_pick_pair(duo, browser, app) -> None:
    browser.open(app, "/experiments")
    until(lambda: len(run_names(duo)) == 3, timeout=30)
    tick(duo, A)
    tick(duo, B)
    duo.wait_for_text_to_equal("#runs-diff-a", A, timeout=30)
    duo.wait_for_text_to_equal("#runs-diff-b", B, timeout=10)
    # The map comes from a background job (run B's analysis, UMAP included).
    until(lambda: len(trace_lengths(duo, ids.RUNS_DIFF)) == 3, timeout=120)
    time.sleep(0.5)  # let the WebGL scene settle


def test_table_sort_curves_diff_and_open_a_flipped_sample(dash_duo, browser, experiments_app):
    from dashboard.views.experiments_catalog import RunCatalog

    app, config = experiments_app
    catalog = RunCatalog(config)
    browser.open(app, "/experiments")
    until(lambda: len(run_names(dash_duo)) == 3, timeout=30)
    assert run_names(dash_duo) == ["tiny_base", "tiny_bn", "tiny_bn_nodrop"]
    assert str(config.runs_dir) not in dash_duo.driver.page_source  # never a server path
    # No run ticked: every run's curves, train and test, loss and accuracy.
    until(lambda: len(trace_lengths(dash_duo, ids.RUNS_CURVES)) == 3 * 2 * 2, timeout=20)
    colours = curve_colours(dash_duo)
    assert len({colours[f"{k} · train"] for k in run_names(dash_duo)}) == 3
    ticks = dash_duo.driver.execute_script(XTICKS_JS, ids.RUNS_CURVES)
    assert ticks and all(t.isdigit() for t in ticks) and len(set(ticks)) == len(ticks), ticks

    # Sorting is the table's own: best test accuracy ascending, then descending.
    best = {k: catalog.meta(k)["best_test_acc"] for k in run_names(dash_duo)}
    sort = f"#{ids.RUNS_TABLE} .ag-header-cell[col-id='best_test_acc'] .ag-header-cell-label"
    for descending in (False, True):
        dash_duo.find_element(sort).click()
        want = sorted(best, key=best.get, reverse=descending)
        until(lambda want=want: run_names(dash_duo) == want, timeout=10)
    browser.screenshot("experiments-table")

    # Ticked B first, then A: each run keeps the colour it had among all runs.
    tick(dash_duo, B)
    until(lambda: len(trace_lengths(dash_duo, ids.RUNS_CURVES)) == 2 * 2, timeout=20)
    # The pending line, watched from before the second tick (it may be brief when cached).
    dash_duo.driver.execute_script(PENDING_WATCH_JS, ids.RUNS_DIFF_PENDING)
    tick(dash_duo, A)
    until(lambda: len(trace_lengths(dash_duo, ids.RUNS_CURVES)) == 2 * 2 * 2, timeout=20)
    assert {k: c for k, c in curve_colours(dash_duo).items()} == \
        {k: c for k, c in colours.items() if k.split(" · ")[0] in (A, B)}
    dash_duo.wait_for_text_to_equal("#runs-diff-a", B, timeout=30)
    dash_duo.wait_for_text_to_equal("#runs-diff-b", A, timeout=10)
    seen = dash_duo.driver.execute_script("return window.__pendingSeen;")
    assert seen and seen[0].startswith(f"Computing the diff of {B} vs {A}"), seen
    swap = dash_duo.find_element(f"#{ids.RUNS_SWAP}")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", swap)
    time.sleep(0.3)
    swap.click()  # A and B as the rest expects
    dash_duo.wait_for_text_to_equal("#runs-diff-a", A, timeout=30)
    dash_duo.wait_for_text_to_equal("#runs-diff-b", B, timeout=10)
    summary = catalog.comparison(A, B).summary
    stats = dash_duo.find_element("#runs-diff-stats").text
    assert f"correct → wrong {summary['correct_to_wrong']}" in stats
    assert f"wrong → correct {summary['wrong_to_correct']}" in stats and "McNemar" in stats
    until(lambda: len(trace_lengths(dash_duo, ids.RUNS_DIFF)) == 3, timeout=120)
    lengths = trace_lengths(dash_duo, ids.RUNS_DIFF)
    assert lengths[1:] == [summary["correct_to_wrong"], summary["wrong_to_correct"]]
    assert sum(lengths) == config.limit
    dash_duo.driver.execute_script(
        "document.getElementById(arguments[0]).scrollIntoView();", ids.RUNS_PAIR)
    time.sleep(0.5)
    browser.screenshot("experiments-diff")
    # The model summaries: one collapsed torchinfo table per ticked run.
    first = dash_duo.find_element(f"#{ids.RUNS_SUMMARIES} details summary")
    dash_duo.driver.execute_script("arguments[0].click(); arguments[0].scrollIntoView();", first)
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_SUMMARIES} details[open] pre", "Total params",
                                    timeout=10)
    browser.screenshot("experiments-summary")

    thumb = dash_duo.find_element(f"#{ids.RUNS_DIFF_GALLERY} .loupe-thumb")
    sample_id = thumb.get_attribute("data-sample-id")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumb)
    time.sleep(0.3)
    thumb.click()
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=30)
    assert f"id={sample_id}" in dash_duo.driver.current_url
    # Run B is now open (and offered by the run selector).
    dash_duo.wait_for_contains_text(f"#{ids.RUN_SELECT}", f"{B} ·", timeout=10)
    browser.screenshot("experiments-sample")
    assert dash_duo.get_logs() == []


def test_click_on_a_flipped_point_of_the_map_opens_it(dash_duo, browser, experiments_app):
    from scipy.spatial import cKDTree

    from dashboard.figures.experiments import flip_groups
    from dashboard.views.experiments_catalog import RunCatalog

    app, config = experiments_app
    open_and_pick_pair(dash_duo, browser, app)
    catalog = RunCatalog(config)
    flipped = np.concatenate(flip_groups(catalog.comparison(A, B).frame["flip"].to_numpy())[1:])
    xy = catalog.session(B).projection("umap").astype(np.float64)[flipped]
    unit = (xy - xy.min(0)) / np.maximum(np.ptp(xy, 0), 1e-9)
    gap = cKDTree(unit).query(unit, k=2)[0][:, 1]
    inner = np.all((unit > 0.05) & (unit < 0.95), axis=1)
    target = int(np.argmax(np.where(inner, gap, -1)))  # the flipped point farthest from others
    dash_duo.driver.execute_script(
        "document.getElementById(arguments[0]).scrollIntoView({block: 'center'});", ids.RUNS_DIFF)
    time.sleep(0.5)
    px, py = dash_duo.driver.execute_script(PIXEL_JS, ids.RUNS_DIFF, *xy[target].tolist())
    actions = ActionChains(dash_duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(int(round(px)), int(round(py)))
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    sample_id = catalog.session(B).dataset.sample_ids[flipped[target]]
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=30)
    assert dash_duo.get_logs() == []


def test_missing_runs_dir_is_a_message(dash_duo, browser, tmp_path):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig
    from dashboard.state import RunRegistry

    missing = tmp_path / "no-runs-here"
    config = DashboardConfig(checkpoints=[], cache_dir=str(tmp_path / "cache"), progress=False,
                             runs_dir=str(missing))
    browser.open(create_app(config, RunRegistry()), "/experiments")
    dash_duo.wait_for_contains_text(f"#{ids.EXPERIMENTS_MESSAGE}", "no-runs-here", timeout=20)
    text = dash_duo.find_element(f"#{ids.EXPERIMENTS_MESSAGE}").text
    assert "python -m models train --out no-runs-here/NAME" in text
    assert str(tmp_path) not in dash_duo.driver.page_source  # never a server path
    # Only the message: no empty table, curves or diff below it.
    until(lambda: not dash_duo.find_element(f"#{ids.RUNS_BODY}").is_displayed(), timeout=10)
    browser.screenshot("experiments-no-runs")
    assert dash_duo.get_logs() == []


def test_two_multi_head_runs_are_diffed_on_the_chosen_head(dash_duo, browser, tmp_path_factory,
                                                          digits, data_root):
    """Two mnist-sum runs: the diff offers their heads; on the sum head a flipped sample
    opens on run B's sum head (its heatmap targets are the 19 sums)."""
    from dashboard.app import create_app
    from dashboard.state import RunRegistry
    from dashboard.views.experiments_catalog import RunCatalog

    base = tmp_path_factory.getbasetemp() / "experiments"
    base.mkdir(exist_ok=True)
    config = experiments_config(base, digits, data_root, sum_runs(base, digits, data_root))
    catalog = RunCatalog(config)
    browser.open(create_app(config, RunRegistry()), "/experiments")
    until(lambda: len(run_names(dash_duo)) == 2, timeout=30)
    tick(dash_duo, "sum_a")
    tick(dash_duo, "sum_b")
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_PAIR}", "head digit", timeout=60)
    assert dash_duo.find_element(f"#{ids.RUNS_DIFF_HEAD_BOX}").is_displayed()
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});",
                                   dash_duo.find_element(f"#{ids.RUNS_DIFF_HEAD}"))
    time.sleep(0.3)
    pick(dash_duo, ids.RUNS_DIFF_HEAD, "sum")
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_PAIR}", "head sum", timeout=30)
    summary = catalog.comparison("sum_a", "sum_b", "sum").summary
    stats = dash_duo.find_element("#runs-diff-stats").text
    assert f"correct → wrong {summary['correct_to_wrong']}" in stats
    assert f"wrong → correct {summary['wrong_to_correct']}" in stats
    until(lambda: trace_lengths(dash_duo, ids.RUNS_DIFF)[1:] ==
          [summary["correct_to_wrong"], summary["wrong_to_correct"]], timeout=120)
    browser.screenshot("experiments-diff-sum")

    thumb = dash_duo.find_element(f"#{ids.RUNS_DIFF_GALLERY} .loupe-thumb")
    sample_id = thumb.get_attribute("data-sample-id")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumb)
    time.sleep(0.3)
    thumb.click()
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=30)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", "head sum", timeout=30)
    dash_duo.wait_for_contains_text(f"#{ids.HEAD_SELECT}", "sum", timeout=10)
    dash_duo.wait_for_contains_text(f"#{ids.RUN_SELECT}", "sum_b ·", timeout=10)
    dash_duo.wait_for_element("#sample-heatmap .hm image", timeout=60)
    target = dash_duo.find_element(f"#{ids.HEATMAP_TARGET}")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", target)
    time.sleep(0.3)
    target.click()
    until(lambda: dash_duo.driver.find_elements(
        "xpath", "//*[normalize-space(text())='class 18']"), timeout=10)
    browser.screenshot("experiments-sample-sum")
    assert dash_duo.get_logs() == []
