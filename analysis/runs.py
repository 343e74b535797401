"""The run registry: every folder under a runs directory that holds a checkpoint is a run."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import ConfigError
from models.checkpoint import META_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says about one run (``None`` where it says nothing).

    ``best_*_acc`` are the best epoch's accuracies in [0, 1]; ``final_test_loss``
    is the last epoch's mean cross-entropy (lower is better).
    """

    name: str
    arch: str | None
    dataset: str | None
    parameters: int | None
    epochs: int
    best_train_acc: float | None
    best_test_acc: float | None
    final_test_loss: float | None
    training_time_s: float | None
    augment: bool | None


def read_run(folder: Path) -> RunInfo:
    """A :class:`RunInfo` from ``folder/run.json`` (only the folder name when it is absent)."""
    meta: dict = {}
    path = folder / META_FILE
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            log.warning("%s is not valid JSON (%s); listing the run without its metadata",
                        path, exc)
    history = meta.get("history") or []
    train_accs = [h["train_acc"] for h in history if "train_acc" in h]
    test_accs = [h["test_acc"] for h in history if "test_acc" in h]
    return RunInfo(
        name=folder.name, arch=meta.get("arch"), dataset=meta.get("dataset"),
        parameters=meta.get("parameters"), epochs=len(history),
        best_train_acc=max(train_accs) if train_accs else None,
        best_test_acc=max(test_accs) if test_accs else None,
        final_test_loss=history[-1].get("test_loss") if history else None,
        training_time_s=meta.get("wall_time_s"),
        augment=(meta.get("hyperparameters") or {}).get("augment"),
    )


def discover_runs(runs_dir: str | os.PathLike = "runs") -> list[RunInfo]:
    """Every sub-folder of ``runs_dir`` (any depth) that holds ``model.pt``, sorted by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"--runs-dir {root} is not a folder (train a model with "
                          "`python -m models train --out runs/NAME` first).")
    folders = sorted({p.parent for p in root.rglob(WEIGHTS_FILE)})
    return [read_run(f) for f in folders]


def mult_adds(folder: str | os.PathLike) -> int:
    """Multiply-adds of one forward pass of one sample (torchinfo), loading the run's model."""
    from torchinfo import summary

    from analysis.forward import example_inputs
    from models.checkpoint import load_model

    model = load_model(folder)
    return int(summary(model.module, input_data=list(example_inputs(model)), device="cpu",
                       verbose=0).total_mult_adds)


def model_summary(model) -> str:
    """torchinfo's table of a :class:`~models.checkpoint.LoadedModel` (layers, output
    shapes, parameters, mult-adds), fed blank inputs of the model's task."""
    from torchinfo import summary

    from analysis.forward import example_inputs, model_lock

    # On the device the module is on: torchinfo moves the model to ``device``, and the
    # session goes on using it there. Hooks on the module: hold its lock.
    device = next(model.module.parameters()).device
    with model_lock(model):
        return str(summary(model.module, input_data=list(example_inputs(model)), device=device,
                           col_names=("input_size", "output_size", "num_params", "mult_adds"),
                           verbose=0))


def runs_table(runs: list[RunInfo], runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run, the columns of :class:`RunInfo`, plus ``mult_adds`` when
    ``runs_dir`` is given (each run's model is then loaded once)."""
    frame = pd.DataFrame([asdict(r) for r in runs], columns=list(RunInfo.__dataclass_fields__))
    if runs_dir is not None:
        root = Path(runs_dir)
        folders = {p.parent.name: p.parent for p in root.rglob(WEIGHTS_FILE)}
        frame["mult_adds"] = [mult_adds(folders[name]) for name in frame["name"]]
    return frame
