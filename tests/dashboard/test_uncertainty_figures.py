"""The Uncertainty & OOD figures as pure functions (arrays in, figures out)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.ood import auroc
from dashboard.figures import uncertainty as ufig
from dashboard.views.uncertainty import score_families

# The histogram rows as the Uncertainty page builds them from the steps' declarations.
FAMILIES = score_families()

PLAIN = ("uncertainty", "entropy", "neg_margin", "centroid_distance", "knn_distance")
MC = ("mc_uncertainty", "mc_entropy", "mc_mutual_info", "mc_neg_margin",
      "mc_centroid_distance", "mc_knn_distance")


def scores(n: int, shift: float, columns, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.gamma(2.0, 1.0 + shift * (i + 1) / 4, n).astype(np.float32)
            for i, c in enumerate(columns)}


def panel_titles(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations if not a.text.startswith("<b>")]


def test_histogram_titles_carry_the_auroc_of_each_score():
    in_s, ood_s = scores(400, 0.0, PLAIN + MC, 0), scores(250, 1.0, PLAIN + MC, 1)
    aurocs = {c: auroc(in_s[c], ood_s[c]) for c in in_s}
    fig = ufig.uncertainty_histograms_figure(in_s, ood_s, "mnist:test", "fashion-mnist:test", 20,
                                             aurocs, FAMILIES)
    titles = panel_titles(fig)
    assert len(titles) == 2 * len(FAMILIES)
    for fam, (left, right) in zip(FAMILIES, zip(titles[::2], titles[1::2], strict=True),
                                  strict=True):
        for col, title in ((fam.plain, left), (fam.mc, right)):
            if col is None:
                assert title == "(exists only with MC dropout)"
            else:
                assert title == f"{col} · AUROC {auroc(in_s[col], ood_s[col]):.3f}"
    assert "<b>with MC dropout (T=20)</b>" in [a.text for a in fig.layout.annotations]


def test_histograms_are_percentages_on_shared_bins():
    in_s, ood_s = scores(300, 0.0, ("uncertainty", "mc_uncertainty"), 2), \
        scores(120, 2.0, ("uncertainty", "mc_uncertainty"), 3)
    fig = ufig.uncertainty_histograms_figure(in_s, ood_s, "in", "ood", 5, families=FAMILIES)
    assert len(fig.data) == 4  # one row, two panels, two datasets each
    for bar in fig.data:
        assert bar.type == "bar"
        assert np.isclose(np.sum(bar.y), 100.0)
    xs = [np.asarray(bar.x) for bar in fig.data]
    for x in xs[1:]:
        np.testing.assert_array_equal(x, xs[0])  # without and with MC share the row's bins
    assert {bar.name for bar in fig.data} == {"in", "ood"}
    assert fig.layout.xaxis.title.text.startswith("least confident")
    assert fig.layout.yaxis.title.text == "% of samples"
    assert fig.layout.yaxis.type is None
    log = ufig.uncertainty_histograms_figure(in_s, ood_s, "in", "ood", 5, families=FAMILIES,
                                             log_y=True)
    assert (log.layout.yaxis.type, log.layout.yaxis2.type) == ("log", "log")


def test_histograms_without_mc_columns_say_so():
    in_s, ood_s = scores(100, 0.0, PLAIN, 4), scores(100, 1.0, PLAIN, 5)
    fig = ufig.uncertainty_histograms_figure(in_s, ood_s, "in", "ood", 0, families=FAMILIES)
    titles = panel_titles(fig)
    assert len(titles) == 2 * 5  # the mutual-information row has no data: dropped
    assert titles[1] == "mc_uncertainty: not computed (needs a model with dropout)"
    assert "<b>with MC dropout (the model has no dropout)</b>" in \
        [a.text for a in fig.layout.annotations]


def test_histograms_need_a_score():
    with pytest.raises(ValueError, match="no score column"):
        ufig.uncertainty_histograms_figure({"loss": np.ones(3)}, {"loss": np.ones(3)}, "a", "b",
                                           families=FAMILIES)


def test_joint_map_has_one_trace_per_dataset_in_order():
    rng = np.random.default_rng(0)
    n_in, n_ood = 70, 30
    coords = rng.normal(size=(n_in + n_ood, 2)).astype(np.float32)
    fig = ufig.joint_map_figure(coords, n_in, "mnist:test", "fashion-mnist:test",
                                map_label="t-SNE")
    data = fig.data
    assert [t.type for t in data] == ["scattergl"] * 3
    assert (len(data[ufig.IN_TRACE].x), len(data[ufig.OOD_TRACE].x)) == (n_in, n_ood)
    assert len(data[ufig.OVERLAY_TRACE].x) == 0
    np.testing.assert_array_equal(data[ufig.OOD_TRACE].x, coords[n_in:, 0])
    assert (data[0].marker.color, data[1].marker.color) == (ufig.IN_COLOR, ufig.OOD_COLOR)
    assert data[1].name == "fashion-mnist:test (30)"
    assert "t-SNE 1" in fig.layout.xaxis.title.text


def test_joint_map_by_class_and_highlight():
    n_in, n_ood = 20, 10
    coords = np.arange(2 * (n_in + n_ood), dtype=np.float32).reshape(-1, 2)
    classes = np.arange(n_in + n_ood) % 10
    fig = ufig.joint_map_figure(coords, n_in, "in", "ood", color_by="class", classes=classes,
                                class_names=[str(i) for i in range(10)], map_name="mc_joint_umap",
                                map_label="UMAP, MC dropout", highlight=[1, 2], focus=n_in + 3)
    np.testing.assert_array_equal(fig.data[1].marker.color, classes[n_in:])
    assert fig.data[0].marker.coloraxis == "coloraxis"
    assert fig.layout.coloraxis.cmax == 9.5
    overlay = fig.data[ufig.OVERLAY_TRACE]
    assert list(overlay.customdata) == [n_in + 3, 1, 2]
    assert overlay.marker.symbol[0] == "star"
    assert "UMAP 1" in fig.layout.xaxis.title.text


def test_map_colors():
    colors, axis = ufig.map_colors(5)
    assert colors == [ufig.IN_COLOR, ufig.OOD_COLOR] and axis is None
    values = np.array([0.0, 1.0, np.nan, 3.0, 4.0, 5.0])
    colors, axis = ufig.map_colors(2, "score", values=values, value_title="entropy")
    assert len(colors[0]) == 2 and len(colors[1]) == 4 and np.isfinite(colors[1]).all()
    with pytest.raises(ValueError, match="unknown color_by"):
        ufig.map_colors(2, "size")


def test_ood_probabilities_show_plain_and_mc_without_ground_truth():
    probs = np.array([0.1, 0.7, 0.2])
    mc = np.array([0.3, 0.4, 0.3])
    fig = ufig.ood_probability_figure(probs, ["a", "b", "c"], mc)
    assert [t.name for t in fig.data] == ["without MC dropout", "with MC dropout (mean)"]
    np.testing.assert_allclose(fig.data[1].x, mc * 100)
    assert (fig.data[0].marker.color, fig.data[1].marker.color) == (ufig.OOD_COLOR, "#ff9896")
    assert fig.layout.barmode == "group"


def test_correctness_histograms_split_each_score_by_right_and_wrong():
    # Generated here: 300 scores, the 40 wrong predictions drawn higher.
    rng = np.random.default_rng(3)
    correct = np.ones(300, bool)
    correct[:40] = False
    v = np.where(correct, rng.gamma(2.0, 0.2, 300), rng.gamma(2.0, 0.5, 300))
    fig = ufig.correctness_histograms_figure(
        {"mc_entropy": v, "entropy": v * 0.5}, {"mc_entropy": correct, "entropy": correct},
        {"mc_entropy": "predictive entropy (nats)"},
        {"mc_entropy": auroc(v[correct], v[~correct])}, bins=20)
    assert [t.name for t in fig.data[:2]] == ["correct predictions (260)", "wrong predictions (40)"]
    edges = np.linspace(v.min(), v.max(), 21)
    np.testing.assert_allclose(fig.data[1].y, 100 * np.histogram(v[:40], edges)[0] / 40)
    assert sum(fig.data[0].y) == pytest.approx(100)
    assert panel_titles(fig)[0] == \
        f"mc_entropy · AUROC wrong vs correct {auroc(v[correct], v[~correct]):.3f}"
    assert fig.layout.xaxis.title.text == "predictive entropy (nats)"
    assert fig.layout.xaxis2.title.text == "entropy"  # no title given: the column's name
    assert panel_titles(fig)[1] == "entropy"  # no AUROC given: the name alone
    with pytest.raises(ValueError, match="no uncertainty score"):
        ufig.correctness_histograms_figure({}, {}, {})
