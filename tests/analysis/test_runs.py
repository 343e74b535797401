"""The run registry (analysis/runs.py) and `python -m analysis runs`."""

from __future__ import annotations

import json
import shutil

import pytest
from torchinfo import summary

from analysis.errors import ConfigError
from analysis.runs import discover_runs, mult_adds, read_run, runs_table
from models.checkpoint import load_model


def test_every_folder_with_a_checkpoint_is_a_run(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a")
    shutil.copytree(tiny_run, runs / "group" / "b")  # nested folders count too
    (runs / "notes").mkdir()  # no model.pt: not a run
    names = [r.name for r in discover_runs(runs)]
    assert names == ["a", "b"]


def test_run_info_comes_from_run_json(tiny_run):
    meta = json.loads((tiny_run / "run.json").read_text())
    info = read_run(tiny_run)
    assert info.arch == "mnist_cnn" and info.parameters == meta["parameters"] == 232_650
    assert info.epochs == len(meta["history"]) == 1
    assert info.best_test_acc == max(h["test_acc"] for h in meta["history"])
    assert info.final_test_loss == meta["history"][-1]["test_loss"]
    assert info.training_time_s == meta["wall_time_s"]


def test_a_broken_run_json_still_lists_the_run(tiny_run, tmp_path, caplog):
    run = tmp_path / "broken"
    shutil.copytree(tiny_run, run)
    (run / "run.json").write_text("{not json")
    info = read_run(run)
    assert info.name == "broken" and info.arch is None and info.epochs == 0
    assert "not valid JSON" in caplog.text


def test_mult_adds_match_torchinfo(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a")
    model = load_model(tiny_run)
    expected = summary(model.module, input_size=(1, 1, 28, 28), verbose=0).total_mult_adds
    assert mult_adds(tiny_run) == expected > 0
    table = runs_table(discover_runs(runs), runs)
    assert table["mult_adds"].tolist() == [expected]


def test_missing_runs_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        discover_runs(tmp_path / "nope")


def test_runs_cli(tiny_run, tmp_path, capsys):
    from analysis.cli import main

    shutil.copytree(tiny_run, tmp_path / "runs" / "tiny")
    out = tmp_path / "runs.csv"
    assert main(["runs", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny" in printed and "mnist_cnn" in printed
    assert out.read_text().splitlines()[0].startswith("name,arch,dataset,parameters")
    assert main(["runs", "--runs-dir", str(tmp_path / "missing")]) == 2
