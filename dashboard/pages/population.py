"""Population exploration (``/``): the embedding map, colour/size by any column, selection grid."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html

from dashboard import ids
from dashboard.components.gallery import sample_gallery, sample_href
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.population import (
    control_options,
    highlight_patch,
    map_figure,
    recolor_patch,
    resize_patch,
    selection_from_points,
    selection_view,
    size_note,
    size_rank,
)
from dashboard.views.population_scale import (
    is_large,
    large_highlight_patch,
    large_map_update,
    map_max_points,
    map_point_index,
    selection_from_region,
    view_update,
)
from dashboard.views.training import input_check_alert

dash.register_page(__name__, path="/", name="Population", order=0)

QUERY_STORE = "population-query"
# A short mode bar (zoom, pan, box, lasso, reset) leaves the top row to the legend.
MAP_CONFIG = {"scrollZoom": True, "displaylogo": False,
              "modeBarButtonsToRemove": ["toImage", "sendDataToCloud", "zoomIn2d", "zoomOut2d",
                                         "autoScale2d", "hoverClosestCartesian",
                                         "hoverCompareCartesian", "toggleSpikelines"]}


def layout(color: str | None = None, size: str | None = None, projection: str | None = None,
           **_ignored) -> html.Div:
    """The page; ``?color=&size=&projection=`` in the URL preset the controls."""
    controls = dbc.Row([
        dbc.Col([dbc.Label("map", className="small mb-0"),
                 dcc.RadioItems(id=ids.PROJECTION_SELECT, options=[], value=None, inline=True,
                                inputClassName="me-1", labelClassName="me-3")], md=3),
        dbc.Col([dbc.Label("colour by", className="small mb-0"),
                 dcc.Dropdown(id=ids.COLOR_SELECT, options=[], value=None, clearable=False)],
                md=4),
        dbc.Col([dbc.Label("size by", className="small mb-0"),
                 dcc.Dropdown(id=ids.SIZE_SELECT, options=[], value=None, clearable=False),
                 html.Div(id=ids.SIZE_NOTE, className="text-muted",
                          style={"fontSize": "11px"})],
                md=4),
    ], className="g-2 align-items-start")
    return html.Div([
        dcc.Store(id=QUERY_STORE, data={"color": color, "size": size, "projection": projection}),
        dcc.Store(id=ids.POPULATION_VIEW),  # a large map's zoomed view (None: all of it)
        html.Div(id=ids.POPULATION_MESSAGE),
        dbc.Row([
            dbc.Col(card("Population map: drag to select, click a point to open it", controls,
                         dcc.Loading(dcc.Graph(id=ids.POPULATION_GRAPH, clear_on_unhover=True,
                                               config=MAP_CONFIG,
                                               style={"height": "calc(100vh - 250px)",
                                                      "minHeight": "420px"}),
                                     delay_show=300),
                         dcc.Tooltip(id=ids.POPULATION_TOOLTIP, className="loupe-tooltip")),
                    lg=8),
            dbc.Col(card("Selection", html.Div(id=ids.SELECTION_SUMMARY),
                         dcc.Link("Explain this selection", id=ids.EXPLAIN_SELECTION,
                                  href="/insights?explain=1",
                                  className="btn btn-sm btn-outline-primary mb-2"),
                         html.Div(id=ids.SELECTION_GRID)), lg=4),
        ], className="g-3"),
    ])


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.PROJECTION_SELECT, "options"), Output(ids.PROJECTION_SELECT, "value"),
               Output(ids.COLOR_SELECT, "options"), Output(ids.COLOR_SELECT, "value"),
               Output(ids.SIZE_SELECT, "options"), Output(ids.SIZE_SELECT, "value"),
               Output(ids.POPULATION_MESSAGE, "children"),
               Input(ids.RUN_STORE, "data"), State(QUERY_STORE, "data"))
def init_controls(run_store, query):
    """Fill the controls for the run; a bad URL value is reported and replaced by the default."""
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return [], None, [], None, [], None, error_alert(exc)
    try:
        return (*control_options(entry, query), input_check_alert(entry))
    except DashboardInputError as exc:
        return (*control_options(entry, {}), error_alert(exc))


@dash.callback(Output(ids.POPULATION_GRAPH, "figure"),
               Output(ids.POPULATION_MESSAGE, "children", allow_duplicate=True),
               Output(ids.POPULATION_VIEW, "data", allow_duplicate=True),
               Input(ids.PROJECTION_SELECT, "value"), Input(ids.COLOR_SELECT, "value"),
               Input(ids.SIZE_SELECT, "value"), Input(ids.SAMPLE_STORE, "data"),
               State(ids.POPULATION_VIEW, "data"), State(ids.RUN_STORE, "data"),
               prevent_initial_call="initial_duplicate")
def draw_map(projection, color, size, sample_store, view, run_store):
    """Full figure on a new projection; a ``Patch`` for colour, size or highlight changes
    (a large map: the figure of its current view, see ``views.population_scale``)."""
    if not projection or not color or not size:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        trigger = ctx.triggered_id
        limit = map_max_points()
        if trigger == ids.SAMPLE_STORE and is_large(entry, limit):
            figure = large_highlight_patch(entry, projection, sample_store, view, limit)
        elif trigger == ids.SAMPLE_STORE:
            figure = highlight_patch(entry, projection, sample_store)
        elif is_large(entry, limit):
            figure, view = large_map_update(entry, projection, color, size, sample_store,
                                            view if trigger in (ids.COLOR_SELECT,
                                                                ids.SIZE_SELECT) else None,
                                            limit)
            return figure, dash.no_update, view
        elif trigger == ids.COLOR_SELECT:
            figure = recolor_patch(entry, color)
        elif trigger == ids.SIZE_SELECT:
            figure = resize_patch(entry, size)
        else:
            figure = map_figure(entry, projection, color, size, sample_store)
        return figure, dash.no_update, dash.no_update  # keep a message about the URL on screen
    except DashboardInputError as exc:
        return dash.no_update, error_alert(exc), dash.no_update


@dash.callback(Output(ids.POPULATION_GRAPH, "figure", allow_duplicate=True),
               Output(ids.POPULATION_VIEW, "data"),
               Input(ids.POPULATION_GRAPH, "relayoutData"),
               State(ids.PROJECTION_SELECT, "value"), State(ids.COLOR_SELECT, "value"),
               State(ids.SIZE_SELECT, "value"), State(ids.SAMPLE_STORE, "data"),
               State(ids.POPULATION_VIEW, "data"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def follow_view(relayout, projection, color, size, sample_store, view, run_store):
    """A large map redrawn for the view zoomed or panned to: an image or the points in it."""
    if not projection or not color or not size:
        raise dash.exceptions.PreventUpdate
    try:
        update = view_update(get_entry(run_store), relayout, projection, color, size,
                             sample_store, view, map_max_points())
    except DashboardInputError:
        update = None
    if update is None:  # a small map, or nothing moved
        raise dash.exceptions.PreventUpdate
    return update


@dash.callback(Output(ids.POPULATION_TOOLTIP, "show"), Output(ids.POPULATION_TOOLTIP, "bbox"),
               Output(ids.POPULATION_TOOLTIP, "children"),
               Input(ids.POPULATION_GRAPH, "hoverData"), State(ids.RUN_STORE, "data"),
               State(ids.SIZE_SELECT, "value"), State(ids.PROJECTION_SELECT, "value"))
def hover_thumbnail(hover, run_store, size, projection):
    """Thumbnail, label, prediction and loss of the hovered point (on a large map's image:
    of the sample nearest to the hovered spot)."""
    try:
        entry = get_entry(run_store)
        i = map_point_index(entry, projection, hover, map_max_points())
    except DashboardInputError:
        return False, dash.no_update, dash.no_update
    if i is None:
        return False, dash.no_update, dash.no_update
    row = entry.table.iloc[i]
    body = [html.Img(src=entry.thumbnail(i, 3)),
            html.Div(html.B(str(row["sample_id"]))),
            html.Div(f"true {row['label_name']} · predicted {row['pred_name']}"),
            html.Div(f"loss {row['loss']:.4f} nats")]
    rank = size_rank(entry, size, i)
    if rank:
        body.append(html.Div(rank, className="text-muted"))
    return True, hover["points"][0].get("bbox"), body


@dash.callback(Output(ids.SIZE_NOTE, "children"), Input(ids.SIZE_SELECT, "value"))
def explain_size(size):
    """What the marker size means, under the control."""
    return size_note(size)


@dash.callback(Output(ids.URL, "href", allow_duplicate=True),
               Input(ids.POPULATION_GRAPH, "clickData"), State(ids.RUN_STORE, "data"),
               State(ids.PROJECTION_SELECT, "value"), prevent_initial_call=True)
def open_clicked(click, run_store, projection):
    """A clicked point opens its sample analysis (mapped server side, see RunEntry.members;
    on a large map: the sample nearest to the click)."""
    try:
        i = map_point_index(get_entry(run_store), projection, click, map_max_points())
    except DashboardInputError:
        i = None
    if i is None:  # nothing, malformed or a stale run: nothing to open
        raise dash.exceptions.PreventUpdate
    return sample_href(get_entry(run_store).session.dataset.sample_ids[i])


@dash.callback(Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
               Input(ids.POPULATION_GRAPH, "selectedData"), State(ids.RUN_STORE, "data"),
               State(ids.PROJECTION_SELECT, "value"), prevent_initial_call=True)
def store_selection(selected, run_store, projection):
    """Box/lasso selection -> the ids of the selected samples in the app-level store
    (a large map's: every sample in the region, not only the points drawn)."""
    if selected is None:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        if not is_large(entry, map_max_points()):
            return selection_from_points(entry, selected)
        store = selection_from_region(entry, projection, selected)
    except DashboardInputError:
        raise dash.exceptions.PreventUpdate from None
    if store is None:
        raise dash.exceptions.PreventUpdate
    return store


@dash.callback(Output(ids.SELECTION_SUMMARY, "children"), Output(ids.SELECTION_GRID, "children"),
               Input(ids.SELECTION_STORE, "data"), Input(ids.RUN_STORE, "data"))
def show_selection(selection, run_store):
    """Summary and thumbnail grid (highest loss first) of the shared selection."""
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return error_alert(exc), None
    summary, order = selection_view(entry, selection)
    return summary, sample_gallery(entry, order, limit=80, empty="", order="(highest loss first)")
