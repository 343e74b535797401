"""Loss vs metadata (``/metadata``): binned mean loss against any column, and a scatter."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import figures, ids
from dashboard.columns import check_column, column_title, numeric_columns
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.guard import safe_message
from dashboard.views.metadata import checked_bins, clicked_sample_href, metadata_controls

dash.register_page(__name__, path="/metadata", name="Loss vs metadata", order=6)

QUERY_STORE = "metadata-query"
RUN_SEEN = "metadata-run"  # the run store as this page last saw it: redraws on a head switch


def layout(column: str | None = None, x: str | None = None, y: str | None = None,
           **_ignored) -> html.Div:
    """``?column=`` presets the binned column, ``?x=&y=`` the scatter."""
    binned_controls = dbc.Row([
        dbc.Col([dbc.Label("metadata column", className="small mb-0"),
                 dcc.Dropdown(id=ids.METADATA_COLUMN, clearable=False)], md=5),
        dbc.Col([dbc.Label("bins", className="small mb-0"),
                 dcc.Slider(id=ids.METADATA_BINS, min=5, max=40, step=5, value=20,
                            marks={v: str(v) for v in (5, 10, 20, 30, 40)})], md=4),
        dbc.Col(dbc.Checklist(id=ids.METADATA_PER_CLASS, switch=True,
                              options=[{"label": "per class", "value": "per_class"}], value=[]),
                md=3, className="pt-3"),
    ], className="g-2 align-items-center")
    scatter_controls = dbc.Row([
        dbc.Col([dbc.Label("x", className="small mb-0"),
                 dcc.Dropdown(id=ids.SCATTER_X, clearable=False)], md=6),
        dbc.Col([dbc.Label("y", className="small mb-0"),
                 dcc.Dropdown(id=ids.SCATTER_Y, clearable=False)], md=6),
    ], className="g-2")
    return html.Div([
        dcc.Store(id=QUERY_STORE, data={"column": column, "x": x, "y": y}),
        dcc.Store(id=RUN_SEEN),
        html.Div(id=ids.METADATA_MESSAGE),
        dbc.Row([
            dbc.Col(card("Average loss against a metadata column (bars: samples per bin)",
                         binned_controls,
                         dcc.Graph(id=ids.METADATA_GRAPH, config={"displaylogo": False})), lg=7),
            dbc.Col(card("Any two columns, coloured by ground truth (click a point to open "
                         "its sample)", scatter_controls,
                         dcc.Graph(id=ids.SCATTER_GRAPH, config={"displaylogo": False})),
                    lg=5),
        ], className="g-3"),
    ])


@dash.callback(Output(ids.METADATA_COLUMN, "options"), Output(ids.METADATA_COLUMN, "value"),
               Output(ids.SCATTER_X, "options"), Output(ids.SCATTER_X, "value"),
               Output(ids.SCATTER_Y, "options"), Output(ids.SCATTER_Y, "value"),
               Output(ids.METADATA_MESSAGE, "children"), Output(RUN_SEEN, "data"),
               Input(ids.RUN_STORE, "data"), State(QUERY_STORE, "data"),
               State(ids.METADATA_COLUMN, "value"), State(ids.SCATTER_X, "value"),
               State(ids.SCATTER_Y, "value"))
def init_metadata(run_store, query, column, x, y):
    """Controls for the run (and head); the choices made on the page are kept."""
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return [], None, [], None, [], None, error_alert(exc), run_store
    columns = numeric_columns(entry.table)
    chosen = {k: v for k, v in {"column": column, "x": x, "y": y}.items() if v in columns}
    message = None
    try:
        opts, col, x, y = metadata_controls(columns, {**(query or {}), **chosen})
    except DashboardInputError as exc:
        opts, col, x, y = metadata_controls(columns, chosen)
        message = error_alert(exc)
    return opts, col, opts, x, opts, y, message, run_store


@dash.callback(Output(ids.METADATA_GRAPH, "figure"),
               Input(ids.METADATA_COLUMN, "value"), Input(ids.METADATA_BINS, "value"),
               Input(ids.METADATA_PER_CLASS, "value"), Input(RUN_SEEN, "data"))
def draw_binned(column, bins, per_class, run_store):
    if not column:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        check_column(column, numeric_columns(entry.table), column, "metadata")
        bins = checked_bins(bins)
    except DashboardInputError as exc:
        return figures.empty_figure(safe_message(exc))
    t = entry.table
    binned = figures.binned_loss(t[column].to_numpy(), t["loss"].to_numpy(),
                                 t["label"].to_numpy(), bins)
    return figures.loss_vs_metadata_figure(binned, column_title(column), entry.class_names,
                                           "per_class" in (per_class or []))


@dash.callback(Output(ids.SCATTER_GRAPH, "figure"),
               Input(ids.SCATTER_X, "value"), Input(ids.SCATTER_Y, "value"),
               Input(RUN_SEEN, "data"))
def draw_scatter(x, y, run_store):
    if not x or not y:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        cols = numeric_columns(entry.table)
        check_column(x, cols, x, "scatter x")
        check_column(y, cols, y, "scatter y")
    except DashboardInputError as exc:
        return figures.empty_figure(safe_message(exc))
    t = entry.table
    return figures.scatter_figure(t[x].to_numpy(), t[y].to_numpy(), t["label"].to_numpy(),
                                  entry.class_names, column_title(x), column_title(y),
                                  entry.session.dataset.sample_ids)


@dash.callback(Output(ids.URL, "href", allow_duplicate=True),
               Input(ids.SCATTER_GRAPH, "clickData"), State(RUN_SEEN, "data"),
               prevent_initial_call=True)
def open_clicked(click, run_store):
    """A clicked point opens its Sample page (traces are classes, as on the map)."""
    href = clicked_sample_href(run_store, click)
    if href is None:  # nothing, malformed or a stale run: nothing to open
        raise dash.exceptions.PreventUpdate
    return href
