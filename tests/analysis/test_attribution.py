"""analysis/attribution.py: one verb for four Captum methods, and heatmap rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis.attribution import METHODS, attribute, get_method, normalize_heatmap
from analysis.errors import ConfigError
from models.checkpoint import LoadedModel


@pytest.fixture(scope="module")
def images(tiny_session):
    return tiny_session.dataset.images[:3]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_returns_finite_maps_shaped_like_the_input(method, tiny_model, images):
    b = 1 if method == "occlusion" else 3  # occlusion is the slow one: 169 windows an image
    maps = attribute(tiny_model, images[:b], [7, 2, 1][:b], method, n_steps=16)
    assert maps.shape == (b, 28, 28) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.abs(maps).max() > 0  # something was attributed
    if not METHODS[method].signed:
        assert (maps >= 0).all()
    if b > 1:
        single = attribute(tiny_model, images[1:2], 2, method, n_steps=16)
        np.testing.assert_allclose(single[0], maps[1], rtol=1e-4, atol=1e-5)  # batch-invariant


def test_target_changes_the_map(tiny_model, images):
    a = attribute(tiny_model, images[:1], 0, "saliency")
    b = attribute(tiny_model, images[:1], 1, "saliency")
    assert not np.allclose(a, b)


def test_integrated_gradients_completeness(tiny_model, images):
    """Sum of attributions ~ f(x) - f(baseline) for the explained logit."""
    targets = np.array([7, 2, 1])
    maps = attribute(tiny_model, images, targets, "integrated_gradients", n_steps=200)
    pix = torch.from_numpy(images)
    module = tiny_model.module.eval()
    with torch.no_grad():
        fx = module(tiny_model.prepare(pix))[np.arange(3), targets]
        f0 = module(tiny_model.prepare(torch.zeros_like(pix)))[np.arange(3), targets]
    delta = (fx - f0).numpy()
    np.testing.assert_allclose(maps.sum((1, 2)), delta, rtol=0.02, atol=0.02)
    assert np.abs(delta).min() > 0.1  # a non-trivial check


def test_unknown_method_and_target_errors(tiny_model, images):
    with pytest.raises(ConfigError, match="Unknown attribution method 'lime'; valid: "
                                          "integrated_gradients, saliency, gradcam, occlusion"):
        attribute(tiny_model, images, 0, "lime")
    with pytest.raises(ConfigError, match="Unknown attribution method"):
        get_method("deeplift")
    with pytest.raises(ConfigError, match="Target class 10 is outside 0..9"):
        attribute(tiny_model, images, 10, "saliency")


def test_gradcam_without_conv_layer():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    model = LoadedModel(mlp.eval(), "mlp")
    with pytest.raises(ConfigError, match="GradCAM needs an nn.Conv2d"):
        attribute(model, np.zeros((1, 1, 28, 28), np.uint8), 0, "gradcam")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 12)),
                  elements=st.floats(-1e3, 1e3, width=32)), st.booleans(),
       st.floats(50, 100))
def test_normalize_heatmap_range(heatmap, signed, percentile):
    out = normalize_heatmap(heatmap, signed=signed, percentile=percentile)
    assert out.shape == heatmap.shape and np.isfinite(out).all()
    lo = -1.0 if signed else 0.0
    assert (out >= lo).all() and (out <= 1.0).all()
    if np.abs(heatmap).max() == 0:
        assert (out == 0).all()
    elif percentile == 100 and signed:
        assert np.abs(out).max() == pytest.approx(1.0)
    if signed:  # the sign is kept
        assert (np.sign(out) == np.sign(heatmap))[out != 0].all()


def test_normalize_heatmap_clips_outliers():
    h = np.ones((28, 28), np.float32)
    h[0, 0] = 1000.0
    out = normalize_heatmap(h, signed=False, percentile=99)
    assert out[0, 0] == 1.0 and out[5, 5] == pytest.approx(1.0)  # outlier does not wash out
    assert (normalize_heatmap(np.zeros((3, 3))) == 0).all()
