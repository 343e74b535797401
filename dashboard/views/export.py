"""Export helpers: the per-sample table (or a selection of it) and its download name."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.state import RunEntry
from dashboard.views.guard import selection_indices, selection_limit, unique_known_indices


def full_export_frame(entry: RunEntry) -> pd.DataFrame:
    """The run's whole export frame, built once per entry (kept in its bounded memo)."""
    from analysis.export import export_frame

    return entry.memo("export-frame", lambda: export_frame(entry.session, head=entry.head))


def export_table(entry: RunEntry, sample_ids: list[str] | None = None) -> pd.DataFrame:
    """The export frame of the run (unprefixed columns: the entry's head), or of
    ``sample_ids`` only (in table order; repeated and unknown ids dropped, at most
    :func:`~dashboard.views.guard.selection_limit` of them read)."""
    frame = full_export_frame(entry)
    if sample_ids is None:
        return frame
    idx, _ = unique_known_indices(list(sample_ids), entry.id_to_index, selection_limit(entry))
    return frame.iloc[np.sort(idx)]


def selection_export(entry: RunEntry, selection: object) -> tuple[pd.DataFrame, str | None]:
    """The export frame of the shared selection (see :func:`export_table`) and a note on
    what was dropped from it (``None`` when nothing was)."""
    idx, note = selection_indices(entry, selection)
    return full_export_frame(entry).iloc[np.sort(idx)], note


def to_csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text, text cells escaped against spreadsheet formulas
    (:func:`analysis.export.escape_formulas`)."""
    from analysis.export import escape_formulas

    return escape_formulas(frame).to_csv(index=False, float_format="%.6g")


def csv_name(entry: RunEntry, suffix: str = "") -> str:
    """A download file name from the run and dataset names (never a path)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in
                   f"{entry.session.name}-{entry.session.dataset.key}"
                   + (f"-{entry.head}" if len(entry.heads) > 1 else ""))
    return f"loupe-{safe}{suffix}.csv"
