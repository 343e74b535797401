"""Insights (``/insights``): where the model fails and why, and any selection explained.

``/insights?explain=1`` (the Population page's "Explain this selection")
puts the explanation of the shared selection on top of the ranked insights.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, ctx, dcc, html

from core.errors import LoupeError
from dashboard import ids
from dashboard.components.messages import error_alert, info_alert
from dashboard.jobs import pooled
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.insights import (
    explain_frame,
    explain_view,
    insight_selection,
    insights_view,
    wants_explanation,
)

dash.register_page(__name__, path="/insights", name="Insights", order=1)

BUSY = "The server is busy with other work; reload this page in a few seconds."


def layout(explain: str | None = None, **_ignored) -> html.Div:
    return html.Div([
        dcc.Store(id=ids.INSIGHTS_QUERY, data={"explain": explain not in (None, "", "0")}),
        html.Div(id=ids.INSIGHTS_MESSAGE),
        html.Div([
            html.Div("Groups of samples where the model does worse, most worth a look first, "
                     "each with what sets it apart.", className="text-muted"),
            dbc.Button("Explain the current selection", id=ids.EXPLAIN_CURRENT, size="sm",
                       color="secondary", outline=True, className="ms-auto"),
        ], className="d-flex align-items-center mb-2"),
        html.Div(id=ids.EXPLAIN_STATUS, className="small text-muted"),
        html.Div(id=ids.EXPLAIN_CARD),
        html.Div(id=ids.INSIGHTS_STATUS, className="text-muted mb-2"),
        html.Div(id=ids.INSIGHTS_LIST),
    ])


def _running(text: str, status_id: str) -> tuple:
    return (Output(status_id, "children"),
            [dbc.Spinner(size="sm", spinner_class_name="me-2"), text], "")


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.INSIGHTS_LIST, "children"), Input(ids.RUN_STORE, "data"),
               background=True, interval=400,
               running=[_running("Finding insights… (the first time takes a few seconds)",
                                 ids.INSIGHTS_STATUS)])
@pooled(busy=lambda *_: info_alert(BUSY))
def show_insights(run_store):
    """The ranked insight cards (computed in a background job the first time)."""
    try:
        return insights_view(get_entry(run_store))
    except LoupeError as exc:
        return error_alert(exc)


@dash.callback(Output(ids.EXPLAIN_CARD, "children"),
               Input(ids.INSIGHTS_QUERY, "data"), Input(ids.EXPLAIN_CURRENT, "n_clicks"),
               State(ids.SELECTION_STORE, "data"), State(ids.RUN_STORE, "data"),
               background=True, interval=300, progress=Output(ids.EXPLAIN_STATUS, "children"),
               progress_default="",
               running=[_running("Explaining the selection…", ids.EXPLAIN_STATUS)])
@pooled(busy=lambda *_: info_alert(BUSY))
def explain_selection(set_progress, query, clicks, selection, run_store):
    """The "Explain selection" card for the shared selection, when asked for."""
    if not wants_explanation(query, clicks):
        return None
    try:
        return explain_view(get_entry(run_store), selection, set_progress)
    except LoupeError as exc:
        return explain_frame([error_alert(exc)])


@dash.callback(Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
               Output(ids.URL, "href", allow_duplicate=True),
               Output(ids.INSIGHTS_MESSAGE, "children"),
               Input({"type": ids.INSIGHT_SELECT, "index": ALL}, "n_clicks"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def select_on_map(_clicks, run_store):
    """An insight's samples become the shared selection; the Population page opens."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not ctx.triggered[0]["value"]:
        raise dash.exceptions.PreventUpdate  # the cards were (re)drawn, nothing clicked
    try:
        return insight_selection(get_entry(run_store), trigger.get("index")), "/", None
    except DashboardInputError as exc:
        return dash.no_update, dash.no_update, error_alert(exc)
