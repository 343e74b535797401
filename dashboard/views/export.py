"""Export helpers: the per-sample table (or a selection of it) and its download name."""

from __future__ import annotations

import pandas as pd

from dashboard.state import RunEntry


def export_table(entry: RunEntry, sample_ids: list[str] | None = None) -> pd.DataFrame:
    """The export frame of the run (unprefixed columns: the entry's head), or of
    ``sample_ids`` only (in table order)."""
    from analysis.export import export_frame

    frame = export_frame(entry.session, head=entry.head)
    if sample_ids is None:
        return frame
    return frame.iloc[sorted(entry.indices_of(sample_ids).tolist())]


def csv_name(entry: RunEntry, suffix: str = "") -> str:
    """A download file name from the run and dataset names (never a path)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in
                   f"{entry.session.name}-{entry.session.dataset.key}"
                   + (f"-{entry.head}" if len(entry.heads) > 1 else ""))
    return f"loupe-{safe}{suffix}.csv"
