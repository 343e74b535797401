"""The pure figure functions (dashboard/figures/), on small synthetic arrays."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dashboard import figures
from dashboard.figures.errors import confusion_counts
from dashboard.images import image_data_uri

NAMES = [str(i) for i in range(4)]


def decode(spec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


@pytest.fixture
def population():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    coords = rng.normal(size=(200, 2)).astype(np.float32)
    members = [np.flatnonzero(labels == c) for c in range(4)]
    loss = rng.exponential(size=200).astype(np.float32)
    return coords, labels, members, loss


def test_population_figure_has_one_webgl_trace_per_class_plus_overlay(population):
    coords, labels, members, loss = population
    color = figures.color_spec(labels, "class", "label", NAMES)
    fig = figures.population_figure(coords, members, NAMES, color, figures.size_spec(loss),
                                    "umap", highlight=[1, 2, 3], focus=0)
    # 4 classes, the overlay, then 4 legend-key slots (hidden: the classes are the legend).
    assert [t.type for t in fig.data] == ["scattergl"] * 9
    assert [t.name for t in fig.data[:4]] == NAMES
    assert all(t.showlegend for t in fig.data[:4]) and not any(t.showlegend for t in fig.data[5:])
    assert fig.layout.legend.title.text == "true class"
    for c, trace in enumerate(fig.data[:4]):
        np.testing.assert_array_equal(trace.x, coords[members[c], 0])
        assert np.asarray(trace.x).dtype == np.float32
        assert trace.marker.color == figures.class_palette(4)[c]  # legend shows the class colour
    overlay = fig.data[4]
    assert list(overlay.customdata) == [0, 1, 2, 3] and overlay.marker.symbol[0] == "star"
    assert "arbitrary units" in fig.layout.xaxis.title.text
    assert fig.layout.dragmode == "select"


def test_population_json_sends_float32_base64_and_overlay_ids_as_a_list(population):
    coords, labels, members, loss = population
    fig = figures.population_figure(coords, members, NAMES,
                                    figures.color_spec(loss, "numeric", "loss"),
                                    figures.size_spec(loss), "tsne", highlight=[5])
    data = json.loads(fig.to_json())["data"]
    assert data[0]["x"]["dtype"] == "f4"  # the plotly-6+ encoding: no customdata on the map
    np.testing.assert_array_equal(decode(data[0]["x"]), coords[members[0], 0])
    assert data[4]["customdata"] == [5]   # the overlay's ids survive as a plain list


def test_recolor_payload_sends_only_colours_per_trace(population):
    coords, labels, members, loss = population
    spec = figures.color_spec(loss, "numeric", "loss")
    per_trace, axis = figures.recolor_payload(spec, members)
    assert len(per_trace) == 4
    for c, payload in enumerate(per_trace):
        np.testing.assert_allclose(decode(payload), spec.values[members[c]])
    assert axis["cmin"] < axis["cmax"] and axis["colorscale"] == "Viridis"
    label_colors, _ = figures.recolor_payload(
        figures.color_spec(labels, "class", "label", NAMES), members)
    assert label_colors == figures.class_palette(4)


def test_color_spec_kinds():
    pred = figures.color_spec(np.array([0, 3, 1]), "class", "pred", NAMES)
    # The legend, not a colour bar, tells the categories.
    assert not pred.coloraxis["showscale"] and not pred.per_class
    assert pred.keys == tuple(zip(NAMES, figures.class_palette(4), strict=True))
    ok = figures.color_spec(np.array([True, False]), "bool", "correct")
    np.testing.assert_array_equal(ok.values, [1.0, 0.0])
    nan = figures.color_spec(np.array([1.0, np.nan, 3.0]), "numeric", "x")
    assert np.isfinite(nan.values).all()
    with pytest.raises(ValueError):
        figures.color_spec(np.zeros(2), "rainbow", "x")


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 60),
              elements=st.floats(-1e6, 1e6) | st.just(float("nan"))))
def test_size_spec_stays_in_range_and_grows_with_the_value(values):
    sizes = figures.size_spec(values)
    lo, hi = figures.population.SIZE_RANGE
    assert sizes.shape == values.shape and sizes.dtype == np.float32
    assert np.all((sizes >= lo - 1e-4) & (sizes <= hi + 1e-4))
    finite = np.isfinite(values)
    order = np.argsort(values[finite], kind="stable")
    assert np.all(np.diff(sizes[finite][order]) >= -1e-4)


def test_colour_by_correct_has_its_own_legend_with_two_colours(population):
    coords, labels, members, loss = population
    correct = labels % 2 == 0  # made-up correctness, per sample
    spec = figures.color_spec(correct, "bool", "correct")
    fig = figures.population_figure(coords, members, NAMES, spec, figures.size_spec(None))
    assert fig.layout.legend.title.text == "prediction"
    keys = [t for t in fig.data[5:] if t.showlegend]
    assert [k.name for k in keys] == ["correct", "wrong"]
    assert len({k.marker.color for k in keys}) == 2
    assert not any(t.showlegend for t in fig.data[:4])  # class traces left out of the legend
    # The class traces' points carry the two colours, through the stepped colour axis.
    np.testing.assert_array_equal(fig.data[0].marker.color, correct[members[0]].astype(float))


def test_numeric_colour_bar_title_runs_along_the_bar(population):
    coords, labels, members, loss = population
    spec = figures.color_spec(loss, "numeric", "mc_dropout_mutual_information (nats)")
    bar = spec.coloraxis["colorbar"]
    assert bar["title"]["side"] == "right" and bar["thickness"] <= 16


def test_size_by_a_skewed_loss_is_not_mostly_dots():
    rng = np.random.default_rng(1)
    loss = rng.lognormal(-4, 2, size=5000)  # generated: like a trained model's losses
    sizes = figures.size_spec(loss)
    lo, hi = figures.population.SIZE_RANGE
    assert np.mean(sizes < lo + 1) < 0.15  # a linear scale made ~95% of these minimum dots
    assert np.median(sizes) == pytest.approx((lo + hi) / 2, abs=0.1)
    assert sizes[np.argmax(loss)] == pytest.approx(hi)


def test_percentile_rank_by_hand():
    from dashboard.figures.population import percentile_rank

    # Sorted: 1 (rank 0), 2 and 2 (ranks 1 and 2: mean 1.5), 3 (rank 3); divided by n - 1.
    np.testing.assert_allclose(percentile_rank(np.array([3.0, 1.0, 2.0, 2.0])),
                               [1.0, 0.0, 0.5, 0.5])


def test_size_spec_none_is_a_constant():
    assert np.ndim(figures.size_spec(None)) == 0


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, st.integers(0, 100), elements=st.floats(-1e3, 1e3, width=32)))
def test_typed_array_round_trips(values):
    spec = figures.typed_array(values)
    np.testing.assert_array_equal(decode(spec), values)


def test_probability_figure_marks_label_and_prediction():
    fig = figures.probability_figure(np.array([0.1, 0.7, 0.2, 0.0]), NAMES, label=2, pred=1)
    bar = fig.data[0]
    assert list(bar.y) == NAMES and bar.x[1] == pytest.approx(70.0)
    assert bar.marker.color[2] == "#2ca02c" and bar.marker.color[1] == "#d62728"
    assert fig.layout.xaxis.title.text == "probability (%)"


def test_heatmap_figures():
    image = np.zeros((1, 28, 28), np.uint8)
    heat = np.linspace(-1, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    one = figures.heatmap_figure(image, heat, True, "IG")
    assert [t.type for t in one.data] == ["image", "heatmap"]
    assert (one.data[1].zmin, one.data[1].zmax) == (-1.0, 1.0)
    grid = figures.heatmap_grid_figure(image, [np.abs(heat)] * 10, False,
                                       [f"class {i}" for i in range(10)])
    assert len(grid.data) == 20 and grid.data[1].zmin == 0.0
    assert [a.text for a in grid.layout.annotations][:2] == ["class 0", "class 1"]


def test_confusion_counts_and_figure():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_counts(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    fig = figures.confusion_figure(labels, preds, ["a", "b", "c"])
    assert np.array(fig.data[0].text).tolist() == cm.tolist()
    assert fig.layout.yaxis.title.text == "ground-truth class"


def test_per_class_figure_values():
    fig = figures.per_class_figure(np.array([0, 0, 1]), np.array([True, False, True]),
                                   np.array([1.0, 3.0, 0.5]), ["a", "b"])
    np.testing.assert_allclose(fig.data[0].y, [50.0, 100.0])
    np.testing.assert_allclose(fig.data[1].y, [2.0, 0.5])


def test_binned_loss_counts_and_means():
    values = np.arange(100, dtype=float)
    loss = values / 100
    labels = np.arange(100) % 2
    binned = figures.binned_loss(values, loss, labels, bins=10)
    overall = binned[binned["group"] == -1]
    assert overall["count"].sum() == 100 and len(overall) == 10
    assert np.all(np.diff(overall["mean_loss"]) > 0)  # loss rises with the column
    first = loss[values <= overall["right"].iloc[0]]
    np.testing.assert_allclose(overall["mean_loss"].iloc[0], first.mean())
    assert binned[binned["group"] == 1]["count"].sum() == 50
    np.testing.assert_allclose(overall["sem"].iloc[0], first.std(ddof=1) / np.sqrt(len(first)))
    fig = figures.loss_vs_metadata_figure(binned, "x (units)", ["even", "odd"], per_class=True)
    assert [t.type for t in fig.data] == ["bar", "scatter", "scatter"]
    assert fig.layout.xaxis.title.text == "x (units) (binned)"


def test_binned_loss_handles_all_nan():
    assert figures.binned_loss(np.array([np.nan]), np.array([1.0])).empty


def test_scatter_figure_one_trace_per_class():
    fig = figures.scatter_figure(np.arange(6), np.arange(6), np.array([0, 1, 0, 1, 0, 1]),
                                 ["a", "b"], "x", "y")
    assert [len(t.x) for t in fig.data] == [3, 3] and fig.data[0].type == "scattergl"


def test_training_figure():
    history = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.1,
                "test_acc": 0.97},
               {"epoch": 2, "train_loss": 0.1, "train_acc": 0.97}]
    fig = figures.training_figure(history)
    assert len(fig.data) == 4
    np.testing.assert_allclose(fig.data[1].y, [80.0, 97.0])
    assert fig.data[3].y[1] is None
    assert figures.training_figure([]).layout.annotations[0].text.startswith("This run has no")


def test_image_data_uri_is_a_small_png():
    from io import BytesIO

    from PIL import Image

    uri = image_data_uri(np.full((1, 28, 28), 200, np.uint8), scale=2)
    assert uri.startswith("data:image/png;base64,")
    img = Image.open(BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (56, 56) and len(uri) < 2000


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=200), st.data())
def test_integer_metadata_gets_one_bin_per_value(values, data):
    from dashboard.figures.metadata import binned_loss

    v = np.asarray(values)
    loss = np.asarray(data.draw(st.lists(st.floats(0, 10), min_size=len(v), max_size=len(v))))
    out = binned_loss(v, loss, bins=20)
    overall = out[out["group"] == -1]
    assert overall["center"].tolist() == sorted(set(values))
    for _, row in overall.iterrows():
        mask = v == row["center"]
        assert row["count"] == mask.sum()
        assert row["mean_loss"] == pytest.approx(loss[mask].mean(), rel=1e-9, abs=1e-9)
        assert row["left"] == row["center"] - 0.5 and row["right"] == row["center"] + 0.5
