"""Headless Chromium options shared by the browser benchmark, the tests and the doc screenshots.

Debian's Chromium run as root in a container: no sandbox, no GPU, and none of
the background networking that this machine's closed network refuses.
"""

from __future__ import annotations

from pathlib import Path

CHROME_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run")
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


def chrome_options(*extra: str, headless: bool = True):
    """``selenium`` Chrome options with :data:`CHROME_FLAGS` plus ``extra`` flags."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in (("--headless",) if headless else ()) + CHROME_FLAGS + extra:
        options.add_argument(flag)
    if DEBIAN_CHROMIUM.exists():
        options.binary_location = str(DEBIAN_CHROMIUM)
    return options
