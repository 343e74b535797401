"""core/tasks.py: inputs, heads, per-head steps, on real MNIST slices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.session import AnalysisSession
from core.datasets import load_dataset
from core.errors import CheckpointError, ConfigError
from core.tasks import (
    DIGITS,
    Head,
    ModelInput,
    Task,
    classification,
    head_key,
    mnist_sum,
    number_from_ids,
    resolve_task,
)
from models.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory, digits, data_root, byo_factory) -> Path:
    """The bring-your-own two-input, two-head toy (tests/models/byo_factory.py) on 1,500 digits."""
    out = tmp_path_factory.mktemp("runs") / "shift"
    train(TrainConfig(model_spec="byo_factory:shift_net", task="byo_factory:shift_task",
                      dataset=digits, epochs=1, limit=1500, batch_size=64), out,
          device="cpu", data_root=data_root, progress=False)
    return out


@pytest.fixture(scope="module")
def shift_session(shift_run, digits, data_root, tmp_path_factory):
    # The run names its code; opening it takes the same --model and --task (or trust).
    common = dict(data_root=data_root, limit=200, cache_dir=tmp_path_factory.mktemp("cache"),
                  device="cpu", progress=False, mc_samples=5, projections=())
    with pytest.raises(CheckpointError, match="Pass --model byo_factory:shift_net"):
        AnalysisSession.open(shift_run, digits, "test", **common)
    s = AnalysisSession.open(shift_run, digits, "test", model_spec="byo_factory:shift_net",
                             task="byo_factory:shift_task", **common)
    s.run()
    return s


@pytest.fixture(scope="module")
def sum_run(tmp_path_factory, digits, data_root) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sum"
    train(TrainConfig(arch="sum_net", task="mnist-sum", dataset=digits, epochs=1, limit=800,
                      batch_size=64), out, device="cpu", data_root=data_root, progress=False)
    return out


# -- the deterministic number --------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=40),
       st.integers(1, 20))
def test_number_is_a_pure_function_of_the_id(ids, size):
    a = number_from_ids(ids, size)
    assert a.dtype == np.int64 and ((a >= 0) & (a < size)).all()
    np.testing.assert_array_equal(a, number_from_ids(list(ids), size))
    # one id's number does not depend on the others
    assert [int(number_from_ids([i], size)[0]) for i in ids] == a.tolist()


def test_number_is_identical_in_another_process_and_uniform(digits, data_root):
    ds = load_dataset(digits, "test", data_root=data_root)
    here = mnist_sum().sample_metadata(ds)["number"]
    code = ("import sys, json; from core.tasks import number_from_ids; "
            "print(json.dumps(number_from_ids(json.loads(sys.stdin.read()), 10).tolist()))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(list(ds.sample_ids)),
                         capture_output=True, text=True, cwd=REPO, check=True, timeout=120)
    np.testing.assert_array_equal(np.asarray(json.loads(out.stdout)), here)
    share = np.bincount(here, minlength=10) / len(here)
    assert share.min() > 0.07 and share.max() < 0.13
    # independent of the digit: every digit sees every number
    assert len({(int(a), int(b)) for a, b in zip(ds.labels, here, strict=True)}) == 100


def test_mnist_sum_targets_and_dataset_check(digits, data_root):
    task = mnist_sum()
    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    meta = task.sample_metadata(ds)
    targets = task.sample_targets(ds, meta)
    np.testing.assert_array_equal(targets["digit"], ds.labels)
    np.testing.assert_array_equal(targets["sum"], ds.labels + meta["number"])
    assert targets["sum"].max() <= 18 and task.head("sum").num_classes == 19
    assert task.accepts(ds)


def test_a_task_on_the_wrong_dataset_is_a_clear_error(data_root):
    from tests.conftest import require_dataset

    require_dataset("fashion-mnist", data_root)
    fashion = load_dataset("fashion-mnist", "test", data_root=data_root, limit=20)
    with pytest.raises(ConfigError, match=r"task 'mnist-sum'.*fashion-mnist:test.*--extra-dataset"):
        mnist_sum().check_dataset(fashion)


# -- declarations --------------------------------------------------------------------------------
def test_bad_declarations_are_refused():
    img = ModelInput("image")
    with pytest.raises(ConfigError, match="duplicate head"):
        Task("t", (img,), (Head("a", DIGITS), Head("a", DIGITS)), targets=lambda d, m: {})
    with pytest.raises(ConfigError, match="exactly one image"):
        Task("t", (ModelInput("n", "one_hot", 3),), (Head("a", DIGITS),))
    with pytest.raises(ConfigError, match="declare `targets`"):
        Task("t", (img,), (Head("a", DIGITS), Head("b", DIGITS)))
    with pytest.raises(ConfigError, match="kind 'text'"):
        Task("t", (img, ModelInput("x", "text")), (Head("a", DIGITS),))
    with pytest.raises(ConfigError, match="Unknown task"):
        resolve_task("nope", DIGITS)


def test_split_outputs_accepts_tensor_tuple_and_dict_and_names_mistakes():
    one = classification(DIGITS)
    x = torch.zeros(4, 10)
    assert one.split_outputs(x)["class"] is x
    two = mnist_sum()
    y = torch.zeros(4, 19)
    assert two.split_outputs((x, y))["sum"] is y
    assert two.split_outputs({"digit": x, "sum": y})["digit"] is x
    with pytest.raises(ConfigError, match=r"no head\(s\) \['sum'\]"):
        two.split_outputs({"digit": x})
    with pytest.raises(ConfigError, match=r"Head 'sum' should give \(batch, 19\)"):
        two.split_outputs((x, x))
    with pytest.raises(ConfigError, match="returned one tensor"):
        two.split_outputs(x)


# -- every step per head, on the two-input two-head toy -----------------------------------------
def test_per_head_loss_equals_the_loss_by_hand(shift_session, byo_factory):
    s = shift_session
    assert s.heads == ["digit", "big"]
    ds = s.dataset
    shift = number_from_ids(ds.sample_ids, 3, salt="shift")
    module = s.model.module.eval()
    x = s.model.prepare(torch.from_numpy(ds.images))
    with torch.no_grad():
        digit, big = module(x, F.one_hot(torch.from_numpy(shift), 3).float())
    big_target = (ds.labels + shift >= 5).astype(np.int64)
    loss_digit = F.cross_entropy(digit, torch.from_numpy(ds.labels), reduction="none").numpy()
    loss_big = F.cross_entropy(big, torch.from_numpy(big_target), reduction="none").numpy()
    inf = s.artifact("inference")
    np.testing.assert_allclose(inf[head_key("loss", "digit")], loss_digit, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(inf[head_key("loss", "big")], loss_big, rtol=1e-4, atol=1e-5)
    # the total is the training loss: weights 1 and 0.5
    np.testing.assert_allclose(inf["total_loss"], loss_digit + 0.5 * loss_big, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(inf[head_key("pred", "big")], big.argmax(1).numpy())
    assert inf.summary["big"]["accuracy"] == pytest.approx(
        (big.argmax(1).numpy() == big_target).mean())


def test_the_table_has_a_view_per_head(shift_session):
    s = shift_session
    digit, big = s.table(), s.table(head="big")
    assert digit["label"].tolist() == s.dataset.labels.tolist()
    assert set(big["label"].unique()) <= {0, 1} and set(big["label_name"]) <= {"no", "yes"}
    for t in (digit, big):
        assert {"shift", "digit_loss", "big_loss", "digit_correct", "big_correct",
                "total_loss", "embedding_margin"} <= set(t.columns)
        np.testing.assert_array_equal(t["correct"], t["pred"] == t["label"])
    np.testing.assert_array_equal(big["loss"], digit["big_loss"])
    np.testing.assert_array_equal(big["shift"], number_from_ids(s.dataset.sample_ids, 3, "shift"))
    # pixel centroids are per digit: the "big" head has no pixel columns of its own
    assert "pixel_margin" in digit.columns and "pixel_margin" not in big.columns
    with pytest.raises(ConfigError, match="Unknown head 'nope'"):
        s.table(head="nope")


def test_mc_dropout_and_centroids_per_head(shift_session):
    s = shift_session
    mc = s.artifact("mc_dropout")
    assert mc.summary["heads"] == ["digit", "big"]
    assert mc[head_key("mean_probs", "big")].shape == (200, 2)
    np.testing.assert_allclose(mc[head_key("mean_probs", "digit")].sum(1), 1, atol=1e-5)
    cents = s.artifact("centroids")
    emb = s.embeddings
    big_target = s.artifact("inference")[head_key("target", "big")]
    want = np.stack([emb[big_target == c].mean(0) for c in range(2)])
    np.testing.assert_allclose(cents[head_key("embedding_centroids", "big")], want, rtol=1e-4,
                               atol=1e-5)
    assert cents[head_key("embedding_distances", "digit")].shape == (200, 10)


def test_heatmaps_are_with_respect_to_the_image_for_the_chosen_head(shift_session):
    s = shift_session
    digit = s.attribute(3, "integrated_gradients", "pred", head="digit")
    big = s.attribute(3, "integrated_gradients", "pred", head="big")
    assert digit.shape == big.shape == (28, 28)
    assert np.isfinite(big).all() and not np.allclose(digit, big)
    with pytest.raises(ConfigError, match=r"out of range 0..1 \(head 'big'\)"):
        s.attribute(3, target=5, head="big")
    sal = s.attribute(3, "saliency", 1, head="big")
    assert (sal >= 0).all() and sal.sum() > 0


# -- the built-in mnist-sum task with sum_net ------------------------------------------------
def test_sum_net_run_records_its_task(sum_run):
    meta = json.loads((sum_run / "run.json").read_text())
    assert meta["task"] == "mnist-sum" and meta["embedding_layer"] == "features"
    assert [h["name"] for h in meta["heads"]] == ["digit", "sum"]
    last = meta["history"][-1]
    assert {"test_acc_digit", "test_acc_sum", "test_loss_sum"} <= set(last)
    assert last["test_acc"] == last["test_acc_digit"]


def test_sum_net_analysis_per_head(sum_run, digits, data_root, tmp_path):
    s = AnalysisSession.open(sum_run, digits, "test", data_root=data_root, limit=150,
                             cache_dir=tmp_path, device="cpu", progress=False, mc_samples=4,
                             projections=())
    s.run()
    t = s.table(head="sum")
    np.testing.assert_array_equal(t["label"], t["digit_label"] + t["number"])
    # the embedding sits before the dropout: MC dropout runs the trunk once
    assert s.artifact("mc_dropout").summary["trunk_once"] is True
    assert s.artifact("inference").summary["embedding_dim"] == 128
    # Two inputs and two heads: the tail reads the features and the one-hot number (as a
    # (1, 10) view), which the inference step keeps; MC dropout then runs only the tail,
    # to the same numbers.
    assert s.artifact("inference").summary["trunk_shapes"] == [[128], [1, 10]]  # number[:, None]
    assert s.artifact("mc_dropout").summary["trunk_kept"] is True
    alone = AnalysisSession.open(sum_run, digits, "test", data_root=data_root, limit=150,
                                 cache_dir=tmp_path / "alone", device="cpu", progress=False,
                                 mc_samples=4, projections=(),
                                 step_options={"inference": {"keep_trunk": False}})
    assert alone.artifact("mc_dropout").summary["trunk_kept"] is False
    mc_alone, mc_kept = alone.artifact("mc_dropout"), s.artifact("mc_dropout")
    for key in mc_alone:
        np.testing.assert_array_equal(mc_kept[key], mc_alone[key], err_msg=key)


def test_a_mnist_sum_run_on_fashion_mnist_is_a_clear_error(sum_run, data_root, tmp_path):
    from tests.conftest import require_dataset

    require_dataset("fashion-mnist", data_root)
    with pytest.raises(ConfigError, match=r"Run sum was trained for task 'mnist-sum'"):
        AnalysisSession.open(sum_run, "fashion-mnist", "test", data_root=data_root, limit=50,
                             cache_dir=tmp_path, progress=False)
    env_root = ["--data-root", data_root] if data_root else []
    out = subprocess.run([sys.executable, "-m", "analysis", "run", "--checkpoint", str(sum_run),
                          "--dataset", "fashion-mnist", "--limit", "50", "--cache-dir",
                          str(tmp_path), *env_root], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 2
    assert "mnist-sum" in out.stderr and "Traceback" not in out.stderr


def test_an_architecture_without_its_task_is_refused(digits, data_root, tmp_path):
    env_root = ["--data-root", data_root] if data_root else []
    out = subprocess.run([sys.executable, "-m", "models", "train", "--arch", "sum_net",
                          "--dataset", digits, "--limit", "100", "--out", str(tmp_path / "x"),
                          *env_root], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 2 and "--task mnist-sum" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x").exists()


def test_compare_two_heads_runs_on_the_sum_head(sum_run, tmp_path_factory, digits, data_root,
                                                tmp_path):
    from analysis.compare import compare_sessions

    other = tmp_path_factory.mktemp("runs") / "sum_b"
    train(TrainConfig(arch="sum_net", task="mnist-sum", dataset=digits, epochs=1, limit=800,
                      batch_size=64, seed=1), other, device="cpu", data_root=data_root,
          progress=False)
    a, b = (AnalysisSession.open(r, digits, "test", data_root=data_root, limit=150,
                                 cache_dir=tmp_path, device="cpu", progress=False,
                                 mc_samples=0, projections=()) for r in (sum_run, other))
    cmp = compare_sessions(a, b, head="sum")
    pa, pb = a.predictions_of("sum"), b.predictions_of("sum")
    target = a.table(head="sum")["label"].to_numpy()
    assert cmp.summary["correct_to_wrong"] == int(((pa == target) & (pb != target)).sum())
    assert cmp.summary["wrong_to_correct"] == int(((pa != target) & (pb == target)).sum())
    assert cmp.summary["head"] == "sum"


def test_a_multi_input_model_without_its_task_is_a_clear_error(byo_factory, digits, data_root,
                                                               tmp_path):
    import torch as _torch

    from core.errors import CheckpointError

    weights = tmp_path / "shift.pt"
    _torch.save(byo_factory.shift_net().state_dict(), weights)
    with pytest.raises(CheckpointError, match="declare its task with --task"):
        AnalysisSession.open(None, digits, "test", model_spec="byo_factory:shift_net",
                             weights=weights, data_root=data_root, limit=20,
                             cache_dir=tmp_path / "c", progress=False)
    s = AnalysisSession.open(None, digits, "test", model_spec="byo_factory:shift_net",
                             weights=weights, task="byo_factory:shift_task",
                             embedding_layer="features", data_root=data_root, limit=20,
                             cache_dir=tmp_path / "c", progress=False, mc_samples=0,
                             projections=())
    assert s.heads == ["digit", "big"]
