"""analysis/steps/mc_dropout.py: trunk-once MC dropout equals T full passes."""

from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn
from torch.nn import functional as F

from analysis import stochastic
from analysis.engine import Engine
from analysis.forward import capture_embedding, model_batches
from analysis.steps.mc_dropout import (
    MCDropout,
    StochasticSplit,
    batch_seed,
    dropout_active,
    has_dropout,
    mc_statistics,
)
from cache import ArtifactStore
from core.datasets import load_dataset
from core.errors import ConfigError
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

    monkeypatch.setattr(stochastic, "StochasticSplit", untraceable)
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
        expected = full_passes(module, x, 5, seed=batch_seed(2, 0)).mean(0)
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
    expected = full_passes(module, x, 4, seed=batch_seed(5, 0)).mean(0)
    np.testing.assert_array_equal(art["mean_probs@class"], expected.numpy())
    # the container stays one node of the traced graph, so the trunk still runs once
    assert art.summary["trunk_once"] is True


# -- functional dropout: models written the way users write them -----------------------------
class FunctionalDropNet(nn.Module):
    """Dropout only as ``F.dropout2d``/``F.dropout`` calls that read ``self.training``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 5, stride=2)  # 12 x 12
        self.fc1 = nn.Linear(8 * 12 * 12, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout2d(F.relu(self.conv(x)), 0.1, training=self.training)
        h = F.relu(self.fc1(h.flatten(1)))
        return self.fc2(F.dropout(h, 0.5, training=self.training))


class MixedDropNet(FunctionalDropNet):
    """One dropout module and one ``torch.dropout`` call (train passed positionally)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.relu(self.conv(x))).flatten(1)
        h = torch.dropout(F.relu(self.fc1(h)), 0.5, self.training)
        return self.fc2(h)


class UntraceableFunctionalNet(FunctionalDropNet):
    """Data-dependent control flow (fx cannot trace it) and ``F.alpha_dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(F.relu(self.conv(x)).flatten(1)))
        if x.abs().sum() > 0:  # a blank probe image skips the dropout: has_dropout tries more
            h = F.alpha_dropout(h, 0.4, training=self.training)
        return self.fc2(h)


class NoDropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=3)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        if x.sum() > 0:  # untraceable, so has_dropout needs the dry pass
            h = h * 1.0
        return self.fc(h.flatten(1))


def train_mode_passes(module, x, t, seed):
    """The hand-written reference: ``model.train()`` (no batch-norm here) for T passes."""
    torch.manual_seed(seed)
    module.train()
    try:
        with torch.inference_mode():
            return torch.stack([module(x).softmax(1) for _ in range(t)])
    finally:
        module.eval()


@pytest.fixture(scope="module")
def digits100(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=100)


@pytest.mark.parametrize("net, trunk_once", [(FunctionalDropNet, True), (MixedDropNet, True),
                                              (UntraceableFunctionalNet, False)])
def test_functional_dropout_is_active_like_train_mode(net, trunk_once, digits100, tmp_path):
    torch.manual_seed(0)
    module = net().eval()
    model = LoadedModel(module, net.__name__)
    assert has_dropout(model)
    engine = Engine(model, digits100, ArtifactStore(tmp_path), CPU,
                    {"mc_dropout": {"samples": 6, "seed": 4, "batch_size": 100}}, progress=False)
    art = engine.get("mc_dropout")
    assert art.summary["trunk_once"] is trunk_once
    _, (x,) = next(model_batches(model, digits100, CPU, 100))
    expected = mc_statistics(train_mode_passes(module, x, 6, seed=batch_seed(4, 0)))
    np.testing.assert_allclose(art["mean_probs@class"], expected["mean_probs"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(art["mutual_info@class"], expected["mutual_info"], rtol=1e-4,
                               atol=1e-6)
    assert art["mutual_info@class"].mean() > 1e-3  # the passes did disagree
    assert not module.training and not any(m.training for m in module.modules())


def test_mixed_model_switches_on_the_functional_dropout_too(tmp_path, digits100):
    """Only the module on (the old behaviour) gives different, less spread passes."""
    torch.manual_seed(0)
    module = MixedDropNet().eval()
    _, (x,) = next(model_batches(LoadedModel(module, "m"), digits100, CPU, 100))
    torch.manual_seed(1)
    module.drop.train()
    with torch.inference_mode():
        module_only = torch.stack([module(x).softmax(1) for _ in range(6)])
    module.drop.eval()
    torch.manual_seed(1)
    with torch.inference_mode(), dropout_active(module):
        every = torch.stack([module(x).softmax(1) for _ in range(6)])
    assert not torch.allclose(every, module_only)
    torch.testing.assert_close(every, train_mode_passes(module, x, 6, seed=1))


def test_has_dropout(tiny_model, digits100):
    assert has_dropout(tiny_model) and has_dropout(FunctionalDropNet())
    assert not has_dropout(zoo.build("tiny_bn_nodrop"))
    nodrop = NoDropNet().eval()
    with pytest.raises(ValueError, match="pass example_args"):
        has_dropout(nodrop)
    x = torch.zeros(1, 1, 28, 28)
    assert not has_dropout(nodrop, (x,)) and not has_dropout(LoadedModel(nodrop, "n"))
    assert has_dropout(UntraceableFunctionalNet().eval(), (x + 1,))  # the branch is taken
    assert not any(m.training for m in nodrop.modules())


def test_functional_dropout_is_forced_in_this_thread_only(digits100):
    """Another thread's plain eval passes stay deterministic during an MC pass."""
    torch.manual_seed(0)
    mc_model, other = FunctionalDropNet().eval(), FunctionalDropNet().eval()
    _, (x,) = next(model_batches(LoadedModel(other, "o"), digits100, CPU, 100))
    with torch.inference_mode():
        plain = other(x)
    inside, done = threading.Event(), threading.Event()

    def mc_thread():
        with torch.inference_mode(), dropout_active(mc_model):
            a, b = mc_model(x), mc_model(x)
            assert not torch.equal(a, b)
            inside.set()
            done.wait(30)

    thread = threading.Thread(target=mc_thread)
    thread.start()
    assert inside.wait(30)
    with torch.inference_mode():
        during = [other(x) for _ in range(3)]
    done.set()
    thread.join()
    for out in during:
        assert torch.equal(out, plain)


