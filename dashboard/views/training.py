"""Training page helpers: the run's metadata as a table."""

from __future__ import annotations

import json

from dash import html

from dashboard.state import RunEntry

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
