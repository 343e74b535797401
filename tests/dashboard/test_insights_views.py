"""The Insights page's logic as plain functions (dashboard/views/insights.py), on a real run.

The insights here are built in the test from the analysed digits (the class the
model reads worst, its mean ink measured from the images), so the cards, the
selection and the explanation are checked against numbers computed by hand.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
import numpy as np
import pytest
from dash import dcc

from analysis.insights import Evidence, Insight
from dashboard import ids
from dashboard.state import DashboardInputError
from dashboard.views import insights as views


def visible_text(component) -> str:
    """The text a person reads: string children only (no ids, hrefs or figures)."""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(visible_text(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else visible_text(children)


def find_all(component, kind) -> list:
    found = [component] if isinstance(component, kind) else []
    children = getattr(component, "children", None)
    if isinstance(children, list | tuple):
        for c in children:
            found += find_all(c, kind)
    elif children is not None and not isinstance(children, str):
        found += find_all(children, kind)
    return found


def worst_class_insight(entry) -> Insight:
    """The class with the highest error rate, as an insight (hand-computed numbers)."""
    t = entry.table
    labels, wrong, loss = t["label"].to_numpy(), ~t["correct"].to_numpy(), t["loss"].to_numpy()
    rates = [wrong[labels == c].mean() for c in range(len(entry.class_names))]
    c = int(np.argmax(rates))
    inside = labels == c
    order = np.flatnonzero(inside)[np.argsort(-loss[inside], kind="stable")]
    ink = entry.session.dataset.images.reshape(len(t), -1).mean(axis=1) / 255.0
    evidence = (Evidence("mean_ink", "mean ink", "0-1", float(ink[inside].mean()),
                         float(ink[~inside].mean()), 0.05, 1.5),
                Evidence("label", "true class", "", entry.class_names[c], "other", 0.3, 9.0))
    return Insight(
        "slice", f"Digits {entry.class_names[c]} are read worst", "high",
        tuple(entry.session.dataset.sample_ids[order].tolist()), int(inside.sum()),
        float(inside.mean()),
        {"error_rate": (float(wrong[inside].mean()), float(wrong[~inside].mean())),
         "mean_loss": (float(loss[inside].mean()), float(loss[~inside].mean()))},
        {"excess_errors": 12.0, "q_value": 0.003}, evidence, f"label == {c}",
        "Add training images of this class.")


@pytest.fixture
def with_insights(entry, monkeypatch):
    """The session answers ``insights()`` with the hand-built list."""
    found = [worst_class_insight(entry)]
    monkeypatch.setattr(entry.session, "insights", lambda *a, **k: found, raising=False)
    return found


def test_plain_rule_names_measures_and_classes_in_words():
    evidence = [Evidence("stroke_thickness", "stroke thickness", "px", 1.0, 2.0, 0.1)]
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    text = views.plain_rule("`stroke_thickness` < 1.8 & label == 7 and pred != 1", evidence,
                            names)
    assert text == "stroke thickness (px) < 1.8 and true class is seven and predicted class " \
                   "is not one"
    assert views.plain_rule("mean_ink >= 0.25") == "mean ink ≥ 0.25"
    assert views.plain_rule("") == ""


def test_metrics_and_stats_in_plain_words():
    table = views.metrics_table({"error_rate": (0.5, 0.0625), "mean_loss": (1.23456, 0.2)})
    text = visible_text(table)
    assert "error rate" in text and "50.0%" in text and "6.2%" in text
    assert "mean loss" in text and "1.235 nats" in text and "0.200 nats" in text
    assert "_" not in text and views.metrics_table({}) is None
    stats = visible_text(views.stats_line({"excess_errors": 37.4, "q_value": 0.0012}))
    assert "errors beyond the rest's error rate 37" in stats and "0.0012" in stats


def test_insight_card_shows_what_the_insight_says(entry, with_insights):
    insight = with_insights[0]
    card = views.insight_card(entry, insight, 0)
    text = visible_text(card)
    assert insight.title in text and "high" in text
    assert f"{insight.n:,} samples" in text.replace("  ", " ")
    assert f"{insight.share:.1%}" in text
    inside, outside = insight.metrics["error_rate"]
    assert f"{inside:.1%}" in text and f"{outside:.1%}" in text
    assert f"true class is {entry.class_names[int(insight.rule.split()[-1])]}" in text
    assert "Add training images" in text and "Select on the map" in text
    assert "mostly" in text and "mean_ink" not in text and "`" not in text
    graph = find_all(card, dcc.Graph)[0]
    assert [list(t.x) for t in graph.figure.data] == \
        [[insight.explanation[0].outside, insight.explanation[0].inside]]
    links = [a.href for a in find_all(card, dcc.Link)]
    assert links == [f"/sample?id={sid}" for sid in insight.sample_ids[:views.GALLERY_SIZE]]
    button = [b for b in find_all(card, dbc.Button) if getattr(b, "id", None) ==
              {"type": ids.INSIGHT_SELECT, "index": 0}]
    assert button


def test_select_on_the_map_fills_the_shared_selection(entry, with_insights, monkeypatch):
    with pytest.raises(DashboardInputError, match="reload"):
        views.insight_selection(entry, 0)  # not computed yet: a plain callback never does
    cards = views.insights_view(entry)
    assert len(cards) == 1
    store = views.insight_selection(entry, 0)
    assert store["run"] == entry.key and store["ids"] == list(with_insights[0].sample_ids)
    assert store["source"].startswith("insight: ") and store["note"] == ""
    for bad in (1, -1, "0", True, None):
        with pytest.raises(DashboardInputError):
            views.insight_selection(entry, bad)
    monkeypatch.setattr(views, "selection_limit", lambda _entry: 5)
    capped = views.insight_selection(entry, 0)
    assert capped["ids"] == list(with_insights[0].sample_ids[:5]) and "first 5" in capped["note"]


def test_no_insight_and_no_session_support_are_said(entry, monkeypatch):
    monkeypatch.setattr(entry.session, "insights", lambda *a, **k: [], raising=False)
    assert "No insight" in visible_text(views.insights_view(entry))


def test_explain_without_a_selection_or_with_everything_says_what_to_do(entry):
    assert "Nothing is selected" in visible_text(views.explain_view(entry, None))
    assert "Nothing is selected" in visible_text(
        views.explain_view(entry, {"run": "another-run", "ids": ["x"]}))
    everything = {"run": entry.key, "ids": entry.session.dataset.sample_ids.tolist()}
    assert "no outside" in visible_text(views.explain_view(entry, everything))
    assert views.wants_explanation({"explain": True}, None)
    assert views.wants_explanation({"explain": False}, 2)
    assert not views.wants_explanation({"explain": False}, None)
    assert not views.wants_explanation("junk", "1")


def test_mean_heatmaps_average_only_those_already_computed(entry):
    session = entry.session
    n = len(entry.id_to_index)
    inside = np.array([n - 3, n - 2, n - 1])  # the run's last samples: no other test opens them
    outside = np.array([n - 5, n - 4])
    for i in (*inside, *outside):
        assert session.attribute(int(i), views.HEATMAP_METHOD, "pred", cached_only=True) is None
    assert views.mean_cached_heatmaps(entry, inside) is None  # nothing computed: nothing drawn
    heats = {int(i): session.attribute(int(i), views.HEATMAP_METHOD, "pred")
             for i in (*inside[:2], *outside)}
    # only the outside samples looked up count: evenly spaced over all of them
    mean_in, mean_out, n_in, n_out, signed = views.mean_cached_heatmaps(entry, inside,
                                                                       lookups=n)
    assert signed and n_in == 2 and n_out >= 2
    expected = np.mean([views.normalize_heatmap(heats[int(i)]) for i in inside[:2]], axis=0)
    np.testing.assert_allclose(mean_in, expected, rtol=1e-6)
    assert mean_out.shape == mean_in.shape and np.abs(mean_in).max() <= 1.0


def test_explain_a_class_of_the_run_against_the_rest(entry):
    t = entry.table
    labels, wrong, loss = t["label"].to_numpy(), ~t["correct"].to_numpy(), t["loss"].to_numpy()
    c = int(np.argmax([wrong[labels == k].mean() for k in range(len(entry.class_names))]))
    inside = np.flatnonzero(labels == c)
    explained = views.explain_indices(entry, inside)
    assert explained.n == len(inside) and explained.share == pytest.approx(len(inside) / len(t))
    # hand-computed: error rate and mean loss inside vs outside
    out = labels != c
    assert explained.metrics["error_rate"] == pytest.approx((wrong[inside].mean(),
                                                            wrong[out].mean()))
    assert explained.metrics["mean_loss"] == pytest.approx((loss[inside].mean(),
                                                           loss[out].mean()))
    assert explained.explanation[0].column == "label"  # what the group is, first
    selection = {"run": entry.key, "ids": entry.session.dataset.sample_ids[inside].tolist(),
                 "source": f"true {entry.class_names[c]} (test)"}
    seen = []
    card = views.explain_view(entry, selection, seen.append)
    text = visible_text(card)
    assert f"true {entry.class_names[c]} (test)" in text and f"{len(inside):,}" in text
    assert f"{wrong[inside].mean():.1%}" in text and f"{wrong[out].mean():.1%}" in text
    assert "true class" in text and f"mostly {entry.class_names[c]} inside" in text
    assert seen and "Mean heatmaps" in text or find_all(card, dcc.Graph)
    worst = inside[np.argsort(-loss[inside], kind="stable")][:views.GALLERY_SIZE]
    assert [a.href for a in find_all(card, dcc.Link)] == \
        [f"/sample?id={entry.session.dataset.sample_ids[i]}" for i in worst]
