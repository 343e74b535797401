"""Training (``/training``): loss and accuracy per epoch, the model summary, hyperparameters."""

from __future__ import annotations

import json

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html

from dashboard import figures, ids
from dashboard.components.messages import card, error_alert
from dashboard.state import DashboardInputError, RunEntry, get_entry

dash.register_page(__name__, path="/training", name="Training", order=4)

# run.json keys worth showing next to the curves (paths and the history itself are left out).
META_KEYS = ("arch", "dataset", "train_samples", "parameters", "best_test_acc",
             "best_train_acc", "wall_time_s", "device", "seed")


def layout(**_ignored) -> html.Div:
    return html.Div([
        html.Div(id=ids.TRAINING_MESSAGE),
        card("Loss and accuracy per epoch",
             dcc.Graph(id=ids.TRAINING_GRAPH, config={"displaylogo": False})),
        dbc.Row([
            dbc.Col(card("Model summary (torchinfo)",
                         html.Pre(id=ids.MODEL_SUMMARY, className="loupe-pre")), lg=8),
            dbc.Col(card("Run", html.Div(id=ids.HYPERPARAMETERS)), lg=4),
        ], className="g-3"),
    ])


def run_facts(entry: RunEntry) -> html.Table:
    """The run's metadata and hyperparameters as a two-column table."""
    meta = entry.session.model.meta
    rows = [(k, meta[k]) for k in META_KEYS if k in meta]
    rows += [(f"hp.{k}", v) for k, v in (meta.get("hyperparameters") or {}).items()]
    cells = []
    for key, value in rows:
        text = f"{value:.4g}" if isinstance(value, float) else (
            json.dumps(value) if isinstance(value, dict | list) else str(value))
        cells.append(html.Tr([html.Td(key), html.Td(text)]))
    if not cells:
        return html.Div("No run.json metadata (a bare weights file).", className="text-muted")
    return html.Table(html.Tbody(cells), className="loupe-meta")


@dash.callback(Output(ids.TRAINING_GRAPH, "figure"), Output(ids.MODEL_SUMMARY, "children"),
               Output(ids.HYPERPARAMETERS, "children"), Output(ids.TRAINING_MESSAGE, "children"),
               Input(ids.RUN_STORE, "data"))
def draw_training(run_store):
    try:
        entry = get_entry(run_store)
    except DashboardInputError as exc:
        return figures.empty_figure(), "", None, error_alert(exc)
    return (figures.training_figure(entry.session.history), entry.session.model_summary(),
            run_facts(entry), None)
