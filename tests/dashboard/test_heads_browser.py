"""A two-head model (mnist-sum) in the dashboard: the head selector drives every page."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import ids

Z_ROWS_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd._fullData && gd._fullData[0] && gd._fullData[0].z ? gd._fullData[0].z.length : -1;
"""
LINE_Y_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData) return null;
const t = gd._fullData.find(t => t.type === 'scatter');
return t ? Array.from(t.y) : null;
"""
X_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData) return null;
const t = gd._fullData.find(t => t.type === 'bar');
return t ? Array.from(t.x) : null;
"""


@pytest.fixture(scope="module")
def sum_session(tmp_path_factory, digits, data_root):
    """sum_net trained for one epoch on 1,000 digits, analysed on 300 test digits."""
    from analysis.session import AnalysisSession
    from models.train import TrainConfig, train

    run = tmp_path_factory.mktemp("runs") / "sum_net"
    train(TrainConfig(arch="sum_net", task="mnist-sum", dataset=digits, epochs=1, limit=1000,
                      batch_size=64), run, device="cpu", data_root=data_root, progress=False)
    session = AnalysisSession.open(run, digits, "test", data_root=data_root, limit=300,
                                   cache_dir=tmp_path_factory.mktemp("sum-cache"), device="cpu",
                                   progress=False, mc_samples=5, projections=("umap",))
    session.run()
    return session


@pytest.fixture
def sum_registry(sum_session):
    from dashboard.state import RunRegistry

    reg = RunRegistry()
    reg.add(sum_session, "sum_net")
    return reg


def test_registry_has_one_run_and_an_entry_per_head(sum_registry, sum_session):
    assert len(sum_registry.options()) == 1
    heads = sum_registry.head_options(None)
    assert [h["label"] for h in heads] == ["digit", "sum"]
    digit, total = (sum_registry.get(h["value"]) for h in heads)
    assert digit.session is total.session is sum_session
    assert len(digit.class_names) == 10 and len(total.class_names) == 19
    assert total.same_run(digit.key) and digit.same_run(total.key)
    assert total.table["label"].tolist() == (digit.table["label"] + digit.table["number"]).tolist()
    # the map's traces follow the head's classes
    assert len(total.members) == 19
    assert sum(len(m) for m in total.members) == len(sum_session.dataset)


def test_switching_head_keeps_the_selection_of_the_same_run():
    from dash import no_update

    from dashboard.components.navbar import select_run_store

    assert select_run_store("abc-sum", {"run": "abc"}, {"run": "abc", "ids": ["x"]}) == (
        {"run": "abc-sum"}, no_update)
    assert select_run_store("def", {"run": "abc-sum"}, {"run": "abc", "ids": ["x"]}) == (
        {"run": "def"}, {"run": "def", "ids": [], "source": ""})


def pick(dash_duo, dropdown: str, text: str) -> None:
    """Open a dcc.Dropdown and click the option showing ``text``."""
    dash_duo.find_element(f"#{dropdown}").click()
    xpath = f"//*[contains(@class, 'dash-dropdown') or @role='option' or @role='listbox']" \
            f"//*[normalize-space(text())='{text}']"
    until(lambda: dash_duo.driver.find_elements("xpath", xpath), timeout=10)
    dash_duo.driver.find_elements("xpath", xpath)[-1].click()


def test_head_selector_drives_confusion_metadata_and_heatmaps(dash_duo, browser, dash_config,
                                                              sum_registry):
    from dashboard.app import create_app

    app = create_app(dash_config, sum_registry)
    browser.open(app, "/errors")
    dash_duo.wait_for_element(f"#{ids.HEAD_SELECT}", timeout=20)
    assert dash_duo.find_element(f"#{ids.HEAD_SELECT_BOX}").is_displayed()
    until(lambda: dash_duo.driver.execute_script(Z_ROWS_JS, ids.CONFUSION_MATRIX) == 10,
          timeout=30)
    pick(dash_duo, ids.HEAD_SELECT, "sum")
    until(lambda: dash_duo.driver.execute_script(Z_ROWS_JS, ids.CONFUSION_MATRIX) == 19,
          timeout=30)
    browser.screenshot("heads-errors-sum")

    # Loss vs the added number, for the sum head: one bar per number 0-9.
    browser.nav("/metadata")
    dash_duo.wait_for_element(f"#{ids.METADATA_COLUMN}", timeout=20)
    pick(dash_duo, ids.METADATA_COLUMN, "number")
    until(lambda: dash_duo.driver.execute_script(X_JS, ids.METADATA_GRAPH) == list(range(10)),
          timeout=30)
    browser.screenshot("heads-metadata-number")
    sum_loss = dash_duo.driver.execute_script(LINE_Y_JS, ids.METADATA_GRAPH)
    pick(dash_duo, ids.HEAD_SELECT, "digit")  # redrawn for the digit head, column kept
    until(lambda: dash_duo.driver.execute_script(LINE_Y_JS, ids.METADATA_GRAPH) not in
          (None, sum_loss), timeout=30)
    assert dash_duo.driver.execute_script(X_JS, ids.METADATA_GRAPH) == list(range(10))
    pick(dash_duo, ids.HEAD_SELECT, "sum")
    until(lambda: dash_duo.driver.execute_script(LINE_Y_JS, ids.METADATA_GRAPH) == sum_loss,
          timeout=30)

    # The sample page explains the sum head: its 19 classes are the heatmap targets.
    browser.nav("/sample")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", "head sum", timeout=30)
    browser.screenshot("heads-sample-sum-title")
    # Run and head selectors beside eight page links: they wrap, the page never scrolls sideways.
    assert dash_duo.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"), \
        dash_duo.driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth, "
            "[...document.querySelectorAll('nav *')].filter(e => e.getBoundingClientRect().right"
            " > window.innerWidth).map(e => e.tagName + '.' + e.className).slice(0, 8)]")
    browser.screenshot("heads-sample-sum-before")
    dash_duo.wait_for_element("#sample-heatmap .hm image", timeout=60)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", "head sum", timeout=20)
    dash_duo.find_element(f"#{ids.HEATMAP_TARGET}").click()
    until(lambda: dash_duo.driver.find_elements(
        "xpath", "//*[normalize-space(text())='class 18']"), timeout=10)
    browser.screenshot("heads-sample-sum")
    # Switching the head on the page redraws the same sample for the other head.
    sample_id = dash_duo.find_element(f"#{ids.SAMPLE_TITLE} b").text
    dash_duo.find_element(f"#{ids.SAMPLE_TITLE}").click()  # closes the open dropdown
    pick(dash_duo, ids.HEAD_SELECT, "digit")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", "head digit", timeout=30)
    assert dash_duo.find_element(f"#{ids.SAMPLE_TITLE} b").text == sample_id
    assert "number" in dash_duo.find_element(f"#{ids.SAMPLE_TITLE}").text
    assert dash_duo.get_logs() == []


def test_export_follows_the_head(sum_registry):
    from dashboard.views.export import csv_name, export_table

    digit, total = (sum_registry.get(h["value"]) for h in sum_registry.head_options(None))
    frame = export_table(total)
    assert frame["label"].tolist() == (frame["digit_label"] + frame["number"]).tolist()
    assert frame["loss"].tolist() == frame["sum_loss"].tolist()
    assert export_table(digit)["loss"].tolist() == frame["digit_loss"].tolist()
    assert csv_name(total).endswith("-sum.csv") and csv_name(digit).endswith("-digit.csv")
