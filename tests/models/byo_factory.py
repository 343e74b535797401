"""Bring-your-own model factories, imported by name (``byo_factory:small_net``) in the tests."""

from __future__ import annotations

import torch
from torch import nn


def small_net() -> nn.Module:
    """A small CNN with dropout whose 16-d ``features`` output is a natural embedding."""
    return _SmallNet()


class _SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=3)          # 8 x 8
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(torch.relu(self.conv(x)))))


class _Untraceable(_SmallNet):
    """Data-dependent control flow: ``torch.fx`` cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(torch.relu(self.conv(x)))
        if h.sum() > 0:  # fx raises TraceError on this branch
            h = h * 1.0
        return self.head(self.drop(h))


def untraceable_net() -> nn.Module:
    return _Untraceable()


def not_a_module():
    return "a string"