def test_two_mc_jobs_in_parallel_threads_equal_each_alone(tiny_model, digits, data_root,
                                                          tmp_path):
    ds = load_dataset(digits, "test", data_root=data_root, limit=400)
    torch.manual_seed(0)
    models = [tiny_model, LoadedModel(FunctionalDropNet().eval(), "functional")]
    options = {"mc_dropout": {"samples": 8, "seed": 0, "batch_size": 32}}

    def job(model, where):
        engine = Engine(model, ds, ArtifactStore(tmp_path / where), CPU, options,
                        progress=False)
        return engine.get("mc_dropout")["mean_probs@class"]

    alone = [job(m, f"alone{i}") for i, m in enumerate(models)]
    together: list = [None, None]
    errors: list = []
    start = threading.Barrier(2)

    def run(i):
        try:
            start.wait(30)
            together[i] = job(models[i], f"together{i}")
        except Exception as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_trace_in_one_thread_leaves_other_threads_forward_passes_alone():
    """fx patches nn.Module.__call__ process-wide while tracing; other threads must not
    be traced into the graph (or fail) meanwhile."""
    from analysis.steps.mc_dropout import _trace

    traced, other = FunctionalDropNet().eval(), FunctionalDropNet().eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = other(x)
    stop, errors, outputs = threading.Event(), [], []

    def forward_loop():
        try:
            while not stop.is_set():
                with torch.no_grad():
                    outputs.append(other(x))
        except Exception as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=forward_loop)
    worker.start()
    try:
        graphs = [_trace(traced, ()) for _ in range(30)]
    finally:
        stop.set()
        worker.join()
    assert errors == [] and outputs
    for out in outputs:
        torch.testing.assert_close(out, expected)
    sizes = {len(list(g.graph.nodes)) for g in graphs}
    assert sizes == {len(list(_trace(traced, ()).graph.nodes))}


# -- the trunk kept by the inference step ----------------------------------------------------
class SizeInTailNet(nn.Module):
    """The tail reads ``x.size(0)``, an int and not a per-sample value: nothing is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        h = F.dropout(F.relu(self.fc1(x.view(b, -1))), 0.5, training=self.training)
        return self.fc2(h).view(b, -1)


class TwoBoundaryNet(nn.Module):
    """A skip branch joins the tail after the dropout: the tail reads two trunk values."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 32)
        self.skip = nn.Linear(28 * 28, 16)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x.flatten(1)))
        g = F.relu(self.skip(x.flatten(1)))
        return self.head(self.fc2(F.dropout(h, 0.4, training=self.training)) + g)


class InplaceDropNet(nn.Module):
    """``nn.Dropout(inplace=True)``, as in torchvision's EfficientNet and MobileNetV3 heads."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 32)
        self.drop = nn.Dropout(0.4, inplace=True)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


class InplaceAfterDropNet(InplaceDropNet):
    """An in-place activation right after an (eval: identity) dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.4)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.drop(self.fc1(x.flatten(1)))))


