"""Error analysis (``/errors``): confusion matrix, per-class scores, worst samples."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import figures, ids
from dashboard.components.gallery import sample_gallery
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.errors import (
    GALLERY_SIZE,
    cell_panel,
    cell_selection,
    confusion_view,
    worst_indices,
)

dash.register_page(__name__, path="/errors", name="Errors", order=4)

CELL_GALLERY_SIZE = 120

def layout(**_ignored) -> html.Div:
    return html.Div([
        html.Div(id=ids.ERRORS_MESSAGE),
        dbc.Row([
            dbc.Col(card("Confusion matrix: click a cell to see its samples",
                         dcc.Graph(id=ids.CONFUSION_MATRIX, config={"displayModeBar": False})),
                    lg=5),
            dbc.Col(card("Samples of the cell (or of the selection made on another page)",
                         html.Div(id=ids.CELL_TITLE, className="mb-2"),
                         html.Div(id=ids.CELL_GRID)), lg=7),
        ], className="g-3"),
        card("Accuracy and mean loss per class",
             dcc.Graph(id=ids.PER_CLASS_GRAPH, config={"displayModeBar": False})),
        dbc.Row([
            dbc.Col(card("Highest loss", html.Div(id=ids.HIGHEST_LOSS_GALLERY)), lg=6),
            dbc.Col(card("Misclassified: predicted vs actual (highest loss first)",
                         html.Div(id=ids.MISCLASSIFIED_GALLERY)), lg=6),
        ], className="g-3"),
    ])


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.PER_CLASS_GRAPH, "figure"),
               Output(ids.HIGHEST_LOSS_GALLERY, "children"),
               Output(ids.MISCLASSIFIED_GALLERY, "children"),
               Output(ids.ERRORS_MESSAGE, "children"),
               Input(ids.RUN_STORE, "data"))
def draw_errors(run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return figures.empty_figure(), None, None, error_alert(exc)
    t = entry.table
    return (figures.per_class_figure(t["label"].to_numpy(), t["correct"].to_numpy(),
                                     t["loss"].to_numpy(), entry.class_names),
            sample_gallery(entry, worst_indices(entry, False, None), limit=GALLERY_SIZE,
                           order="(highest loss first)"),
            sample_gallery(entry, worst_indices(entry, True, None), limit=GALLERY_SIZE,
                           empty="No misclassified samples.", order="(highest loss first)"),
            None)


@dash.callback(Output(ids.CONFUSION_MATRIX, "figure"),
               Input(ids.SELECTION_STORE, "data"), Input(ids.RUN_STORE, "data"))
def draw_matrix(selection, run_store):
    """The matrix of the shared selection (all samples without one), the shown cell outlined."""
    try:
        return confusion_view(get_entry(run_store), selection)
    except DashboardInputError:  # draw_errors shows the message
        return figures.empty_figure()


@dash.callback(Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
               Input(ids.CONFUSION_MATRIX, "clickData"), State(ids.RUN_STORE, "data"),
               State(ids.SELECTION_STORE, "data"), prevent_initial_call=True)
def select_cell(click, run_store, selection):
    """A clicked cell becomes the shared selection (its sample ids, within the selection
    the matrix counts)."""
    try:
        store = cell_selection(get_entry(run_store), click, selection)
    except DashboardInputError:
        store = None
    if store is None:
        raise dash.exceptions.PreventUpdate
    return store


@dash.callback(Output(ids.CELL_TITLE, "children"), Output(ids.CELL_GRID, "children"),
               Input(ids.SELECTION_STORE, "data"), Input(ids.RUN_STORE, "data"))
def show_cell(selection, run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return error_alert(exc), None
    source, order, note, empty = cell_panel(entry, selection)
    warning = html.Div(note, className="small text-warning") if note else ""
    if empty is not None:
        return html.Span([html.Span(empty, id=ids.CELL_EMPTY), warning],
                         className="text-muted small"), None
    title = html.Span([html.B(source), f": {len(order):,} samples",
                       " (highest loss first)" if len(order) > 1 else "", warning])
    return title, sample_gallery(entry, order, limit=CELL_GALLERY_SIZE)
