"""A colour model on colour images in headless Chromium: the thumbnail and sample image
are in colour, heatmaps are drawn over them, and GradCAM's layer can be chosen.

The images are 32x32 patches of scikit-image's bundled photographs (label = the
photo), written as PNG files; the model is a user's small CNN with functional
dropout, trained here by its own loop (see tests/analysis/test_user_models.py).
"""

from __future__ import annotations

import base64
import io
import sys
import time

import numpy as np
import pytest
import torch
from dash.testing.wait import until
from PIL import Image

from dashboard import ids
from tests.analysis.test_user_models import (
    CIFAR_MEAN,
    CIFAR_STD,
    PHOTOS,
    photo_patches,
    read_split,
    train_user_model,
)
from tests.conftest import BYO_DIR
from tests.core.image_writer import write_class_folder
from tests.dashboard.test_heads_browser import pick


@pytest.fixture(scope="module")
def colour_session(tmp_path_factory):
    from analysis.session import AnalysisSession
    from models.inputs import spec_from_flags

    if str(BYO_DIR) not in sys.path:
        sys.path.insert(0, str(BYO_DIR))
    import user_models

    root = tmp_path_factory.mktemp("colour")
    for split, half, n, seed in (("train", "left", 80, 0), ("test", "right", 40, 1)):
        images, labels = photo_patches(half, n, seed)
        write_class_folder(root / "photos" / split, images, np.array(PHOTOS)[labels])
    model = user_models.small_rgb_net()
    train_user_model(model, *read_split(root / "photos" / "train"), epochs=2)
    torch.save(model.state_dict(), root / "rgb.pt")
    session = AnalysisSession.open(
        None, f"folder:{root / 'photos'}", "test", model_spec="user_models:small_rgb_net",
        weights=root / "rgb.pt", cache_dir=root / "cache", device="cpu", progress=False,
        mc_samples=5, projections=("umap", "tsne"), k=5,
        input_spec=spec_from_flags(None, CIFAR_MEAN, CIFAR_STD))
    session.run()
    return session


HEAT_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const t = gd && gd._fullData ? gd._fullData.find(d => d.type === 'heatmap') : null;
return t ? JSON.stringify(t.z) : null;
"""


def heat_of(duo) -> str | None:
    return duo.driver.execute_script(HEAT_JS, ids.SAMPLE_HEATMAP)


def decoded(src: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_colour_sample_heatmap_and_gradcam_layer(dash_duo, browser, dash_config,
                                                 colour_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    entry = registry.add(colour_session, "rgb")
    pixels = colour_session.dataset.images.astype(int)
    i = int(np.abs(pixels[:, 0] - pixels[:, 2]).mean(axis=(1, 2)).argmax())  # most colourful
    sid = colour_session.dataset.sample_ids[i]
    browser.open(create_app(dash_config, registry), f"/sample?id={sid}")
    dash_duo.wait_for_element(f"#{ids.SAMPLE_HEATMAP} .hm image", timeout=60)
    image = decoded(dash_duo.find_element(f"#{ids.SAMPLE_IMAGE}").get_attribute("src"))
    assert image.ndim == 3 and image.shape[2] == 3
    channels = image.reshape(-1, 3).astype(int)
    assert np.abs(channels[:, 0] - channels[:, 2]).mean() > 5  # in colour, not grey
    original = colour_session.dataset.images[i].transpose(1, 2, 0)
    np.testing.assert_array_equal(image[::6, ::6], original)  # upscaled 6x, same pixels
    # The layer choice appears with GradCAM only, listing the model's feature maps.
    assert not dash_duo.find_element(f"#{ids.HEATMAP_LAYER_ROW}").is_displayed()
    pick(dash_duo, ids.HEATMAP_METHOD, "GradCAM")
    until(lambda: dash_duo.find_element(f"#{ids.HEATMAP_LAYER_ROW}").is_displayed(), timeout=20)
    layers = colour_session.gradcam_layers()
    assert len(layers) >= 2
    until(lambda: dash_duo.find_element(f"#{ids.HEATMAP_LAYER}").text.strip() == layers[-1],
          timeout=20)
    dash_duo.wait_for_text_to_equal(f"#{ids.HEATMAP_STATUS}", "", timeout=60)
    until(lambda: heat_of(dash_duo) is not None, timeout=60)
    time.sleep(1)
    default_heat = heat_of(dash_duo)
    pick(dash_duo, ids.HEATMAP_LAYER, layers[0])
    until(lambda: dash_duo.find_element(f"#{ids.HEATMAP_LAYER}").text.strip() == layers[0],
          timeout=20)
    until(lambda: heat_of(dash_duo) not in (None, default_heat), timeout=60)
    browser.screenshot("sample-colour-gradcam")
    # The Training page's input card: the check's table fits (no sideways scrolling).
    browser.nav("/training")
    dash_duo.wait_for_element(f"#{ids.INPUT_CHECK} table.loupe-input-check", timeout=30)
    assert "3x32x32" in dash_duo.find_element(f"#{ids.INPUT_CHECK}").text
    assert dash_duo.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot("training-colour")
    assert dash_duo.get_logs() == []
    # The map's hover thumbnails are colour too.
    thumb = decoded(entry.thumbnail(0))
    assert thumb.shape[2] == 3
