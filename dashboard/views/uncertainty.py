"""Uncertainty & OOD page helpers: choices, the figures' inputs, the score table, galleries.

Used by :mod:`dashboard.pages.uncertainty`; no callbacks here, so everything
is testable as plain functions on a :class:`~dashboard.state.RunEntry`.
Scores follow :mod:`analysis.ood`: higher = more likely out-of-distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from dash import Patch, dcc, html

from analysis.ood import auroc, separation_table
from analysis.ood import score_columns as ood_scores
from analysis.registry import column_info
from dashboard import figures
from dashboard.columns import column_title
from dashboard.components.gallery import sample_gallery, sample_href
from dashboard.figures import uncertainty as ufig
from dashboard.images import image_data_uri
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import point_index

NO_EXTRA = ("No extra dataset is open for this run. Start the dashboard with one: "
            "python -m dashboard --extra-dataset corrupt:all (a shifted copy of the analysed "
            "data, always available) or --extra-dataset fashion-mnist (needs its idx files).")
NO_DROPOUT = ("This model has no dropout layer, so there are no MC-dropout scores: the "
              "uncertainty shown is the plain softmax's (entropy, least confidence), mutual "
              "information (which needs dropout) is left out, and the MC-dropout histograms "
              "stay empty.")
COLOR_CHOICES = (("dataset", "dataset"), ("the model's prediction", "class"))
GALLERY_SIZE = 40
NEAREST_K = 10


def extra_options(entry: RunEntry) -> list[dict]:
    """Dropdown options of the run's extra datasets (empty when none was opened)."""
    return [{"label": f"{key} ({len(eng.dataset):,} samples)", "value": key}
            for key, eng in entry.session.extras.items()]


def check_extra(entry: RunEntry, key: str | None) -> str:
    """A valid extra dataset key (``None``: the first); a :class:`DashboardInputError` else."""
    keys = list(entry.session.extras)
    if not keys:
        raise DashboardInputError(NO_EXTRA)
    return _check_choice(key, keys, "extra dataset")


def _check_choice(name: str | None, valid: list[str], what: str) -> str:
    """``name`` when valid, the first choice when empty; else a :class:`DashboardInputError`."""
    if name in (None, ""):
        return valid[0]
    if name not in valid:
        raise DashboardInputError(f"Unknown {what} '{name}'; this run has: {', '.join(valid)}.")
    return name


def map_options(entry: RunEntry) -> list[dict]:
    """The joint maps the run computed, t-SNE first."""
    return [{"label": title, "value": name} for name, title in entry.session.joint_maps()]


def map_label(entry: RunEntry, name: str) -> str:
    return dict(entry.session.joint_maps()).get(name, name)


def score_columns(entry: RunEntry, key: str) -> list[str]:
    """The declared uncertainty/OOD scores (:func:`analysis.ood.score_columns`) present in
    both tables."""
    extra = entry.extra_table(key)
    return [col for col, _, _ in ood_scores() if col in entry.table and col in extra]


def score_options(entry: RunEntry, key: str) -> list[dict]:
    labels = {col: f"{desc}{' (MC dropout)' if mc else ''}" for col, desc, mc in ood_scores()}
    return [{"label": labels[c], "value": c} for c in score_columns(entry, key)]


def score_families() -> list[ufig.ScoreFamily]:
    """The histogram grid's rows, from the steps' declarations: each score without MC
    dropout beside its MC-dropout twin (``None`` where a variant does not exist)."""
    out = []
    for col, _, mc in ood_scores():
        info = column_info(col)
        if mc and any(f.mc == col for f in out):
            continue
        label = f"{info.label} ({info.unit})" if info.unit else info.label
        out.append(ufig.ScoreFamily(label, None if mc else col, col if mc else info.mc_twin))
    return out


def run_summary(entry: RunEntry, key: str) -> html.Div:
    """Sizes of both datasets and the in-distribution accuracy with and without MC dropout."""
    session = entry.session
    acc = session.accuracy(entry.head)
    parts = [html.B(session.dataset.key), f" ({len(session.dataset):,}) vs ",
             html.B(key), f" ({len(session.extra(key).dataset):,}) · in-distribution accuracy ",
             html.B(f"{acc:.2%}"), " without MC dropout"]
    if "mc_dropout" in session.steps:
        parts += [", ", html.B(f"{session.accuracy(entry.head, mc=True):.2%}"),
                  f" with (T={session.mc_samples})"]
    return html.Div(parts, className="small")


