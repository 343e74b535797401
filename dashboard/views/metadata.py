"""Loss-vs-metadata helpers: validated column choices."""

from __future__ import annotations

from dashboard.state import check_column

DEFAULT_COLUMN = "pixel_dist_label"  # the curve that should rise


def metadata_controls(columns: list[str], query: dict | None) -> tuple:
    """``(options, column, x, y)`` validated against the run's numeric columns."""
    query = query or {}
    default = DEFAULT_COLUMN if DEFAULT_COLUMN in columns else columns[0]
    col = check_column(query.get("column"), columns, default, "metadata")
    x = check_column(query.get("x"), columns, default, "scatter x")
    y = check_column(query.get("y"), columns, "loss" if "loss" in columns else columns[0],
                     "scatter y")
    return [{"label": c, "value": c} for c in columns], col, x, y
