"""models/run_meta.py (run.json validated by one reader) and save_run's consistent pair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import CheckpointError
from models import checkpoint
from models.checkpoint import load_model, read_run_meta, save_run, validate_run_meta
from models.run_meta import file_sha256

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"arch": "mnist_cnn", "class_names": ["a", "b"], "model_spec": None, "task": None,
        "embedding_layer": "features", "history": [{"epoch": 1, "train_loss": 0.5,
                                                    "test_acc": float("nan")}],
        "input": {"shape": [1, 28, 28], "mean": 0.1307, "std": 0.3081}, "parameters": 10}


@pytest.mark.parametrize("field, value", [
    ("class_names", "0123456789"),
    ("class_names", [0, 1]),
    ("class_names", []),
    ("history", {"epoch": 1}),
    ("history[0]", [["epoch", 1]]),
    ("history[0].train_loss", [{"epoch": 1, "train_loss": "low"}]),
    ("history[0].epoch", [{"epoch": True}]),
    ("input", [1, 28, 28]),
    ("input.shape", {"shape": [1, 28]}),
    ("input.shape", {"shape": [1, 0, 28]}),
    ("input.shape", {"shape": [1.0, 28, 28]}),
    ("input.std", {"shape": [1, 28, 28], "std": 0}),
    ("input.std", {"shape": [3, 8, 8], "std": [0.2, -0.1, 0.2]}),
    ("input.std", {"shape": [3, 8, 8], "std": [0.2, 0.2]}),  # neither one nor one per channel
    ("input.mean", {"mean": "0.5"}),
    ("input.mean", {"mean": float("inf")}),
    ("arch", 5),
    ("embedding_layer", 3),
    ("embedding_layer", ""),
    ("task", ["mnist-sum"]),
    ("model_spec", {"module": "os"}),
    ("parameters", -1),
    ("weights_sha256", "abc"),
])
def test_a_bad_field_is_named(field, value, tmp_path):
    key = field.split(".")[0].split("[")[0]
    meta = {**GOOD, key: value}
    path = tmp_path / "run.json"
    with pytest.raises(CheckpointError) as info:
        validate_run_meta(meta, path)
    assert str(info.value).startswith(f"{path}: field '{field}' must be ")


def test_good_metadata_passes_unchanged(tmp_path):
    per_channel = {**GOOD, "input": {"shape": [3, 32, 32], "mean": [0.49, 0.48, 0.45],
                                     "std": [0.25, 0.24, 0.26]}}
    for meta in (GOOD, per_channel, {}, {"history": []}):
        assert validate_run_meta(meta, tmp_path / "run.json") is meta
    with pytest.raises(CheckpointError, match="field '\\(top level\\)' must be a JSON object"):
        validate_run_meta([GOOD], tmp_path / "run.json")


def test_one_reader_for_every_caller(tmp_path):
    assert read_run_meta(tmp_path) == {}  # no run.json
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'run.json'} is not valid JSON"):
        read_run_meta(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({**GOOD, "class_names": "ab"}))
    with pytest.raises(CheckpointError, match="field 'class_names'"):
        read_run_meta(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="field 'class_names'"):
        load_model(tmp_path)  # loading reads run.json through the same validator


# -- save_run: model.pt and run.json as one pair ------------------------------------------------
@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run = tmp_path / "runs" / "cnn"
    shutil.copytree(tiny_run, run)
    return run


def _retrained(run: Path) -> torch.nn.Module:
    module = load_model(run).module
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    return module


def test_run_json_records_the_weights_hash(run_copy):
    meta = json.loads((run_copy / "run.json").read_text())
    assert meta["weights_sha256"] == file_sha256(run_copy / "model.pt")
    assert not list(run_copy.glob(".*.tmp"))


@pytest.mark.parametrize("fail_at", [1, 2])
def test_an_interrupted_save_is_never_read_as_a_mix(run_copy, monkeypatch, fail_at):
    before = load_model(run_copy).fingerprint
    meta = json.loads((run_copy / "run.json").read_text())
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise KeyboardInterrupt  # the user's Ctrl-C between the writes
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_run(run_copy, _retrained(run_copy), {**meta, "epochs_note": "new"})
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    assert not list(run_copy.glob(".*.tmp"))  # temp files removed on the way out
    if fail_at == 1:  # nothing was replaced: the old run, whole
        assert load_model(run_copy).fingerprint == before
    else:  # new weights beside the old run.json: refused, not mixed
        with pytest.raises(CheckpointError, match=f"Run folder {run_copy} is inconsistent.*"
                                                  "interrupted save"):
            load_model(run_copy)


KILL_SCRIPT = """
import os, signal, sys, json
sys.path.insert(0, {root!r})
from models import checkpoint
real = os.replace
def replace(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)  # killed right after model.pt is in place
checkpoint.os.replace = replace
run = {run!r}
meta = json.loads(open(run + "/run.json").read())
module = checkpoint.load_model(run).module
for p in module.parameters():
    p.data.add_(1.0)
checkpoint.save_run(run, module, meta)
"""


def test_a_kill_between_the_renames_is_caught_and_cleaned_up(run_copy):
    script = KILL_SCRIPT.format(root=str(ROOT), run=str(run_copy))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = list(run_copy.glob(".run.json.*.tmp"))
    assert len(leftovers) == 1 and not list(run_copy.glob("*.pt.tmp"))
    with pytest.raises(CheckpointError, match="is inconsistent"):
        load_model(run_copy)
    from analysis.runs import discover_runs, runs_table

    listed = runs_table(discover_runs(run_copy.parent), run_copy.parent)
    assert listed["name"].tolist() == ["cnn"]  # the temp file is no run
    assert listed["status"].tolist() == ["broken"] and "inconsistent" in listed["problem"][0]
    meta = json.loads((run_copy / "run.json").read_text())
    save_run(run_copy, torch.nn.Linear(1, 1), meta)  # the next save cleans the leftovers
    assert not list(run_copy.glob(".*.tmp"))
