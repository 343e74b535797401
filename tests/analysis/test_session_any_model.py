"""analysis/session.py with models users write themselves: MC-dropout refusal, GradCAM layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis.session import AnalysisSession
from cache import ArtifactStore
from core.datasets import load_dataset
from core.errors import ConfigError
from models import zoo
from models.checkpoint import LoadedModel


class FunctionalDropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=3)  # 8 x 8
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).flatten(1)
        return self.fc(F.dropout(h, 0.5, training=self.training))


@pytest.fixture(scope="module")
def digits50(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=50)


def session(module, ds, tmp_path, **kwargs):
    torch.manual_seed(0)
    return AnalysisSession(LoadedModel(module.eval(), type(module).__name__, name="byo"), ds,
                           ArtifactStore(tmp_path), "cpu", projections=(), progress=False,
                           **kwargs)


def test_mc_samples_default_and_refusal(digits50, tmp_path):
    assert session(FunctionalDropNet(), digits50, tmp_path).mc_samples == 20
    nodrop = zoo.build("tiny_bn_nodrop")
    assert session(nodrop, digits50, tmp_path).mc_samples == 0
    with pytest.raises(ConfigError, match=r"Model byo \(Sequential\) has no dropout \(no "
                                          r"nn.Dropout modules and no functional dropout "
                                          r"calls\).*use --mc-samples 0"):
        session(nodrop, digits50, tmp_path, mc_samples=5)
    assert session(nodrop, digits50, tmp_path, mc_samples=0).steps[:3] == [
        "preprocessing_check", "inference", "pixel_centroids"]


def test_gradcam_layer_option_and_heatmap_keys(tiny_model, digits50, tmp_path):
    import numpy as np

    from analysis.attribution import attribute
    from analysis.engine import Engine

    s = AnalysisSession(tiny_model, digits50, ArtifactStore(tmp_path / "a"), "cpu",
                        mc_samples=0, projections=(), progress=False)
    pred = int(s.engine.get("inference")["pred@class"][3])
    default = s.attribute(3, "gradcam")
    np.testing.assert_allclose(default, attribute(tiny_model, digits50.images[[3]], pred,
                                                  "gradcam", layer="5")[0], rtol=1e-5)
    conv = s.attribute(3, "gradcam", layer="3")  # the former default, the last nn.Conv2d
    assert conv.shape == default.shape == (28, 28) and not np.allclose(conv, default)
    np.testing.assert_array_equal(s.attribute(3, "gradcam", layer="5"), default)  # cached
    assert len(s.store) == 3  # inference, and one heatmap per layer
    with pytest.raises(ConfigError, match=r"--gradcam-layer '9' is not a feature-map layer"):
        s.attribute(3, "gradcam", layer="9")
    saliency = s.attribute(3, "saliency", layer="3")  # ignored by the other methods
    np.testing.assert_array_equal(saliency, s.attribute(3, "saliency"))

    chosen = AnalysisSession(tiny_model, digits50, ArtifactStore(tmp_path / "b"), "cpu",
                             mc_samples=0, projections=(), progress=False, gradcam_layer="3",
                             attribution="gradcam")
    np.testing.assert_allclose(chosen.attribute(3, "gradcam"), conv, rtol=1e-5, atol=1e-7)
    assert chosen.options["attribution"] == {"method": "gradcam", "layer": "3"}
    options = {"attribution": {**chosen.options["attribution"], "subset": "all", "limit": 2}}
    step = Engine(tiny_model, digits50, ArtifactStore(tmp_path / "c"), s.device, options,
                  progress=False).get("attribution")
    np.testing.assert_allclose(step["heatmaps"], attribute(
        tiny_model, digits50.images[:2], step["targets"], "gradcam", layer="3"),
        rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match=r"--gradcam-layer 'features' is not a module of "
                                          r"mnist_cnn on 1x28x28 inputs; valid: 0, 1, 2"):
        AnalysisSession(tiny_model, digits50, ArtifactStore(tmp_path / "d"), "cpu",
                        mc_samples=0, projections=(), progress=False, gradcam_layer="features")


def test_cli_passes_gradcam_layer(monkeypatch):
    from analysis import cli

    args = cli.build_parser().parse_args(["run", "--checkpoint", "x", "--gradcam-layer",
                                          "layer3"])
    seen = {}
    monkeypatch.setattr(AnalysisSession, "open", classmethod(
        lambda cls, *a, **kw: seen.update(kw)))
    cli.open_session(args)
    assert seen["gradcam_layer"] == "layer3"
