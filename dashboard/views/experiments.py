"""Experiments page helpers: the runs table, curves and summaries, and the per-sample diff
of two runs (summary, flipped-sample gallery, map, opening a flipped sample).

Plain functions of a :class:`~dashboard.views.experiments_catalog.RunCatalog`,
so every callback's logic is testable without a browser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import html

from dashboard import ids
from dashboard.components.gallery import caption_children, sample_href
from dashboard.components.navbar import head_box_style
from dashboard.components.navbar import head_choices as navbar_head_choices
from dashboard.figures import empty_figure
from dashboard.figures.experiments import (
    TO_RIGHT,
    TO_WRONG,
    diff_map_figure,
    flip_groups,
    runs_curves_figure,
)
from dashboard.images import image_data_uri
from dashboard.state import DashboardInputError, RunEntry, RunRegistry, run_of
from dashboard.views.experiments_catalog import PROJECTION, RunCatalog
from dashboard.views.guard import point_index

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from analysis.session import AnalysisSession

CURVES_DEFAULT = 6   # runs drawn when none is ticked
GALLERY_SIZE = 40    # flipped samples shown per direction
SELECT_HINT = ("Tick exactly two runs in the table to compare them sample by sample "
               "(A = the first ticked, B = the second).")


# -- the runs table ---------------------------------------------------------------------------
# (column, header, format): "int" with thousands separators, "pct" 2 decimals, "f4"/"f1" fixed.
TABLE_COLUMNS = (("key", "run", None), ("arch", "architecture", None), ("dataset", "dataset", None),
                 ("parameters", "parameters", "int"), ("mult_adds", "mult-adds", "int"),
                 ("epochs", "epochs", "int"), ("best_train_acc", "best train acc", "pct"),
                 ("best_test_acc", "best test acc ↑", "pct"),
                 ("final_test_loss", "final test loss ↓", "f4"),
                 ("training_time_s", "training time (s)", "f1"), ("augment", "augment", None),
                 ("status", "status", None), ("problem", "problem", None))


# d3-format specifiers (dash-ag-grid ships d3-format) of TABLE_COLUMNS' formats.
D3_FORMATS = {"int": ",d", "pct": ".2%", "f4": ".4f", "f1": ".1f"}


def table_columns() -> list[dict]:
    """dash-ag-grid ``columnDefs``: numbers stay numbers (so sorting is numeric), shown
    formatted (an empty cell for a missing value)."""
    out = []
    for cid, name, fmt in TABLE_COLUMNS:
        col = {"field": cid, "headerName": name, "sortable": True}
        if fmt:
            col.update(type="numericColumn", cellDataType="number", valueFormatter={
                "function": f"params.value == null ? '' : "
                            f"d3.format('{D3_FORMATS[fmt]}')(params.value)"})
        else:
            col.update(cellDataType="text")
        out.append(col)
    # The run name stays in view when scrolling sideways, and readable: the grid sizes
    # its columns before the rows arrive, which would leave it a few letters wide.
    out[0].update(pinned="left", minWidth=170)
    return out


def table_records(frame: pd.DataFrame) -> list[dict]:
    """One record per run, ``id`` = the run name (what ``selected_row_ids`` reports)."""
    out = []
    for row in frame.to_dict("records"):
        rec = {c: (None if _missing(row.get(c)) else row.get(c)) for c, _, _ in TABLE_COLUMNS}
        rec["augment"] = {True: "yes", False: "no"}.get(rec["augment"], "")
        rec["id"] = row["key"]
        out.append(rec)
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def table_styles(frame: pd.DataFrame) -> list[dict]:
    """``columnDefs`` with the best test accuracy in bold green (a ``cellStyle`` condition)."""
    columns = table_columns()
    best = frame["best_test_acc"].max()
    if _missing(best):
        return columns
    for col in columns:
        if col["field"] == "best_test_acc":
            col["cellStyle"] = {"styleConditions": [{
                "condition": f"params.value == {float(best)!r}",
                "style": {"fontWeight": 700, "color": "#146c43"}}]}
    return columns


def ticked_runs(rows: Sequence[dict] | None) -> list[str]:
    """The run names of the grid's ``selectedRows`` (malformed rows skipped)."""
    return [r["id"] for r in rows or [] if isinstance(r, dict) and isinstance(r.get("id"), str)]


