"""models/zoo.py: the seed architectures by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from models import zoo


def test_s5_net_parameter_count():
    assert zoo.count_parameters(zoo.build("s5_net")) == 593_200


def test_tiny_bn_under_8000_with_batchnorm_and_dropout():
    model = zoo.build("tiny_bn")
    assert zoo.count_parameters(model) < 8_000
    kinds = {type(m) for m in model.modules()}
    assert nn.BatchNorm2d in kinds and nn.Dropout in kinds


def test_mnist_cnn_layout():
    model = zoo.build("mnist_cnn")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears[-1].in_features == 64 and linears[-1].out_features == 10
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2


@pytest.mark.parametrize("arch", [a for a in zoo.ARCHITECTURES if a not in zoo.ARCH_TASKS])
def test_output_shapes(arch):
    model = zoo.build(arch).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert zoo.build(arch, num_classes=7).eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ConfigError,
                       match="Unknown architecture 'resnet'.*mnist_cnn, s5_net, tiny_bn"):
        zoo.build("resnet")


def test_sum_net_gives_one_logit_tensor_per_head():
    model = zoo.build("sum_net").eval()
    number = torch.nn.functional.one_hot(torch.tensor([0, 3, 9]), 10).float()
    with torch.no_grad():
        out = model(torch.zeros(3, 1, 28, 28), number)
    assert set(out) == {"digit", "sum"}
    assert out["digit"].shape == (3, 10) and out["sum"].shape == (3, 19)


def test_an_architecture_trains_only_for_its_task():
    zoo.check_task("sum_net", "mnist-sum")
    zoo.check_task("mnist_cnn", None)
    with pytest.raises(ConfigError, match="--task mnist-sum"):
        zoo.check_task("sum_net", None)
    with pytest.raises(ConfigError, match="built for task 'classification'"):
        zoo.check_task("tiny_bn", "mnist-sum")
