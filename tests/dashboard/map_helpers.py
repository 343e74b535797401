"""Shared by the map tests: a mouse drag in the browser, and a lasso test written out."""

from __future__ import annotations

import numpy as np
from selenium.webdriver.common.action_chains import ActionChains


def drag(duo, start: tuple[int, int], end: tuple[int, int]) -> None:
    actions = ActionChains(duo.driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(*start)
    pointer.pointer_down()
    for f in (0.25, 0.5, 0.75, 1.0):
        pointer.move_to_location(int(start[0] + f * (end[0] - start[0])),
                                 int(start[1] + f * (end[1] - start[1])))
    pointer.pointer_up()
    actions.perform()


def polygon_contains(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, written out (independent of matplotlib)."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    inside = np.zeros(len(xy), dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside
