"""models/onnx_model.py: an ONNX export of a trained CNN, converted back, on real digits."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch

from analysis.attribution import attribute
from analysis.forward import capture_embedding, last_linear_name
from core.datasets import load_dataset
from core.errors import CheckpointError, ConfigError
from models.checkpoint import load_model


def export_onnx(module: torch.nn.Module, path) -> None:
    """The legacy exporter (``dynamo=False``): onnx2torch converts its opset-17 graphs; the
    dynamo exporter's opset-18 ``Reshape`` is not convertible yet (see test below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(2, 1, 28, 28),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


@pytest.fixture(scope="module")
def trained(tiny_run):
    return load_model(tiny_run)


@pytest.fixture(scope="module")
def onnx_file(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "digits_cnn.onnx"
    export_onnx(trained.module, path)
    return path


@pytest.fixture(scope="module")
def digits_test(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=300)


def test_converted_model_predicts_like_the_torch_model(trained, onnx_file, digits_test):
    converted = load_model(model_spec=f"onnx:{onnx_file}")
    assert converted.arch == "onnx:digits_cnn.onnx" and converted.name == "digits_cnn"
    assert converted.meta["onnx_input_shape"] == [1, 28, 28]
    x = trained.prepare(torch.from_numpy(digits_test.images))
    with torch.no_grad():
        expected, got = trained.module(x), converted.module(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    accuracy = (got.argmax(1).numpy() == digits_test.labels).mean()
    assert accuracy > 0.6  # a trained model on real digits, not two equal random nets


def test_default_embedding_is_the_input_of_the_last_gemm(trained, onnx_file, digits_test):
    converted = load_model(model_spec=f"onnx:{onnx_file}")
    assert isinstance(dict(converted.module.named_modules())[last_linear_name(converted.module)],
                      torch.nn.Linear)  # onnx2torch turns Gemm into nn.Linear
    plain = dataclasses.replace(trained, embedding_layer=None)
    x = trained.prepare(torch.from_numpy(digits_test.images[:50]))
    with torch.no_grad(), capture_embedding(plain) as want, capture_embedding(converted) as got:
        plain.module(x)
        converted.module(x)
    assert got[0].shape == want[0].shape and torch.allclose(got[0], want[0], atol=1e-4)


def test_embedding_layer_names_a_converted_node(onnx_file):
    converted = load_model(model_spec=f"onnx:{onnx_file}")
    names = [n for n, _ in converted.module.named_modules() if n]
    layer = last_linear_name(converted.module)
    assert load_model(model_spec=f"onnx:{onnx_file}", embedding_layer=layer).embedding_layer \
        == layer
    with pytest.raises(CheckpointError, match=r"--embedding-layer 'fc7' is not a module.*"
                                              f"Valid names: {names[0]}"):
        load_model(model_spec=f"onnx:{onnx_file}", embedding_layer="fc7")


def test_integrated_gradients_on_the_converted_model(onnx_file, digits_test):
    converted = load_model(model_spec=f"onnx:{onnx_file}")
    heat = attribute(converted, digits_test.images[:3], target=digits_test.labels[:3].tolist(),
                     method="integrated_gradients", n_steps=8)
    assert heat.shape == (3, 28, 28) and np.isfinite(heat).all() and np.abs(heat).max() > 0


def test_onnx_in_a_run_folder_stays_inside_it(onnx_file, tmp_path):
    run = tmp_path / "runs" / "exported"
    run.mkdir(parents=True)
    shutil.copy(onnx_file, run / "model.onnx")
    meta = {"arch": "onnx:model.onnx", "model_spec": "onnx:model.onnx",
            "class_names": [str(d) for d in range(10)]}
    (run / "run.json").write_text(json.dumps(meta))
    converted = load_model(run)  # no model.pt: the ONNX file holds the weights
    assert converted.arch == "onnx:model.onnx" and converted.name == "exported"
    for escape in ("onnx:../outside.onnx", f"onnx:{onnx_file}"):
        shutil.copy(onnx_file, tmp_path / "runs" / "outside.onnx")
        (run / "run.json").write_text(json.dumps({**meta, "model_spec": escape}))
        with pytest.raises(CheckpointError, match="points outside the run folder"):
            load_model(run)


def test_missing_converter_says_what_to_install(onnx_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # import fails as when not installed
    with pytest.raises(ConfigError, match="pip install onnx onnx2torch"):
        load_model(model_spec=f"onnx:{onnx_file}")


def test_bad_onnx_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.onnx does not exist"):
        load_model(model_spec=f"onnx:{tmp_path / 'nope.onnx'}")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all" * 5)
    with pytest.raises(CheckpointError, match=f"{bad}"):
        load_model(model_spec=f"onnx:{bad}")


def test_dynamo_export_that_onnx2torch_cannot_convert_says_how_to_export(tmp_path):
    from byo_factory import small_net

    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(small_net().eval(), (torch.zeros(2, 1, 28, 28),), str(path),
                          dynamo=True, verbose=False)
    with pytest.raises(CheckpointError, match=f"ONNX file {path} cannot be converted.*"
                                              "dynamo=False, opset_version=17"):
        load_model(model_spec=f"onnx:{path}")


def test_a_graph_change_without_new_weights_changes_the_fingerprint(trained, tmp_path):
    """An ONNX export with a softmax appended has the same weights but other outputs: its
    cached results must not be reused."""
    plain, soft = tmp_path / "m" / "model.onnx", tmp_path / "s" / "model.onnx"
    plain.parent.mkdir()
    soft.parent.mkdir()
    export_onnx(trained.module, plain)
    export_onnx(torch.nn.Sequential(trained.module, torch.nn.Softmax(1)), soft)
    a, b = load_model(model_spec=f"onnx:{plain}"), load_model(model_spec=f"onnx:{soft}")
    assert a.arch == b.arch == "onnx:model.onnx"
    assert a.fingerprint != b.fingerprint
    assert load_model(model_spec=f"onnx:{plain}").fingerprint == a.fingerprint