def histograms_view(entry: RunEntry, key: str, scale: str | None = "log"):
    """The histogram grid of every score, in-distribution vs ``key`` (``scale``: log or linear)."""
    scale = _check_choice(scale, ["log", "linear"], "y-axis scale")
    cols = score_columns(entry, key)
    extra = entry.extra_table(key)
    in_s = {c: entry.table[c].to_numpy() for c in cols}
    ood_s = {c: extra[c].to_numpy() for c in cols}
    aurocs = {c: auroc(in_s[c], ood_s[c]) for c in cols if len(in_s[c]) and len(ood_s[c])}
    return ufig.uncertainty_histograms_figure(in_s, ood_s, entry.session.dataset.key, key,
                                              entry.session.mc_samples, aurocs,
                                              score_families(), log_y=scale == "log")


# -- the score table ------------------------------------------------------------------------
TABLE_COLUMNS = (("description", "score", "text"), ("mc", "MC", "text"),
                 ("auroc", "AUROC ↑", "numeric"), ("fpr_at_95tpr", "FPR@95 ↓", "numeric"),
                 ("mean_in", "mean in", "numeric"), ("mean_ood", "mean OOD", "numeric"))


def table_columns() -> list[dict]:
    """AG Grid ``columnDefs``: numbers with 3 decimals, AUROC >= 0.9 in bold green.

    The score's description shows its sample-table column as a tooltip.
    """
    cols = []
    for field_name, name, kind in TABLE_COLUMNS:
        # Headers wrap rather than being cut ("AUR..."); the description takes what is left.
        col = {"field": field_name, "headerName": name, "sortable": True, "resizable": True,
               "wrapHeaderText": True, "autoHeaderHeight": True}
        if kind == "numeric":
            col.update(type="rightAligned", width=70,
                       valueFormatter={"function": "d3.format('.3f')(params.value)"})
        if field_name == "description":
            col.update(tooltipField="tooltip", flex=1, minWidth=130, wrapText=True,
                       autoHeight=True)
        if field_name == "mc":
            col.update(width=48)
        if field_name == "auroc":
            col["cellStyle"] = {"styleConditions": [{
                "condition": "params.value >= 0.9",
                "style": {"fontWeight": 700, "color": "#146c43"}}]}
        cols.append(col)
    return cols


def score_table(entry: RunEntry, key: str) -> pd.DataFrame:
    """:func:`analysis.ood.separation_table` of the run vs ``key``, best AUROC first."""
    sep = separation_table(entry.table, entry.extra_table(key))
    sep["mc"] = np.where(sep["mc_dropout"], "yes", "no")
    return sep.sort_values("auroc", ascending=False, kind="stable").reset_index(drop=True)


def table_records(frame: pd.DataFrame) -> list[dict]:
    """The grid's rows; each keeps its column name under ``score`` and a ``tooltip``."""
    records = frame[["score"] + [c for c, _, _ in TABLE_COLUMNS]].to_dict("records")
    for r in records:
        r["tooltip"] = f"column {r['score']} of the sample table"
    return records


# -- the joint map ----------------------------------------------------------------------------
def check_map(entry: RunEntry, name: str | None) -> str:
    valid = [o["value"] for o in map_options(entry)]
    if not valid:
        raise DashboardInputError("This run computed no joint map (no --projection).")
    return _check_choice(name, valid, "joint map")


def map_coords(entry: RunEntry, key: str, name: str) -> np.ndarray:
    """``(N_in + N_extra, 2)`` float32 joint coordinates, in-distribution rows first."""
    return entry.session.joint_map(key, check_map(entry, name))


def _color_kwargs(entry: RunEntry, key: str, color: str) -> dict:
    _check_choice(color, [v for _, v in COLOR_CHOICES], "colour")
    if color == "class":
        preds = np.concatenate([entry.table["pred"].to_numpy(),
                                entry.extra_table(key)["pred"].to_numpy()])
        return {"color_by": "class", "classes": preds, "class_names": entry.class_names,
                "value_title": "predicted class"}
    return {"color_by": "dataset"}


def focus_of(entry: RunEntry, key: str, sample_store: dict | None
             ) -> tuple[list[int], int | None]:
    """Joint rows of the open sample (when it is one of ``key``'s) and its in-dist neighbours."""
    if not isinstance(sample_store, dict) or not entry.same_run(sample_store.get("run")):
        return [], None
    found = entry.locate_extra(sample_store.get("id"))
    if found is None or found[0] != key:
        return [], None
    nearest = entry.session.reference_neighbors(key)[0][found[1]]
    return [int(i) for i in nearest[:NEAREST_K]], len(entry.session.dataset) + found[1]


