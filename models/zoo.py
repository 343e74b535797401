"""The seed architectures, each constructible by name.

Every classifier takes ``(N, 1, 28, 28)`` float input (normalised pixels) and
returns ``(N, 10)`` logits; ``sum_net`` (task ``mnist-sum``) also takes a
one-hot number and returns one logit tensor per head. None of them is
special-cased by the analysis engine: it goes through the task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.errors import ConfigError


def mnist_cnn(num_classes: int = 10, dropout: float = 0.25) -> nn.Sequential:
    """Two conv + two max-pool layers, then an MLP whose last hidden layer has 64 units.

    Dropout sits before and after the 64-unit layer, so MC dropout's stochastic
    tail is only the small MLP head. The input of the last Linear layer is the
    64-d embedding.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),     # 32 x 13 x 13
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),    # 64 x 5 x 5
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Dropout(2 * dropout),
        nn.Linear(64, num_classes),
    )


class S5Net(nn.Module):
    """The four-conv ``Net`` with 593,200 parameters (conv 1-32-64, pool, 64-128-256, pool)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.conv4 = nn.Conv2d(128, 256, 3)
        self.fc1 = nn.Linear(4096, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x))
        x = torch.max_pool2d(torch.relu(self.conv4(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def s5_net(num_classes: int = 10) -> S5Net:
    return S5Net(num_classes)


def _block(cin: int, cout: int, k: int, batch_norm: bool, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, bias=False), nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def tiny_bn(num_classes: int = 10, batch_norm: bool = True, dropout: float = 0.05) -> nn.Sequential:
    """A sub-8,000-parameter CNN with batch-norm and dropout (99.3%+ with augmentation).

    ``batch_norm`` and ``dropout`` can be switched off for the classic experiment
    series (baseline, +batch-norm, +dropout, +augmentation).
    """
    return nn.Sequential(
        *_block(1, 8, 3, batch_norm, dropout),      # 26
        *_block(8, 16, 3, batch_norm, dropout),     # 24
        nn.MaxPool2d(2),                            # 12
        nn.Conv2d(16, 8, 1, bias=False),            # transition
        *_block(8, 12, 3, batch_norm, dropout),     # 10
        *_block(12, 16, 3, batch_norm, dropout),    # 8
        *_block(16, 16, 3, batch_norm, dropout),    # 6
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, num_classes),
    )


class SumNet(nn.Module):
    """Two inputs, two heads: an MNIST image and a one-hot number 0-9 in; the digit
    (10 logits) and the digit + number sum (19 logits) out, as a dict.

    The sum head reads the outer product of the digit head's softmax and the
    one-hot number (100 cells, one per (digit, number) pair) through one
    linear layer: it only has to learn the addition table, so the sum is as
    accurate as the digit. The embedding is the output of ``features``
    (128-d, deterministic); dropout sits between it and the digit head, so
    MC dropout runs the convolutions once.
    """

    def __init__(self, num_classes: int = 10, numbers: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.digit = nn.Linear(128, num_classes)
        self.sum = nn.Linear(num_classes * numbers, num_classes + numbers - 1)

    def forward(self, image: torch.Tensor, number: torch.Tensor) -> dict[str, torch.Tensor]:
        digit = self.digit(self.dropout(self.features(image)))
        joint = digit.softmax(1)[:, :, None] * number[:, None, :]
        return {"digit": digit, "sum": self.sum(joint.flatten(1))}


def sum_net(num_classes: int = 10) -> SumNet:
    return SumNet(num_classes)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": mnist_cnn,
    "s5_net": s5_net,
    "tiny_bn": tiny_bn,
    "tiny_base": lambda num_classes=10: tiny_bn(num_classes, batch_norm=False, dropout=0.0),
    "tiny_bn_nodrop": lambda num_classes=10: tiny_bn(num_classes, batch_norm=True, dropout=0.0),
    "sum_net": sum_net,
}
# Architectures built for a task other than plain classification, and their embedding layer.
ARCH_TASKS: dict[str, str] = {"sum_net": "mnist-sum"}
EMBEDDING_LAYERS: dict[str, str] = {"sum_net": "features"}


def check_task(arch: str, task: str | None) -> None:
    """A zoo architecture trains only for the task it was built for."""
    wanted = ARCH_TASKS.get(arch, "classification")
    given = task or "classification"
    if arch in ARCHITECTURES and wanted != given:
        raise ConfigError(f"--arch {arch} is built for task {wanted!r}, not {given!r}: pass "
                          f"--task {wanted} with it, or an architecture made for {given!r}.")


def build(arch: str, num_classes: int = 10) -> nn.Module:
    """Construct a zoo architecture by name."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(f"Unknown architecture {arch!r}. Valid: {', '.join(ARCHITECTURES)}, "
                          "or --model package.module:factory for your own.") from None
    return factory(num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
