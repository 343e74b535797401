"""analysis/steps/mc_dropout.py: trunk-once MC dropout equals T full passes."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis.datasets import load_dataset
from analysis.engine import Engine
from analysis.errors import ConfigError
from analysis.forward import capture_embedding, model_batches
from analysis.steps import mc_dropout as mc
from analysis.steps.mc_dropout import MCDropout, StochasticSplit, dropout_active, mc_statistics
from cache import ArtifactStore
from models import zoo
from models.checkpoint import LoadedModel

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batch(tiny_model, digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root, limit=64)
    _, (x,) = next(model_batches(tiny_model, ds, CPU, 64))
    return x


def full_passes(module, x, t, seed):
    torch.manual_seed(seed)
    with torch.inference_mode(), dropout_active(module):
        return torch.stack([module(x).softmax(1) for _ in range(t)])


def test_split_puts_only_the_head_in_the_tail(tiny_model):
    split = StochasticSplit(tiny_model.module)
    tail_modules = [n.target for n in split.tail if n.op == "call_module"]
    # mnist_cnn: ... Linear(1600, 128)=7, ReLU=8 | Dropout=9, Linear=10, ReLU=11, Dropout=12,
    # Linear=13
    assert tail_modules == ["9", "10", "11", "12", "13"]
    assert 0 < split.tail_fraction < 0.5


def test_trunk_once_is_bit_identical_to_full_passes(tiny_model, batch):
    module = tiny_model.module.eval()
    expected = full_passes(module, batch, 8, seed=3)
    split = StochasticSplit(module)
    torch.manual_seed(3)
    with torch.inference_mode(), dropout_active(module):
        env = split.trunk_env(batch)
        got = torch.stack([split.tail_pass(env).softmax(1) for _ in range(8)])
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], got[1])  # the passes do differ: dropout was active
    assert not module.training and not any(m.training for m in module.modules())


def test_step_trunk_once_equals_step_with_full_passes(tiny_model, digits, data_root, tmp_path,
                                                      monkeypatch):
    ds = load_dataset(digits, "test", data_root=data_root, limit=150)
    options = {"mc_dropout": {"samples": 6, "seed": 11, "batch_size": 64}}
    fast = Engine(tiny_model, ds, ArtifactStore(tmp_path / "a"), CPU, options, progress=False)
    fast_art = fast.get("mc_dropout")
    assert fast_art.summary["trunk_once"] is True

    def untraceable(module):
        raise torch.fx.proxy.TraceError("pretend fx cannot trace this model")

    monkeypatch.setattr(mc, "StochasticSplit", untraceable)
    slow = Engine(tiny_model, ds, ArtifactStore(tmp_path / "b"), CPU, options, progress=False)
    slow_art = slow.get("mc_dropout")
    assert slow_art.summary["trunk_once"] is False
    assert set(fast_art) == set(slow_art)
    for name in fast_art:
        np.testing.assert_array_equal(fast_art[name], slow_art[name], err_msg=name)
    # mnist_cnn's embedding (the last Linear's input) follows a dropout: it is averaged
    assert fast_art["mean_embedding"].shape == fast.get("inference")["embedding"].shape


def test_seed_and_rng_state(tiny_model, digits, data_root, tmp_path):
    ds = load_dataset(digits, "test", data_root=data_root, limit=40)
    def run(seed, where):
        engine = Engine(tiny_model, ds, ArtifactStore(tmp_path / where), CPU,
                        {"mc_dropout": {"samples": 4, "seed": seed}}, progress=False)
        return engine.get("mc_dropout")["mean_probs@class"]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = run(0, "a")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is restored
    np.testing.assert_array_equal(run(0, "b"), a)
    assert not np.array_equal(run(1, "c"), a)


def test_dropout_p0_equals_the_plain_pass(tiny_run, digits, data_root, tmp_path):
    model = zoo.mnist_cnn(dropout=0.0)
    state = torch.load(tiny_run / "model.pt", weights_only=True)
    model.load_state_dict(state)
    loaded = LoadedModel(model.eval(), "mnist_cnn_p0")
    ds = load_dataset(digits, "test", data_root=data_root, limit=100)
    engine = Engine(loaded, ds, ArtifactStore(tmp_path), CPU,
                    {"mc_dropout": {"samples": 4}}, progress=False)
    plain = engine.get("inference")
    mc_art = engine.get("mc_dropout")
    np.testing.assert_array_equal(mc_art["mean_probs@class"], plain["probs@class"])
    np.testing.assert_array_equal(mc_art["pred@class"], plain["pred@class"])
    np.testing.assert_array_equal(mc_art["top_var@class"], np.zeros(100, np.float32))
    np.testing.assert_array_equal(mc_art["mutual_info@class"], np.zeros(100, np.float32))
    np.testing.assert_array_equal(mc_art["uncertainty@class"], 1 - plain["confidence@class"])


@st.composite
def pass_probabilities(draw):
    t, b, c = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(2, 12))
    logits = draw(hnp.arrays(np.float32, (t, b, c), elements=st.floats(-30, 30, width=32)))
    return torch.from_numpy(logits).softmax(2)


@settings(max_examples=150, deadline=None)
@given(pass_probabilities())
def test_mc_statistics_bounds(probs):
    t, b, c = probs.shape
    stats = mc_statistics(probs)
    eps = 1e-5
    ent, mi = stats["entropy"], stats["mutual_info"]
    assert ent.shape == mi.shape == (b,)
    assert (ent >= -eps).all() and (ent <= math.log(c) + eps).all()
    assert (mi >= 0).all() and (mi <= ent + eps).all()
    assert torch.equal(stats["pred"], probs.mean(0).argmax(1))
    np.testing.assert_allclose(stats["uncertainty"], 1 - probs.mean(0).max(1).values, atol=1e-6)
    assert (stats["uncertainty"] <= 1 - 1 / c + eps).all()
    assert (stats["top_var"] >= 0).all() and (stats["top_var"] <= 0.25 + eps).all()
    if t == 1:  # one pass: no disagreement between passes
        assert (mi <= eps).all() and (stats["top_var"] == 0).all()


def test_mc_statistics_known_values():
    # two confident passes that disagree: mean is uniform over 2 classes
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    stats = mc_statistics(probs)
    assert stats["entropy"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["mutual_info"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["top_var"].item() == pytest.approx(0.25)


def test_model_without_dropout_is_a_config_error(digits, data_root, tmp_path):
    model = LoadedModel(zoo.build("tiny_bn_nodrop").eval(), "tiny_bn_nodrop")
    ds = load_dataset(digits, "test", data_root=data_root, limit=20)
    engine = Engine(model, ds, ArtifactStore(tmp_path), CPU, progress=False)
    with pytest.raises(ConfigError, match="tiny_bn_nodrop has none.*--mc-samples 0"):
        engine.get("mc_dropout")
    with pytest.raises(ConfigError, match="--mc-samples must be at least 1"):
        Engine(LoadedModel(zoo.build("mnist_cnn").eval(), "m"), ds, ArtifactStore(tmp_path),
               CPU, {"mc_dropout": {"samples": 0}}, progress=False).get("mc_dropout")


def test_untraceable_model_falls_back_and_still_works(digits, data_root, tmp_path,
                                                      byo_factory):
    torch.manual_seed(0)
    module = byo_factory.untraceable_net().eval()
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(copy.deepcopy(module))
    model = LoadedModel(module, "byo_factory:untraceable_net")
    ds = load_dataset(digits, "test", data_root=data_root, limit=50)
    engine = Engine(model, ds, ArtifactStore(tmp_path), CPU,
                    {"mc_dropout": {"samples": 5, "seed": 2}}, progress=False)
    art = engine.get("mc_dropout")
    assert art.summary["trunk_once"] is False
    _, (x,) = next(model_batches(model, ds, CPU, 1000))
    with capture_embedding(model):
        expected = full_passes(module, x, 5, seed=2).mean(0)
    np.testing.assert_array_equal(art["mean_probs@class"], expected.numpy())
    assert art["mean_embedding"].shape == (50, 16) and np.isfinite(art["entropy@class"]).all()


def test_columns(tiny_session):
    cols = tiny_session.engine.columns("mc_dropout")
    assert set(cols) >= {f"{c}@class" for c in ("mc_pred", "mc_confidence", "mc_uncertainty",
                                                "mc_entropy", "mc_mutual_info", "mc_top_var")}
    np.testing.assert_allclose(cols["mc_confidence@class"] + cols["mc_uncertainty@class"], 1.0,
                               atol=1e-6)
    assert MCDropout.requires == ("inference",)


def test_embedding_layer_that_fx_traces_through(byo_factory, digits, data_root, tmp_path):
    """``features`` is an nn.Sequential: fx inlines it, so its hook never fires in the split."""
    torch.manual_seed(0)
    module = byo_factory.small_net().eval()
    model = LoadedModel(module, "byo_factory:small_net", embedding_layer="features")
    ds = load_dataset(digits, "test", data_root=data_root, limit=40)
    engine = Engine(model, ds, ArtifactStore(tmp_path), CPU,
                    {"mc_dropout": {"samples": 4, "seed": 5}}, progress=False)
    art = engine.get("mc_dropout")
    # the embedding sits before the dropout: every pass sees the plain one
    np.testing.assert_allclose(art["mean_embedding"], engine.get("inference")["embedding"],
                               rtol=1e-5, atol=1e-6)
    _, (x,) = next(model_batches(model, ds, CPU, 1000))
    expected = full_passes(module, x, 4, seed=5).mean(0)
    np.testing.assert_array_equal(art["mean_probs@class"], expected.numpy())
    # the container stays one node of the traced graph, so the trunk still runs once
    assert art.summary["trunk_once"] is True
