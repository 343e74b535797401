"""Every page loads in headless Chromium without console errors (screenshots saved)."""

from __future__ import annotations

import pytest
from conftest import open_page, save_screenshot

from dashboard import ids

PAGES = [
    ("population", "/", ids.POPULATION_GRAPH, ".js-plotly-plot .scatterlayer, #population-graph canvas"),
    ("sample", "/sample", ids.SAMPLE_PROBABILITIES, "#sample-probabilities .bars"),
    ("errors", "/errors", ids.CONFUSION_MATRIX, "#confusion-matrix .hm, #confusion-matrix image"),
    ("metadata", "/metadata", ids.METADATA_GRAPH, "#metadata-graph .scatterlayer .trace"),
    ("training", "/training", ids.TRAINING_GRAPH, "#training-graph .scatterlayer .trace"),
    ("export", "/export", ids.EXPORT_CSV, "#export-info b"),
]


@pytest.mark.parametrize(("name", "path", "component", "drawn"), PAGES,
                         ids=[p[0] for p in PAGES])
def test_page_loads_without_console_errors(dash_duo, app, name, path, component, drawn):
    open_page(dash_duo, app, path)
    dash_duo.wait_for_element(f"#{component}", timeout=20)
    dash_duo.wait_for_element(drawn, timeout=30)
    save_screenshot(dash_duo, name)
    assert dash_duo.get_logs() == []