def table_caption(frame: pd.DataFrame, runs_dir: str) -> str:
    return (f"{len(frame)} run{'s' * (len(frame) != 1)} under '{runs_dir}' (every sub-folder "
            "holding a model.pt); accuracies are the best epoch's, the loss the last epoch's.")


# -- curves and summaries ---------------------------------------------------------------------
def shown_runs(catalog: RunCatalog, store: dict | None) -> list[str]:
    """The ticked runs in the order they were ticked, else the first few of the table."""
    order = [k for k in (store or {}).get("order") or [] if isinstance(k, str)]
    return order or list(catalog.folders())[:CURVES_DEFAULT]


def curves_figure(catalog: RunCatalog, keys: Sequence[str]) -> go.Figure:
    """The ticked runs' curves; a run's colour is its position in the whole run list, so
    it does not change with which runs are ticked or in what order."""
    position = {k: n for n, k in enumerate(catalog.folders())}
    return runs_curves_figure([(k, catalog.history(k)) for k in keys],
                              [position.get(k, n) for n, k in enumerate(keys)])


def summaries_view(catalog: RunCatalog, keys: Sequence[str]) -> list:
    """One collapsible torchinfo summary per run (collapsed: the header says the size)."""
    out = []
    for key in keys:
        meta = catalog.meta(key)
        params = meta.get("parameters")
        head = [html.B(key), f" · {meta.get('arch', '?')}",
                f" · {params:,} parameters" if isinstance(params, int) else ""]
        out.append(html.Details([html.Summary(head, className="small"),
                                 html.Pre(catalog.summary(key), className="loupe-pre mt-1")],
                                className="mb-1"))
    return out


# -- choosing runs A and B ----------------------------------------------------------------------
def pair_store(selected: Sequence[str] | None, current: dict | None, swap: bool) -> dict:
    """The pair store from the table's ticked rows (in ticking order) or the swap button.

    ``{"order": ticked names, first ticked first, "a": name or None, "b": ...}``;
    A and B are set when exactly two runs are ticked.
    """
    current = current if isinstance(current, dict) else {}
    if swap:
        return {**current, "a": current.get("b"), "b": current.get("a")}
    selected = [s for s in selected or [] if isinstance(s, str)]
    previous = [k for k in current.get("order") or [] if k in selected]
    order = previous + [s for s in selected if s not in previous]
    if len(order) != 2:
        return {"order": order, "a": None, "b": None}
    if {current.get("a"), current.get("b")} == set(order):  # keep a swapped pair swapped
        return {"order": order, "a": current["a"], "b": current["b"]}
    return {"order": order, "a": order[0], "b": order[1]}


def pair_of(store: dict | None) -> tuple[str, str] | None:
    if isinstance(store, dict) and isinstance(store.get("a"), str) \
            and isinstance(store.get("b"), str):
        return store["a"], store["b"]
    return None


def diff_head(catalog: RunCatalog, store: dict | None) -> str:
    """The compared head: the store's ``"head"`` when both runs have it, else their first
    shared head.

    Raises :class:`DashboardInputError` when the runs share no head (different tasks).
    """
    a, b = pair_of(store)
    shared = catalog.shared_heads(a, b)
    if not shared:
        raise DashboardInputError(
            f"Runs {a} and {b} have no output head in common ({', '.join(catalog.session(a).heads)}"
            f" vs {', '.join(catalog.session(b).heads)}): tick two runs of the same task.")
    head = store.get("head") if isinstance(store, dict) else None
    return head if head in shared else shared[0]


def diff_view(catalog: RunCatalog, store: dict | None) -> tuple:
    """``(pair line, summary, gallery, head)`` of the two runs; a hint when fewer or more
    are ticked (``head`` is then ``None``).

    Multi-head runs are compared on ``store["head"]`` (see :func:`diff_head`).
    Raises :class:`DashboardInputError` for runs that cannot be compared.
    """
    pair = pair_of(store)
    if pair is None:
        return None, html.Div(SELECT_HINT, className="text-muted small"), None, None
    a, b = pair
    head = diff_head(catalog, store)
    cmp = catalog.comparison(a, b, head)  # inference only; the map's job computes the rest
    on_head = f", head {head}" if len(catalog.shared_heads(a, b)) > 1 else ""
    line = html.Span(["A = ", html.B(a, id="runs-diff-a"), " · B = ", html.B(b, id="runs-diff-b"),
                      f" · on {cmp.summary['dataset']} ({cmp.summary['n']:,} samples{on_head})"])
    return (line, diff_summary(cmp.summary), flip_gallery(catalog.session(b), cmp.frame, head),
            head)


