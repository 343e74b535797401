"""Experiments (``/experiments``): every run under ``--runs-dir`` side by side, and the
per-sample diff of two of them (flips, McNemar, the flipped samples on run B's map)."""

from __future__ import annotations

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, ctx, dcc, html

from core.errors import LoupeError
from dashboard import figures, ids
from dashboard.components.messages import card, error_alert, info_alert
from dashboard.state import DashboardInputError, get_registry
from dashboard.views.experiments import (
    SELECT_HINT,
    clicked_index,
    curves_figure,
    diff_head_choices,
    diff_map,
    diff_view,
    open_flipped,
    pair_store,
    shown_runs,
    summaries_view,
    table_caption,
    table_columns,
    table_records,
    table_styles,
    ticked_runs,
)
from dashboard.views.experiments_catalog import get_catalog
from dashboard.views.guard import event_points, safe_message

dash.register_page(__name__, path="/experiments", name="Experiments", order=8)

LOAD_STORE = "experiments-load"
MAP_HEIGHT = "480px"
GRAPH_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["toImage", "sendDataToCloud"]}
# Zoom, pan and reset only: a short mode bar leaves the top row to the legend.
MAP_CONFIG = {"displaylogo": False, "scrollZoom": True,
              "modeBarButtonsToRemove": ["toImage", "sendDataToCloud", "select2d", "lasso2d",
                                         "zoomIn2d", "zoomOut2d", "autoScale2d"]}


def layout(**_ignored) -> html.Div:
    table = dag.AgGrid(
        id=ids.RUNS_TABLE, columnDefs=table_columns(), rowData=[], getRowId="params.data.id",
        columnSize="autoSize", selectedRows=[], className="loupe-runs-grid",
        defaultColDef={"resizable": True, "wrapHeaderText": True, "autoHeaderHeight": True,
                       "suppressMovable": True},
        # Rows in the DOM in display order (sorted), the grid as tall as its rows.
        dashGridOptions={"theme": {"function": "themeAlpine.withParams({ fontSize: 13 })"},
                         "rowSelection": {"mode": "multiRow", "headerCheckbox": False},
                         # The tick boxes first, pinned with the run names.
                         "selectionColumnDef": {"pinned": "left"},
                         "ensureDomOrder": True, "domLayout": "autoHeight",
                         "suppressCellFocus": True, "rowHeight": 32,
                         # A dozen columns: all rendered (autoSize measures every one).
                         "suppressColumnVirtualisation": True},
        style={"width": "100%"})
    swap = dbc.Button("swap A and B", id=ids.RUNS_SWAP, size="sm", color="secondary",
                      outline=True, disabled=True, className="ms-2")
    head = html.Div([html.Span("head", className="small text-muted ms-3 me-2"),
                     dcc.Dropdown(id=ids.RUNS_DIFF_HEAD, options=[], value=None,
                                  clearable=False, searchable=False, style={"width": "9rem"})],
                    id=ids.RUNS_DIFF_HEAD_BOX, className="align-items-center",
                    style={"display": "none"})
    # Shown while the diff is computed (both runs' inference: half a minute the first time).
    pending = html.Div([dbc.Spinner(size="sm", spinner_class_name="me-2"),
                        html.Span(id=ids.RUNS_DIFF_PENDING_TEXT)], id=ids.RUNS_DIFF_PENDING,
                       style={"display": "none"}, className="small text-primary mb-2")
    # Shown while the map's background job runs (its progress text inside).
    status = html.Div([dbc.Spinner(size="sm", spinner_class_name="me-2"),
                       html.Span(id=ids.RUNS_DIFF_STATUS)], id=ids.RUNS_DIFF_SPINNER,
                      style={"display": "none"}, className="small text-muted mb-1")
    runs = card("Runs: tick runs to overlay their curves, exactly two to diff them; click a "
                "header to sort", html.Div(id=ids.RUNS_CAPTION, className="small text-muted mb-2"),
                table)
    curves = card("Loss and accuracy per epoch of the ticked runs (all when none is ticked); "
                  "solid: train, dashed: test",
                  dcc.Graph(id=ids.RUNS_CURVES, config=GRAPH_CONFIG))
    diff_map = [html.Div("Run B's UMAP: flipped samples large and coloured by the loss change; "
                         "click one to open it", className="small mb-1"), status,
                dcc.Graph(id=ids.RUNS_DIFF, config=MAP_CONFIG, figure=figures.empty_figure(),
                          style={"height": MAP_HEIGHT})]
    diff = card("Per-sample diff: which samples run B gets right or wrong that run A did not",
                html.Div([html.Div(id=ids.RUNS_PAIR), swap, head],
                         className="d-flex align-items-center mb-2"),
                pending,
                dcc.Loading(html.Div(html.Div(SELECT_HINT, className="text-muted small"),
                                     id=ids.RUNS_DIFF_SUMMARY), delay_show=300),
                dbc.Row([dbc.Col(html.Div(id=ids.RUNS_DIFF_GALLERY), lg=5),
                         dbc.Col(diff_map, lg=7)], className="g-3"))
    summaries = card("Model summaries (torchinfo): click a run to unfold",
                     html.Div(id=ids.RUNS_SUMMARIES))
    return html.Div([
        dcc.Store(id=LOAD_STORE, data=True),
        dcc.Store(id=ids.RUNS_PAIR_STORE, data={"order": [], "a": None, "b": None}),
        dcc.Store(id=ids.RUNS_DIFF_READY),
        html.Div(id=ids.EXPERIMENTS_MESSAGE),
        html.Div([runs, curves, diff, summaries], id=ids.RUNS_BODY),
    ])


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.RUNS_TABLE, "rowData"), Output(ids.RUNS_TABLE, "columnDefs"),
               Output(ids.RUNS_CAPTION, "children"), Output(ids.EXPERIMENTS_MESSAGE, "children"),
               Output(ids.RUNS_BODY, "style"), Input(LOAD_STORE, "data"))
