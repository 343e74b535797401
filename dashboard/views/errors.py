"""Error analysis helpers: confusion cells and the worst samples."""

from __future__ import annotations

import numpy as np

from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import first_point

GALLERY_SIZE = 40


def cell_indices(entry: RunEntry, true_name: str, pred_name: str) -> np.ndarray:
    """``(M,)`` indices of samples of class ``true_name`` predicted as ``pred_name``."""
    names = [str(n) for n in entry.class_names]
    if true_name not in names or pred_name not in names:
        raise DashboardInputError(f"No class named '{true_name}' or '{pred_name}'.")
    t, p = names.index(true_name), names.index(pred_name)
    table = entry.table
    return np.flatnonzero((table["label"].to_numpy() == t) & (table["pred"].to_numpy() == p))


def most_confused(entry: RunEntry) -> tuple[str, str] | None:
    """``(true name, predicted name)`` of the largest off-diagonal cell; ``None`` if no error."""
    t = entry.table
    wrong = t[~t["correct"].to_numpy()]
    if wrong.empty:
        return None
    true, pred = wrong.groupby(["label_name", "pred_name"]).size().idxmax()
    return str(true), str(pred)


def worst_indices(entry: RunEntry, misclassified_only: bool, limit: int = GALLERY_SIZE
                  ) -> np.ndarray:
    """Indices of the highest-loss samples (optionally only the misclassified)."""
    loss = entry.table["loss"].to_numpy()
    order = np.argsort(-loss, kind="stable")
    if misclassified_only:
        order = order[~entry.table["correct"].to_numpy()[order]]
    return order[:limit]


def cell_selection(entry: RunEntry, click: object) -> dict | None:
    """The selection store for a click on the confusion matrix; ``None`` when the click
    data is malformed or names no cell."""
    point = first_point(click)
    if point is None or not isinstance(point.get("x"), str | int) \
            or not isinstance(point.get("y"), str | int):
        return None
    true, pred = str(point["y"]), str(point["x"])
    try:
        idx = cell_indices(entry, true, pred)
    except DashboardInputError:
        return None
    return {"run": entry.key, "ids": entry.session.dataset.sample_ids[idx].tolist(),
            "source": f"true {true} → predicted {pred}"}
