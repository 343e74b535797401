"""models/checkpoint.py: loading run folders and bring-your-own models, and their errors."""

from __future__ import annotations

import pytest
import torch
from byo_factory import small_net

from analysis.errors import CheckpointError
from models.checkpoint import load_model, model_fingerprint

SPEC = "byo_factory:small_net"


@pytest.fixture(scope="module")
def byo_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("byo") / "small.pt"
    torch.save(small_net().state_dict(), path)
    return path


def test_load_run_folder_and_its_model_pt(tiny_run):
    a = load_model(tiny_run)
    b = load_model(tiny_run / "model.pt")
    assert a.arch == "mnist_cnn" and a.name == tiny_run.name
    assert a.fingerprint == b.fingerprint
    assert not a.module.training
    assert a.class_names == [str(d) for d in range(10)]


def test_bring_your_own_model(byo_weights):
    model = load_model(model_spec=SPEC, weights=byo_weights, embedding_layer="features")
    assert model.arch == SPEC and model.embedding_layer == "features"
    expected = torch.load(byo_weights, weights_only=True)
    assert all(torch.equal(model.module.state_dict()[k], v) for k, v in expected.items())
    wrapped = byo_weights.with_name("wrapped.pt")  # {"state_dict": ...} is accepted too
    torch.save({"state_dict": expected, "epoch": 3}, wrapped)
    assert load_model(model_spec=SPEC, weights=wrapped).fingerprint == \
        load_model(model_spec=SPEC, weights=byo_weights).fingerprint


def test_fingerprint_covers_weights_arch_and_layer(byo_weights):
    model = load_model(model_spec=SPEC, weights=byo_weights)
    base = model.fingerprint
    assert model_fingerprint(model.module, SPEC, "features") != base
    assert model_fingerprint(model.module, "other:factory", None) != base
    with torch.no_grad():
        model.module.head.bias[3] += 1e-3
    assert model.fingerprint != base


def test_bad_weights_file_names_it(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(CheckpointError, match=f"Cannot load weights {bad}"):
        load_model(model_spec=SPEC, weights=bad)
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_model(model_spec=SPEC, weights=tmp_path / "missing.pt")
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match=f"{tensor_only} does not hold a state_dict"):
        load_model(model_spec=SPEC, weights=tensor_only)


def test_wrong_architecture_names_weights_and_arch(tiny_run):
    weights = tiny_run / "model.pt"
    with pytest.raises(CheckpointError, match=f"Weights {weights} do not fit architecture "
                                              f"'{SPEC}'"):
        load_model(model_spec=SPEC, weights=weights)


def test_bad_embedding_layer_names_value(byo_weights):
    with pytest.raises(CheckpointError, match="--embedding-layer 'penultimate' is not a module"
                                              r".*Valid names: conv, features"):
        load_model(model_spec=SPEC, weights=byo_weights, embedding_layer="penultimate")


@pytest.mark.parametrize("spec, message", [
    ("byo_factory", "must look like package.module:factory"),
    ("no_such_pkg.mod:f", "cannot import 'no_such_pkg.mod'"),
    ("byo_factory:nope", "has no attribute 'nope'"),
    ("byo_factory:not_a_module", "returned str, not a torch.nn.Module"),
])
def test_bad_model_spec(spec, message, byo_weights):
    with pytest.raises(CheckpointError, match=message):
        load_model(model_spec=spec, weights=byo_weights)


def test_missing_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="No model given"):
        load_model()
    with pytest.raises(CheckpointError, match="needs --weights"):
        load_model(model_spec=SPEC)
    with pytest.raises(CheckpointError, match=f"Checkpoint {tmp_path / 'nope'} does not exist"):
        load_model(tmp_path / "nope")


def test_missing_checkpoint_suggests_the_real_path(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "runs" / "cnn")
    assert f"--out {tmp_path / 'runs' / 'cnn'}" in str(info.value)
    assert "{path}" not in str(info.value)
