"""The Insights page's pure figures (dashboard/figures/insights.py), on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.insights import Evidence
from dashboard.figures.insights import (
    evidence_figure,
    evidence_title,
    format_value,
    is_numeric_evidence,
    mean_heatmaps_figure,
)

THICK = Evidence("stroke_thickness", "stroke thickness", "px", 1.4, 2.6, 0.21, 3.0)
SLANT = Evidence("slant", "slant", "degrees", -12.5, 4.0, 0.08, 1.8)
CLASS = Evidence("label", "true class", "", "7", "1", 0.30, 5.2)


def test_one_panel_of_paired_bars_per_numeric_evidence_in_order():
    fig = evidence_figure([THICK, CLASS, SLANT])
    assert [t.type for t in fig.data] == ["bar", "bar"]  # the class is text, not a bar
    for trace, e in zip(fig.data, (THICK, SLANT), strict=True):
        assert list(trace.y) == ["outside", "inside"]
        assert list(trace.x) == [e.outside, e.inside]
        assert trace.orientation == "h"
        assert all(text.endswith(f" {e.unit}") for text in trace.text)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("stroke thickness (px)") and "0.210 nats" in titles[0]
    assert titles[1].startswith("slant (degrees)")
    assert not any("_" in t for t in titles)  # labels, never the raw column names
    # each panel's axis holds its own bars (units differ between panels)
    assert fig.layout.xaxis.range[1] >= 2.6 and fig.layout.xaxis2.range[0] <= -12.5


def test_evidence_given_the_class_names_its_outside_bar_and_score_so():
    given = Evidence("stroke_thickness", "stroke thickness", "px", 1.9, 2.5, 0.046, 3.1,
                     "label == 7 and stroke_thickness < 2.09", given="label")
    fig = evidence_figure([given, SLANT])
    assert list(fig.data[0].y) == ["same classes", "inside"]
    assert list(fig.data[1].y) == ["outside", "inside"]
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].endswith("MI 0.046 nats within class")
    assert titles[1].endswith("nats")


def test_panels_are_capped_and_a_figure_without_numbers_says_so():
    many = [Evidence(f"c{i}", f"measure {i}", "", float(i), 1.0, 0.1) for i in range(9)]
    assert len(evidence_figure(many, max_rows=4).data) == 4
    empty = evidence_figure([CLASS])
    assert not empty.data and "No numeric measurement" in empty.layout.annotations[0].text
    nan = Evidence("x", "x", "", float("nan"), 1.0, 0.1)
    assert not is_numeric_evidence(nan) and not is_numeric_evidence(CLASS)


def test_titles_and_numbers_read_plainly():
    assert evidence_title(THICK) == "stroke thickness (px)"
    assert evidence_title(CLASS) == "true class"
    assert format_value(2.345678) == "2.35" and format_value(0.0) == "0"
    assert format_value(123456.0) == "1.23e+05" and format_value(0.0004) == "4.00e-04"


def test_mean_heatmaps_side_by_side_on_one_scale():
    rng = np.random.default_rng(0)  # generated heatmaps, normalised like the Sample page's
    inside = rng.uniform(-1, 1, (8, 8)).astype(np.float32)
    outside = 0.5 * rng.uniform(-1, 1, (8, 8)).astype(np.float32)
    fig = mean_heatmaps_figure(inside, outside, 3, 7)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    scale = float(np.abs(inside).max())
    assert all(t.zmin == -scale and t.zmax == scale for t in fig.data)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), inside[::-1])  # row 0 on top
    assert [a.text for a in fig.layout.annotations] == ["inside, 3 heatmaps",
                                                       "outside, 7 heatmaps"]
    unsigned = mean_heatmaps_figure(np.abs(inside), np.abs(outside), 1, 1, signed=False)
    assert unsigned.data[0].zmin == 0.0
    with pytest.raises(ValueError, match="one shape"):
        mean_heatmaps_figure(inside, outside[:4], 1, 1)
