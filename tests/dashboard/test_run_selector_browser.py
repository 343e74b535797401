"""The run selector offers every run under ``--runs-dir``; one not analysed yet is
analysed on its first selection, with its progress under the menu, then shown."""

from __future__ import annotations

import shutil

from dash.testing.wait import until

from dashboard import ids
from dashboard.components.navbar import opening_view


def pick(dash_duo, label: str) -> None:
    """Choose ``label`` in the navbar's run selector (Dash 4 dropdown: open, pick)."""
    dash_duo.find_element(f"#{ids.RUN_SELECT}").click()
    xpath = f"//*[normalize-space(text())='{label}']"
    until(lambda: dash_duo.driver.find_elements("xpath", xpath), timeout=10)
    dash_duo.driver.find_elements("xpath", xpath)[-1].click()


def test_a_run_not_analysed_yet_is_analysed_on_selection(
        dash_duo, browser, analysed_session, tiny_run, digits, data_root, tmp_path):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig
    from dashboard.state import RunRegistry

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny_cnn")
    shutil.copytree(tiny_run, runs / "other_cnn")
    config = DashboardConfig(checkpoints=[], dataset=digits, data_root=data_root,
                             cache_dir=str(tmp_path / "cache"), device="cpu", limit=80,
                             mc_samples=2, projections=("umap",), progress=False,
                             runs_dir=str(runs))
    registry = RunRegistry()
    first = registry.add(analysed_session, str(runs / "tiny_cnn"))
    app = create_app(config, registry)
    # the open run once, the other one offered, nothing opened yet
    (waiting,) = [o for o in registry.options() if o["value"] != first.key]
    assert waiting["label"] == "other_cnn · not analysed yet"
    assert registry.is_waiting(waiting["value"])

    browser.open(app, "/")
    dash_duo.wait_for_element(f"#{ids.POPULATION_GRAPH} .nsewdrag", timeout=30)
    pick(dash_duo, "other_cnn · not analysed yet")
    # progress under the menu while it is analysed ...
    dash_duo.wait_for_contains_text(f"#{ids.RUN_STATUS}", "other_cnn", timeout=20)
    # ... then it is the shown run: relabelled, its 80 samples on the map, no status left
    opened_label = f"other_cnn · {digits}:test"
    dash_duo.wait_for_contains_text(f"#{ids.RUN_SELECT}", opened_label, timeout=240)
    until(lambda: dash_duo.find_element(f"#{ids.RUN_STATUS}").text == "", timeout=20)
    assert not registry.is_waiting(waiting["value"])
    entry = registry.get(waiting["value"])
    assert len(entry.table) == 80
    # points drawn on the map (every trace: the classes' points, plus at most a few
    # legend or overlay markers)
    count_js = ("const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
                "return gd && gd._fullData ? gd._fullData.reduce("
                "(n, t) => n + (t.x ? t.x.length : 0), 0) : 0;")
    points = lambda: dash_duo.driver.execute_script(count_js, ids.POPULATION_GRAPH)  # noqa: E731
    until(lambda: 80 <= points() < 100, timeout=30)
    # and back to the first run, as before
    pick(dash_duo, first.label)
    until(lambda: points() >= len(first.table), timeout=30)
    assert dash_duo.get_logs() == []


def test_an_open_run_leaves_the_selector_to_the_head_callback(registry):
    # an open run: no status, polling off, the head selector untouched (select_run sets it)
    status, disabled, *rest = opening_view(registry, registry.default_key)
    assert status is None and disabled is True
    assert all(r is not None and not isinstance(r, list) for r in rest)  # no_update
