"""Loss vs metadata: the loss axis never goes negative, the scatter's points are samples."""

from __future__ import annotations

import numpy as np

from dashboard import figures
from dashboard.views.population import clicked_index


def test_binned_loss_axis_starts_at_zero_and_its_interval_stops_there(entry):
    t = entry.table  # the tiny run's real test digits
    binned = figures.binned_loss(t["pixel_dist_label"].to_numpy(), t["loss"].to_numpy(),
                                 t["label"].to_numpy(), 20)
    fig = figures.loss_vs_metadata_figure(binned, "pixel_dist_label", entry.class_names)
    line = fig.data[1]
    y = np.asarray(line.y, dtype=float)
    assert fig.layout.yaxis.range[0] == 0
    assert np.all(y - np.asarray(line.error_y.arrayminus, dtype=float) >= 0)
    # the interval's upper arm is the full 95% CI, and the axis shows all of it
    assert fig.layout.yaxis.range[1] >= np.max(y + np.asarray(line.error_y.array, dtype=float))


def test_scatter_axes_of_nonnegative_columns_stay_nonnegative(entry):
    t = entry.table
    fig = figures.scatter_figure(t["embedding_margin"].to_numpy(), t["loss"].to_numpy(),
                                 t["label"].to_numpy(), entry.class_names, "margin", "loss",
                                 entry.session.dataset.sample_ids)
    assert fig.layout.yaxis.rangemode == "nonnegative"  # loss >= 0
    assert (t["embedding_margin"] < 0).any() and fig.layout.xaxis.rangemode == "normal"


def test_a_scatter_point_is_the_sample_its_hover_names(entry):
    t = entry.table
    ids = entry.session.dataset.sample_ids
    fig = figures.scatter_figure(t["pixel_dist_label"].to_numpy(), t["loss"].to_numpy(),
                                 t["label"].to_numpy(), entry.class_names, "d", "loss", ids)
    for curve in (0, 3, len(entry.class_names) - 1):
        trace = fig.data[curve]
        assert "%{text}" in trace.hovertemplate
        for point in (0, len(trace.x) // 2, len(trace.x) - 1):
            i = clicked_index(entry, {"points": [{"curveNumber": curve, "pointIndex": point}]})
            assert trace.text[point] == ids[i]
            assert np.float32(trace.y[point]) == np.float32(t["loss"].iat[i])


def test_accuracy_per_class_axis_starts_at_zero(entry):
    """A well-trained model's 95% is drawn against 0, not against a zoomed-in 90%."""
    from dashboard.figures.errors import per_class_figure

    t = entry.table
    fig = per_class_figure(t["label"].to_numpy(), t["correct"].to_numpy(), t["loss"].to_numpy(),
                           entry.class_names)
    assert fig.layout.yaxis.range[0] == 0 and t["correct"].mean() > 0.5
