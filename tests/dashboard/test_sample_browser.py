"""The Sample page's metadata, the Loss-vs-metadata scatter's clicks, the Training and Export
pages' words, as a person uses them in headless Chromium (screenshots in /tmp/shots-sample)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from dash.testing.wait import until
from selenium.webdriver.common.action_chains import ActionChains

from dashboard import ids

SHOTS = Path("/tmp/shots-sample")
PIXEL_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[1]), r.top + ya._offset + ya.d2p(arguments[2])];
"""
TRACE_LEN_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const t = gd && gd._fullData ? gd._fullData[arguments[1]] : null;
return t ? t.x.length : -1;
"""


def shot(dash_duo, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    dash_duo.driver.save_screenshot(str(SHOTS / f"{name}.png"))


def click_at(duo, x: float, y: float) -> None:
    actions = ActionChains(duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(int(round(x)), int(round(y)))
    actions.w3c_actions.pointer_action.click()
    actions.perform()


def test_sample_page_groups_metadata_and_hides_internal_names(dash_duo, browser, app, entry):
    t = entry.table
    i = int(np.flatnonzero(~t["correct"].to_numpy())[0])
    sid = entry.session.dataset.sample_ids[i]
    browser.open(app, f"/sample?id={sid}")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sid, timeout=30)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_METADATA}", "Distances", timeout=20)
    grouped = dash_duo.find_element(f"#{ids.SAMPLE_METADATA}").text
    for title in ("Prediction", "Uncertainty (MC dropout)", "Distances", "Map position"):
        assert title in grouped
    for internal in ("neg_margin", "mc_top_var", "umap_x", "embedding_dist_label"):
        assert internal not in grouped
    loss = f"{t['loss'].iat[i]:.4g}"
    page = dash_duo.find_element("#_pages_content").text
    assert page.count(loss) == 1  # the loss said once on the page (not title and table)
    shot(dash_duo, "sample-grouped")

    dash_duo.find_element(f"#{ids.SAMPLE_RAW_TOGGLE}").click()
    until(lambda: "neg_margin" in dash_duo.find_element(f"#{ids.SAMPLE_METADATA_RAW}").text,
          timeout=10)
    assert not dash_duo.find_element(f"#{ids.SAMPLE_METADATA}").is_displayed()
    shot(dash_duo, "sample-raw")
    assert dash_duo.get_logs() == []


def test_unknown_sample_shows_its_message_alone(dash_duo, browser, app):
    browser.open(app, "/sample?id=mnist:test:999999")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_MESSAGE}", "does not exist", timeout=20)
    until(lambda: not dash_duo.find_element(f"#{ids.SAMPLE_BODY}").is_displayed(), timeout=10)
    plots = dash_duo.driver.find_elements("css selector", ".js-plotly-plot")
    assert plots and not any(p.is_displayed() for p in plots)  # no blank axes under it
    shot(dash_duo, "sample-unknown-id")
    assert dash_duo.get_logs() == []


def test_a_click_on_the_metadata_scatter_opens_that_sample(dash_duo, browser, app, entry):
    browser.open(app, "/metadata")
    until(lambda: dash_duo.driver.execute_script(TRACE_LEN_JS, ids.SCATTER_GRAPH, 0) > 0,
          timeout=30)
    time.sleep(0.5)
    t = entry.table  # default scatter: pixel distance to the true centroid against loss
    x, y = t["pixel_dist_label"].to_numpy(), t["loss"].to_numpy()
    # the sample farthest from every other point (in axis-scaled units): a click hits it only
    xy = np.c_[(x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)]
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    target = int(np.argmax(d.min(1)))
    px = dash_duo.driver.execute_script(PIXEL_JS, ids.SCATTER_GRAPH, float(x[target]),
                                        float(y[target]))
    shot(dash_duo, "metadata")
    click_at(dash_duo, *px)
    sid = entry.session.dataset.sample_ids[target]
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sid, timeout=30)
    assert f"id={sid}" in dash_duo.driver.current_url
    assert dash_duo.get_logs() == []


def test_training_and_export_pages_speak_plain_words(dash_duo, browser, app):
    browser.open(app, "/training")
    dash_duo.wait_for_contains_text(f"#{ids.HYPERPARAMETERS}", "architecture", timeout=30)
    card = dash_duo.find_element(f"#{ids.HYPERPARAMETERS}").text
    assert "hp." not in card and "batch size" in card and "best test accuracy" in card
    shot(dash_duo, "training")
    browser.nav("/export")
    dash_duo.wait_for_element(f"#{ids.EXPORT_INFO} b", timeout=30)
    assert "`" not in dash_duo.find_element("#_pages_content").text
    assert "python -m analysis export" in dash_duo.find_element("#_pages_content code").text
    shot(dash_duo, "export")
    assert dash_duo.get_logs() == []
