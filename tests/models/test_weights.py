"""models/weights.py: weights files as people save them, loaded through load_model."""

from __future__ import annotations

import sys

import pytest
import torch
from byo_factory import small_net
from torch import nn

from core.errors import CheckpointError
from models.checkpoint import load_model
from models.weights import fit_state_dict, load_state_file

SPEC = "byo_factory:small_net"
# torch.jit is deprecated, but people still hold TorchScript files: those tests write one.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


@pytest.fixture(scope="module")
def trained():
    """small_net after a few Adam steps on a fixed random batch (so weights are not the init)."""
    torch.manual_seed(1)
    model = small_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), opt


@pytest.fixture(scope="module")
def batch():
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def _lightning(model, opt):
    """What a LightningModule holding the net as ``self.model`` saves (only plain types)."""
    return {
        "epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
        "state_dict": _prefixed(model.state_dict(), "model."),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.1), "best_model_path": "/ckpt/epoch=2.ckpt"}},
        "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.001, "width": 16},
    }


SAVERS = {
    "plain": lambda m, o: m.state_dict(),
    "lightning": _lightning,
    "tutorial": lambda m, o: {"model_state_dict": m.state_dict(),
                              "optimizer_state_dict": o.state_dict(), "epoch": 5, "loss": 0.1},
    "dataparallel": lambda m, o: nn.DataParallel(m).state_dict(),
    "compiled": lambda m, o: _prefixed(m.state_dict(), "_orig_mod."),
    "ddp_of_compiled": lambda m, o: _prefixed(m.state_dict(), "module._orig_mod."),
    "lightning_ddp": lambda m, o: {"state_dict": _prefixed(m.state_dict(), "model.module."),
                                   "epoch": 1},
    "model_key": lambda m, o: {"model": m.state_dict(), "args": {"epochs": 2}},
    "net_key": lambda m, o: {"net": m.state_dict(), "acc": 0.9, "epoch": 7},
}


@pytest.mark.parametrize("fmt", sorted(SAVERS))
def test_each_format_gives_the_original_outputs(fmt, trained, batch, tmp_path):
    model, opt = trained
    path = tmp_path / f"{fmt}.pt"
    torch.save(SAVERS[fmt](model, opt), path)
    loaded = load_model(model_spec=SPEC, weights=path)
    with torch.no_grad():
        assert torch.equal(loaded.module(batch), model(batch))
    assert loaded.name == fmt  # named after the weights file, not "model"


def test_dataparallel_keys_really_start_with_module(trained):
    assert all(k.startswith("module.") for k in nn.DataParallel(trained[0]).state_dict())


def test_safetensors(trained, batch, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in trained[0].state_dict().items()}, str(path))
    loaded = load_model(model_spec=SPEC, weights=path)
    with torch.no_grad():
        assert torch.equal(loaded.module(batch), trained[0](batch))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=f"Cannot load weights {bad}"):
        load_model(model_spec=SPEC, weights=bad)


class _Wrapper(nn.Module):
    """A user's module whose own keys start with ``model.``: nothing may be stripped."""

    def __init__(self):
        super().__init__()
        self.model = small_net()


def test_a_prefix_is_stripped_only_when_that_fits(trained):
    wrapper = _Wrapper()
    state = _prefixed(trained[0].state_dict(), "model.")
    fit_state_dict(wrapper, state, "w.pt", "wrapper")  # raw keys fit: loaded as is
    assert torch.equal(wrapper.model.head.weight, trained[0].head.weight)
    lightning = _Wrapper()
    fit_state_dict(lightning, _prefixed(state, "model."), "l.pt", "wrapper")  # model.model.*
    assert torch.equal(lightning.model.head.weight, trained[0].head.weight)


def test_wrong_architecture_lists_missing_unexpected_and_shapes(trained, tmp_path):
    state = dict(trained[0].state_dict())
    state["head.weight"] = torch.zeros(5, 16)  # shape mismatch
    del state["conv.bias"]  # missing
    for i in range(12):  # unexpected, more than ten
        state[f"extra.{i:02d}.weight"] = torch.zeros(1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(model_spec=SPEC, weights=path)
    msg = str(info.value)
    assert msg.startswith(f"Weights {path} do not fit architecture '{SPEC}'")
    assert "1 missing keys (conv.bias)" in msg
    assert "12 unexpected keys (extra.00.weight" in msg and "extra.09.weight, ..." in msg
    assert "extra.10.weight" not in msg  # only the first ten are named
    assert "head.weight (5, 16) vs (10, 16)" in msg
    assert "\n" not in msg


def test_several_state_dicts_in_one_file_is_ambiguous(trained, tmp_path):
    path = tmp_path / "two.pt"
    torch.save({"student": trained[0].state_dict(), "teacher": trained[0].state_dict()}, path)
    with pytest.raises(CheckpointError, match="several entries hold tensors .*'student'"):
        load_state_file(path)


def test_pickled_objects_inside_a_checkpoint_are_refused(trained, tmp_path):
    import argparse

    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": trained[0].state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError, match=r"holds Python objects besides tensors "
                                              r"\(argparse.Namespace\)"):
        load_state_file(path)


MARKER_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
    def forward(self, x):
        return self.fc(x)
'''


@pytest.fixture
def pickled_model(tmp_path, monkeypatch):
    """A whole model pickled with torch.save(model), whose module leaves a marker when imported."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "user_net_mod.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_net_mod

    path = tmp_path / "whole.pt"
    torch.save(user_net_mod.Net(), path)
    del sys.modules["user_net_mod"]
    marker.unlink()
    return path, marker


def test_a_pickled_model_is_refused_without_unpickling(pickled_model):
    path, marker = pickled_model
    with pytest.raises(CheckpointError) as info:
        load_model(model_spec=SPEC, weights=path)
    msg = str(info.value)
    assert f"{path} is a whole pickled model (user_net_mod.Net)" in msg
    assert f"torch.save(torch.load('{path}', weights_only=False).state_dict(), " in msg
    assert not marker.exists() and "user_net_mod" not in sys.modules
    with pytest.raises(CheckpointError, match="whole pickled model"):
        load_model(path)  # as --checkpoint, with no --model: the same message
    with pytest.raises(CheckpointError, match="whole pickled model"):
        load_model(weights=path)
    assert not marker.exists()


@pytest.fixture
def torchscript_file(trained, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(small_net().eval()), str(path))
    return path


def test_a_torchscript_file_is_refused(torchscript_file):
    with pytest.raises(CheckpointError, match=f"{torchscript_file} is a TorchScript file.*"
                                              r"torch\.jit\.load"):
        load_model(model_spec=SPEC, weights=torchscript_file)
    with pytest.raises(CheckpointError, match="TorchScript file"):
        load_model(torchscript_file)


def test_a_weights_file_without_a_model_says_to_pass_model(trained, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(trained[0].state_dict(), path)
    for call in (lambda: load_model(path), lambda: load_model(weights=path)):
        with pytest.raises(CheckpointError, match=f"{path} holds weights only.*--model "
                                                  f"package.module:factory --weights {path}"):
            call()


@pytest.mark.parametrize("which", ["pickled", "torchscript"])
def test_cli_refuses_in_one_line(which, pickled_model, torchscript_file, capsys):
    from analysis.cli import main

    path = pickled_model[0] if which == "pickled" else torchscript_file
    code = main(["run", "--model", SPEC, "--weights", str(path), "--dataset", "mnist-5k",
                 "--limit", "10", "--projection"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(path) in err
