"""The large Population map in headless Chromium (``python -m benchmarks.map --browser``).

* **first render**: from the page's navigation start to the map image drawn
  (the server computing it: the entry's memo is emptied before each load);
* **pan/zoom**: from ``Plotly.relayout`` (what a mouse zoom or pan emits) to
  the new figure drawn and painted, in rounds of three: a view of many points
  (a new image) after the points of the round before (the first after the
  whole map's image), another view of many points (image to image), a view of
  few (WebGL points). Each is broken down by the
  Resource Timing of the Dash requests it set off: until the figure's
  request is sent, the server answering it (to its first byte), its
  download, and from its arrival to the map drawn (the browser's JSON
  parse, Dash's render and Plotly's redraw); and the response's size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

IMAGE_DRAWN_JS = """
const gd = document.querySelector('#population-graph .js-plotly-plot');
return !!(gd && gd._fullLayout && (gd._fullLayout.images || []).length === 1
          && document.querySelector('#population-graph .imagelayer image'));
"""
RELAYOUT_JS = """
const rx = arguments[0], ry = arguments[1], mode = arguments[2], classes = arguments[3];
const done = arguments[arguments.length - 1];
const gd = document.querySelector('#population-graph .js-plotly-plot');
const before = ((gd._fullLayout.images || [])[0] || {}).source;
function ready() {
  const imgs = gd._fullLayout.images || [];
  if (mode === 'image') {
    return imgs.length === 1 && imgs[0].source !== before
      && document.querySelector('#population-graph .imagelayer image');
  }
  let points = 0;
  for (let c = 0; c < classes; c++) {
    const t = gd._fullData[c];
    if (t && t.x && t.x.length > 1) points += t.x.length;
  }
  return imgs.length === 0 && points > 0;
}
performance.clearResourceTimings();
const start = performance.now();
Plotly.relayout(gd, {'xaxis.range': rx, 'yaxis.range': ry});
(function poll() {
  if (ready()) requestAnimationFrame(() => {
    const end = performance.now();
    // the Dash callbacks the zoom set off: when sent, answered, received; their size
    const requests = performance.getEntriesByType('resource')
      .filter(e => e.name.includes('_dash-update-component') && e.startTime >= start)
      .map(e => ({sent: e.startTime - start, first_byte: e.responseStart - start,
                  received: e.responseEnd - start, bytes: e.encodedBodySize}));
    done({ms: end - start, requests: requests});
  });
  else setTimeout(poll, 5);
})();
"""


def views_of(coords: np.ndarray, counts: tuple[int, ...], seed: int) -> list[dict]:
    """Zoomed views around random samples holding about ``counts`` points each."""
    rng = np.random.default_rng(seed)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    out = []
    for want in counts:
        centre = coords[rng.integers(len(coords))]
        # the smallest square (in units of the whole map) around ``centre`` holding ``want``
        far = np.abs(coords - centre) / (hi - lo)
        want = min(want, len(coords) - 1)
        half = float(np.partition(far.max(axis=1), want)[want])
        out.append({"xaxis.range[0]": float(centre[0] - half * (hi - lo)[0]),
                    "xaxis.range[1]": float(centre[0] + half * (hi - lo)[0]),
                    "yaxis.range[0]": float(centre[1] - half * (hi - lo)[1]),
                    "yaxis.range[1]": float(centre[1] + half * (hi - lo)[1])})
    return out


def breakdown(got: dict) -> dict[str, float]:
    """The phases of one zoom in seconds, from :data:`RELAYOUT_JS`'s result, and the count
    of requests and the figure's response size (kB), named so: its largest Dash response
    is taken as the figure's."""
    requests = got["requests"]
    if not requests:
        return {}
    figure = max(requests, key=lambda r: r["bytes"])
    ms = got["ms"]
    return {"requests [count]": len(requests),
            "relayout -> request sent": figure["sent"] / 1000,
            "server (request -> first byte)": (figure["first_byte"] - figure["sent"]) / 1000,
            "download": (figure["received"] - figure["first_byte"]) / 1000,
            "response -> drawn (parse, Dash, Plotly)": (ms - figure["received"]) / 1000,
            "response size [kB]": figure["bytes"] / 1000}


def browser_timings(registry, entry, folder: str, port: int, repeat: int, limit: int
                    ) -> dict[str, list[float]]:
    """Seconds per measurement (see the module docstring)."""
    from benchmarks.browser import _driver, _serve, _wait
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig
    from dashboard.state import MEMO_SIZE, LRUCache
    from dashboard.views.population_scale import MAX_POINTS_KEY

    app = create_app(DashboardConfig(checkpoints=[], cache_dir=folder, progress=False,
                                     runs_dir=str(Path(folder) / "no-runs")), registry)
    app.server.config[MAX_POINTS_KEY] = limit
    server = _serve(app, port)
    driver = _driver()
    classes = len(entry.members)
    image_to_image, points_to_image = ("browser: pan/zoom, image -> new image drawn",
                                       "browser: zoom out, points -> image drawn")
    out: dict[str, list[float]] = {"browser: first render (page load -> image drawn)": [],
                                   image_to_image: [], points_to_image: [],
                                   "browser: zoom in, image -> points drawn": []}
    try:
        url = f"http://127.0.0.1:{port}/"
        driver.get(url)  # the browser caches the scripts once
        _wait(lambda: driver.execute_script(IMAGE_DRAWN_JS), timeout=120)
        for _ in range(repeat):
            entry._memo = LRUCache(MEMO_SIZE)  # nothing memoised: the server draws it anew
            driver.get(url + "?r=" + str(time.time()))
            _wait(lambda: driver.execute_script(IMAGE_DRAWN_JS), timeout=120)
            out["browser: first render (page load -> image drawn)"].append(
                driver.execute_script("return performance.now();") / 1000)
        coords = entry.session.projection("umap")
        many = views_of(coords, (4 * limit,) * (2 * repeat), 7)
        few = views_of(coords, (limit // 2,) * repeat, 8)
        driver.set_script_timeout(120)
        # Each round: a view of many points (from the points before it, or the whole map's
        # image), another (image to image: a pan or zoom about the image), one of few.
        for i, points_view in enumerate(few):
            for view, mode, name in (
                    (many[2 * i], "image", points_to_image if i else image_to_image),
                    (many[2 * i + 1], "image", image_to_image),
                    (points_view, "points", "browser: zoom in, image -> points drawn")):
                got = driver.execute_async_script(
                    RELAYOUT_JS, [view["xaxis.range[0]"], view["xaxis.range[1]"]],
                    [view["yaxis.range[0]"], view["yaxis.range[1]"]], mode, classes)
                out[name].append(got["ms"] / 1000)
                for part, secs in breakdown(got).items():
                    out.setdefault(f"{name}: {part}", []).append(secs)
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if logs:
            raise RuntimeError(f"browser console errors: {logs}")
    finally:
        driver.quit()
        server.shutdown()
    return {k: v for k, v in out.items() if v and np.all(np.isfinite(v))}
