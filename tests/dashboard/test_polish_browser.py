"""What a new user noticed (issue 13, items 2, 5, 6), checked in headless Chromium at
1280x800 on the tiny analysed run (600 real test digits): the map's legend never covers
the x-axis title, colour = correct has its own two-colour legend, an empty confusion cell
says so and the clicked cell is outlined, galleries say how many they show and no
caption overflows."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from dash.testing.wait import until
from test_heads_browser import pick
from test_interactions_browser import click_confusion_cell, drag, wait_for_map

from dashboard import ids

SHOTS = Path("/tmp/shots-polish")
RECT_JS = """
const el = document.querySelector(arguments[0]);
if (!el) return null;
const r = el.getBoundingClientRect();
return {x: r.left, y: r.top, width: r.width, height: r.height};
"""
# The legend entries' names and marker colours as drawn.
LEGEND_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const items = [...gd.querySelectorAll('.legend .traces')];
return items.map(t => [t.querySelector('.legendtext').textContent,
                       (t.querySelector('.legendpoints path') || {style: {}}).style.fill || '']);
"""
OVERFLOW_JS = """
return [...document.querySelectorAll('.loupe-thumb .cap')]
  .filter(c => c.scrollWidth > c.clientWidth + 0.5).map(c => c.textContent);
"""


