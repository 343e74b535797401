"""The Sample page's heatmap paths as plain functions: cached at once, else a job."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.state import DashboardInputError
from dashboard.views.sample import NotCached, checked_layer, gradcam_layer_options, heatmap_view


def heat(figure) -> bytes:
    """The heatmap trace's values (the trace over the image)."""
    return np.asarray(figure.data[1].z, dtype=np.float32).tobytes()


def test_a_heatmap_not_yet_computed_is_not_computed_on_the_fast_path(entry):
    index = 17
    with pytest.raises(NotCached):
        heatmap_view(entry, index, "saliency", "pred", cached_only=True)
    computed = heatmap_view(entry, index, "saliency", "pred")
    again = heatmap_view(entry, index, "saliency", "pred", cached_only=True)
    assert heat(again) == heat(computed)


def test_gradcam_layers_are_offered_and_checked(entry):
    options, default = gradcam_layer_options(entry)
    names = [o["value"] for o in options]
    assert names and default == names[-1]
    assert checked_layer(entry, "gradcam", names[0]) == names[0]
    assert checked_layer(entry, "saliency", names[0]) is None  # other methods ignore it
    with pytest.raises(DashboardInputError, match="Unknown GradCAM layer"):
        checked_layer(entry, "gradcam", "no.such.layer")
    first = heatmap_view(entry, 3, "gradcam", "pred", names[0])
    last = heatmap_view(entry, 3, "gradcam", "pred", names[-1])
    assert heat(first) != heat(last)
