"""collect_insights and the per-kind builders: generated tables checked by hand, and the
tiny real-digit session end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.insights import (
    domain_gap,
    explain_selection,
    grade,
    imbalance_insights,
    label_issue_insights,
    leakage_insight,
    outlier_insights,
)


def generated_table(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Generated: 3 classes (class 2 rare), a label-issue flag on 15 samples, an outlier
    score whose top 1% are all wrong."""
    rng = np.random.default_rng(seed)
    label = rng.choice(3, n, p=[0.45, 0.45, 0.10])
    correct = rng.random(n) > 0.05
    score = rng.random(n)
    top = np.argsort(-score)[:10]
    correct[top] = False
    issue = np.zeros(n, bool)
    issue[:15] = True
    return pd.DataFrame({
        "sample_id": [f"d:test:{i}" for i in range(n)], "label": label,
        "label_name": np.array(["a", "b", "c"])[label], "pred": label, "correct": correct,
        "loss": rng.random(n), "outlier_score": score, "is_label_issue": issue,
        "label_issue_score": np.where(issue, 0.9, 0.1) + rng.random(n) * 0.01,
        "suggested_label": (label + 1) % 3})


def test_grade():
    assert [grade(v, 0.1, 0.03) for v in (0.2, 0.05, 0.01)] == ["high", "medium", "low"]


def test_imbalance_counts_and_per_class_accuracy():
    table = generated_table()
    (ins,) = imbalance_insights(table)
    counts = table["label"].value_counts()
    assert ins.stats["ratio"] == pytest.approx(counts.max() / counts.min())
    assert ins.n == counts.min() and ins.rule == "label == 2"
    assert ins.metrics["accuracy c"][0] == pytest.approx(table["correct"][table.label == 2].mean())
    assert ins.severity == grade(ins.stats["ratio"], 10, 3)
    balanced = table.assign(label=np.arange(len(table)) % 3)
    assert imbalance_insights(balanced) == []


def test_outliers_are_the_top_percent_and_graded_by_their_errors():
    table = generated_table()
    (ins,) = outlier_insights(table)
    top = table.nlargest(10, "outlier_score")
    assert ins.n == 10 and set(ins.sample_ids) == set(top["sample_id"])
    assert ins.sample_ids[0] == top["sample_id"].iloc[0]  # highest score first
    assert ins.metrics["error_rate"][0] == 1.0 and ins.severity == "medium"
    assert np.array_equal(table.eval(ins.rule).to_numpy(),
                          table["sample_id"].isin(top["sample_id"]).to_numpy())


def test_label_issues_sorted_by_score_with_a_suggestion():
    table = generated_table()
    (ins,) = label_issue_insights(table)
    assert ins.title == "15 samples look mislabelled" and ins.n == 15
    scores = table.set_index("sample_id").loc[list(ins.sample_ids), "label_issue_score"]
    assert list(scores) == sorted(scores, reverse=True)
    assert ins.severity == "high"  # 1.5% of the samples
    assert "suggested_label" in ins.suggestion
    assert label_issue_insights(table.assign(is_label_issue=False)) == []


def test_leakage_counts_test_samples():
    class DS:
        def __init__(self, split, n):
            self.split, self.key, self.n = split, f"d:{split}", n

        def __len__(self):
            return self.n

    pairs = [("d:test:1", "d:train:5", 0.0), ("d:test:1", "d:train:9", 0.05),
             ("d:test:2", "d:train:7", 0.0)]
    (ins,) = leakage_insight(DS("test", 100), DS("train", 1000), pairs)
    assert ins.kind == "leakage" and ins.share == 0.02 and ins.severity == "high"
    assert ins.stats == {"pairs": 3, "exact_pairs": 2}
    assert leakage_insight(DS("test", 100), DS("train", 1000), []) == []


def test_explain_selection_checks_range():
    from core.errors import ConfigError

    table = generated_table()
    ins = explain_selection(table, [3, 1, 2])
    assert ins.kind == "selection" and ins.n == 3
    with pytest.raises(ConfigError, match="out of range"):
        explain_selection(table, [len(table)])


