"""The sample table in headless Chromium: sort, filter, open a row, selection both ways.

Runs on the tiny run analysed on 600 real test digits (conftest); the expected rows are
computed here with pandas from the run's table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dash.testing.wait import until

from dashboard import ids

SHOTS = Path("/tmp/shots-table")
ROW_IDS_JS = """
return Array.from(document.querySelectorAll(
    '#samples-grid .ag-center-cols-container .ag-row[row-id]'))
  .sort((a, b) => +a.getAttribute('row-index') - +b.getAttribute('row-index'))
  .map(r => r.getAttribute('row-id'));
"""


def shot(browser, name: str) -> None:
    path = browser.screenshot(f"samples-{name}")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def row_ids(duo) -> list[str]:
    return duo.driver.execute_script(ROW_IDS_JS)


def click(duo, selector: str) -> None:
    element = duo.find_element(selector)
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'nearest', "
                              "inline: 'center'});", element)
    element.click()


def count_is(duo, text: str) -> bool:
    return duo.find_element(f"#{ids.SAMPLES_COUNT}").text == text


def test_sort_filter_open_and_select(dash_duo, browser, app, entry):
    table = entry.table
    n = len(table)
    by_loss = table.sort_values("loss", ascending=False, kind="stable")
    wrong = by_loss[~by_loss["correct"]]
    assert 0 < len(wrong) < n  # the tiny model makes some mistakes, not only mistakes

    browser.open(app, "/samples")
    dash_duo.wait_for_element(f"#{ids.SAMPLES_GRID} .ag-row[row-id]", timeout=30)
    until(lambda: count_is(dash_duo, f"{n:,} of {n:,} samples"), timeout=20)
    assert row_ids(dash_duo)[:3] == table["sample_id"].tolist()[:3]  # dataset order

    # Sort by loss, descending: two clicks on its header.
    header = f"#{ids.SAMPLES_GRID} .ag-header-cell[col-id='loss'] .ag-header-cell-label"
    ascending = table.sort_values("loss", kind="stable")["sample_id"].tolist()
    click(dash_duo, header)
    until(lambda: row_ids(dash_duo)[:3] == ascending[:3], timeout=20)
    click(dash_duo, header)
    until(lambda: row_ids(dash_duo)[:5] == by_loss["sample_id"].tolist()[:5], timeout=20)

    # Filter correct = wrong through the column's filter, as a person would.
    click(dash_duo, f"#{ids.SAMPLES_GRID} .ag-floating-filter[col-id='correct'] button")
    click(dash_duo, ".ag-filter .ag-filter-select .ag-picker-field-wrapper")
    option = next(e for e in dash_duo.find_elements(".ag-select-list .ag-list-item")
                  if e.text == "wrong")
    option.click()
    until(lambda: count_is(dash_duo, f"{len(wrong):,} of {n:,} samples"), timeout=20)
    until(lambda: row_ids(dash_duo)[:5] == wrong["sample_id"].tolist()[:5], timeout=20)
    cells = dash_duo.find_elements(f"#{ids.SAMPLES_GRID} .ag-cell[col-id='correct']")
    assert cells and {c.text for c in cells} == {"wrong"}
    dash_duo.find_element(f"#{ids.SAMPLES_COUNT}").click()  # close the filter popup
    shot(browser, "sorted-filtered")

    # The filter becomes the shared selection: the map and the export follow it.
    click(dash_duo, f"#{ids.SAMPLES_USE_SELECTION}")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLES_NOTE}", f"the {len(wrong):,} samples",
                                    timeout=20)
    browser.nav("/export")
    dash_duo.wait_for_contains_text(f"#{ids.EXPORT_INFO}",
                                    f"Current selection: {len(wrong):,} samples", timeout=20)
    browser.nav("/")
    dash_duo.wait_for_contains_text("#selection-stats", f"{len(wrong):,} samples", timeout=30)

    # And back: the table shows only the selection (its own filter is gone with the page).
    browser.nav("/samples")
    until(lambda: count_is(dash_duo, f"{n:,} of {n:,} samples"), timeout=20)
    switch = f"#{ids.SAMPLES_ONLY_SELECTED}"
    until(lambda: dash_duo.find_element(switch).is_enabled(), timeout=20)
    click(dash_duo, switch)
    until(lambda: count_is(dash_duo, f"{len(wrong):,} of {n:,} samples"), timeout=20)
    until(lambda: set(row_ids(dash_duo)) <= set(wrong["sample_id"]) and row_ids(dash_duo),
          timeout=20)
    shot(browser, "only-selected")

    # A click on a row opens that sample.
    target = row_ids(dash_duo)[1]
    click(dash_duo, f"#{ids.SAMPLES_GRID} .ag-row[row-id='{target}'] .ag-cell[col-id='loss']")
    until(lambda: dash_duo.driver.current_url.endswith(f"/sample?id={target}"), timeout=20)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", target, timeout=30)
    assert dash_duo.get_logs() == []


def test_hostile_requests_and_stale_run_show_a_message(dash_duo, browser, app):
    browser.open(app, "/samples")
    dash_duo.wait_for_element(f"#{ids.SAMPLES_GRID} .ag-row[row-id]", timeout=30)
    # A hand-made request naming a column the table does not have.
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props(arguments[0], {getRowsRequest: {startRow: 0, "
        "endRow: 100, sortModel: [], filterModel: {password: {filterType: 'text', "
        "type: 'contains', filter: 'x'}}}});", ids.SAMPLES_GRID)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLES_MESSAGE}", "Unknown column 'password'",
                                    timeout=20)
    # A stale run key, as a store restored from an earlier dashboard would hold.
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props(arguments[0], {data: {run: 'stale-key'}});",
        ids.RUN_STORE)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLES_MESSAGE}", "Unknown run 'stale-key'",
                                    timeout=20)
    source = dash_duo.driver.page_source
    assert "Traceback" not in source and 'File "' not in source
    shot(browser, "stale-run")
    assert dash_duo.get_logs() == []
