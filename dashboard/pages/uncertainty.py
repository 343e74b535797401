"""Uncertainty & OOD (``/uncertainty``): does the model know when it does not know?

Always: the in-distribution uncertainty that was computed (entropy, mutual
information, least confidence; histograms split by correct and wrong
predictions) and the most uncertain samples. With an extra dataset open
(``--extra-dataset corrupt:all``, the dashboard's default, or ``fashion-mnist``):
each score's histograms in- vs out-of-distribution without and with MC dropout,
the joint map, every score's AUROC and FPR@95, and galleries of what a score
misses. Without one, a short hint says how to open one.
"""

from __future__ import annotations

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html

from core.errors import LoupeError
from dashboard import figures, ids
from dashboard.components.gallery import sample_href
from dashboard.components.messages import card, error_alert, info_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.guard import first_point
from dashboard.views.uncertainty import (
    COLOR_CHOICES,
    NO_DROPOUT,
    check_extra,
    extra_options,
    galleries_view,
    histograms_view,
    hover_body,
    in_histograms_view,
    in_score_columns,
    in_score_options,
    in_summary,
    map_options,
    map_view,
    most_uncertain_view,
    no_extra_hint,
    overlap_caption,
    overlap_table,
    point_sample_id,
    recolor_map_patch,
    run_summary,
    score_options,
    score_table,
    table_columns,
    table_records,
)

dash.register_page(__name__, path="/uncertainty", name="Uncertainty & OOD", order=5)

QUERY_STORE = "uncertainty-query"


def _radio(id_: str) -> dcc.RadioItems:
    return dcc.RadioItems(id=id_, options=[], value=None, inline=True, inputClassName="me-1",
                          labelClassName="me-3 small")


def layout(dataset: str | None = None, **_ignored) -> html.Div:
    """The page; ``?dataset=fashion-mnist:test`` presets the extra dataset."""
    header = dbc.Row([
        dbc.Col([dbc.Label("out-of-distribution dataset", className="small mb-0"),
                 dcc.Dropdown(id=ids.OOD_DATASET_SELECT, options=[], value=None,
                              clearable=False)], md=4),
        dbc.Col(html.Div(id=ids.OOD_SUMMARY), md=8, className="align-self-end"),
    ], className="g-2 mb-2")
    map_controls = html.Div([
        html.Div([html.Span("map", className="small text-muted me-2"),
                  _radio(ids.OOD_MAP_SELECT)], className="d-flex align-items-center"),
        html.Div([html.Span("colour by", className="small text-muted me-2"),
                  dcc.RadioItems(id=ids.OOD_COLOR_SELECT, value="dataset", inline=True,
                                 options=[{"label": lab, "value": v} for lab, v in COLOR_CHOICES],
                                 inputClassName="me-1", labelClassName="me-3 small")],
                 className="d-flex align-items-center"),
    ], className="d-flex flex-wrap column-gap-3")
    table = dag.AgGrid(
        id=ids.OOD_TABLE, columnDefs=table_columns(), rowData=[],
        dashGridOptions={"domLayout": "autoHeight", "tooltipShowDelay": 300,
                         "suppressCellFocus": True,
                         "theme": {"function": "themeQuartz.withParams({fontSize: 12, "
                                               "spacing: 4, headerFontWeight: 600})"}},
        style={"height": None})
    in_distribution = card(
        "In-distribution uncertainty: is the model less sure where it is wrong?",
        html.Div(id=ids.IN_UNCERTAINTY_SUMMARY),
        dcc.Loading(dcc.Graph(id=ids.IN_UNCERTAINTY_HISTOGRAMS, config={"displayModeBar": False},
                              style={"height": "330px"}), delay_show=300),
        html.Div([html.Span("most uncertain by ", className="small text-muted me-1"),
                  dcc.Dropdown(id=ids.IN_UNCERTAINTY_SCORE, options=[], value=None,
                               clearable=False, style={"minWidth": "340px"})],
                 className="d-flex align-items-center mt-2 mb-2"),
        html.Div(id=ids.IN_MOST_UNCERTAIN_GALLERY))
    ood = html.Div(id=ids.OOD_SECTION, style={"display": "none"}, children=[
        html.H5("Out-of-distribution: does the model tell the extra dataset apart?",
                className="mt-3"),
        header,
        dbc.Row([
            dbc.Col(card("Joint map of both datasets: click a point to open it", map_controls,
                         dcc.Loading(dcc.Graph(id=ids.OOD_MAP, clear_on_unhover=True,
                                               config={"scrollZoom": True, "displaylogo": False},
                                               style={"height": "520px"}), delay_show=300),
                         html.Div(id=ids.OOD_MAP_OVERLAP),
                         dcc.Tooltip(id=ids.OOD_MAP_TOOLTIP, className="loupe-tooltip")), lg=7),
            dbc.Col([
                card("How well each score separates the datasets (click a header to sort)",
                     html.Div("Higher score = more out-of-distribution. AUROC: 0.5 is chance, "
                              "1 perfect. FPR@95: share of OOD samples accepted when 95% of "
                              "in-distribution ones are (lower is better). MC: with MC dropout.",
                              className="small text-muted mb-2"), table),
                card("Overlap: share of OOD samples' 10 nearest neighbours that are "
                     "in-distribution (lower = better separated)",
                     html.Div(id=ids.OOD_OVERLAP_TABLE)),
            ], lg=5),
        ], className="g-3"),
        card("Score histograms, in-distribution vs out-of-distribution (AUROC in each title)",
             html.Div([html.Span("y axis", className="small text-muted me-2"),
                       dcc.RadioItems(id=ids.OOD_HISTOGRAM_SCALE, value="log", inline=True,
                                      options=[{"label": "log", "value": "log"},
                                               {"label": "linear", "value": "linear"}],
                                      inputClassName="me-1", labelClassName="me-3 small")],
                      className="d-flex align-items-center"),
             dcc.Loading(dcc.Graph(id=ids.UNCERTAINTY_HISTOGRAMS,
                                   config={"displayModeBar": False}), delay_show=300)),
        card("Galleries: what a score misses", html.Div([
            html.Span("rank by ", className="small text-muted me-1"),
            dcc.Dropdown(id=ids.OOD_GALLERY_SCORE, options=[], value=None, clearable=False,
                         style={"minWidth": "360px"})], className="d-flex align-items-center mb-2"),
             dbc.Row([
                 dbc.Col([html.Div("Most in-distribution-looking OOD samples (lowest score "
                                   "first; with 1 - max p: the most confident)",
                                   className="small fw-semibold mb-1"),
                          html.Div(id=ids.OOD_CONFIDENT_GALLERY)], lg=6),
                 dbc.Col([html.Div("Most OOD-looking in-distribution samples (highest score "
                                   "first; with 1 - max p: the most uncertain)",
                                   className="small fw-semibold mb-1"),
                          html.Div(id=ids.IN_UNCERTAIN_GALLERY)], lg=6),
             ], className="g-3")),
    ])
    return html.Div([
        dcc.Store(id=QUERY_STORE, data={"dataset": dataset}),
        html.Div(id=ids.UNCERTAINTY_MESSAGE),
        in_distribution,
        html.Div(id=ids.OOD_HINT, className="loupe-card", style={"display": "none"}),
        ood,
    ])


