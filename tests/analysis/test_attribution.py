"""analysis/attribution.py: one verb for four Captum methods, and heatmap rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis.attribution import (
    METHODS,
    attribute,
    conv_layer_choices,
    default_gradcam_layer,
    get_method,
    normalize_heatmap,
    occlusion_geometry,
)
from core.errors import ConfigError
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
    with pytest.raises(ConfigError, match=r"GradCAM needs a layer whose output is a \(N, C, h, "
                                          r"w\) feature map larger than 1x1, and mlp has none "
                                          r"on 1x28x28 inputs"):
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


# -- any image classifier: RGB, non-square, a chosen GradCAM layer ----------------------------
class SmallRGBNet(torch.nn.Module):
    """A user-written RGB CNN: two conv blocks (the second a container), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3, padding=1),
                                         torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.stem(x)))
        return self.head(h.mean((2, 3)))


def rgb_images(height: int, width: int) -> np.ndarray:
    """Two real photographs (scikit-image's astronaut and cat) as (2, 3, H, W) uint8."""
    from skimage import data, transform

    photos = [transform.resize(p, (height, width), anti_aliasing=True)
              for p in (data.astronaut(), data.chelsea())]
    return (np.stack(photos) * 255).round().astype(np.uint8).transpose(0, 3, 1, 2)


def rgb_model(module, shape) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(module.eval(), type(module).__name__, mean=0.5, std=0.25,
                       input_shape=shape)


@pytest.fixture(scope="module")
def resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return rgb_model(torchvision.models.resnet18(num_classes=10), (3, 32, 32))


@pytest.fixture(scope="module")
def small_rgb():
    torch.manual_seed(0)
    return rgb_model(SmallRGBNet(), (3, 12, 10))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_resnet18_rgb_maps_are_finite_and_image_sized(method, size, resnet18):
    maps = attribute(resnet18, rgb_images(*size)[:1], 3, method, n_steps=8)
    assert maps.shape == (1, *size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_resnet18_layer_choices_and_default(resnet18):
    choices = conv_layer_choices(resnet18)
    assert choices[0] == "conv1" and choices.index("layer1") < choices.index("layer3")
    assert "layer1.0.relu" not in choices  # called twice in a block: no single output
    assert "layer4" not in choices and "avgpool" not in choices  # 1x1 at 32x32
    assert default_gradcam_layer(resnet18) == "layer3" == choices[-1]
    big = conv_layer_choices(resnet18, (3, 224, 224))
    assert default_gradcam_layer(resnet18, (3, 224, 224)) == "layer4" == big[-1]
    assert "layer4.1.conv2" in big  # the old default (last nn.Conv2d) is still a choice
    assert default_gradcam_layer(resnet18, (3, 24, 40)) == "layer3"  # layer4 is 1x2 there


def test_unknown_or_unusable_gradcam_layer(resnet18):
    image = rgb_images(32, 32)[:1]
    with pytest.raises(ConfigError, match=r"--gradcam-layer 'layer9' is not a module of "
                                          r"ResNet on 3x32x32 inputs; valid: conv1, bn1"):
        attribute(resnet18, image, 0, "gradcam", layer="layer9")
    with pytest.raises(ConfigError, match=r"'fc' is not a feature-map layer.*valid: .*layer3"):
        attribute(resnet18, image, 0, "gradcam", layer="fc")
    with pytest.raises(ConfigError, match=r"'layer4' is not a feature-map layer"):
        attribute(resnet18, image, 0, "gradcam", layer="layer4")  # 1x1 on 32x32


def hand_gradcam(model: LoadedModel, images: np.ndarray, target: int, layer: str) -> np.ndarray:
    """GradCAM written out: ReLU(sum_k mean(dy/dA_k) A_k), bilinearly upsampled."""
    module = dict(model.module.named_modules())[layer]
    saved = {}
    handle = module.register_forward_hook(lambda _m, _a, out: saved.update(a=out))
    x = model.prepare(torch.from_numpy(images))
    try:
        logit = model.module(x)[:, target].sum()
    finally:
        handle.remove()
    grads = torch.autograd.grad(logit, saved["a"])[0]
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * saved["a"]).sum(1, keepdim=True))
    up = torch.nn.functional.interpolate(cam, x.shape[-2:], mode="bilinear")
    return up[:, 0].detach().numpy()


