"""The image measurements and insight scores, chosen as a person would in the dashboard, are
drawn with the unit their step declares (headless Chromium; screenshots saved)."""

from __future__ import annotations

from pathlib import Path

from dashboard import ids

SHOTS = Path("/tmp/shots-insights")


def test_measurements_titled_with_their_units(dash_duo, browser, app):
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.open(app, "/metadata")
    dash_duo.wait_for_element("#metadata-graph .scatterlayer .trace", timeout=30)
    dash_duo.select_dcc_dropdown(f"#{ids.METADATA_COLUMN}", value="stroke_thickness")
    dash_duo.wait_for_contains_text("#metadata-graph .xtitle", "stroke_thickness (px)",
                                    timeout=30)
    dash_duo.driver.save_screenshot(str(SHOTS / "metadata-stroke-thickness.png"))
    browser.nav("/")
    dash_duo.wait_for_element("#population-graph .nsewdrag", timeout=30)
    dash_duo.select_dcc_dropdown(f"#{ids.COLOR_SELECT}", value="slant")
    dash_duo.wait_for_contains_text("#population-graph .cbtitle", "slant (degrees)",
                                    timeout=30)
    dash_duo.driver.save_screenshot(str(SHOTS / "population-slant.png"))
    assert dash_duo.get_logs() == []