def load_runs(_load):
    """The runs table (mult-adds computed once per model and app); without runs, only a
    message saying how to make some."""
    catalog = get_catalog()
    try:
        frame = catalog.table()
    except DashboardInputError as exc:
        return [], table_columns(), None, info_alert(str(exc)), {"display": "none"}
    return (table_records(frame), table_styles(frame),
            table_caption(frame, catalog.runs_dir_name), None, {})


@dash.callback(Output(ids.RUNS_PAIR_STORE, "data"), Input(ids.RUNS_TABLE, "selectedRows"),
               Input(ids.RUNS_SWAP, "n_clicks"), State(ids.RUNS_PAIR_STORE, "data"),
               prevent_initial_call=True)
def choose_pair(selected, _swaps, current):
    """Ticked runs in ticking order; A and B when exactly two are ticked."""
    return pair_store(ticked_runs(selected), current, swap=ctx.triggered_id == ids.RUNS_SWAP)


@dash.callback(Output(ids.RUNS_CURVES, "figure"), Output(ids.RUNS_SUMMARIES, "children"),
               Input(ids.RUNS_PAIR_STORE, "data"))
def draw_curves(store):
    catalog = get_catalog()
    try:
        keys = shown_runs(catalog, store)
        return curves_figure(catalog, keys), summaries_view(catalog, keys)
    except DashboardInputError:  # no runs: load_runs says so
        return figures.empty_figure(), None


@dash.callback(Output(ids.RUNS_PAIR, "children"), Output(ids.RUNS_SWAP, "disabled"),
               Output(ids.RUNS_DIFF_SUMMARY, "children"), Output(ids.RUNS_DIFF_GALLERY, "children"),
               Output(ids.RUNS_DIFF_READY, "data"),
               Output(ids.RUNS_DIFF, "figure", allow_duplicate=True),
               Output(ids.RUNS_DIFF_HEAD, "options"), Output(ids.RUNS_DIFF_HEAD, "value"),
               Output(ids.RUNS_DIFF_HEAD_BOX, "style"),
               Input(ids.RUNS_PAIR_STORE, "data"), Input(ids.RUNS_DIFF_HEAD, "value"),
               running=[(Output(ids.RUNS_DIFF_PENDING, "style"), {"display": "block"},
                         {"display": "none"})],
               prevent_initial_call=True)
