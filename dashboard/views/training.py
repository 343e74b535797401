"""Training page helpers: the run's metadata as a table."""

from __future__ import annotations

import json

import dash_bootstrap_components as dbc
from dash import html

from dashboard.state import RunEntry
from models.inputs import normalisation_flags

# run.json keys worth showing next to the curves, in plain words (paths, the history and
# the weights' hash are left out).
META_LABELS = {"arch": "architecture", "dataset": "trained on", "train_samples":
               "training samples", "parameters": "parameters", "best_test_acc":
               "best test accuracy", "best_train_acc": "best training accuracy",
               "wall_time_s": "training time", "device": "device", "seed": "seed"}
HYPERPARAMETER_LABELS = {"epochs": "epochs", "batch_size": "batch size", "optimizer":
                         "optimizer", "lr": "learning rate", "schedule": "learning-rate schedule",
                         "weight_decay": "weight decay", "momentum": "momentum (SGD)",
                         "limit": "samples used", "augment": "augmentation", "task": "task",
                         "model_spec": "model code"}
# Hyperparameters the run's own fields already say (arch, seed) or explain (dataset).
RESTATED_HYPERPARAMETERS = ("arch", "dataset", "seed")


def _fact(key: str, value: object) -> str:
    if key in ("best_test_acc", "best_train_acc") and isinstance(value, int | float):
        return f"{value:.1%}"
    if key == "wall_time_s" and isinstance(value, int | float):
        return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
    if key in ("train_samples", "parameters") and isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def trained_on(meta: dict) -> str | None:
    """The training data in words: the dataset asked for, and the one that served when
    they differ (``mnist`` not found: the embedded ``mnist-5k``)."""
    used = meta.get("dataset")
    asked = (meta.get("hyperparameters") or {}).get("dataset")
    if used is None:
        return asked
    if asked and asked != used:
        fallback = "the embedded " if used == "mnist-5k" else ""
        return f"{asked} (not found: fell back to {fallback}{used})"
    return str(used)


def run_fact_rows(meta: dict) -> list[tuple[str, str]]:
    """``(plain label, value text)`` of a run's ``run.json`` fields worth showing."""
    rows = []
    for key, label in META_LABELS.items():
        value = trained_on(meta) if key == "dataset" else meta.get(key)
        if value is not None:
            rows.append((label, value if key == "dataset" else _fact(key, value)))
    hyper = meta.get("hyperparameters") or {}
    for key, value in hyper.items():
        if key in RESTATED_HYPERPARAMETERS or (key in ("task", "model_spec") and value is None):
            continue
        if key == "limit" and value is None:
            value = "all"
        if key == "momentum" and hyper.get("optimizer") != "sgd":
            continue  # adam and adamw ignore it
        rows.append((HYPERPARAMETER_LABELS.get(key, key.replace("_", " ")), _fact(key, value)))
    return rows


def run_facts(entry: RunEntry) -> html.Table:
    """The run's metadata and hyperparameters as a two-column table in plain words."""
    rows = run_fact_rows(entry.session.model.meta)
    if not rows:
        return html.Div("No run.json metadata (a bare weights file).", className="text-muted")
    cells = [html.Tr([html.Td(label), html.Td(text)]) for label, text in rows]
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
