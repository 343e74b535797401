"""analysis/cli.py and models/cli.py as a user runs them: subprocesses, exit codes, files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.core.idx_writer import BAD_IDX

REPO = Path(__file__).resolve().parents[2]
BYO_DIR = REPO / "tests" / "models"


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(BYO_DIR)])}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


@pytest.mark.parametrize("case", list(BAD_IDX) + ["empty folder"])
def test_bad_data_exits_2_without_traceback(case, tiny_run, tmp_path):
    if case == "empty folder":
        (tmp_path / "imgs" / "cat").mkdir(parents=True)
        bad, dataset = tmp_path / "imgs", f"folder:{tmp_path / 'imgs'}"
    else:
        bad, dataset = BAD_IDX[case][0](tmp_path / "mnist"), "mnist"
    proc = cli("analysis", "run", "--checkpoint", str(tiny_run), "--dataset", dataset,
               "--data-root", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
               "--device", "cpu")
    assert_user_error(proc, str(bad))


def main_in_process(capsys, module: str, *args: str) -> tuple[int, str]:
    """The CLI's ``main`` in this process (same code path as the subprocess, cheaper)."""
    import importlib

    code = importlib.import_module(f"{module}.cli").main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, fragments", [
    (["--dataset", "cifar10"], ["Unknown dataset 'cifar10'"]),
    (["--dataset", "notmnist", "--split", "train"], ["notmnist", "'train'"]),
    (["--device", "tpu"], ["--device 'tpu'"]),
    (["--embedding-layer", "nope"], ["--embedding-layer 'nope'"]),
    (["--k", "0", "--limit", "50", "--mc-samples", "0"], ["--k must be between 1 and 49"]),
])
def test_bad_flags_exit_2(args, fragments, tiny_run, tmp_path, data_root, capsys):
    if "notmnist" in args and data_root is None:
        pytest.skip("notmnist not found")
    extra = ["--data-root", data_root] if data_root else []
    code, err = main_in_process(capsys, "analysis", "run", "--checkpoint", str(tiny_run),
                                "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                                "--projection", *extra, *args)
    assert code == 2 and "error: " in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_bad_checkpoints_exit_2(tmp_path, tiny_run, capsys, byo_factory):
    garbage = tmp_path / "w.pt"
    garbage.write_bytes(b"\x00" * 64)
    # one through a real process: exit status 2 and no traceback
    assert_user_error(cli("analysis", "run", "--model", "byo_factory:small_net", "--weights",
                          str(garbage)), str(garbage))
    cases = [
        (("analysis", "export", "--checkpoint", str(tmp_path / "missing"), "--out",
          str(tmp_path / "x.csv")), str(tmp_path / "missing")),
        (("analysis", "run", "--model", "byo_factory:small_net", "--weights",
          str(tiny_run / "model.pt")), "do not fit architecture"),
        (("analysis", "run", "--model", "no_such_module:f", "--weights", str(garbage)),
         "cannot import 'no_such_module'"),
        (("models", "train", "--arch", "resnet", "--out", str(tmp_path / "r")),
         "Unknown architecture 'resnet'"),
    ]
    for (module, *args), fragment in cases:
        code, err = main_in_process(capsys, module, *args)
        assert code == 2 and fragment in err, err
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "r").exists()


def test_bring_your_own_model_through_the_cli(tmp_path, digits, data_root, byo_factory):
    torch.manual_seed(0)
    weights = tmp_path / "byo.pt"
    torch.save(byo_factory.small_net().state_dict(), weights)
    extra = ["--data-root", data_root] if data_root else []
    out = tmp_path / "byo.csv"
    proc = cli("analysis", "export", "--model", "byo_factory:small_net", "--weights",
               str(weights), "--embedding-layer", "features", "--dataset", digits, "--limit",
               "200", "--mc-samples", "3", "--projection", "--cache-dir",
               str(tmp_path / "cache"), "--device", "cpu", "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert len(table) == 200 and table["mc_entropy"].notna().all()
    assert "umap_x" not in table


def test_train_run_export_end_to_end(cli_run):
    train, run, export = cli_run["train"], cli_run["run"], cli_run["export"]
    run_dir, csv, digits = cli_run["run_dir"], cli_run["csv"], cli_run["dataset"]
    assert train.returncode == 0, train.stderr
    assert f"wrote {run_dir}" in train.stdout
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["history"][0]["test_acc"] > 0.5 and meta["train_samples"] == 2000

    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"on {digits}:test (500 samples, cpu)" in run.stdout
    assert "accuracy" in run.stdout and "trustworthiness" in run.stdout
    status = {line.split()[0]: line.split()[1] for line in run.stdout.splitlines()
              if line.startswith("    ")}
    assert {"inference", "mc_dropout", "centroids", "neighbors", "umap", "tsne"} <= set(status)
    assert set(status.values()) == {"computed"}

    assert export.returncode == 0, export.stderr
    assert f"wrote {csv}: 500 rows" in export.stdout
    table = pd.read_csv(csv)
    assert len(table) == 500
    for col in ("sample_id", "index", "label", "pred", "correct", "loss", "confidence",
                "uncertainty", "mc_pred", "mc_entropy", "mc_mutual_info", "mc_uncertainty",
                "pixel_dist_label", "pixel_dist_pred", "pixel_dist_other", "pixel_margin",
                "embedding_dist_label", "embedding_dist_pred", "embedding_dist_other",
                "embedding_margin", "umap_x", "umap_y", "tsne_x", "tsne_y", "neighbor_ids",
                "neighbor_distances"):
        assert col in table.columns, col
    assert table["sample_id"].tolist()[:3] == [f"{digits}:test:{i}" for i in range(3)]
    assert table["index"].tolist() == list(range(500))
    assert table["sample_id"].is_unique
    np.testing.assert_array_equal(table["correct"], table["pred"] == table["label"])
    np.testing.assert_allclose(table["uncertainty"], 1 - table["confidence"], atol=1e-5)
    assert np.isfinite(table[["umap_x", "umap_y", "tsne_x", "tsne_y"]].to_numpy()).all()
    ids = table["neighbor_ids"].str.split(";")
    dists = table["neighbor_distances"].str.split(";").apply(lambda r: [float(d) for d in r])
    assert (ids.str.len() == 10).all() and (dists.str.len() == 10).all()
    assert all(sid not in row for sid, row in zip(table["sample_id"], ids, strict=True))
    assert all(row == sorted(row) and row[0] >= 0 for row in dists)
    assert set(ids.explode()) <= set(table["sample_id"])
    # the run's accuracy is the table's
    acc = float(run.stdout.split("accuracy ")[1].split()[0])
    assert acc == pytest.approx(table["correct"].mean(), abs=1e-4)
