"""Browser-side timings of the population page (headless Chromium via selenium).

Used by ``python -m benchmarks.server --browser``: serves the app in a thread,
opens ``/`` and measures, inside the page (``performance.now()``):

* **first render**: navigation start -> every class trace drawn on the map;
* **re-colour**: setting ``color-select`` -> the patched colours applied to
  the plot (server round trip, the ``Patch``, plotly.js restyle);
* **click -> heatmap shown**: a click on the map -> the sample page's heatmap
  image drawn (includes page navigation and the background job's polling).

selenium is a test dependency (``dash[testing]``); it is imported lazily.
"""

from __future__ import annotations

import threading
import time

import numpy as np

DRAWN_JS = """
const el = document.getElementById('population-graph');
const gd = el && el.querySelector('.js-plotly-plot');
return !!(gd && gd._fullData && gd._fullData.length === arguments[0]
          && el.querySelector('.gl-canvas-context'));
"""
RECOLOUR_JS = """
const done = arguments[arguments.length - 1];
const [value, n] = [arguments[0], arguments[1]];
const gd = document.getElementById('population-graph').querySelector('.js-plotly-plot');
const t0 = performance.now();
window.dash_clientside.set_props('color-select', {value: value});
(function poll() {
  const c = gd._fullData[1].marker.color;
  const ok = (n === 0) ? (typeof c === 'string') : (typeof c !== 'string' && c.length === n);
  if (ok) { requestAnimationFrame(() => done(performance.now() - t0)); }
  else { setTimeout(poll, 5); }
})();
"""
CLICK_JS = """
const gd = document.getElementById('population-graph').querySelector('.js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[0]), r.top + ya._offset + ya.d2p(arguments[1])];
"""


def _driver():
    from selenium import webdriver

    from dashboard.browser import chrome_options

    driver = webdriver.Chrome(options=chrome_options())
    driver.set_window_size(1280, 900)
    driver.set_script_timeout(60)
    return driver


def _serve(app, port: int):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _wait(fn, timeout: float = 60.0, poll: float = 0.01):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("the page did not reach the expected state")


def browser_timings(app, entry, port: int = 8123, repeat: int = 5, clicks: int = 5
                    ) -> dict[str, list[float]]:
    """Seconds per measurement (see the module docstring)."""
    from selenium.webdriver.common.action_chains import ActionChains

    server = _serve(app, port)
    driver = _driver()
    traces = len(entry.class_names) + 1
    n1 = len(entry.members[1])
    out: dict[str, list[float]] = {"first render": [], "re-colour": [], "click -> heatmap": []}
    try:
        url = f"http://127.0.0.1:{port}/"
        driver.get(url)  # warm the browser cache (scripts) once
        _wait(lambda: driver.execute_script(DRAWN_JS, traces))
        for _ in range(repeat):
            driver.get(url + "?r=" + str(time.time()))
            _wait(lambda: driver.execute_script(DRAWN_JS, traces))
            out["first render"].append(driver.execute_script("return performance.now();")
                                       / 1000)
            for value, n in (("uncertainty", n1), ("label", 0)):
                out["re-colour"].append(driver.execute_async_script(RECOLOUR_JS, value, n)
                                        / 1000)
        coords = entry.session.projection(entry.session.projections[0])
        rng = np.random.default_rng(0)
        for i in rng.choice(len(coords), clicks, replace=False):
            driver.get(url)
            _wait(lambda: driver.execute_script(DRAWN_JS, traces))
            time.sleep(0.3)
            x, y = driver.execute_script(CLICK_JS, float(coords[i, 0]), float(coords[i, 1]))
            start = time.perf_counter()
            actions = ActionChains(driver)
            actions.w3c_actions.pointer_action.move_to_location(int(x), int(y))
            actions.w3c_actions.pointer_action.click()
            actions.perform()
            _wait(lambda: driver.find_elements("css selector", "#sample-heatmap .hm image"))
            out["click -> heatmap"].append(time.perf_counter() - start)
        logs = driver.get_log("browser")
        if any(entry_["level"] == "SEVERE" for entry_ in logs):
            raise RuntimeError(f"browser console errors: {logs}")
    finally:
        driver.quit()
        server.shutdown()
    return out
