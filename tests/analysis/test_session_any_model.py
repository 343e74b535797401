"""analysis/session.py with models users write themselves: MC-dropout refusal, GradCAM layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis.datasets import load_dataset
from analysis.errors import ConfigError
from analysis.session import AnalysisSession
from cache import ArtifactStore
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
    assert session(nodrop, digits50, tmp_path, mc_samples=0).steps[:2] == ["inference",
                                                                            "pixel_centroids"]
