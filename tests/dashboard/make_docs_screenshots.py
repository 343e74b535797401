"""Screenshots of every page of a running dashboard for the README (``docs/*.png``).

Not a test (pytest does not collect it). Run the dashboard on the real default
run, then::

    python -m dashboard --port 8050 &
    python tests/dashboard/make_docs_screenshots.py --url http://127.0.0.1:8050 --out docs

Same headless Chromium flags as the browser tests; the viewport is 1280x800.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.browser import chrome_options

# (file name, path, CSS selector that means "drawn", optional script run before the shot)
SHOTS = (
    ("population", "/?color=label&size=loss", "#population-graph .nsewdrag", None),
    ("insights", "/insights", "#insights-list .loupe-insight", None),
    ("samples", "/samples", "#samples-grid .ag-row", None),
    ("sample", "/sample", "#sample-heatmap .hm image", None),
    ("errors", "/errors", "#confusion-matrix .hm image", None),
    ("metadata", "/metadata", "#metadata-graph .scatterlayer .trace", None),
    ("training", "/training", "#training-graph .scatterlayer .trace", None),
    ("export", "/export", "#export-info b", None),
    # The OOD part needs an extra dataset (the default start opens corrupt:all).
    ("uncertainty", "/uncertainty", "#ood-map .nsewdrag", None),
)
# Taken only when named with --only (a multi-head run: --head sum).
EXTRA_SHOTS = (
    ("heads-metadata", "/metadata?column=number&x=number&y=loss",
     "#metadata-graph .scatterlayer .trace", None),
    ("heads-errors", "/errors", "#confusion-matrix .hm image", None),
    # --runs-dir runs/series: the table and curves, then the diff of the first two runs.
    ("experiments", "/experiments", "#runs-table .ag-cell", None),
    ("experiments-diff", "/experiments", "#runs-table .ag-cell",
     "const boxes = document.querySelectorAll('#runs-table input.ag-checkbox-input');"
     "boxes[0].click(); setTimeout(() => boxes[1].click(), 1500);"),
)
# Seconds to wait after a shot's script (background work it starts).
SETTLE_S = {"experiments-diff": 40}


def driver(width: int = 1280, height: int = 800) -> webdriver.Chrome:
    d = webdriver.Chrome(options=chrome_options())
    d.set_window_size(width, height)
    inner = d.execute_script("return [window.innerWidth, window.innerHeight];")
    d.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    return d


def pick_head(d: webdriver.Chrome, head: str) -> None:
    """Open the navbar's head selector and choose ``head``."""
    d.find_element(By.ID, "head-select").click()
    xpath = f"//*[@role='option' or @role='listbox']//*[normalize-space(text())='{head}']"
    WebDriverWait(d, 10).until(ec.presence_of_element_located((By.XPATH, xpath)))
    d.find_elements(By.XPATH, xpath)[-1].click()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8050")
    p.add_argument("--out", default="docs")
    p.add_argument("--only", nargs="*", help="file names to take (default: all)")
    p.add_argument("--head", default=None,
                   help="pick this head in the navbar first (a multi-head run)")
    p.add_argument("--prefix", default="", help="prefix of the file names")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = driver()
    try:
        for name, path, drawn, script in SHOTS + EXTRA_SHOTS:
            if (args.only and name not in args.only) or (
                    not args.only and (name, path, drawn, script) in EXTRA_SHOTS):
                continue
            d.get(args.url + path)
            WebDriverWait(d, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, drawn)))
            if args.head:
                pick_head(d, args.head)
                time.sleep(3)  # the pages redraw for the head
            if script:
                d.execute_script(script)
                time.sleep(SETTLE_S.get(name, 0))
                if name == "experiments-diff":
                    d.execute_script("document.getElementById('runs-diff')"
                                     ".scrollIntoView({block: 'center'});")
            time.sleep(1.5)  # let plots finish their transitions
            d.save_screenshot(str(out / f"{args.prefix}{name}.png"))
            print(out / f"{name}.png")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