# -- callbacks -------------------------------------------------------------------------------
SHOWN, HIDDEN = {"display": "block"}, {"display": "none"}


@dash.callback(Output(ids.OOD_DATASET_SELECT, "options"), Output(ids.OOD_DATASET_SELECT, "value"),
               Output(ids.OOD_MAP_SELECT, "options"), Output(ids.OOD_MAP_SELECT, "value"),
               Output(ids.UNCERTAINTY_MESSAGE, "children"),
               Output(ids.OOD_SECTION, "style"), Output(ids.OOD_HINT, "children"),
               Output(ids.OOD_HINT, "style"),
               Input(ids.RUN_STORE, "data"), State(QUERY_STORE, "data"))
def init_controls(run_store, query):
    """The run's extra datasets and joint maps; the hint when none is open."""
    try:
        entry = get_entry(run_store)
        note = None if entry.session.mc_samples else info_alert(NO_DROPOUT)
        if not entry.session.extras:
            return [], None, [], None, note, HIDDEN, no_extra_hint(entry), SHOWN
        maps = map_options(entry)
        try:
            key = check_extra(entry, (query or {}).get("dataset"))
        except DashboardInputError as exc:
            key, note = check_extra(entry, None), error_alert(exc)
        return (extra_options(entry), key, maps, maps[0]["value"] if maps else None, note,
                SHOWN, None, HIDDEN)
    except DashboardInputError as exc:
        return [], None, [], None, error_alert(exc), HIDDEN, None, HIDDEN


@dash.callback(Output(ids.IN_UNCERTAINTY_HISTOGRAMS, "figure"),
               Output(ids.IN_UNCERTAINTY_SUMMARY, "children"),
               Output(ids.IN_UNCERTAINTY_SCORE, "options"),
               Output(ids.IN_UNCERTAINTY_SCORE, "value"),
               Input(ids.RUN_STORE, "data"))
def draw_in_distribution(run_store):
    """The in-distribution histograms (correct vs wrong) and the gallery's score choices."""
    try:
        entry = get_entry(run_store)
        cols = in_score_columns(entry)
        return (in_histograms_view(entry), in_summary(entry), in_score_options(entry),
                cols[0] if cols else None)
    except LoupeError as exc:
        return figures.empty_figure(), error_alert(exc), [], None