def map_view(entry: RunEntry, key: str, name: str, color: str,
             sample_store: dict | None = None):
    """The joint map figure for the current controls."""
    highlight, focus = focus_of(entry, key, sample_store)
    return ufig.joint_map_figure(map_coords(entry, key, name), len(entry.session.dataset),
                                 entry.session.dataset.key, key, map_name=name,
                                 map_label=map_label(entry, name), highlight=highlight, focus=focus,
                                 **_color_kwargs(entry, key, color))


def recolor_map_patch(entry: RunEntry, key: str, color: str) -> Patch:
    """Only the two data traces' ``marker.color`` and the colour axis: no coordinates."""
    per_trace, axis = ufig.map_colors(len(entry.session.dataset),
                                      **_color_kwargs(entry, key, color))
    patch = Patch()
    for t, values in enumerate(per_trace):
        patch["data"][t]["marker"]["color"] = values if isinstance(values, str) \
            else figures.typed_array(values)
        patch["data"][t]["marker"]["coloraxis"] = "coloraxis" if axis else None
    patch["layout"]["coloraxis"] = axis or {}
    return patch


def overlap_caption(entry: RunEntry, key: str, name: str) -> html.Div:
    """The map's overlap measures (from the joint step's summary)."""
    s = entry.session.extra(key).get(check_map(entry, name)).summary
    return html.Div([
        "Of each OOD sample's 10 nearest neighbours, in-distribution on average: ",
        html.B(f"{s['ood_in_dist_neighbors_2d']:.1%}"), " on the map, ",
        html.B(f"{s['ood_in_dist_neighbors_embedding']:.1%}"), " in embedding space ",
        "(lower = better separated) · trustworthiness ", html.B(f"{s['trustworthiness']:.3f}"),
    ], className="small text-muted")


def overlap_table(entry: RunEntry, key: str) -> html.Table:
    """Every joint map's overlap (:func:`analysis.report.map_overlap`), plain vs MC dropout."""
    from analysis.report import map_overlap

    head = html.Tr([html.Th(h) for h in ("map", "embeddings", "on the map", "in embedding",
                                          "trustworthiness")])
    rows = [html.Tr([html.Td(r["map"].upper().replace("TSNE", "t-SNE")),
                     html.Td("MC-averaged" if r["embedding"] == "mc" else "plain"),
                     html.Td(f"{r['ood_nn_in_dist_2d']:.1%}"),
                     html.Td(f"{r['ood_nn_in_dist_embedding']:.1%}"),
                     html.Td(f"{r['trustworthiness']:.3f}")])
            for r in map_overlap(entry.session, key)]
    return html.Table([html.Thead(head), html.Tbody(rows)],
                      className="table table-sm small mb-0 loupe-overlap")


def point_sample_id(entry: RunEntry, key: str, point: dict) -> str | None:
    """The sample id of a clicked map point: (``curveNumber``, ``pointIndex``) server side.

    Plotly sends the data traces' arrays base64-encoded, so their click data
    carries no ``customdata``; the overlay trace's plain-list ``customdata``
    holds joint rows.
    """
    if not isinstance(point, dict):
        return None
    curve = point_index(point.get("curveNumber"))
    index = point_index(point.get("pointIndex", point.get("pointNumber")))
    if curve is None or index is None:  # missing, negative or not a number
        return None
    n_in = len(entry.session.dataset)
    if curve == ufig.OVERLAY_TRACE:
        row = point_index(point.get("customdata"))
        if row is None:
            return None
        curve, index = (0, row) if row < n_in else (1, row - n_in)
    ids = entry.session.dataset.sample_ids if curve == ufig.IN_TRACE \
        else entry.session.extra(key).dataset.sample_ids
    return str(ids[index]) if curve in (0, 1) and 0 <= index < len(ids) else None


def hover_body(entry: RunEntry, key: str, sample_id: str) -> list:
    """Thumbnail, id, prediction and confidence of a hovered sample."""
    found = entry.locate_extra(sample_id)
    if found is None:
        i = entry.index_of(sample_id)
        row, src = entry.table.iloc[i], entry.thumbnail(i, 3)
        truth = f"true {row['label_name']} · "
    else:
        row = entry.extra_table(found[0]).iloc[found[1]]
        src = image_data_uri(entry.session.extra(found[0]).dataset.images[found[1]], 3)
        truth = f"{row['label_name']} · "
    return [html.Img(src=src), html.Div(html.B(sample_id)),
            html.Div(f"{truth}predicted {row['pred_name']} ({row['confidence']:.1%})")]


