"""Models written the way users write them, imported by name (``user_models:mlp``).

Nothing here uses Loupe: these are the classes a person has in their own
project, trained by their own loop in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A plain MLP for 28x28 digits, trained on ``ToTensor()`` inputs (pixels in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def mlp() -> nn.Module:
    return MLP()


class SmallRGBNet(nn.Module):
    """A small colour CNN with functional dropout, as in many tutorials."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, 0.3, training=self.training)
        return self.fc2(x)


def small_rgb_net() -> nn.Module:
    return SmallRGBNet()


def resnet18_3() -> nn.Module:
    """torchvision's resnet18 for 3 classes (no pretrained weights: nothing downloads)."""
    from torchvision.models import resnet18

    return resnet18(num_classes=3)
