"""Insights page helpers: the insight cards, "select on the map", explaining a selection.

Plain functions (no callbacks), so everything is testable without a browser.
The insights themselves come from the session (:meth:`AnalysisSession.insights`,
:meth:`AnalysisSession.explain`); this module only asks for them and draws.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import dash_bootstrap_components as dbc
import numpy as np
from dash import dcc, html

from analysis.attribution import METHODS, normalize_heatmap
from analysis.insights import Evidence, Insight
from dashboard import ids
from dashboard.components.gallery import sample_gallery
from dashboard.figures.insights import (
    evidence_figure,
    evidence_title,
    is_numeric_evidence,
    mean_heatmaps_figure,
)
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import point_index, selection_indices, selection_limit

log = logging.getLogger(__name__)

GALLERY_SIZE = 12            # worst samples shown per card
HEATMAP_METHOD = "integrated_gradients"  # the Sample page's default: the likeliest cached
HEATMAP_LOOKUPS = 2000       # cached-heatmap look-ups per explanation, inside and outside
SEVERITY_COLOURS = {"high": "danger", "medium": "warning", "low": "secondary"}
# Metric name -> (plain words, format of one value).
METRICS = {"error_rate": ("error rate", "{:.1%}"), "accuracy": ("accuracy", "{:.1%}"),
           "mean_loss": ("mean loss", "{:.3f} nats")}
STATS = {"excess_errors": ("errors beyond the rest's error rate", "{:,.0f}"),
         "p_value": ("p-value", "{:.2g}"),
         "q_value": ("p-value adjusted over all groups tried", "{:.2g}")}
# Table columns every run has, in plain words (rules and evidence may name them).
COLUMN_WORDS = {"label": "true class", "pred": "predicted class", "loss": "loss",
                "correct": "correct", "confidence": "confidence", "split": "split"}
CLASS_RULE_COLUMNS = ("label", "pred")
OPERATORS = {"==": "is", "!=": "is not", "<=": "≤", ">=": "≥", "<": "<", ">": ">"}


# -- asking the session ----------------------------------------------------------------------
def session_insights(entry: RunEntry) -> list[Insight]:
    """The run's insights, ranked (most worth a look first); kept per run entry.

    The first call computes them (seconds on a large run): call it from a
    background job, never from a plain callback.
    """
    session = entry.session
    if not hasattr(session, "insights"):
        raise DashboardInputError("This version of the analysis cannot find insights yet.")
    return entry.memo(("insights", entry.head), lambda: list(session.insights()))


class _NotComputed(Exception):
    """Raised inside the memo so that a miss stores nothing."""


def cached_insights(entry: RunEntry) -> list[Insight] | None:
    """The insights if already computed for this entry (see :func:`session_insights`), else
    ``None``: for plain callbacks, which must not start the computation."""
    def missing():
        raise _NotComputed

    try:
        return entry.memo(("insights", entry.head), missing)
    except _NotComputed:
        return None


def explain_indices(entry: RunEntry, indices: np.ndarray) -> Insight:
    """The explanation of the samples ``indices`` (``(M,)`` row indices) against the rest
    (:meth:`AnalysisSession.explain` on this entry's head): an insight of kind
    ``selection`` with the metadata that distinguishes them, error rate and mean loss
    inside vs outside, the test of the difference, the samples worst first."""
    return entry.session.explain(np.asarray(indices, dtype=np.int64), head=entry.head)


# -- the cards -------------------------------------------------------------------------------
def metric_words(name: str, value: float) -> tuple[str, str]:
    """``(plain name, formatted value)`` of a metric (``error_rate`` -> ``error rate``)."""
    words, fmt = METRICS.get(name, (name.replace("_", " "), "{:.3g}"))
    return words, fmt.format(float(value))


def metrics_table(metrics: Mapping[str, Sequence[float]]) -> html.Table | None:
    """Each metric inside vs outside the group, as a small table (``None`` without metrics)."""
    if not metrics:
        return None
    head = html.Thead(html.Tr([html.Th(""), html.Th("inside", className="small"),
                               html.Th("outside", className="small")]))
    rows = []
    for name, pair in metrics.items():
        inside, outside = float(pair[0]), float(pair[1])
        words, text_in = metric_words(name, inside)
        rows.append(html.Tr([html.Td(words), html.Td(html.B(text_in)),
                             html.Td(metric_words(name, outside)[1])]))
    return html.Table([head, html.Tbody(rows)], className="loupe-meta loupe-insight-metrics mb-2")


def stats_line(stats: Mapping[str, float]) -> html.Div | None:
    """The test statistics in plain words, one small line."""
    parts = []
    for name, (words, fmt) in STATS.items():
        value = stats.get(name)
        if value is not None and np.isfinite(float(value)):
            parts.append(f"{words} {fmt.format(float(value))}")
    return html.Div(" · ".join(parts), className="small text-muted mb-2") if parts else None


def category_evidence(evidence: Sequence[Evidence]) -> list[html.Li]:
    """Non-numeric evidence (a class, a yes/no) as plain sentences."""
    out = []
    for e in evidence:
        if is_numeric_evidence(e):
            continue
        where = "outside in the same classes" if e.given else "outside"
        given = " given the class" if e.given else ""
        out.append(html.Li([html.B(evidence_title(e)), f": mostly {e.inside} inside, "
                            f"{e.outside} {where} (the group is {e.lift:.1f} times as common "
                            f"there; mutual information{given} {e.score:.3f} nats)"]))
    return out


def worded(evidence: Sequence[Evidence]) -> tuple[Evidence, ...]:
    """The evidence with the table's own columns (``label``, ``pred``...) in words."""
    return tuple(replace(e, label=COLUMN_WORDS[e.column])
                 if e.column in COLUMN_WORDS and e.label in (e.column, e.column.replace("_", " "))
                 else e for e in evidence)


def evidence_view(evidence: Sequence[Evidence], graph_id: str | dict | None = None) -> list:
    """What distinguishes the group: the paired-bar figure and the categorical evidence."""
    evidence = worded(evidence)
    if not evidence:
        return [html.Div("No measurement distinguishes these samples from the rest.",
                         className="text-muted small")]
    parts = []
    if any(is_numeric_evidence(e) for e in evidence):
        kwargs = {"id": graph_id} if graph_id is not None else {}
        parts.append(dcc.Graph(figure=evidence_figure(evidence), className="loupe-evidence",
                               config={"displayModeBar": False}, **kwargs))
    categories = category_evidence(evidence)
    if categories:
        parts.append(html.Ul(categories, className="small mb-0 ps-3"))
    return parts


def plain_rule(rule: str, evidence: Sequence[Evidence] = (),
               class_names: Sequence[str] = ()) -> str:
    """A pandas query over the sample table in plain words.

    ``label == 7 and stroke_thickness < 1.8`` becomes ``true class is 7 and stroke
    thickness (px) < 1.8``: column names are replaced by the evidence's labels (or
    the column's words), class indices by class names, quotes and ``&`` by words.
    """
    words = {**COLUMN_WORDS, **{e.column: evidence_title(e) for e in worded(evidence)}}
    text = rule.replace("`", "").replace("&", " and ").replace("|", " or ")

    def class_name(match: re.Match) -> str:
        index = int(match.group(3))
        name = class_names[index] if index < len(class_names) else str(index)
        return f"{match.group(1)} {match.group(2)} {name}"

    text = re.sub(r"\b(label|pred)\s*(==|!=)\s*(\d+)\b", class_name, text)
    text = re.sub(r"\b([A-Za-z_][A-Za-z0-9_@]*)(?=\s*(?:==|!=|<=|>=|<|>|\bin\b|\bnot in\b))",
                  lambda m: words.get(m.group(1), m.group(1).replace("_", " ")), text)
    text = re.sub(r"\s*(==|!=|<=|>=|<|>)\s*", lambda m: f" {OPERATORS[m.group(1)]} ", text)
    return re.sub(r"\s+", " ", text).strip()


def worst_gallery(entry: RunEntry, indices: np.ndarray) -> html.Div:
    """Thumbnails of the first :data:`GALLERY_SIZE` samples (already worst first)."""
    return sample_gallery(entry, indices[:GALLERY_SIZE], limit=GALLERY_SIZE,
                          empty="None of these samples is in this dataset.")


def extra_dataset_of(entry: RunEntry, insight: Insight) -> str | None:
    """The extra (out-of-distribution) dataset an insight's samples belong to, if any
    (an ``ood`` insight lists the extra dataset's samples, not this run's)."""
    if not insight.sample_ids:
        return None
    key = str(insight.sample_ids[0]).rsplit(":", 1)[0]
    return key if key in entry.session.extras else None


def extra_worst_gallery(entry: RunEntry, key: str, sample_ids: Sequence[str]) -> html.Div:
    """The first :data:`GALLERY_SIZE` of ``sample_ids``, samples of extra dataset ``key``."""
    from dashboard.views.uncertainty import extra_gallery

    table = entry.extra_table(key)
    row_of = {sid: r for r, sid in enumerate(table["sample_id"].to_numpy())}
    rows = [row_of[s] for s in sample_ids if s in row_of]
    caps = [f"pred {table['pred_name'].iat[r]}\n({table['confidence'].iat[r]:.0%})"
            for r in rows[:GALLERY_SIZE]]
    return extra_gallery(entry, key, rows[:GALLERY_SIZE], caps)


def size_line(n: int, share: float) -> html.Span:
    return html.Span([html.B(f"{n:,}"), f" sample{'s' if n != 1 else ''} · ",
                      html.B(f"{share:.1%}"), " of the dataset"])


def insight_card(entry: RunEntry, insight: Insight, position: int) -> html.Div:
    """One insight: title, severity, size, metrics, evidence, worst samples, rule,
    suggestion and the "Select on the map" button (``{"type": INSIGHT_SELECT, "index":
    position}``)."""
    badge = dbc.Badge(insight.severity, color=SEVERITY_COLOURS.get(insight.severity,
                                                                   "secondary"),
                      className="ms-2 text-uppercase loupe-severity")
    extra = extra_dataset_of(entry, insight)
    shown = None if extra else entry.indices_of(insight.sample_ids[:GALLERY_SIZE])
    rule = plain_rule(insight.rule, insight.explanation, entry.class_names)
    left = [
        html.H5([html.Span(insight.title, className="loupe-insight-title"), badge],
                className="mb-1"),
        html.Div(size_line(insight.n, insight.share), className="mb-2"),
        metrics_table(insight.metrics),
        stats_line(insight.stats),
        html.Div([html.Span("Rule: ", className="text-muted"), rule],
                 className="small mb-1 loupe-insight-rule") if rule else None,
        html.Div([html.Span("Suggestion: ", className="text-muted"), insight.suggestion],
                 className="small mb-2") if insight.suggestion else None,
        dbc.Button("Select on the map", id={"type": ids.INSIGHT_SELECT, "index": position},
                   size="sm", color="primary", outline=True,
                   # another dataset's samples are not on this run's map
                   style={"display": "none"} if extra else None),
        dcc.Link("Compare the datasets on the Uncertainty & OOD page", href="/uncertainty",
                 className="small") if extra else None,
    ]
    return html.Div(dbc.Row([
        dbc.Col([p for p in left if p is not None], lg=4),
        dbc.Col([html.Div("What sets these samples apart", className="small text-muted"),
                 *evidence_view(insight.explanation)], lg=4),
        dbc.Col([html.Div("Worst samples", className="small text-muted mb-1"),
                 extra_worst_gallery(entry, extra, insight.sample_ids) if extra
                 else worst_gallery(entry, shown)], lg=4),
    ], className="g-3"), className="loupe-card loupe-insight",
        id=f"{ids.INSIGHT_CARD}-{position}")


def insights_view(entry: RunEntry) -> list:
    """The cards, ranked as the session gives them (computing the insights if needed)."""
    found = session_insights(entry)
    if not found:
        return [html.Div("No insight: no group of samples stands out for this run.",
                         className="text-muted")]
    return [insight_card(entry, insight, i) for i, insight in enumerate(found)]


def insight_selection(entry: RunEntry, position: object) -> dict:
    """The shared selection store for the insight at ``position`` (its sample ids, at most
    :func:`selection_limit`; the store's note says when some were left out)."""
    found = cached_insights(entry)
    index = point_index(position)
    if found is None or index is None or index >= len(found):
        raise DashboardInputError("That insight is no longer shown; reload the Insights page.")
    insight = found[index]
    known = entry.indices_of(insight.sample_ids)
    limit = selection_limit(entry)
    note = f"Only the first {limit:,} samples of the insight are kept (the limit)." \
        if len(known) > limit else ""
    return {"run": entry.key, "ids": entry.session.dataset.sample_ids[known[:limit]].tolist(),
            "source": f"insight: {insight.title}"[:120], "note": note}


# -- explaining a selection ------------------------------------------------------------------
def mean_cached_heatmaps(entry: RunEntry, inside: np.ndarray,
                         lookups: int = HEATMAP_LOOKUPS) -> tuple | None:
    """Means of the heatmaps already computed (never new ones) inside vs outside.

    Looks up at most ``lookups`` samples on each side (the inside's first, the
    outside's evenly spaced), for the Sample page's default method and target.

    Returns
    -------
    (inside mean (H, W), outside mean (H, W), n inside, n outside, signed) or None
        ``None`` when either side has no computed heatmap.
    """
    n = len(entry.id_to_index)
    mask = np.zeros(n, dtype=bool)
    mask[inside] = True
    outside = np.flatnonzero(~mask)
    if len(outside) > lookups:
        outside = outside[np.linspace(0, len(outside) - 1, lookups).astype(np.int64)]
    signed = METHODS[HEATMAP_METHOD].signed

    def mean_of(indices) -> tuple[np.ndarray | None, int]:
        heats = []
        for i in indices[:lookups]:
            heat = entry.session.attribute(int(i), HEATMAP_METHOD, "pred", head=entry.head,
                                           cached_only=True)
            if heat is not None:
                heats.append(normalize_heatmap(heat, signed))
        return (np.mean(heats, axis=0) if heats else None), len(heats)

    mean_in, n_in = mean_of(np.asarray(inside))
    mean_out, n_out = mean_of(outside)
    if mean_in is None or mean_out is None:
        return None
    return mean_in, mean_out, n_in, n_out, signed


def explain_view(entry: RunEntry, selection: object,
                 progress: Callable[[str], None] | None = None) -> html.Div:
    """The "Explain selection" card for the shared selection store.

    Metadata over-represented inside vs outside (paired bars), error and loss
    inside vs outside, the worst samples and, when some were already computed,
    the mean heatmap inside vs outside.
    """
    idx, note = selection_indices(entry, selection)
    stored = selection.get("note") if isinstance(selection, Mapping) else None
    source = selection.get("source") if isinstance(selection, Mapping) else None
    source = source[:120] if isinstance(source, str) and source else "selection"
    notes = " ".join(n for n in (stored if isinstance(stored, str) else None, note) if n)
    if len(idx) == 0:
        return explain_frame([html.Div(
            "Nothing is selected. Drag a box or lasso on the Population map, click a cell of "
            "the confusion matrix, or press Select on the map on an insight, then explain it.",
            className="text-muted")])
    if len(idx) == len(entry.id_to_index):
        return explain_frame([html.Div("The whole dataset is selected: there is no outside to "
                                       "compare it with.", className="text-muted")])
    if progress:
        progress("comparing the selection with the rest…")
    explained = explain_indices(entry, idx)
    order = entry.indices_of(explained.sample_ids)  # worst first
    if progress:
        progress("looking for heatmaps already computed…")
    heat = mean_cached_heatmaps(entry, order)
    heat_part = html.Div([
        html.Div(f"Mean heatmaps ({METHODS[HEATMAP_METHOD].label}, predicted class) of the "
                 "samples whose heatmap was already computed", className="small text-muted"),
        dcc.Graph(figure=mean_heatmaps_figure(*heat), config={"displayModeBar": False},
                  className="loupe-mean-heatmaps")]) if heat is not None else html.Div(
        "Mean heatmaps: open a few of these samples and of the others on the Sample page "
        "first (only heatmaps already computed are averaged).", className="small text-muted")
    left = [html.H5(source, className="mb-1 loupe-insight-title"),
            html.Div(size_line(len(idx), len(idx) / len(entry.id_to_index)), className="mb-2"),
            html.Div(notes[:300], className="small text-warning mb-1") if notes else None,
            metrics_table(explained.metrics), stats_line(explained.stats), heat_part]
    return explain_frame([dbc.Row([
        dbc.Col([p for p in left if p is not None], lg=4),
        dbc.Col([html.Div("What sets the selection apart", className="small text-muted"),
                 *evidence_view(explained.explanation)], lg=4),
        dbc.Col([html.Div("Worst samples", className="small text-muted mb-1"),
                 worst_gallery(entry, order)], lg=4),
    ], className="g-3")])


def explain_frame(children: list) -> html.Div:
    return html.Div([html.H6("Explain selection"), *children],
                    className="loupe-card loupe-insight loupe-explain")


def wants_explanation(query: object, clicks: object) -> bool:
    """Whether the page should explain the shared selection: opened as ``?explain=1``
    (the Population page's button) or the page's own button pressed."""
    flag = query.get("explain") if isinstance(query, Mapping) else None
    return bool(flag) or bool(point_index(clicks))
