"""Error analysis helpers: confusion cells and the worst samples."""

from __future__ import annotations

import numpy as np

from dashboard.state import DashboardInputError, RunEntry

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
