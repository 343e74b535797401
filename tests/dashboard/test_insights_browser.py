"""The Insights page in headless Chromium, on the tiny analysed run (600 real test digits).

Clicks as a person would: an insight's "Select on the map" fills the shared
selection and opens the Population page; its "Explain this selection" opens the
explanation on the Insights page. Screenshots go to /tmp/shots-insights/.
"""

from __future__ import annotations

from pathlib import Path

from dash.testing.wait import until

from dashboard import ids

SHOTS = Path("/tmp/shots-insights")


def shot(duo, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    duo.driver.save_screenshot(str(SHOTS / f"{name}.png"))


def click(duo, element) -> None:
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def test_insight_cards_select_on_the_map_and_explain(dash_duo, browser, app, entry):
    found = entry.session.insights()  # what the page must show, in this order
    assert found, "the tiny run has no insight to show"
    first = found[0]
    # Two heatmaps inside the first insight and two outside, as the Sample page computes
    # them: the explanation then shows their means (it never computes one itself).
    inside = entry.indices_of(first.sample_ids[:2])
    outside = [i for i in range(len(entry.table)) if i not in set(entry.indices_of(
        first.sample_ids))][:2]
    for i in (*inside, *outside):
        entry.session.attribute(int(i), "integrated_gradients", "pred")

    browser.open(app, "/insights")
    dash_duo.wait_for_element(".loupe-insight .loupe-insight-title", timeout=120)
    titles = [e.text for e in dash_duo.find_elements("#insights-list .loupe-insight-title")]
    assert titles == [i.title for i in found]
    card = dash_duo.find_element(f"#{ids.INSIGHT_CARD}-0")
    assert f"{first.n:,} samples" in card.text and f"{first.share:.1%}" in card.text
    assert first.severity.upper() in card.text and "error rate" in card.text
    shown = min(12, len(first.sample_ids))
    thumbs = card.find_elements("css selector", "a.loupe-thumb")
    assert len(thumbs) == shown
    assert thumbs[0].get_attribute("href").endswith(f"/sample?id={first.sample_ids[0]}")
    if any(isinstance(e.inside, float) for e in first.explanation):
        dash_duo.wait_for_element(
            f"#{ids.INSIGHT_CARD}-0 .loupe-evidence .js-plotly-plot .barlayer", timeout=20)
    assert "`" not in dash_duo.find_element("#insights-list").text
    # The cards fit the 1280 px window: no sideways scrolling.
    assert dash_duo.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    shot(dash_duo, "insights-page")

    # Select on the map: the Population page opens with the insight's samples selected.
    button = card.find_element("css selector", "button")
    assert button.text == "Select on the map"
    click(dash_duo, button)
    until(lambda: dash_duo.driver.current_url.rstrip("/") == dash_duo.server_url, timeout=20)
    dash_duo.wait_for_element("#selection-stats", timeout=30)
    count = int(dash_duo.find_element("#selection-stats").text.split(" samples")[0]
                .replace(",", ""))
    assert count == first.n
    shot(dash_duo, "population-after-select")

    # Explain this selection: the Insights page opens with the explanation on top.
    click(dash_duo, dash_duo.find_element(f"#{ids.EXPLAIN_SELECTION}"))
    dash_duo.wait_for_element(f"#{ids.EXPLAIN_CARD} .loupe-explain .loupe-insight-title",
                              timeout=60)
    explained = dash_duo.find_element(f"#{ids.EXPLAIN_CARD}")
    assert f"insight: {first.title}"[:120] in explained.text
    assert f"{first.n:,} samples" in explained.text and "error rate" in explained.text
    assert len(explained.find_elements("css selector", "a.loupe-thumb")) == shown
    dash_duo.wait_for_element(f"#{ids.EXPLAIN_CARD} .loupe-mean-heatmaps .js-plotly-plot",
                              timeout=20)
    dash_duo.driver.execute_script("window.scrollTo(0, 0);")
    shot(dash_duo, "insights-explain")
    dash_duo.wait_for_element("#insights-list .loupe-insight", timeout=120)  # no job left
    assert dash_duo.get_logs() == []


def test_explain_with_nothing_selected_says_how_to_select(dash_duo, browser, app):
    browser.open(app, "/")
    dash_duo.wait_for_element(f"#{ids.EXPLAIN_SELECTION}", timeout=30)
    click(dash_duo, dash_duo.find_element(f"#{ids.EXPLAIN_SELECTION}"))
    dash_duo.wait_for_contains_text(f"#{ids.EXPLAIN_CARD}", "Nothing is selected", timeout=60)
    assert dash_duo.driver.current_url.endswith("/insights?explain=1")
    dash_duo.wait_for_element("#insights-list .loupe-insight", timeout=120)  # no job left
    assert dash_duo.get_logs() == []
