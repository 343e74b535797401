"""Bad input through the UI: a visible message, no stack trace, and the server keeps serving."""

from __future__ import annotations

import time

from dash.testing.wait import until

from dashboard import ids
from dashboard.app import create_app

TRACE_LEN_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd._fullData ? gd._fullData.length : -1;
"""


def assert_no_stack_trace(dash_duo) -> None:
    source = dash_duo.driver.page_source
    assert "Traceback" not in source and 'File "' not in source


def assert_map_works(dash_duo, browser) -> None:
    """The server still serves: the population map draws all its traces."""
    dash_duo.driver.execute_script("window.scrollTo(0, 0);")
    browser.nav("/")
    until(lambda: dash_duo.driver.execute_script(TRACE_LEN_JS, ids.POPULATION_GRAPH) > 1,
          timeout=30)


def test_unknown_sample_id_shows_a_message(dash_duo, browser, app):
    browser.open(app, "/sample?id=mnist:test:999999")
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_MESSAGE}", "does not exist", timeout=20)
    assert "mnist:test:999999" in dash_duo.find_element(f"#{ids.SAMPLE_MESSAGE}").text
    assert_no_stack_trace(dash_duo)
    browser.screenshot("bad-sample-id")
    assert_map_works(dash_duo, browser)
    assert dash_duo.get_logs() == []


def test_unknown_columns_in_the_url_show_a_message(dash_duo, browser, app):
    browser.open(app, "/?color=no_such_column&size=loss")
    dash_duo.wait_for_contains_text(f"#{ids.POPULATION_MESSAGE}",
                                    "Unknown colour column 'no_such_column'", timeout=20)
    # The map falls back to the defaults and still draws.
    until(lambda: dash_duo.driver.execute_script(TRACE_LEN_JS, ids.POPULATION_GRAPH) > 1,
          timeout=30)
    assert_no_stack_trace(dash_duo)
    browser.screenshot("bad-column")

    dash_duo.wait_for_page(url=dash_duo.server_url + "/metadata?column=bogus")
    dash_duo.wait_for_contains_text(f"#{ids.METADATA_MESSAGE}",
                                    "Unknown metadata column 'bogus'", timeout=20)
    dash_duo.wait_for_element(f"#{ids.METADATA_GRAPH} .scatterlayer .trace", timeout=20)
    assert_no_stack_trace(dash_duo)
    assert dash_duo.get_logs() == []


def test_unknown_run_key_in_the_store_shows_a_message(dash_duo, browser, app):
    browser.open(app, "/errors")
    dash_duo.wait_for_element(f"#{ids.CONFUSION_MATRIX} .hm image", timeout=30)
    # A stale key, as a store restored from an earlier dashboard would hold.
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props(arguments[0], {data: {run: 'stale-key'}});",
        ids.RUN_STORE)
    dash_duo.wait_for_contains_text(f"#{ids.ERRORS_MESSAGE}", "Unknown run 'stale-key'",
                                    timeout=20)
    assert_no_stack_trace(dash_duo)
    # Choosing the run again recovers.
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props(arguments[0], {data: {run: arguments[1]}});",
        ids.RUN_STORE, app.server.extensions["loupe"].default_key)
    until(lambda: dash_duo.find_element(f"#{ids.ERRORS_MESSAGE}").text == "", timeout=20)
    assert dash_duo.get_logs() == []


def test_deleted_cache_shows_a_message(dash_duo, browser, dash_config, deleted_cache_registry):
    app = create_app(dash_config, deleted_cache_registry)
    browser.open(app, "/")
    dash_duo.wait_for_contains_text(f"#{ids.POPULATION_MESSAGE}", "was deleted", timeout=20)
    assert_no_stack_trace(dash_duo)
    browser.screenshot("deleted-cache")
    for path, message in (("/errors", ids.ERRORS_MESSAGE), ("/training", ids.TRAINING_MESSAGE),
                          ("/sample", ids.SAMPLE_MESSAGE)):
        dash_duo.wait_for_page(url=dash_duo.server_url + path)
        dash_duo.wait_for_contains_text(f"#{message}", "was deleted", timeout=20)
        assert_no_stack_trace(dash_duo)
    time.sleep(0.3)
    assert dash_duo.get_logs() == []