def _models(tiny_model, byo_factory):
    torch.manual_seed(0)
    return {
        # embedding (the last Linear's input) in the tail; boundary (B, 128): kept
        "mnist_cnn": (tiny_model, [[128]]),
        # embedding (``features``) in the trunk: the inference step's embedding
        "small_net": (LoadedModel(byo_factory.small_net().eval(), "byo:small_net",
                                  embedding_layer="features"), [[16]]),
        # F.dropout2d after the conv: its (8, 12, 12) input is more than KEEP_MAX values
        "functional": (LoadedModel(FunctionalDropNet().eval(), "functional"), None),
        "size_in_tail": (LoadedModel(SizeInTailNet().eval(), "size_in_tail"), None),
        "two_boundary": (LoadedModel(TwoBoundaryNet().eval(), "two_boundary"), [[32], [16]]),
        "inplace_dropout": (LoadedModel(InplaceDropNet().eval(), "inplace_dropout"), [[32]]),
        "inplace_after": (LoadedModel(InplaceAfterDropNet().eval(), "inplace_after"), [[32]]),
    }


@pytest.mark.parametrize("name", ["mnist_cnn", "small_net", "functional", "size_in_tail",
                                  "two_boundary", "inplace_dropout", "inplace_after"])
def test_the_kept_trunk_gives_the_very_same_results(name, tiny_model, byo_factory, digits100,
                                                    tmp_path):
    model, shapes = _models(tiny_model, byo_factory)[name]
    # the default batch sizes: 128 for inference, 256 for MC dropout
    mc_options = {"samples": 5, "seed": 3}
    kept = Engine(model, digits100, ArtifactStore(tmp_path / "kept"), CPU,  # the default
                  {"mc_dropout": mc_options}, progress=False)
    alone = Engine(model, digits100, ArtifactStore(tmp_path / "alone"), CPU,
                   {"inference": {"keep_trunk": False}, "mc_dropout": mc_options},
                   progress=False)
    assert kept.key("inference") != alone.key("inference")
    assert kept.key("inference") == Engine(model, digits100, kept.store, CPU).key("inference")
    inf_kept, inf_alone = kept.get("inference"), alone.get("inference")
    assert inf_kept.summary.get("trunk_shapes") == shapes
    assert "trunk_shapes" not in inf_alone.summary
    for key in inf_alone:  # the trunk-then-tail pass is the model's forward pass
        np.testing.assert_array_equal(inf_kept[key], inf_alone[key], err_msg=key)
    for i, shape in enumerate(shapes or []):
        assert inf_kept[f"trunk:{i}"].shape == (100, *shape)
    mc_kept, mc_alone = kept.get("mc_dropout"), alone.get("mc_dropout")
    assert mc_kept.summary["trunk_kept"] is (shapes is not None)
    assert mc_alone.summary["trunk_kept"] is False
    assert set(mc_kept) == set(mc_alone)
    for key in mc_alone:
        np.testing.assert_array_equal(mc_kept[key], mc_alone[key], err_msg=key)
    # and against T full passes of the model in train mode, written by hand (one batch)
    _, (x,) = next(model_batches(model, digits100, CPU, 256))
    expected = train_mode_passes(model.module, x, 5, seed=batch_seed(3, 0)).mean(0)
    np.testing.assert_allclose(mc_kept["mean_probs@class"], expected.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_runs_with_and_without_mc_share_one_inference_result(tiny_model, digits100,
                                                             tmp_path):
    from analysis.session import AnalysisSession

    store = ArtifactStore(tmp_path)
    without = AnalysisSession(tiny_model, digits100, store, "cpu", mc_samples=0,
                              projections=(), progress=False)
    (record,) = without.run(["inference"])
    assert record.status == "computed"
    assert without.engine.get("inference").summary["trunk_shapes"] == [[128]]
    with_mc = AnalysisSession(tiny_model, digits100, store, "cpu", mc_samples=3,
                              projections=(), progress=False)
    assert with_mc.engine.key("inference") == without.engine.key("inference")
    records = {r.name: r.status for r in with_mc.run(["inference", "mc_dropout"])}
    assert records == {"inference": "cached", "mc_dropout": "computed"}
    assert with_mc.engine.get("mc_dropout").summary["trunk_kept"] is True


def test_a_model_without_dropout_keeps_no_trunk(digits100, tmp_path):
    model = LoadedModel(zoo.build("tiny_bn_nodrop").eval(), "tiny_bn_nodrop")
    art = Engine(model, digits100, ArtifactStore(tmp_path), CPU, progress=False).get("inference")
    assert "trunk_shapes" not in art.summary and not any(k.startswith("trunk:") for k in art)


class CountingNet(TwoBoundaryNet):
    """Python state in ``forward``: fx bakes the count it saw while tracing."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x) + float(self.calls)


def test_a_trace_that_is_not_the_forward_pass_keeps_no_trunk(digits100, tmp_path, caplog):
    torch.manual_seed(0)
    model = LoadedModel(CountingNet().eval(), "counting")
    engine = Engine(model, digits100, ArtifactStore(tmp_path), CPU, progress=False)
    with caplog.at_level("WARNING"):
        art = engine.get("inference")
    assert "trunk_shapes" not in art.summary and not any(k.startswith("trunk:") for k in art)
    assert "does not give exactly its forward pass" in caplog.text
