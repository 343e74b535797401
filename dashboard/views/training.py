"""Training page helpers: the run's metadata as a table."""

from __future__ import annotations

import json

import dash_bootstrap_components as dbc
from dash import html

from dashboard.state import RunEntry
from models.inputs import normalisation_flags

# run.json keys worth showing next to the curves (paths and the history itself are left out).
META_KEYS = ("arch", "dataset", "train_samples", "parameters", "best_test_acc",
             "best_train_acc", "wall_time_s", "device", "seed")


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


def input_check_alert(entry: RunEntry) -> dbc.Alert | None:
    """A warning when the preprocessing check finds a clearly better normalisation."""
    warning = entry.session.preprocessing()["warning"]
    if not warning:
        return None
    return dbc.Alert([html.Strong("Input normalisation: "), warning], color="warning",
                     className="loupe-input-warning my-2")


def input_facts(entry: RunEntry) -> html.Div:
    """What the model is fed, what was assumed, and the preprocessing check's accuracies."""
    session = entry.session
    model = session.model
    check = session.preprocessing()
    rows = [html.Tr([html.Td("input"), html.Td("x".join(map(str, model.input_shape)))]),
            html.Tr([html.Td("normalisation"),
                     html.Td(html.Code(normalisation_flags(model.mean, model.std)))])]
    notes = [html.Li(n) for n in session.input_notes]
    # The flags of each row are its tooltip: as a column they would overflow the card.
    results = [html.Tr([html.Td(r["name"]), html.Td(f"{r['accuracy']:.1%}"),
                        html.Td(f"{r['loss']:.3f}")], title=r["flags"],
                       className="table-warning" if r["name"] == check["best"]
                       and check["warning"] else None)
               for r in check["results"]]
    return html.Div([
        input_check_alert(entry),
        html.Table(html.Tbody(rows), className="loupe-meta"),
        html.Div([html.Div("Assumed, not declared:", className="text-muted small mt-2"),
                  html.Ul(notes, className="small mb-1")]) if notes else None,
        html.Div(f"Accuracy and mean loss (nats) of the first head on {check['n']} labelled "
                 "samples under each normalisation; the first is the one used (hover a row "
                 "for its flags):", className="small mt-2"),
        dbc.Table([html.Thead(html.Tr([html.Th("normalisation"), html.Th("accuracy"),
                                       html.Th("loss")])),
                   html.Tbody(results)], size="sm", className="loupe-input-check mb-0"),
    ], id="input-facts")
