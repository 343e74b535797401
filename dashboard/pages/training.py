"""Training (``/training``): loss and accuracy per epoch, the model summary, hyperparameters."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html

from dashboard import figures, ids
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.training import input_facts, run_facts

dash.register_page(__name__, path="/training", name="Training", order=7)

def layout(**_ignored) -> html.Div:
    return html.Div([
        html.Div(id=ids.TRAINING_MESSAGE),
        card("Loss and accuracy per epoch",
             dcc.Graph(id=ids.TRAINING_GRAPH, config={"displaylogo": False})),
        dbc.Row([
            dbc.Col(card("Model summary (torchinfo)",
                         html.Pre(id=ids.MODEL_SUMMARY, className="loupe-pre")), lg=8),
            dbc.Col([card("Run", html.Div(id=ids.HYPERPARAMETERS)),
                     card("Input and preprocessing check", html.Div(id=ids.INPUT_CHECK))],
                    lg=4),
        ], className="g-3"),
    ])


@dash.callback(Output(ids.TRAINING_GRAPH, "figure"), Output(ids.MODEL_SUMMARY, "children"),
               Output(ids.HYPERPARAMETERS, "children"), Output(ids.INPUT_CHECK, "children"),
               Output(ids.TRAINING_MESSAGE, "children"), Input(ids.RUN_STORE, "data"))
def draw_training(run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return figures.empty_figure(), "", None, None, error_alert(exc)
    head = entry.head if len(entry.heads) > 1 else None
    return (figures.training_figure(entry.session.history, head), entry.session.model_summary(),
            run_facts(entry), input_facts(entry), None)
