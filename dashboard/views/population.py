"""Population map helpers: controls, colour and size specs, patches, selection summary.

Used by :mod:`dashboard.pages.population` (and the sample page's mini map);
no callbacks here, so everything is testable as plain functions.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
import numpy as np
from dash import Patch, html

from dashboard import figures
from dashboard.columns import (
    check_column,
    color_columns,
    column_title,
    is_bool_column,
    is_class_column,
    numeric_columns,
)
from dashboard.figures.population import (
    SIZE_RULE,
    key_slots,
    legend_keys,
    legend_layout,
    percentile_rank,
)
from dashboard.state import RunEntry
from dashboard.views.guard import (
    checked_choice,
    event_points,
    first_point,
    selection_indices,
    selection_limit,
)

NO_SIZE = "none"
SIMILARS_K = 10


def control_options(entry: RunEntry, query: dict | None) -> tuple:
    """Options and validated values of the three controls.

    Returns ``(projection options, projection, colour options, colour, size
    options, size)``; raises :class:`DashboardInputError` for an unknown
    column or projection in ``query`` (the caller shows it and uses defaults).
    """
    table = entry.table
    query = query or {}
    projections = list(entry.session.projections)
    colors = color_columns(table)
    sizes = [NO_SIZE] + numeric_columns(table)
    proj = check_column(query.get("projection"), projections, projections[0], "projection")
    color = check_column(query.get("color"), colors, "label", "colour")
    size = check_column(query.get("size"), sizes, "loss" if "loss" in sizes else NO_SIZE, "size")
    return ([{"label": p.upper().replace("TSNE", "t-SNE"), "value": p} for p in projections], proj,
            [{"label": c, "value": c} for c in colors], color,
            [{"label": s, "value": s} for s in sizes], size)


def make_color(entry: RunEntry, column: str) -> figures.ColorSpec:
    """The :class:`~dashboard.figures.ColorSpec` of a table column."""
    table = entry.table
    check_column(column, color_columns(table), "label", "colour")
    values = table[column].to_numpy()
    if is_class_column(column):
        return figures.color_spec(values, "class", column, entry.class_names)
    if is_bool_column(column, table):
        return figures.color_spec(values, "bool", column)
    return figures.color_spec(values, "numeric", column_title(column))


def make_sizes(entry: RunEntry, column: str):
    table = entry.table
    check_column(column, [NO_SIZE] + numeric_columns(table), NO_SIZE, "size")
    return figures.size_spec(None if column == NO_SIZE else table[column].to_numpy())


def size_note(column: str | None) -> str:
    """What the marker size means (shown under the size control)."""
    if not column or column == NO_SIZE:
        return "all points the same size"
    return SIZE_RULE.format(column=column)


def size_rank(entry: RunEntry, column: str | None, index: int) -> str | None:
    """``loss 0.0123: percentile 43`` for the hover of sample ``index`` (``None``: no size)."""
    if not column or column == NO_SIZE or column not in numeric_columns(entry.table):
        return None
    values = entry.table[column].to_numpy(dtype=np.float64)
    ok = np.isfinite(values)
    if not ok[index]:
        return f"size by {column}: no value"
    rank = percentile_rank(values[ok])[int(ok[:index].sum())]
    return f"size by {column}: percentile {100 * rank:.0f}"


def highlight_of(entry: RunEntry, sample_store: dict | None) -> tuple[list[int], int | None]:
    """The clicked sample (if it belongs to this run) and its similars."""
    if not isinstance(sample_store, dict) or not entry.same_run(sample_store.get("run")):
        return [], None
    focus = entry.index_of(sample_store.get("id"))
    similar, _ = entry.session.similars(focus, SIMILARS_K)
    return [int(i) for i in similar], focus


def checked_projection(entry: RunEntry, projection: object) -> str:
    """``projection`` when the run has it (``umap``, ``tsne``), else a DashboardInputError."""
    return checked_choice(projection, list(entry.session.projections), "projection")


def map_figure(entry: RunEntry, projection: str, color: str, size: str,
               sample_store: dict | None = None) -> dict:
    """The whole population figure for the current controls (a plotly figure dict).

    The class traces of each (projection, colour, size) are built once per run
    entry (its bounded memo); only the overlay (trace ``C``: the clicked sample
    and its similars) is built per request.
    """
    projection = checked_projection(entry, projection)
    color = checked_choice(color, color_columns(entry.table), "colour column")
    size = checked_choice(size, [NO_SIZE] + numeric_columns(entry.table), "size column")
    coords = entry.session.projection(projection)

    def base() -> dict:
        return figures.population_figure(coords, entry.members, entry.class_names,
                                         make_color(entry, color), make_sizes(entry, size),
                                         projection, [], None).to_plotly_json()

    classes = entry.memo(("map", projection, color, size), base)
    highlight, focus = highlight_of(entry, sample_store)
    data = list(classes["data"])
    data[len(entry.members)] = figures.highlight_trace(coords, highlight, focus).to_plotly_json()
    return {**classes, "data": data}


def context_map_figure(entry: RunEntry, sample_store: dict | None, max_points: int = 5000
                       ) -> dict:
    """A light map for the sample page: every ``k``-th sample of each class, plus the overlay.

    Only context for the highlighted sample and its similars (the overlay is
    exact); not clickable, so its traces need not map back to sample ids. The
    context (all but the overlay, trace ``C``) is built once per run entry.
    """
    projection = entry.session.projections[0]
    coords = entry.session.projection(projection)

    def base() -> dict:
        step = max(1, -(-len(coords) // max_points))
        members = [m[::step] for m in entry.members]
        labels = figures.color_spec(entry.table["label"].to_numpy(), "class", "label",
                                    entry.class_names)
        fig = figures.population_figure(coords, members, entry.class_names, labels,
                                        figures.size_spec(None), projection, [], None)
        fig.update_layout(showlegend=False, dragmode="zoom",
                          margin={"l": 50, "r": 10, "t": 10, "b": 45})
        out = fig.to_plotly_json()
        # No legend here: the legend-key traces go, the overlay stays the last trace.
        return {**out, "data": out["data"][:len(entry.members) + 1]}

    context = entry.memo(("context-map", projection, max_points), base)
    highlight, focus = highlight_of(entry, sample_store)
    overlay = figures.highlight_trace(coords, highlight, focus).to_plotly_json()
    data = list(context["data"])
    data[len(entry.members)] = overlay
    return {**context, "data": data}


def recolor_patch(entry: RunEntry, color: str) -> Patch:
    """Only ``marker.color`` of each class trace, the colour axis and the legend (which
    class traces it lists, the key traces after the overlay): no coordinates."""
    spec = make_color(entry, color)
    per_trace, axis = figures.recolor_payload(spec, entry.members)
    patch = Patch()
    for i, values in enumerate(per_trace):
        patch["data"][i]["marker"]["color"] = values
        patch["data"][i]["showlegend"] = spec.per_class
    first = len(entry.members) + 1
    for k, key in enumerate(legend_keys(spec, key_slots(len(entry.members)))):
        for prop, value in key.items():
            patch["data"][first + k][prop] = value
    patch["layout"]["coloraxis"] = axis
    patch["layout"]["legend"] = legend_layout(spec)
    return patch


def resize_patch(entry: RunEntry, size: str) -> Patch:
    patch = Patch()
    for i, values in enumerate(figures.resize_payload(make_sizes(entry, size), entry.members)):
        patch["data"][i]["marker"]["size"] = values
    return patch


def highlight_patch(entry: RunEntry, projection: str, sample_store: dict | None) -> Patch:
    """Replace the overlay trace (index ``C``) with the clicked sample and its similars."""
    highlight, focus = highlight_of(entry, sample_store)
    trace = figures.highlight_trace(entry.session.projection(checked_projection(entry, projection)),
                                    highlight, focus)
    patch = Patch()
    patch["data"][len(entry.members)] = trace.to_plotly_json()
    return patch


def clicked_index(entry: RunEntry, click: object) -> int | None:
    """The sample index of the first point of click or hover data; ``None`` when the data
    is malformed or names no sample of the map (negative indices included)."""
    point = first_point(click)
    found = entry.points_to_indices([point]) if point is not None else []
    return int(found[0]) if len(found) else None


def selection_from_points(entry: RunEntry, selected: object) -> dict:
    """The selection store for a box/lasso selection (``selectedData``).

    At most :func:`selection_limit` samples are kept (the first ones); the
    store's ``note`` then says so, for the selection summary.
    """
    limit = selection_limit(entry)
    points = event_points(selected)
    # The map has one point per sample (+ a small overlay): more is not a real selection.
    idx = np.unique(entry.points_to_indices(points[:limit + 64]))
    note = ""
    if len(idx) > limit or len(points) > limit + 64:
        idx = idx[:limit]
        note = f"Only the first {limit:,} samples of the selection are kept (the limit)."
    return {"run": entry.key, "ids": entry.session.dataset.sample_ids[idx].tolist(),
            "source": "map selection", "note": note}


def selection_view(entry: RunEntry, selection: object) -> tuple[html.Div, np.ndarray]:
    """The summary of the shared selection and its indices, highest loss first.

    Bad stores (repeated or unknown ids, too many) are cleaned and the summary
    says what was dropped.
    """
    idx, note = selection_indices(entry, selection)
    stored = selection.get("note") if isinstance(selection, dict) else None
    notes = [n for n in (stored if isinstance(stored, str) else None, note) if n]
    order = idx[np.argsort(-entry.table["loss"].to_numpy()[idx], kind="stable")]
    return selection_summary(entry, idx, " ".join(notes)[:300] or None), order


def selection_summary(entry: RunEntry, indices: np.ndarray, note: str | None = None
                      ) -> html.Div:
    """Count, accuracy, mean loss and class mix of the selected samples (and a note on
    what was dropped from the selection, if anything)."""
    warning = html.Div(note, className="small text-warning mb-1 loupe-selection-note") \
        if note else None
    if len(indices) == 0:
        if warning is not None:
            return warning
        return html.Div("Drag a box or lasso on the map to select samples.",
                        className="text-muted small")
    rows = entry.table.iloc[indices]
    mix = rows["label_name"].value_counts()
    badges = [dbc.Badge(f"{name}: {n}", color="light", text_color="dark", className="me-1 border")
              for name, n in mix.items()]
    return html.Div([part for part in [
        warning,
        html.Div([html.B(f"{len(rows):,}"), " samples · accuracy ",
                  html.B(f"{rows['correct'].mean():.1%}"), " · mean loss ",
                  html.B(f"{rows['loss'].mean():.3f}"), " nats"], className="mb-1"),
        html.Div(["class mix: ", *badges], className="small mb-2"),
    ] if part is not None], id="selection-stats")
