"""Error analysis helpers: the confusion matrix of the current selection, its cells and
the worst samples.

The selection store written by a cell click is the shared one (other pages and
the export follow it) plus ``"cell": [true name, predicted name]`` and, when
the click was made on the matrix of an earlier selection, ``"base"``: that
selection (``{"ids", "source"}``), which the matrix keeps counting.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from dashboard import figures
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import first_point, selection_indices

GALLERY_SIZE = 40


def cell_indices(entry: RunEntry, true_name: str, pred_name: str,
                 within: np.ndarray | None = None) -> np.ndarray:
    """``(M,)`` indices of samples of class ``true_name`` predicted as ``pred_name``
    (only among ``within``, sorted, when given)."""
    names = [str(n) for n in entry.class_names]
    if true_name not in names or pred_name not in names:
        raise DashboardInputError(f"No class named '{true_name}' or '{pred_name}'.")
    t, p = names.index(true_name), names.index(pred_name)
    table = entry.table
    found = np.flatnonzero((table["label"].to_numpy() == t) & (table["pred"].to_numpy() == p))
    return found if within is None else np.intersect1d(found, within)


def most_confused(entry: RunEntry) -> tuple[str, str] | None:
    """``(true name, predicted name)`` of the largest off-diagonal cell; ``None`` if no error."""
    t = entry.table
    wrong = t[~t["correct"].to_numpy()]
    if wrong.empty:
        return None
    true, pred = wrong.groupby(["label_name", "pred_name"]).size().idxmax()
    return str(true), str(pred)


def worst_indices(entry: RunEntry, misclassified_only: bool, limit: int | None = GALLERY_SIZE
                  ) -> np.ndarray:
    """Indices of the highest-loss samples (optionally only the misclassified), at most
    ``limit`` (``None``: all of them, for a gallery that says how many it shows)."""
    loss = entry.table["loss"].to_numpy()
    order = np.argsort(-loss, kind="stable")
    if misclassified_only:
        order = order[~entry.table["correct"].to_numpy()[order]]
    return order if limit is None else order[:limit]


def _own(entry: RunEntry, selection: object) -> dict:
    """The selection store when it belongs to ``entry``'s run, else ``{}``."""
    if isinstance(selection, Mapping) and entry.same_run(selection.get("run")):
        return dict(selection)
    return {}


def clicked_cell(entry: RunEntry, selection: object) -> tuple[str, str] | None:
    """``(true name, predicted name)`` of the cell a selection came from, if any."""
    cell = _own(entry, selection).get("cell")
    names = [str(n) for n in entry.class_names]
    if isinstance(cell, list | tuple) and len(cell) == 2 and all(c in names for c in cell):
        return str(cell[0]), str(cell[1])
    return None


def matrix_base(entry: RunEntry, selection: object) -> tuple[np.ndarray | None, str]:
    """The samples the matrix counts: ``(indices or None for all, their source)``.

    A cell's selection keeps counting the selection it was clicked in (its
    ``base``); any other non-empty selection is counted itself.
    """
    sel = _own(entry, selection)
    if clicked_cell(entry, sel) is not None:
        base = sel.get("base")
        if not isinstance(base, Mapping):
            return None, ""
        sel = {**base, "run": sel.get("run")}
    idx, _ = selection_indices(entry, sel)
    if len(idx) == 0:
        return None, ""
    source = sel.get("source") if isinstance(sel.get("source"), str) else ""
    return np.sort(idx), source[:120]


def shown_cell(entry: RunEntry, selection: object) -> tuple[str, str] | None:
    """The cell whose samples the page shows: the clicked one, or with no selection at
    all the most confused one; ``None`` when a selection (not a cell) is shown."""
    cell = clicked_cell(entry, selection)
    if cell is not None:
        return cell
    idx, _ = selection_indices(entry, _own(entry, selection))
    return most_confused(entry) if len(idx) == 0 else None


def confusion_view(entry: RunEntry, selection: object) -> go.Figure:
    """The confusion matrix of the selection (all samples without one), the shown cell
    outlined, titled ``N selected samples`` when a selection is counted."""
    base, source = matrix_base(entry, selection)
    t = entry.table
    rows = slice(None) if base is None else base
    names = [str(n) for n in entry.class_names]
    cell = shown_cell(entry, selection)
    highlight = None if cell is None else (names.index(cell[0]), names.index(cell[1]))
    title = None if base is None else \
        f"{len(base):,} selected samples" + (f" ({source})" if source else "")
    return figures.confusion_figure(t["label"].to_numpy()[rows], t["pred"].to_numpy()[rows],
                                    names, highlight, title)


def cell_selection(entry: RunEntry, click: object, current: object = None) -> dict | None:
    """The selection store for a click on the confusion matrix; ``None`` when the click
    data is malformed or names no cell.

    Within a selection (``current``, what the matrix counts) the cell holds only
    the selected samples of that cell, and the store keeps the selection as its
    ``base``.
    """
    point = first_point(click)
    if point is None or not isinstance(point.get("x"), str | int) \
            or not isinstance(point.get("y"), str | int):
        return None
    true, pred = str(point["y"]), str(point["x"])
    base, source = matrix_base(entry, current)
    try:
        idx = cell_indices(entry, true, pred, base)
    except DashboardInputError:
        return None
    store = {"run": entry.key, "ids": entry.session.dataset.sample_ids[idx].tolist(),
             "source": f"true {true} → predicted {pred}", "cell": [true, pred]}
    if base is not None:
        store["base"] = {"ids": entry.session.dataset.sample_ids[base].tolist(),
                         "source": source}
    return store


def cell_panel(entry: RunEntry, selection: object) -> tuple[str | None, np.ndarray, str | None,
                                                            str | None]:
    """What the samples panel shows: ``(source, indices highest loss first, note, empty)``.

    ``empty`` is the sentence shown instead of thumbnails when there are none
    (``No samples with true 7 predicted as 1.``); ``source`` is ``None`` then.
    """
    sel = _own(entry, selection)
    idx, note = selection_indices(entry, sel)
    cell = clicked_cell(entry, sel)
    source = sel.get("source") if isinstance(sel.get("source"), str) else ""
    source = source[:120] or "selection"
    if cell is not None and len(idx) == 0:
        base, _ = matrix_base(entry, sel)
        among = "" if base is None else f" among the {len(base):,} selected samples"
        return None, idx, note, f"No samples with true {cell[0]} predicted as {cell[1]}{among}."
    if len(idx) == 0:
        worst = most_confused(entry)
        if worst is None:
            return None, idx, note, "No misclassified samples."
        idx = cell_indices(entry, *worst)
        source = f"most confused: true {worst[0]} → predicted {worst[1]}"
    order = idx[np.argsort(-entry.table["loss"].to_numpy()[idx], kind="stable")]
    return source, order, note, None
