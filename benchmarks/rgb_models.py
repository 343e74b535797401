"""The user-style model of the RGB benchmark, importable by ``--model``.

``python -m analysis run --model benchmarks.rgb_models:small_rgb_cnn --weights W.pt``
builds it the way Loupe builds any bring-your-own model: the factory is called
with no arguments and the state_dict is loaded into what it returns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Source photographs of the RGB benchmark (one class each); see :mod:`benchmarks.rgb`.
NUM_PHOTO_CLASSES = 8


class SmallRGBCNN(nn.Module):
    """Two conv blocks and an MLP head with functional dropout, as tutorials write it.

    Input ``(N, 3, 32, 32)`` normalised pixels; output ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = NUM_PHOTO_CLASSES, p: float = 0.3) -> None:
        super().__init__()
        self.p = p
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, self.p, training=self.training)
        return self.fc2(x)


def small_rgb_cnn() -> nn.Module:
    """The factory ``--model benchmarks.rgb_models:small_rgb_cnn`` names."""
    return SmallRGBCNN()