def diff_head_choices(catalog: RunCatalog, store: dict | None, head: str | None) -> tuple:
    """The diff's head selector: ``(options, value, box style)``; hidden unless the two
    runs share several heads."""
    pair = pair_of(store)
    options = [{"label": h, "value": h} for h in (catalog.shared_heads(*pair) if pair else [])]
    return options, head, head_box_style(options)


def diff_summary(s: dict) -> html.Div:
    """Accuracies, flip counts, McNemar's p and the classes that changed most."""
    p = s["mcnemar_p"]
    verdict = "significant" if p < 0.05 else "not significant"
    classes = [dbc.Badge(f"{r['class']}: {r['flips']} flips, {r['acc_a']:.1%} → {r['acc_b']:.1%}",
                         color="light", text_color="dark", className="me-1 border")
               for r in s["per_class"][:4] if r["flips"]]
    return html.Div([
        html.Div(["accuracy A ", html.B(f"{s['accuracy_a']:.2%}"), " → B ",
                  html.B(f"{s['accuracy_b']:.2%}"), " · correct → wrong ",
                  html.B(f"{s['correct_to_wrong']}", className="text-danger"),
                  " · wrong → correct ", html.B(f"{s['wrong_to_correct']}",
                                                className="text-success"),
                  " · McNemar exact p = ", html.B(f"{p:.3g}"), f" ({verdict} at 0.05)"]),
        html.Div(["classes that changed most: ", *classes] if classes else
                 "No sample changed correctness.", className="small mt-1"),
    ], id="runs-diff-stats", className="mb-2")


def flip_gallery(session: AnalysisSession, frame: pd.DataFrame,
                 head: str | None = None) -> html.Div:
    """Thumbnails of the flipped samples, both directions, largest loss change first.

    Each opens the sample in run B (see :func:`open_flipped`); its id carries
    the sample's row index only. Class names are those of ``head``.
    """
    names = np.asarray(session.class_names_of(head), dtype=object)
    delta = frame["loss_delta"].to_numpy()
    sections = []
    for flip, title, sign in ((TO_WRONG, "correct → wrong: B got these wrong", -1),
                              (TO_RIGHT, "wrong → correct: B got these right", 1)):
        idx = np.flatnonzero(frame["flip"].to_numpy() == flip)
        idx = idx[np.argsort(sign * delta[idx], kind="stable")][:GALLERY_SIZE]
        thumbs = [flip_thumb(session, frame, int(i), names, flip == TO_WRONG) for i in idx]
        count = int((frame["flip"] == flip).sum())
        shown = f" (showing {len(idx)} of {count}, largest loss change first)" \
            if count > len(idx) else ""
        sections += [html.Div([html.B(title), f": {count}{shown}"], className="small mb-1"),
                     html.Div(thumbs or html.Span("None.", className="text-muted small"),
                              className="loupe-gallery mb-3")]
    return html.Div(sections)


def flip_thumb(session: AnalysisSession, frame: pd.DataFrame, i: int, names: np.ndarray,
               to_wrong: bool) -> html.Div:
    row = frame.iloc[i]
    sid = str(row["sample_id"])
    title = (f"{sid}: true {names[row['label']]}, A predicted {names[row['pred_a']]}, "
             f"B predicted {names[row['pred_b']]}, loss change {row['loss_delta']:+.3f} nats")
    style = {"cursor": "pointer"}
    if not to_wrong:
        style.update(borderColor="#a3cfbb", background="#f3faf6")
    return html.Div([html.Img(src=image_data_uri(session.dataset.images[i], 2), alt=sid),
                     html.Span(caption_children(f"run A: {names[row['pred_a']]}\n"
                                                f"run B: {names[row['pred_b']]}"),
                               className="cap")],
                    id={"type": ids.RUNS_DIFF_THUMB, "index": i}, n_clicks=0, title=title,
                    role="button", className="loupe-thumb" + (" wrong" if to_wrong else ""),
                    style=style, **{"data-sample-id": sid})