def draw_diff(store, head):
    """Accuracies, flip counts, McNemar's p, and the flipped samples of runs A and B, on
    the chosen head of multi-head runs.

    The map's background job starts only once this is done (through the ready
    store, which also names the head): it then finds the comparison done.
    """
    catalog = get_catalog()
    hidden = ([], None, {"display": "none"})
    store = {**store, "head": head} if isinstance(store, dict) else store
    try:
        line, summary, gallery, head = diff_view(catalog, store)
    except DashboardInputError as exc:
        return None, True, error_alert(exc), None, dash.no_update, figures.empty_figure(), \
            *hidden
    if line is None:  # not exactly two runs ticked
        return None, True, summary, None, dash.no_update, figures.empty_figure(), *hidden
    return (line, False, summary, gallery, {**store, "head": head}, dash.no_update,
            *diff_head_choices(catalog, store, head))


# What is being computed, shown (by draw_diff's ``running``) until the diff is there. In the
# browser, so it is there the instant the pair is, not after a round trip behind the diff.
dash.clientside_callback(
    """function (store) {
        if (!store || !store.a || !store.b) { return ""; }
        return "Computing the diff of " + store.a + " vs " + store.b + ": both models " +
               "predict every sample (up to a minute the first time for a pair, then cached)…";
    }""",
    Output(ids.RUNS_DIFF_PENDING_TEXT, "children"), Input(ids.RUNS_PAIR_STORE, "data"))


@dash.callback(Output(ids.RUNS_DIFF, "figure"), Input(ids.RUNS_DIFF_READY, "data"),
               background=True, interval=300, prevent_initial_call=True,
               progress=Output(ids.RUNS_DIFF_STATUS, "children"), progress_default="",
               running=[(Output(ids.RUNS_DIFF_SPINNER, "style"), {"display": "block"},
                         {"display": "none"}),
                        (Output(ids.RUNS_DIFF, "style"), {"height": MAP_HEIGHT, "opacity": 0.35},
                         {"height": MAP_HEIGHT, "opacity": 1})])
def draw_diff_map(set_progress, store):
    """Run B's map (its analysis computed or read back in a background job)."""
    try:
        return diff_map(get_catalog(), store, set_progress)
    except LoupeError as exc:
        return figures.empty_figure(safe_message(exc))


@dash.callback(Output(ids.URL, "href", allow_duplicate=True),
               Output(ids.RUN_STORE, "data", allow_duplicate=True),
               Output(ids.SAMPLE_STORE, "data", allow_duplicate=True),
               Output(ids.RUN_SELECT, "options", allow_duplicate=True),
               Output(ids.RUN_SELECT, "value", allow_duplicate=True),
               Output(ids.HEAD_SELECT, "options", allow_duplicate=True),
               Output(ids.HEAD_SELECT, "value", allow_duplicate=True),
               Output(ids.HEAD_SELECT_BOX, "style", allow_duplicate=True),
               Input({"type": ids.RUNS_DIFF_THUMB, "index": ALL}, "n_clicks"),
               Input(ids.RUNS_DIFF, "clickData"), State(ids.RUNS_DIFF_READY, "data"),
               prevent_initial_call=True)
def open_clicked(_clicks, click, store):
    """A flipped sample (thumbnail or map point) opens on the sample page, in run B, on
    the compared head."""
    trigger = ctx.triggered_id
    if isinstance(trigger, dict) and ctx.triggered[0]["value"]:
        index = trigger["index"]
    elif trigger == ids.RUNS_DIFF and click:
        index = clicked_index(get_catalog(), store, event_points(click)[:1])
    else:
        index = None
    if index is None:
        raise dash.exceptions.PreventUpdate
    try:
        return open_flipped(get_registry(), get_catalog(), store, index)
    except DashboardInputError:  # a forged thumbnail index or a stale pair
        raise dash.exceptions.PreventUpdate from None
