"""Error analysis (``/errors``): confusion matrix, per-class scores, worst samples."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc, html

from dashboard import figures, ids
from dashboard.components.gallery import sample_gallery
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.errors import cell_indices, cell_selection, most_confused, worst_indices
from dashboard.views.guard import selection_indices

dash.register_page(__name__, path="/errors", name="Errors", order=2)



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
@dash.callback(Output(ids.CONFUSION_MATRIX, "figure"), Output(ids.PER_CLASS_GRAPH, "figure"),
               Output(ids.HIGHEST_LOSS_GALLERY, "children"),
               Output(ids.MISCLASSIFIED_GALLERY, "children"),
               Output(ids.ERRORS_MESSAGE, "children"),
               Input(ids.RUN_STORE, "data"))
def draw_errors(run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        empty = figures.empty_figure()
        return empty, empty, None, None, error_alert(exc)
    t = entry.table
    names = entry.class_names
    worst = worst_indices(entry, False)
    wrong = worst_indices(entry, True)
    captions = [f"pred {t['pred_name'].iat[i]} / true {t['label_name'].iat[i]}" for i in wrong]
    return (figures.confusion_figure(t["label"].to_numpy(), t["pred"].to_numpy(), names),
            figures.per_class_figure(t["label"].to_numpy(), t["correct"].to_numpy(),
                                     t["loss"].to_numpy(), names),
            sample_gallery(entry, worst),
            sample_gallery(entry, wrong, captions, empty="No misclassified samples."),
            None)


@dash.callback(Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
               Input(ids.CONFUSION_MATRIX, "clickData"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def select_cell(click, run_store):
    """A clicked cell becomes the shared selection (its sample ids)."""
    try:
        store = cell_selection(get_entry(run_store), click)
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
    sel = selection if isinstance(selection, dict) and entry.same_run(selection.get("run")) else {}
    idx, note = selection_indices(entry, sel)
    source = sel.get("source") if isinstance(sel.get("source"), str) else "selection"
    source = source[:120] or "selection"
    if len(idx) == 0:
        worst = most_confused(entry)
        if worst is None:
            return html.Span("No misclassified samples.", className="text-muted small"), None
        idx = cell_indices(entry, *worst)
        source = f"most confused: true {worst[0]} → predicted {worst[1]}"
    order = idx[np.argsort(-entry.table["loss"].to_numpy()[idx], kind="stable")]
    title = html.Span([html.B(source), f": {len(idx):,} samples",
                       " (highest loss first)" if len(idx) > 1 else "",
                       html.Div(note, className="small text-warning") if note else ""])
    return title, sample_gallery(entry, order, limit=120)
