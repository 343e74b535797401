"""Export (``/export``): the per-sample table, or the current selection, as CSV."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import ids
from dashboard.components.messages import card, error_alert, info_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.export import csv_name, export_table, selection_export, to_csv_text

dash.register_page(__name__, path="/export", name="Export", order=9)


def layout(**_ignored) -> html.Div:
    return html.Div([
        html.Div(id=ids.EXPORT_MESSAGE),
        card("Export the per-sample table",
             html.P(["Columns as in ", html.Code("python -m analysis export"),
                     ": one row per sample with its stable id, label, prediction, loss, "
                     "uncertainty, centroid distances, map coordinates and nearest neighbours."],
                    className="small text-muted"),
             html.Div(id=ids.EXPORT_INFO, className="mb-3"),
             dbc.Button("Download the full table (CSV)", id=ids.EXPORT_CSV, color="primary",
                        className="me-2"),
             dbc.Button("Download the selection (CSV)", id=ids.EXPORT_SELECTION_CSV,
                        color="secondary"),
             dcc.Download(id=ids.EXPORT_DOWNLOAD), dcc.Download(id=ids.EXPORT_SELECTION_DOWNLOAD)),
    ])


@dash.callback(Output(ids.EXPORT_INFO, "children"), Output(ids.EXPORT_SELECTION_CSV, "disabled"),
               Output(ids.EXPORT_MESSAGE, "children"),
               Input(ids.RUN_STORE, "data"), Input(ids.SELECTION_STORE, "data"))
def describe_export(run_store, selection):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return None, True, error_alert(exc)
    n_sel = len(entry.selected_ids(selection))
    info = html.Div([html.Div([html.B(entry.label), (f": {len(entry.table):,} samples, "
                               f"{len(entry.table.columns) + 2} columns")]),
                     html.Div(f"Current selection: {n_sel:,} samples" if n_sel else
                              "No selection yet: select points on the map or click a "
                              "confusion-matrix cell.")])
    return info, n_sel == 0, None


@dash.callback(Output(ids.EXPORT_DOWNLOAD, "data"),
               Output(ids.EXPORT_MESSAGE, "children", allow_duplicate=True),
               Input(ids.EXPORT_CSV, "n_clicks"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def download_table(n_clicks, run_store):
    if not n_clicks:  # a page render, not a click: no download
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return dash.no_update, error_alert(exc)
    return dcc.send_string(to_csv_text(export_table(entry)), csv_name(entry)), None


@dash.callback(Output(ids.EXPORT_SELECTION_DOWNLOAD, "data"),
               Output(ids.EXPORT_MESSAGE, "children", allow_duplicate=True),
               Input(ids.EXPORT_SELECTION_CSV, "n_clicks"), State(ids.RUN_STORE, "data"),
               State(ids.SELECTION_STORE, "data"), prevent_initial_call=True)
def download_selection(n_clicks, run_store, selection):
    if not n_clicks:  # a page render, not a click: no download
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return dash.no_update, error_alert(exc)
    frame, note = selection_export(entry, selection)
    return (dcc.send_string(to_csv_text(frame), csv_name(entry, "-selection")),
            info_alert(note) if note else None)
