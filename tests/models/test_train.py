"""models/train.py: a trained run folder (model.pt + run.json)."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import ConfigError
from models import zoo
from models.train import TrainConfig, random_affine, train


def test_run_folder_weights_load_with_weights_only(tiny_run):
    state = torch.load(tiny_run / "model.pt", weights_only=True)
    expected = zoo.build("mnist_cnn").state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)
    model = zoo.build("mnist_cnn")
    model.load_state_dict(state)  # strict: every key fits
    assert not any(p.name.endswith(".tmp") for p in tiny_run.iterdir())


def test_run_json_sidecar(tiny_run, digits):
    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["arch"] == "mnist_cnn" and meta["dataset"] == digits
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["parameters"] == zoo.count_parameters(zoo.build("mnist_cnn"))
    assert meta["seed"] == 0 and meta["hyperparameters"]["seed"] == 0
    hp = meta["hyperparameters"]
    assert hp["limit"] == 2000 and hp["epochs"] == 1 and hp["batch_size"] == 64
    assert hp["optimizer"] == "adam" and hp["lr"] > 0
    assert meta["train_samples"] == 2000
    assert 0 < meta["wall_time_s"] < 600
    (epoch,) = meta["history"]
    assert epoch["epoch"] == 1
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert key in epoch
    # one epoch on 2,000 digits learns something, well above chance (10%)
    assert epoch["test_acc"] > 0.5 and epoch["train_loss"] < 2.3
    assert meta["input"] == {"shape": [1, 28, 28], "mean": 0.1307, "std": 0.3081}


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "--epochs"), ({"lr": 0.0}, "--lr"), ({"optimizer": "lbfgs"}, "--optimizer"),
    ({"batch_size": 0}, "--batch-size"),
])
def test_config_validation(change, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(TrainConfig(dataset="mnist-5k", **change), tmp_path / "run", device="cpu",
              progress=False)
    assert not (tmp_path / "run").exists()


def test_random_affine_keeps_shape_and_is_seeded():
    x = torch.rand(4, 1, 28, 28)
    a = random_affine(x, generator=torch.Generator().manual_seed(1))
    b = random_affine(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