def shot(browser, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(browser.screenshot(name), SHOTS / f"{name}.png")


def rect(duo, selector: str) -> dict:
    found = duo.driver.execute_script(RECT_JS, selector)
    assert found is not None, f"no {selector}"
    return found


def overlap(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def no_caption_overflows(duo) -> None:
    assert duo.driver.execute_script(OVERFLOW_JS) == []


def test_map_legend_stays_clear_of_the_axis_and_tells_correctness(dash_duo, browser, app,
                                                                    entry):
    # Visit a sample (as from a link), then come back to the map: the overlay joins the legend.
    sample = entry.session.dataset.sample_ids[3]
    browser.open(app, f"/sample?id={sample}")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample, timeout=30)
    browser.nav("/")
    wait_for_map(dash_duo)
    graph = f"#{ids.POPULATION_GRAPH}"
    until(lambda: any("similars" in name for name, _ in
                      dash_duo.driver.execute_script(LEGEND_JS, ids.POPULATION_GRAPH)), timeout=20)
    legend, xtitle = rect(dash_duo, f"{graph} .legend"), rect(dash_duo, f"{graph} .xtitle")
    assert not overlap(legend, xtitle), (legend, xtitle)
    shot(browser, "population-after-sample")

    # Colour by correctness: the legend is titled for it, with two distinct colours.
    pick(dash_duo, ids.COLOR_SELECT, "correct")
    until(lambda: "prediction" in dash_duo.find_element(f"{graph} .legendtitletext").text,
          timeout=20)
    entries = dict(dash_duo.driver.execute_script(LEGEND_JS, ids.POPULATION_GRAPH))
    assert {"correct", "wrong"} <= set(entries)
    assert entries["correct"] and entries["wrong"] and entries["correct"] != entries["wrong"]
    assert not set(entries) & {str(c) for c in entry.class_names}  # no class keys now
    assert not overlap(rect(dash_duo, f"{graph} .legend"), rect(dash_duo, f"{graph} .xtitle"))
    shot(browser, "population-colour-correct")

    # A numeric colour: its colour bar stays narrow (its title runs along the bar).
    pick(dash_duo, ids.COLOR_SELECT, "uncertainty")
    until(lambda: dash_duo.driver.find_elements("css selector", f"{graph} .colorbar"),
          timeout=20)
    time.sleep(0.5)
    assert rect(dash_duo, f"{graph} .colorbar")["width"] < 100
    note = dash_duo.find_element(f"#{ids.SIZE_NOTE}").text
    assert note.startswith("size: percentile rank of loss")
    shot(browser, "population-colour-loss")
    assert dash_duo.get_logs() == []


def test_selection_gallery_says_how_many_it_shows(dash_duo, browser, app, entry):
    browser.open(app, "/")
    wait_for_map(dash_duo)
    r = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag").rect
    drag(dash_duo, (int(r["x"] + 2), int(r["y"] + 2)),
         (int(r["x"] + r["width"] - 2), int(r["y"] + r["height"] - 2)))
    dash_duo.wait_for_element(f"#{ids.SELECTION_GRID} a.loupe-thumb", timeout=20)
    total = int(dash_duo.find_element("#selection-stats b").text.replace(",", ""))
    assert total > 80, "the box covers the whole map"
    dash_duo.wait_for_text_to_equal(f"#{ids.SELECTION_GRID} .loupe-shown-note",
                                    f"showing 80 of {total} (highest loss first)", timeout=10)
    assert len(dash_duo.find_elements(f"#{ids.SELECTION_GRID} a.loupe-thumb")) == 80
    no_caption_overflows(dash_duo)
    shot(browser, "population-selection")
    assert dash_duo.get_logs() == []


def test_empty_confusion_cell_says_so_and_the_cell_is_outlined(dash_duo, browser, app, entry):
    from test_errors_views import empty_cell

    browser.open(app, "/errors")
    wrong = int((~entry.table["correct"]).sum())
    dash_duo.wait_for_text_to_equal(f"#{ids.MISCLASSIFIED_GALLERY} .loupe-shown-note",
                                    f"showing 40 of {wrong} (highest loss first)", timeout=30)
    dash_duo.wait_for_text_to_equal(f"#{ids.HIGHEST_LOSS_GALLERY} .loupe-shown-note",
                                    f"showing 40 of {len(entry.table)} (highest loss first)")
    no_caption_overflows(dash_duo)
    # Unclicked: the most confused cell is shown, and outlined.
    dash_duo.wait_for_element(f"#{ids.CONFUSION_MATRIX} .shapelayer path", timeout=20)
    true, pred = empty_cell(entry)
    click_confusion_cell(dash_duo, true, pred)
    dash_duo.wait_for_text_to_equal(f"#{ids.CELL_EMPTY}",
                                    f"No samples with true {true} predicted as {pred}.",
                                    timeout=20)
    assert dash_duo.find_elements(f"#{ids.CELL_GRID} a.loupe-thumb") == []
    outline = dash_duo.driver.execute_script(
        "const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "const s = gd.layout.shapes[0]; return [s.x0 + 0.5, s.y0 + 0.5];", ids.CONFUSION_MATRIX)
    names = [str(c) for c in entry.class_names]
    assert outline == [names.index(pred), names.index(true)]
    shot(browser, "errors-empty-cell")
    assert dash_duo.get_logs() == []


def test_confusion_matrix_follows_a_map_selection(dash_duo, browser, app, entry):
    browser.open(app, "/")
    wait_for_map(dash_duo)
    r = dash_duo.find_element(f"#{ids.POPULATION_GRAPH} .nsewdrag").rect
    drag(dash_duo, (int(r["x"] + 0.2 * r["width"]), int(r["y"] + 0.2 * r["height"])),
         (int(r["x"] + 0.6 * r["width"]), int(r["y"] + 0.7 * r["height"])))
    dash_duo.wait_for_element("#selection-stats", timeout=20)
    total = int(dash_duo.find_element("#selection-stats b").text.replace(",", ""))
    browser.nav("/errors")
    dash_duo.wait_for_contains_text(f"#{ids.CONFUSION_MATRIX} .gtitle",
                                    f"{total} selected samples", timeout=30)
    counts = dash_duo.driver.execute_script(
        "const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return gd.data[0].text.flat().reduce((a, b) => a + b, 0);", ids.CONFUSION_MATRIX)
    assert counts == total
    shot(browser, "errors-selection")
    assert dash_duo.get_logs() == []