# -- galleries --------------------------------------------------------------------------------
def extra_gallery(entry: RunEntry, key: str, rows: Sequence[int], captions: Sequence[str],
                  empty: str = "No samples.", order: str = "") -> html.Div:
    """Thumbnails of extra dataset ``key``'s ``rows`` (the first :data:`GALLERY_SIZE`, with
    a ``showing N of M`` note when there are more), each a link to its sample page."""
    total = len(rows)
    rows = [int(r) for r in rows[:GALLERY_SIZE]]
    if not rows:
        return html.Div(empty, className="text-muted small")
    ds = entry.session.extra(key).dataset
    table = entry.extra_table(key)
    cards = []
    for r, cap in zip(rows, captions, strict=True):
        sid = str(ds.sample_ids[r])
        cards.append(dcc.Link(
            [html.Img(src=image_data_uri(ds.images[r], 2), alt=sid),
             html.Span(cap, className="cap")],
            href=sample_href(sid), className="loupe-thumb",
            title=f"{sid}: {table['label_name'].iat[r]}, predicted {table['pred_name'].iat[r]} "
                  f"with confidence {table['confidence'].iat[r]:.1%}"))
    gallery = html.Div(cards, className="loupe-gallery")
    if total <= len(rows):
        return gallery
    note = f"showing {len(rows)} of {total:,}" + (f" {order}" if order else "")
    return html.Div([html.Div(note, className="small text-muted mb-1"), gallery])


def galleries_view(entry: RunEntry, key: str, score: str | None
                   ) -> tuple[html.Div, html.Div, str]:
    """The OOD samples a score misses (lowest first) and its in-distribution false alarms.

    With the default score (``uncertainty`` = 1 - max p) these are the most
    confident OOD samples and the most uncertain in-distribution ones.

    Returns ``(ood gallery, in-distribution gallery, score column)``.
    """
    score = _check_choice(score, score_columns(entry, key), "score")
    extra = entry.extra_table(key)
    low = np.argsort(extra[score].to_numpy(), kind="stable")
    ood_caps = [f"pred {extra['pred_name'].iat[r]} ({extra['confidence'].iat[r]:.0%})"
                for r in low[:GALLERY_SIZE]]
    high = np.argsort(-entry.table[score].to_numpy(), kind="stable")
    t = entry.table
    in_caps = [f"true {t['label_name'].iat[i]}, pred {t['pred_name'].iat[i]}\n"
               f"score {t[score].iat[i]:.2g}" for i in high[:GALLERY_SIZE]]
    return (extra_gallery(entry, key, low, ood_caps, order="(lowest score first)"),
            sample_gallery(entry, high, in_caps, limit=GALLERY_SIZE,
                           order="(highest score first)"), column_title(score))


# -- in-distribution uncertainty (shown with or without an extra dataset) --------------------
# (column without MC dropout, column with it, what it measures): the three in-distribution
# uncertainty histograms; mutual information exists only with MC dropout.
IN_FAMILIES = (("entropy", "mc_entropy", "predictive entropy (nats)"),
               (None, "mc_mutual_info", "mutual information (nats)"),
               ("uncertainty", "mc_uncertainty", "least confident, 1 - max p"))
IN_SCORE_LABELS = {"entropy": "predictive entropy", "mc_entropy": "predictive entropy, MC dropout",
                   "mc_mutual_info": "mutual information, MC dropout",
                   "uncertainty": "least confident (1 - max p)",
                   "mc_uncertainty": "least confident (1 - max p), MC dropout"}


def has_mc(entry: RunEntry) -> bool:
    """Whether MC-dropout scores were computed (the model has dropout, T > 0)."""
    return bool(entry.session.mc_samples) and "mc_entropy" in entry.table


def in_score_columns(entry: RunEntry) -> list[str]:
    """The scores the histograms show: the MC-dropout ones when computed, else the plain ones."""
    mc = has_mc(entry)
    cols = [m if mc else p for p, m, _ in IN_FAMILIES]
    return [c for c in cols if c and c in entry.table]


def in_score_options(entry: RunEntry) -> list[dict]:
    """Every uncertainty score of the table (plain and MC dropout), for the gallery's ranking."""
    return [{"label": label, "value": col} for col, label in IN_SCORE_LABELS.items()
            if col in entry.table]


