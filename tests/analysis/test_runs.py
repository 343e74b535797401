"""The run registry (analysis/runs.py) and `python -m analysis runs`."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from torchinfo import summary

from analysis.runs import discover_runs, mult_adds, read_run, runs_table
from core.errors import ConfigError
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


# -- listing never imports code, and one broken run does not hide the others ----------------------
MARKER_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")


def factory():
    raise SystemExit("never called")
'''


@pytest.fixture
def mixed_runs(tiny_run, tmp_path, monkeypatch):
    """Good runs (two named ``a`` at different depths), one naming code, and broken ones."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "marker_mod.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a")
    shutil.copytree(tiny_run, runs / "group" / "a")

    def variant(name, **changes):
        shutil.copytree(tiny_run, runs / name)
        meta = json.loads((runs / name / "run.json").read_text())
        meta.update(changes)
        (runs / name / "run.json").write_text(json.dumps(meta))
        return runs / name

    variant("code", model_spec="marker_mod:factory", arch="marker_mod:factory")
    variant("abort", model_spec="os:abort")
    variant("bad_types", class_names="0123456789")
    (variant("bad_json") / "run.json").write_text("{not json")
    (variant("no_weights") / "model.pt").unlink()
    (runs / "a" / ".model.pt.x1y2.tmp").write_bytes(b"leftover of a killed save")
    return runs, marker


def test_listing_shows_every_run_with_its_status(mixed_runs):
    runs, marker = mixed_runs
    table = runs_table(discover_runs(runs), runs)
    rows = {(r.name, r.folder): r for r in table.itertuples()}
    assert len(rows) == 7
    by_name = {}
    for (name, _), row in rows.items():
        by_name.setdefault(name, []).append(row)
    assert [r.status for r in by_name["a"]] == ["ok", "ok"]
    assert all(r.mult_adds > 0 for r in by_name["a"])
    assert by_name["code"][0].status == "needs code"
    assert by_name["code"][0].problem == "needs its code (--model marker_mod:factory)"
    assert by_name["abort"][0].problem == "needs its code (--model os:abort)"
    assert all(pd.isna(by_name[n][0].mult_adds) for n in ("code", "abort", "bad_types"))
    assert "field 'class_names'" in by_name["bad_types"][0].problem
    assert "not valid JSON" in by_name["bad_json"][0].problem
    assert "no model.pt" in by_name["no_weights"][0].problem
    assert {by_name[n][0].status for n in ("bad_types", "bad_json", "no_weights")} == {"broken"}
    assert not marker.exists()


def test_same_name_at_two_depths_keeps_its_own_mult_adds(tiny_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a")
    shutil.copytree(tiny_run, runs / "deep" / "a")
    seen = []
    import analysis.runs as runs_module

    real = runs_module.mult_adds
    monkeypatch.setattr(runs_module, "mult_adds", lambda f: seen.append(f) or real(f))
    table = runs_table(discover_runs(runs), runs)
    assert sorted(seen) == sorted(str((runs / p).resolve()) for p in ("a", "deep/a"))
    assert table["folder"].tolist() == [str((runs / p).resolve()) for p in ("a", "deep/a")]


def test_runs_cli_lists_code_and_broken_runs(mixed_runs, capsys):
    from analysis.cli import main

    runs, marker = mixed_runs
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert "needs its code (--model marker_mod:factory)" in printed
    for name in ("bad_types", "bad_json", "no_weights", "abort"):
        assert name in printed
    assert printed.count("mnist_cnn") >= 2 and not marker.exists()
