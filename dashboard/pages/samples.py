"""The sample table (``/samples``): every sample of the run, sorted and filtered on the server.

The grid uses ag-grid's infinite row model: it asks for blocks of rows and
:func:`dashboard.views.samples.rows_response` answers, so the browser never
holds the whole table. Its filter can become the shared selection, and the
shared selection can restrict it.
"""

from __future__ import annotations

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import ids
from dashboard.components.gallery import sample_href
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.samples import (
    CACHE_BLOCK_SIZE,
    TableQuery,
    clicked_sample,
    column_defs,
    rows_response,
    selection_from_table,
    selection_switch,
    table_columns,
)

dash.register_page(__name__, path="/samples", name="Samples", order=2)

GRID_OPTIONS = {
    "rowBuffer": 10, "cacheBlockSize": CACHE_BLOCK_SIZE, "maxBlocksInCache": 40,
    # dash-ag-grid keeps one pending request: a second concurrent one would replace it.
    "maxConcurrentDatasourceRequests": 1, "infiniteInitialRowCount": CACHE_BLOCK_SIZE,
    "tooltipShowDelay": 300, "enableCellTextSelection": True,
}


def layout(**_ignored) -> html.Div:
    controls = dbc.Row([
        dbc.Col(dbc.Input(id=ids.SAMPLES_SEARCH, type="search", debounce=True, size="sm",
                          placeholder="find a sample id, e.g. mnist:test:17"), md=4),
        dbc.Col(dbc.Switch(id=ids.SAMPLES_ONLY_SELECTED, value=False, disabled=True,
                           label="Show only selected"), md="auto"),
        dbc.Col(dbc.Button("Use as selection", id=ids.SAMPLES_USE_SELECTION, size="sm",
                           color="primary"), md="auto"),
        dbc.Col(html.Span(id=ids.SAMPLES_COUNT, className="fw-semibold"), md="auto"),
    ], className="g-2 align-items-center mb-2")
    grid = dag.AgGrid(
        id=ids.SAMPLES_GRID, rowModelType="infinite", columnDefs=[], dashGridOptions=GRID_OPTIONS,
        getRowId="params.data.sample_id",
        defaultColDef={"sortable": True, "resizable": True, "floatingFilter": True,
                       "wrapHeaderText": True, "autoHeaderHeight": True, "minWidth": 100},
        style={"height": "calc(100vh - 260px)", "minHeight": "380px"})
    return html.Div([
        html.Div(id=ids.SAMPLES_MESSAGE),
        dcc.Store(id=ids.SAMPLES_REFRESH),
        card("Samples: sort and filter by any column, click a row to open the sample",
             controls, html.Div(id=ids.SAMPLES_NOTE, className="small"), grid),
    ])


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.SAMPLES_GRID, "columnDefs"), Input(ids.RUN_STORE, "data"))
def set_columns(run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError:
        return []  # the rows callback shows the message
    return column_defs(table_columns(entry.table), entry.class_names)


@dash.callback(Output(ids.SAMPLES_GRID, "getRowsResponse"), Output(ids.SAMPLES_COUNT, "children"),
               Output(ids.SAMPLES_MESSAGE, "children"),
               Input(ids.SAMPLES_GRID, "getRowsRequest"), State(ids.SAMPLES_SEARCH, "value"),
               State(ids.SAMPLES_ONLY_SELECTED, "value"), State(ids.SELECTION_STORE, "data"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def serve_rows(request, search, only_selected, selection, run_store):
    """One block of the sorted, filtered table; bad input empties the grid and says why."""
    if request is None:  # the page's first render, before the grid asks
        raise dash.exceptions.PreventUpdate
    try:
        query = TableQuery(request, search, only_selected, selection)
        return (*rows_response(get_entry(run_store), query), None)
    except DashboardInputError as exc:
        return {"rowData": [], "rowCount": 0}, "", error_alert(exc)


@dash.callback(Output(ids.URL, "href", allow_duplicate=True),
               Input(ids.SAMPLES_GRID, "cellClicked"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def open_sample(cell, run_store):
    """A clicked row opens its sample analysis."""
    try:
        return sample_href(clicked_sample(get_entry(run_store), cell))
    except DashboardInputError:
        raise dash.exceptions.PreventUpdate from None


@dash.callback(Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
               Output(ids.SAMPLES_NOTE, "children"),
               Input(ids.SAMPLES_USE_SELECTION, "n_clicks"),
               State(ids.SAMPLES_GRID, "getRowsRequest"), State(ids.SAMPLES_SEARCH, "value"),
               State(ids.SAMPLES_ONLY_SELECTED, "value"), State(ids.SELECTION_STORE, "data"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def use_as_selection(clicks, request, search, only_selected, selection, run_store):
    """The rows the table shows become the shared selection (map, Errors, Export follow)."""
    if not clicks:  # the page's first render calls it despite prevent_initial_call
        raise dash.exceptions.PreventUpdate
    try:
        store = selection_from_table(get_entry(run_store),
                                     TableQuery(request, search, only_selected, selection))
    except DashboardInputError as exc:
        return dash.no_update, error_alert(exc)
    note = f"Selection: the {len(store['ids']):,} samples of the table. {store['note']}"
    return store, html.Span(note.strip(), className="text-success")


@dash.callback(Output(ids.SAMPLES_ONLY_SELECTED, "disabled"),
               Output(ids.SAMPLES_ONLY_SELECTED, "label"),
               Output(ids.SAMPLES_ONLY_SELECTED, "value"),
               Input(ids.SELECTION_STORE, "data"), Input(ids.RUN_STORE, "data"),
               State(ids.SAMPLES_ONLY_SELECTED, "value"))
def describe_selection(selection, run_store, only_selected):
    try:
        disabled, label = selection_switch(get_entry(run_store), selection)
    except DashboardInputError:
        disabled, label = True, "Show only selected"
    return disabled, label, bool(only_selected) and not disabled


# The search box, the switch, a new selection (while shown alone) or run change what the rows
# are: the grid drops its cached blocks and asks again (keeping its sort and filter).
PURGE_JS = """function(search, only, selection, run) {
    const trigger = dash_clientside.callback_context.triggered_id;
    if (trigger === "SELECTION" && !only) { return dash_clientside.no_update; }
    dash_ag_grid.getApiAsync("GRID").then(api => api.purgeInfiniteCache());
    return Date.now();
}"""
dash.clientside_callback(
    PURGE_JS.replace("SELECTION", ids.SELECTION_STORE).replace("GRID", ids.SAMPLES_GRID),
    Output(ids.SAMPLES_REFRESH, "data"),
    Input(ids.SAMPLES_SEARCH, "value"), Input(ids.SAMPLES_ONLY_SELECTED, "value"),
    Input(ids.SELECTION_STORE, "data"), Input(ids.RUN_STORE, "data"),
    prevent_initial_call=True)