@dash.callback(Output(ids.IN_MOST_UNCERTAIN_GALLERY, "children"),
               Input(ids.IN_UNCERTAINTY_SCORE, "value"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def draw_most_uncertain(score, run_store):
    """The most uncertain in-distribution samples by the chosen score."""
    if not score:
        raise dash.exceptions.PreventUpdate
    try:
        return most_uncertain_view(get_entry(run_store), score)
    except LoupeError as exc:
        return error_alert(exc)


@dash.callback(Output(ids.UNCERTAINTY_HISTOGRAMS, "figure"),
               Output(ids.UNCERTAINTY_MESSAGE, "children", allow_duplicate=True),
               Input(ids.OOD_DATASET_SELECT, "value"), Input(ids.OOD_HISTOGRAM_SCALE, "value"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def draw_histograms(key, scale, run_store):
    """Each score's histograms without and with MC dropout, AUROC in the titles."""
    if not key:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        return histograms_view(entry, check_extra(entry, key), scale), dash.no_update
    except LoupeError as exc:
        return figures.empty_figure(), error_alert(exc)


@dash.callback(Output(ids.OOD_TABLE, "rowData"),
               Output(ids.OOD_OVERLAP_TABLE, "children"), Output(ids.OOD_SUMMARY, "children"),
               Output(ids.OOD_GALLERY_SCORE, "options"), Output(ids.OOD_GALLERY_SCORE, "value"),
               Output(ids.UNCERTAINTY_MESSAGE, "children", allow_duplicate=True),
               Input(ids.OOD_DATASET_SELECT, "value"), State(ids.RUN_STORE, "data"),
               State(ids.OOD_GALLERY_SCORE, "value"), prevent_initial_call=True)
def draw_scores(key, run_store, score):
    """The AUROC / FPR@95 table, the summary line and the galleries' score choices."""
    if not key:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        key = check_extra(entry, key)
        options = score_options(entry, key)
        valid = [o["value"] for o in options]
        records = table_records(score_table(entry, key))
        return (records, overlap_table(entry, key),
                run_summary(entry, key), options, score if score in valid else "uncertainty",
                dash.no_update)
    except LoupeError as exc:
        return [], None, None, [], None, error_alert(exc)


@dash.callback(Output(ids.OOD_MAP, "figure"), Output(ids.OOD_MAP_OVERLAP, "children"),
               Output(ids.UNCERTAINTY_MESSAGE, "children", allow_duplicate=True),
               Input(ids.OOD_DATASET_SELECT, "value"), Input(ids.OOD_MAP_SELECT, "value"),
               Input(ids.OOD_COLOR_SELECT, "value"), State(ids.RUN_STORE, "data"),
               State(ids.SAMPLE_STORE, "data"), prevent_initial_call=True)
def draw_map(key, name, color, run_store, sample_store):
    """The joint map; a ``Patch`` of the marker colours when only the colouring changes."""
    if not key or not name:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        if ctx.triggered_id == ids.OOD_COLOR_SELECT:
            return recolor_map_patch(entry, key, color), dash.no_update, dash.no_update
        return (map_view(entry, key, name, color, sample_store),
                overlap_caption(entry, key, name), dash.no_update)
    except LoupeError as exc:
        return dash.no_update, None, error_alert(exc)


@dash.callback(Output(ids.OOD_CONFIDENT_GALLERY, "children"),
               Output(ids.IN_UNCERTAIN_GALLERY, "children"),
               Input(ids.OOD_GALLERY_SCORE, "value"), State(ids.OOD_DATASET_SELECT, "value"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def draw_galleries(score, key, run_store):
    if not key or not score:
        raise dash.exceptions.PreventUpdate
    try:
        entry = get_entry(run_store)
        ood, in_dist, _ = galleries_view(entry, key, score)
        return ood, in_dist
    except LoupeError as exc:
        return error_alert(exc), None


@dash.callback(Output(ids.URL, "href", allow_duplicate=True),
               Input(ids.OOD_MAP, "clickData"), State(ids.OOD_DATASET_SELECT, "value"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def open_clicked(click, key, run_store):
    """A clicked point opens its sample analysis (identified server side, see point_sample_id)."""
    point = first_point(click)
    if point is None or not isinstance(key, str):
        raise dash.exceptions.PreventUpdate
    try:
        sample_id = point_sample_id(get_entry(run_store), key, point)
    except LoupeError:  # a stale run or dataset key
        sample_id = None
    if sample_id is None:
        raise dash.exceptions.PreventUpdate
    return sample_href(sample_id)


@dash.callback(Output(ids.OOD_MAP_TOOLTIP, "show"), Output(ids.OOD_MAP_TOOLTIP, "bbox"),
               Output(ids.OOD_MAP_TOOLTIP, "children"),
               Input(ids.OOD_MAP, "hoverData"), State(ids.OOD_DATASET_SELECT, "value"),
               State(ids.RUN_STORE, "data"))
def hover_thumbnail(hover, key, run_store):
    """Thumbnail and prediction of the hovered point."""
    point = first_point(hover)
    if point is None or not isinstance(key, str):
        return False, dash.no_update, dash.no_update
    try:
        entry = get_entry(run_store)
        sample_id = point_sample_id(entry, key, point)
        if sample_id is None:
            return False, dash.no_update, dash.no_update
        return True, point.get("bbox"), hover_body(entry, key, sample_id)
    except LoupeError:
        return False, dash.no_update, dash.no_update  # a stale hover: nothing to show
