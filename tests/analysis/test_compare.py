"""`analysis compare`: per-sample differences between two runs (analysis/compare.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from analysis.compare import compare_sessions, mcnemar_p
from analysis.session import AnalysisSession
from core.errors import ConfigError


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, digits, data_root):
    """Another one-epoch mnist_cnn, different seed and fewer samples: it predicts differently."""
    from models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "other_cnn"
    train(TrainConfig(arch="mnist_cnn", dataset=digits, epochs=1, limit=600, batch_size=64,
                      seed=7), out, device="cpu", data_root=data_root, progress=False)
    return out


def open_run(run, digits, data_root, cache_dir, limit=300):
    return AnalysisSession.open(run, digits, "test", data_root=data_root, cache_dir=cache_dir,
                                limit=limit, mc_samples=0, projections=(), progress=False)


def test_flip_counts_match_a_direct_computation(tiny_run, second_run, digits, data_root,
                                                cache_dir):
    a = open_run(tiny_run, digits, data_root, cache_dir)
    b = open_run(second_run, digits, data_root, cache_dir)
    cmp = compare_sessions(a, b)
    labels = a.dataset.labels
    pa, pb = a.artifact("inference")["pred@class"], b.artifact("inference")["pred@class"]
    to_wrong = int(((pa == labels) & (pb != labels)).sum())
    to_right = int(((pa != labels) & (pb == labels)).sum())
    s = cmp.summary
    assert (s["correct_to_wrong"], s["wrong_to_correct"]) == (to_wrong, to_right)
    assert to_wrong + to_right > 0  # the two runs really differ
    assert s["prediction_changed"] == int((pa != pb).sum())
    assert (cmp.frame["flip"] == "correct -> wrong").sum() == to_wrong
    loss_a, loss_b = a.artifact("inference")["loss@class"], b.artifact("inference")["loss@class"]
    np.testing.assert_allclose(cmp.frame["loss_delta"], loss_b - loss_a)
    assert s["accuracy_a"] == pytest.approx(float((pa == labels).mean()))
    assert sum(r["flips"] for r in s["per_class"]) == to_wrong + to_right


def test_mcnemar_is_the_exact_binomial_test():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(30, 10) == pytest.approx(binomtest(30, 40, 0.5).pvalue)
    assert mcnemar_p(30, 10) < 0.05 < mcnemar_p(12, 10)


def test_runs_on_different_data_are_refused(tiny_run, digits, data_root, cache_dir):
    a = open_run(tiny_run, digits, data_root, cache_dir, limit=300)
    b = open_run(tiny_run, digits, data_root, cache_dir, limit=200)
    with pytest.raises(ConfigError, match="different data"):
        compare_sessions(a, b)


def test_compare_cli_writes_the_diff(tiny_run, second_run, digits, data_root, tmp_path, capsys):
    import pandas as pd

    from analysis.cli import main

    extra = ["--data-root", data_root] if data_root else []
    out = tmp_path / "diff.csv"
    code = main(["compare", "--checkpoint", str(tiny_run), "--checkpoint", str(second_run),
                 "--dataset", digits, "--limit", "200", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out), *extra])
    printed = capsys.readouterr().out
    assert code == 0 and "McNemar exact p" in printed
    frame = pd.read_csv(out)
    assert len(frame) == 200 and {"flip", "loss_delta", "pred_a", "pred_b"} <= set(frame.columns)
    assert main(["compare", "--checkpoint", str(tiny_run), *extra]) == 2


def test_runs_trained_on_different_datasets_are_refused(tiny_run, digits, data_root, tmp_path,
                                                       capsys):
    """A Fashion-MNIST run compared with an MNIST run: one clear line, exit 2."""
    from analysis.cli import main
    from models.train import TrainConfig, train
    from tests.conftest import require_dataset

    require_dataset("fashion-mnist", data_root)
    fashion = tmp_path / "runs" / "fashion_cnn"
    train(TrainConfig(arch="mnist_cnn", dataset="fashion-mnist", epochs=1, limit=300,
                      batch_size=64), fashion, device="cpu", data_root=data_root, progress=False)
    extra = ["--data-root", data_root] if data_root else []
    code = main(["compare", "--checkpoint", str(tiny_run), "--checkpoint", str(fashion),
                 "--dataset", digits, "--limit", "100", "--cache-dir", str(tmp_path / "c"),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert "Run fashion_cnn" in err and "T-shirt/top" in err and "--extra-dataset" in err
