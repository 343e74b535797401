"""Loss-vs-metadata helpers: validated column choices."""

from __future__ import annotations

from dashboard.columns import check_column
from dashboard.state import DashboardInputError, get_registry, run_key_of

DEFAULT_COLUMN = "pixel_dist_label"  # the curve that should rise
MAX_BINS = 100


def checked_bins(bins: object, default: int = 20) -> int:
    """The slider's bin count as an int in 1..MAX_BINS (``default`` when unset)."""
    if bins in (None, ""):
        return default
    if isinstance(bins, bool) or not isinstance(bins, int | float) or not 1 <= bins <= MAX_BINS:
        raise DashboardInputError(f"Bins must be a number from 1 to {MAX_BINS}.")
    return int(bins)


def metadata_controls(columns: list[str], query: dict | None) -> tuple:
    """``(options, column, x, y)`` validated against the run's numeric columns."""
    query = query or {}
    default = DEFAULT_COLUMN if DEFAULT_COLUMN in columns else columns[0]
    col = check_column(query.get("column"), columns, default, "metadata")
    x = check_column(query.get("x"), columns, default, "scatter x")
    y = check_column(query.get("y"), columns, "loss" if "loss" in columns else columns[0],
                     "scatter y")
    return [{"label": c, "value": c} for c in columns], col, x, y


def clicked_sample_href(run_store: dict | None, click: object) -> str | None:
    """The Sample page of the scatter point in ``click`` (``None``: no sample, a malformed
    click or a stale run)."""
    from dashboard.components.gallery import sample_href
    from dashboard.views.population import clicked_index

    try:
        entry = get_registry().get(run_key_of(run_store))
    except DashboardInputError:
        return None
    i = clicked_index(entry, click)
    return None if i is None else sample_href(entry.session.dataset.sample_ids[i])