def test_session_insights_end_to_end(tiny_session):
    insights = tiny_session.insights()
    assert insights is not tiny_session.insights() and insights == tiny_session.insights()
    order = {"high": 0, "medium": 1, "low": 2}
    assert [order[i.severity] for i in insights] == sorted(order[i.severity] for i in insights)
    table = tiny_session.table()
    assert "slice" in table
    json.dumps([i.to_dict() for i in insights])  # the CLI's output
    for ins in insights:
        assert ins.n == len(ins.sample_ids) or ins.kind in ("ood", "leakage")
        if ins.kind in ("slice", "cluster"):
            inside = table["sample_id"].isin(ins.sample_ids).to_numpy()
            rate = 1 - table["correct"][inside].mean()
            assert ins.metrics["error_rate"][0] == pytest.approx(rate)
            assert (table["slice"][inside] <= ins.stats["rank"]).all()
            if ins.rule:
                assert np.array_equal(table.eval(ins.rule).to_numpy(), inside)
    sel = tiny_session.explain(np.arange(20))
    assert sel.kind == "selection" and sel.n == 20


def test_domain_gap_names_the_measurement_that_moved(digits, data_root):
    """Real digits against the same digits thickened (a 3x3 dilation, made here): the
    stroke thickness must lead the gap (the dilation also grows the glyph and its ink),
    in the right direction."""
    from scipy import ndimage

    from analysis.steps.image_metadata import measure_images
    from core.datasets import load_dataset

    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    thick = ndimage.grey_dilation(ds.images, size=(1, 1, 3, 3))
    table = pd.DataFrame(measure_images(ds.images, scale=2)).assign(label=ds.labels,
                                                                    pred=ds.labels)
    other = pd.DataFrame(measure_images(thick, scale=2)).assign(label=ds.labels,
                                                                pred=ds.labels)
    gap = domain_gap(table, other)
    assert gap[0].column == "stroke_thickness"
    assert "ink_area" in {e.column for e in gap}
    assert all(e.column not in ("label", "pred") and e.given == "" for e in gap)
    ev = {e.column: e for e in gap}
    assert ev["stroke_thickness"].inside == pytest.approx(other["stroke_thickness"].mean())
    assert ev["stroke_thickness"].outside == pytest.approx(table["stroke_thickness"].mean())
    assert ev["stroke_thickness"].inside > ev["stroke_thickness"].outside
    assert domain_gap(table, other.iloc[:0]) == ()


def test_an_ood_insight_is_explained_by_its_domain_gap(tiny_model, digits, data_root, tmp_path):
    """The first 200 real test digits against the same digits inverted (``corrupt:inverse``,
    generated on load): the gap is led by the brightness, far higher on the negatives."""
    from analysis.session import AnalysisSession
    from cache import ArtifactStore
    from core.datasets import load_dataset

    ds = load_dataset(digits, "test", data_root=data_root, limit=200)
    inverse = load_dataset(f"corrupt:inverse:{digits}", "test", data_root=data_root, limit=200)
    session = AnalysisSession(tiny_model, ds, ArtifactStore(tmp_path / "c"), "cpu",
                              mc_samples=0, projections=(), progress=False,
                              extra_datasets=[inverse])
    (ood,) = [i for i in session.insights() if i.kind == "ood"]
    assert ood.explanation, ood
    named = [e.column for e in ood.explanation]
    assert "brightness" in named[:2]
    bright = next(e for e in ood.explanation if e.column == "brightness")
    assert bright.inside > 0.5 > bright.outside  # white paper vs black
    assert ood.explanation[0].label in ood.suggestion


def test_a_clusters_hint_words_the_over_represented_bin():
    from analysis.insights import Evidence, _bin_words

    given = Evidence("stroke_thickness", "stroke thickness", "px", 2.5, 2.7, 0.05, 3.0,
                     "label == 3 and stroke_thickness < 2.185", given="label")
    assert _bin_words(given) == "stroke thickness < 2.185, within its class"
    middle = Evidence("slant", "slant", "degrees", 5.0, 1.0, 0.02, 2.0, "2.1 <= slant < 7.5")
    assert _bin_words(middle) == "2.1 <= slant < 7.5"
