"""models/checkpoint.py: loading run folders and bring-your-own models, and their errors."""

from __future__ import annotations

import pytest
import torch
from byo_factory import small_net

from core.errors import CheckpointError
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


# -- a run folder never makes Loupe run code ---------------------------------------------------
EVIL_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from models import zoo
from core.tasks import classification


def factory():
    return zoo.build("mnist_cnn")


def task():
    return classification([str(d) for d in range(10)])
'''


@pytest.fixture
def hostile_run(tiny_run, tmp_path, monkeypatch):
    """A copy of tiny_run whose run.json names ``evil_mod:factory``, a module that leaves a
    marker file when imported (it is on sys.path, as a user's package would be)."""
    import json
    import shutil
    import sys

    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_mod.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_mod", raising=False)
    run = tmp_path / "runs" / "hostile"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta.update(model_spec="evil_mod:factory", arch="evil_mod:factory")
    (run / "run.json").write_text(json.dumps(meta))
    return run, marker


def test_a_run_naming_code_is_refused_without_importing(hostile_run):
    run, marker = hostile_run
    with pytest.raises(CheckpointError) as info:
        load_model(run)
    assert str(info.value) == (
        f"Run {run} was made with your own code (evil_mod:factory); Loupe does not import code "
        "named in a run folder. Pass --model evil_mod:factory (or --trust-code) to open it.")
    assert not marker.exists()


def test_the_same_model_flag_or_trust_code_opens_it(hostile_run, tiny_run):
    run, marker = hostile_run
    expected = load_model(tiny_run).module.state_dict()
    for model in (load_model(run, model_spec="evil_mod:factory"),
                  load_model(run, trust_code=True)):
        assert model.name == "hostile" and model.arch == "evil_mod:factory"
        assert all(torch.equal(model.module.state_dict()[k], v) for k, v in expected.items())
    assert marker.exists()


@pytest.mark.parametrize("spec", ["os:abort", "subprocess:run", "evil_mod:factory"])
def test_a_task_naming_code_is_refused(spec, hostile_run):
    import json

    run, marker = hostile_run
    meta = json.loads((run / "run.json").read_text())
    meta.update(model_spec=None, arch="mnist_cnn", task=spec)
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"Pass --task {spec} \\(or --trust-code\\)"):
        load_model(run)
    assert not marker.exists()
    meta.update(task="mnist-sum")  # a built-in task is a name, not code: not refused
    (run / "run.json").write_text(json.dumps(meta))
    assert load_model(run).task_spec == "mnist-sum"


def test_os_abort_as_model_spec_is_refused(hostile_run):
    import json

    run, _ = hostile_run
    meta = json.loads((run / "run.json").read_text())
    meta.update(model_spec="os:abort")
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"your own code \(os:abort\)"):
        load_model(run)


def test_bring_your_own_run_is_named_after_its_file_or_factory(byo_weights):
    assert load_model(model_spec=SPEC, weights=byo_weights).name == "small"


def test_a_run_json_without_arch_says_to_pass_model(tiny_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "noarch"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    del meta["arch"]
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="names no arch or model_spec: pass --model"):
        load_model(run)


@pytest.mark.parametrize(("spec", "said"), [("torch.nn:Linear", "calling it failed with TypeError"),
                                            ("math:pi", "float is not callable")])
def test_a_factory_that_cannot_build_the_model_is_one_error_line(spec, said, tmp_path, capsys):
    from analysis.cli import main

    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    code = main(["run", "--model", spec, "--weights", str(weights), "--dataset", "mnist-5k",
                 "--limit", "20"])
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err
    assert err.count("error:") == 1