def prediction_correct(entry: RunEntry, column: str) -> np.ndarray:
    """``(N,)`` bool: the prediction ``column`` belongs to is right (MC's for ``mc_*``)."""
    t = entry.table
    if column.startswith("mc_") and "mc_pred" in t:
        return (t["mc_pred"].to_numpy() == t["label"].to_numpy())
    return t["correct"].to_numpy(dtype=bool)


def in_histograms_view(entry: RunEntry):
    """The in-distribution histograms, correct vs wrong predictions, one panel per score."""
    cols = in_score_columns(entry)
    if not cols:
        raise DashboardInputError("This run's sample table has no uncertainty score (entropy, "
                                  "1 - max p): the inference step did not run.")
    titles = {m if m in cols else p: label for p, m, label in IN_FAMILIES}
    scores = {c: entry.table[c].to_numpy(dtype=np.float64) for c in cols}
    correct = {c: prediction_correct(entry, c) for c in cols}
    aurocs = {c: auroc(scores[c][correct[c]], scores[c][~correct[c]]) for c in cols
              if correct[c].any() and (~correct[c]).any()}
    return ufig.correctness_histograms_figure(scores, correct, titles, aurocs)


def in_summary(entry: RunEntry) -> html.Div:
    """How many samples, the accuracy with and without MC dropout, and what is drawn."""
    session = entry.session
    acc = session.accuracy(entry.head)
    parts = [html.B(session.dataset.key), f" ({len(session.dataset):,} samples) · accuracy ",
             html.B(f"{acc:.2%}"), " without MC dropout"]
    if has_mc(entry):
        parts += [", ", html.B(f"{session.accuracy(entry.head, mc=True):.2%}"),
                  f" with (T={session.mc_samples} passes). The histograms show the MC-dropout "
                  "scores, split by whether the MC-dropout prediction is right."]
    else:
        parts += [". The model has no dropout (no MC-dropout passes), so these are the plain "
                  "softmax's scores."]
    return html.Div(parts, className="small mb-1")


def most_uncertain_view(entry: RunEntry, score: str | None) -> html.Div:
    """The :data:`GALLERY_SIZE` samples ranked highest by ``score``, each linking to its page."""
    score = _check_choice(score, [o["value"] for o in in_score_options(entry)],
                          "uncertainty score")
    t = entry.table
    order = np.argsort(-t[score].to_numpy(), kind="stable")
    caps = [f"true {t['label_name'].iat[i]}, pred {t['pred_name'].iat[i]}\n"
            f"score {t[score].iat[i]:.2f}" for i in order[:GALLERY_SIZE]]
    note = (f"The most uncertain samples by {IN_SCORE_LABELS[score]}, most uncertain first. "
            "Red frame: a wrong prediction. Click one to open it.")
    return html.Div([html.Div(note, className="small text-muted mb-1"),
                     sample_gallery(entry, order, caps, limit=GALLERY_SIZE,
                                    order="(most uncertain first)")])


def no_extra_hint(entry: RunEntry) -> html.Div:
    """What to start the dashboard with to compare against an out-of-distribution dataset."""
    return html.Div([
        html.Div([html.B("No out-of-distribution dataset is open"),
                  f", so there is nothing to compare {entry.session.dataset.key} with yet. "
                  "Restart the dashboard with one:"]),
        html.Ul([
            html.Li([html.Code("python -m dashboard --extra-dataset corrupt:all"),
                     ": a shifted copy of the analysed data, always available (the 15 MNIST-C "
                     "corruptions mixed, from small shifts to fog and inverted stripes). ",
                     html.Code("corrupt:inverse"), ", ", html.Code("corrupt:fog"),
                     " and the other names open one corruption."]),
            html.Li([html.Code("--extra-dataset fashion-mnist"),
                     ": needs the Fashion-MNIST idx files. Install Debian's ",
                     html.Code("dataset-fashion-mnist"), " package (it installs them under ",
                     html.Code("/usr/share/datasets"), "), or put the four files (",
                     html.Code("train-images-idx3-ubyte.gz"), ", ",
                     html.Code("train-labels-idx1-ubyte.gz"), " and the two ",
                     html.Code("t10k-"), " ones) in a folder ", html.Code("fashion-mnist"),
                     " inside the folder you pass with ", html.Code("--data-root"), " or ",
                     html.Code("LOUPE_DATA"), "."]),
        ], className="mb-0 mt-1"),
    ], className="small")
