"""Every page loads in headless Chromium without console errors (screenshots saved)."""

from __future__ import annotations

import pytest

from dashboard import ids

PAGES = [
    ("population", "/", ids.POPULATION_GRAPH, "#population-graph .nsewdrag"),
    ("sample", "/sample", ids.SAMPLE_PROBABILITIES, "#sample-heatmap .hm image"),
    ("errors", "/errors", ids.CONFUSION_MATRIX, "#confusion-matrix .hm, #confusion-matrix image"),
    ("metadata", "/metadata", ids.METADATA_GRAPH, "#metadata-graph .scatterlayer .trace"),
    ("training", "/training", ids.TRAINING_GRAPH, "#training-graph .scatterlayer .trace"),
    ("export", "/export", ids.EXPORT_CSV, "#export-info b"),
]


@pytest.mark.parametrize(("name", "path", "component", "drawn"), PAGES,
                         ids=[p[0] for p in PAGES])
def test_page_loads_without_console_errors(dash_duo, browser, app, name, path, component,
                                           drawn):
    browser.open(app, path)
    dash_duo.wait_for_element(f"#{component}", timeout=20)
    dash_duo.wait_for_element(drawn, timeout=30)
    browser.screenshot(name)
    assert dash_duo.get_logs() == []
    # Nothing wider than the 1280 px window: no sideways scrolling.
    assert dash_duo.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
