"""benchmarks/scale.py: sizes, growth exponents and the table (the child itself is run by
``python -m analysis bench --scale``; its figures are in the README)."""

from __future__ import annotations

import pytest

from benchmarks.scale import format_scale, growth, parse_sizes
from core.errors import ConfigError


def test_sizes_are_parsed_and_checked():
    assert parse_sizes("10000,70_000") == [10_000, 70_000]
    for bad in ("", "ten", "70000,10000", "50", "1000,1000"):
        with pytest.raises(ConfigError, match="--scale"):
            parse_sizes(bad)


def _row(n, seconds, rss=100.0, **summary):
    return {"n": n, "open_s": 1.0, "total_s": sum(seconds.values()), "peak_rss_mb": rss,
            "steps": [{"step": k, "seconds": v, "peak_rss_mb": rss, "summary": summary}
                      for k, v in seconds.items()]}


def test_growth_exponent_is_the_slope_on_log_axes():
    rows = [_row(1000, {"linear": 2.0, "square": 1.0, "tiny": 0.01}),
            _row(10_000, {"linear": 20.0, "square": 100.0, "tiny": 0.02})]
    g = growth(rows)
    assert g["linear"][0] == pytest.approx(1.0)
    assert g["square"][0] == pytest.approx(2.0)
    assert g["tiny"] == [None]  # under 50 ms: timer noise, not growth
    assert growth(rows[:1]) == {}  # one size: nothing to compare


def test_table_lists_every_step_size_and_quality_figure():
    # the keys the neighbors step writes for an approximate graph (analysis.steps.neighbors)
    rows = [_row(1000, {"neighbors": 1.0}, graph_k=90, knn_method="exact"),
            _row(4000, {"neighbors": 4.0}, graph_k=90, knn_method="ivf_flat", ann_recall=0.95,
                 ann_recall_at_10=0.99, ann_nprobe=8)]
    text = format_scale({"mc_samples": 20, "runs": {"inprocess": {"rows": rows,
                                                                  "growth": growth(rows)}}})
    assert "1,000" in text and "4,000" in text and "neighbors" in text
    assert "1.00" in text  # the exponent
    assert "neighbors.knn_method exact" in text and "neighbors.knn_method ivf_flat" in text
    assert "neighbors.ann_recall 0.950" in text and "neighbors.ann_recall_at_10 0.990" in text
    assert "nprobe" not in text and "graph_k" not in text


def test_table_gives_the_anonymous_peak_when_the_rows_have_it():
    rows = [_row(1000, {"inference": 1.0}), _row(4000, {"inference": 4.0})]
    plain = format_scale({"mc_samples": 20, "runs": {"inprocess": {"rows": rows,
                                                                   "growth": growth(rows)}}})
    assert "peak anonymous MB" not in plain  # rows from before the figure was kept
    for r, anon in zip(rows, (61.0, 87.0), strict=True):
        r["peak_anon_mb"] = anon
    text = format_scale({"mc_samples": 20, "runs": {"inprocess": {"rows": rows,
                                                                  "growth": growth(rows)}}})
    line = next(line for line in text.splitlines() if line.startswith("peak anonymous MB"))
    assert line.split()[-2:] == ["61", "87"]