# -- the map of the diff (a background job) -----------------------------------------------------
def diff_map(catalog: RunCatalog, store: dict | None,
             progress: Callable[[str], None] | None = None) -> go.Figure:
    """Run B's map with the flipped samples highlighted (see :func:`diff_map_figure`).

    Computes (or reads back) every step of run B, so a flipped sample opens on
    the sample page at once; ``progress`` is told each step.
    """
    pair = pair_of(store)
    if pair is None:
        return empty_figure("Tick two runs to see where their flips lie on the map.")
    a, b = pair
    head = diff_head(catalog, store)
    cmp = catalog.comparison(a, b, head)
    session = catalog.session(b)
    for n, step in enumerate(session.steps, 1):
        if progress is not None:
            progress(f"Analysing run B ({b}) for the map: {step} ({n}/{len(session.steps)})…")
        session.artifact(step)
    frame = cmp.frame
    names = np.asarray(session.class_names_of(head), dtype=object)
    hover = np.full(len(frame), "", dtype=object)
    for i in np.concatenate(flip_groups(frame["flip"].to_numpy())[1:]):
        r = frame.iloc[int(i)]
        hover[i] = (f"<b>{r['sample_id']}</b><br>true {names[r['label']]}<br>A predicted "
                    f"{names[r['pred_a']]}, B predicted {names[r['pred_b']]}<br>loss change "
                    f"{r['loss_delta']:+.3f} nats<br>click to open it in run B")
    return diff_map_figure(session.projection(PROJECTION), frame["flip"].to_numpy(),
                           frame["loss_delta"].to_numpy(), hover, PROJECTION)


def clicked_index(catalog: RunCatalog, store: dict | None, points: Sequence[dict]) -> int | None:
    """The sample index of a clicked flipped point (by ``curveNumber`` + ``pointIndex``)."""
    pair = pair_of(store)
    if pair is None:
        return None
    groups = flip_groups(catalog.comparison(*pair, diff_head(catalog, store))
                         .frame["flip"].to_numpy())
    for p in points or []:
        curve, point = p.get("curveNumber"), p.get("pointIndex", p.get("pointNumber"))
        if isinstance(curve, int) and isinstance(point, int) and 1 <= curve < len(groups) \
                and 0 <= point < len(groups[curve]):
            return int(groups[curve][point])
    return None


# -- opening a flipped sample on the sample page ------------------------------------------------
def register_run(registry: RunRegistry, session: AnalysisSession, folder: Path,
                 head: str | None = None) -> RunEntry:
    """The registry's entry of ``session``'s model on its data for ``head`` (default: the
    first head); the run is added when not there yet."""
    head = head or session.heads[0]
    for entry in registry:
        s = entry.session
        if (s.engine.model_id, s.dataset.key, s.dataset.fingerprint, entry.head) == \
                (session.engine.model_id, session.dataset.key, session.dataset.fingerprint,
                 head):
            return entry
    first = registry.add(session, str(folder))
    key = next(o["value"] for o in registry.head_options(first.key) if o["label"] == head)
    return registry.get(key)


def open_flipped(registry: RunRegistry, catalog: RunCatalog, store: dict | None,
                 index: int) -> tuple:
    """Open sample ``index`` of run B on the sample page, on the compared head.

    Returns
    -------
    tuple
        ``(href, run store, sample store, run selector options, run selector value,
        head selector options, head selector value, head selector box style)``.
    """
    pair = pair_of(store)
    if pair is None:
        raise DashboardInputError(SELECT_HINT)
    session = catalog.session(pair[1])
    row = point_index(index)  # a pattern-matching id's index comes from the browser
    if row is None or row >= len(session.dataset):
        raise DashboardInputError(f"Sample {str(index)[:40]} is not in run {pair[1]}'s data.")
    index = row
    entry = register_run(registry, session, catalog.folder(pair[1]),
                         diff_head(catalog, store))
    session.run()  # every step into memory (the map's job computed them): the page opens at once
    entry.table  # noqa: B018 (built once, here)
    sid = str(session.dataset.sample_ids[int(index)])
    run_key = run_of(entry.key)  # the run selector names a run by its first head
    return (sample_href(sid), {"run": entry.key}, {"run": entry.key, "id": sid},
            registry.options(), run_key, *navbar_head_choices(registry, run_key, entry.key))
