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


# -- a bring-your-own model with two inputs and two heads (the README's worked example) ---------
from core.tasks import DIGITS, Head, ModelInput, Task, number_from_ids  # noqa: E402


class ShiftNet(nn.Module):
    """Image + one-hot shift (0-2) in; ``digit`` (10) and ``big`` (digit + shift >= 5) out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(4 * 8 * 8, 16), nn.ReLU())
        self.drop = nn.Dropout(0.2)
        self.digit = nn.Linear(16, 10)
        self.big = nn.Linear(16 + 3, 2)

    def forward(self, image: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.drop(self.features(image))
        return self.digit(h), self.big(torch.cat([h, shift], 1))


def shift_net() -> nn.Module:
    return ShiftNet()


def _shift_metadata(dataset):
    return {"shift": number_from_ids(dataset.sample_ids, 3, salt="shift")}


def _shift_targets(dataset, meta):
    return {"digit": dataset.labels, "big": (dataset.labels + meta["shift"] >= 5).astype(int)}


shift_task = Task(
    name="digit-shift",
    inputs=(ModelInput("image"), ModelInput("shift", "one_hot", 3)),
    heads=(Head("digit", DIGITS), Head("big", ("no", "yes"), weight=0.5)),
    metadata=_shift_metadata, targets=_shift_targets, dataset_classes=DIGITS,
)