@pytest.mark.parametrize("layer", [None, "stem", "block.0"])
def test_gradcam_equals_a_hand_written_gradcam(small_rgb, layer):
    images = rgb_images(12, 10)
    maps = attribute(small_rgb, images, 2, "gradcam", layer=layer)
    expected = hand_gradcam(small_rgb, images, 2, layer or "block")
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(maps).max() > 0
    assert default_gradcam_layer(small_rgb) == "block"  # the container, after its pool
    assert conv_layer_choices(small_rgb) == ["stem", "block.0", "block.1", "block.2", "block"]


def test_gradcam_default_on_mnist_cnn_is_the_last_block(tiny_model):
    # mnist_cnn is one nn.Sequential: its last block ends with the MaxPool2d "5" (5x5)
    assert default_gradcam_layer(tiny_model) == "5"
    assert conv_layer_choices(tiny_model) == ["0", "1", "2", "3", "4", "5"]


def hand_occlusion(model: LoadedModel, image: np.ndarray, target: int) -> np.ndarray:
    """Occlusion written out: each window zeroes (to the baseline) every channel; a pixel
    gets the mean logit drop of the windows covering it, once per channel."""
    (wh, ww), stride = occlusion_geometry(*image.shape[-2:])
    x = model.prepare(torch.from_numpy(image[None]))
    base = model.prepare(torch.zeros_like(torch.from_numpy(image[None])))
    c, h, w = image.shape
    total, count = np.zeros((h, w)), np.zeros((h, w))
    with torch.no_grad():
        ref = model.module(x)[0, target].item()
        for top in range(0, h - wh + 1, stride):
            for left in range(0, w - ww + 1, stride):
                occluded = x.clone()
                occluded[..., top:top + wh, left:left + ww] = \
                    base[..., top:top + wh, left:left + ww]
                total[top:top + wh, left:left + ww] += ref - model.module(occluded)[0,
                                                                                      target].item()
                count[top:top + wh, left:left + ww] += 1
    assert count.min() > 0  # every pixel was occluded at least once
    return c * total / count


def test_occlusion_equals_a_hand_written_loop(small_rgb):
    image = rgb_images(12, 10)[0]
    maps = attribute(small_rgb, image[None], 1, "occlusion")
    np.testing.assert_allclose(maps[0], hand_occlusion(small_rgb, image, 1), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("height, width", [(28, 28), (32, 32), (24, 40), (31, 33),
                                           (224, 224), (5, 7), (3, 3)])
def test_occlusion_geometry_covers_every_pixel(height, width):
    (wh, ww), stride = occlusion_geometry(height, width)
    assert 1 <= stride < min(wh, ww) or wh == ww == 3 or min(height, width) < 3
    for side, win in ((height, wh), (width, ww)):
        assert (side - win) % stride == 0 and win <= side  # the windows end on the last pixel
    windows = ((height - wh) // stride + 1) * ((width - ww) // stride + 1)
    assert windows <= 225
    if (height, width) == (28, 28):
        assert ((wh, ww), stride) == ((4, 4), 2)  # MNIST heatmaps unchanged


def test_occlusion_batches_the_occluded_copies(resnet18):
    """One 32x32 RGB resnet18 map: 100 windows in one batched pass (was 225 single ones)."""
    batches = []
    handle = resnet18.module.register_forward_pre_hook(
        lambda _m, args: batches.append(len(args[0])))
    try:
        attribute(resnet18, rgb_images(32, 32)[:1], 3, "occlusion")
    finally:
        handle.remove()
    assert len(batches) <= 3 and sum(batches) == 1 + 100
