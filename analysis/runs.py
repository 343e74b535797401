"""The run registry: every folder under a runs directory that holds a checkpoint is a run.

Listing never imports anything: a run is read from its ``run.json`` (through
:func:`models.checkpoint.read_run_meta`), a run that needs your own code is
shown as such, and a broken run (bad JSON, bad field, missing weights) is
listed with the reason while every other run still shows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from core.errors import CheckpointError, ConfigError, LoupeError
from models.checkpoint import META_FILE, WEIGHTS_FILE, read_run_meta
from models.run_meta import ONNX_PREFIX, code_specs

log = logging.getLogger(__name__)

OK, NEEDS_CODE, BROKEN = "ok", "needs code", "broken"


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says about one run (``None`` where it says nothing).

    ``best_*_acc`` are the best epoch's accuracies in [0, 1]; ``final_test_loss``
    is the last epoch's mean cross-entropy (lower is better). ``status`` is
    ``"ok"``, ``"needs code"`` (made with ``--model``/``--task pkg.mod:name``:
    opening it needs that flag) or ``"broken"``; ``problem`` says why.
    ``folder`` is the run's resolved path (what identifies it; names may repeat).
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
    status: str = OK
    problem: str | None = None
    folder: str = ""


def _blank(folder: Path, status: str, problem: str) -> RunInfo:
    return RunInfo(name=folder.name, arch=None, dataset=None, parameters=None, epochs=0,
                   best_train_acc=None, best_test_acc=None, final_test_loss=None,
                   training_time_s=None, augment=None, status=status, problem=problem,
                   folder=str(folder.resolve()))


def read_run(folder: Path) -> RunInfo:
    """A :class:`RunInfo` from ``folder/run.json``; never raises for a broken run."""
    folder = Path(folder)
    try:
        meta = read_run_meta(folder)
    except CheckpointError as exc:
        log.warning("listing %s as broken: %s", folder, exc)
        return _blank(folder, BROKEN, str(exc))
    if not meta:
        return _blank(folder, BROKEN, f"no {META_FILE}: pass --model package.module:factory "
                                      f"--weights {folder / WEIGHTS_FILE} to open it")
    status, problem = OK, None
    needs = code_specs(meta)
    if needs:
        status = NEEDS_CODE
        problem = "needs its code (" + " ".join(f"{flag} {spec}" for flag, spec in needs) + ")"
    elif not (folder / WEIGHTS_FILE).is_file() and not str(
            meta.get("model_spec") or "").startswith(ONNX_PREFIX):
        status, problem = BROKEN, f"no {WEIGHTS_FILE} beside its {META_FILE}"
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
        status=status, problem=problem, folder=str(folder.resolve()),
    )


def run_folders(runs_dir: str | os.PathLike = "runs") -> list[Path]:
    """Every sub-folder of ``runs_dir`` (any depth) holding ``model.pt`` or ``run.json``.

    Sorted by path; hidden folders (``.git``, leftovers of an interrupted save)
    are skipped.

    Raises
    ------
    ConfigError
        ``runs_dir`` is not a folder.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"--runs-dir {root} is not a folder (train a model with "
                          "`python -m models train --out runs/NAME` first).")
    found = {p.parent for name in (WEIGHTS_FILE, META_FILE) for p in root.rglob(name)
             if p.is_file()}
    return sorted(f for f in found
                  if not any(part.startswith(".") for part in f.relative_to(root).parts))


def discover_runs(runs_dir: str | os.PathLike = "runs") -> list[RunInfo]:
    """:func:`read_run` of every :func:`run_folders` entry (broken runs included)."""
    return [read_run(f) for f in run_folders(runs_dir)]


def mult_adds(folder: str | os.PathLike) -> int:
    """Multiply-adds of one forward pass of one sample (torchinfo), loading the run's model.

    Never imports code a run folder names: :func:`~models.checkpoint.load_model`
    refuses such runs (a :class:`~core.errors.CheckpointError`).
    """
    from torchinfo import summary

    from analysis.forward import example_inputs
    from models.checkpoint import load_model

    model = load_model(folder)
    return int(summary(model.module, input_data=list(example_inputs(model)), device="cpu",
                       verbose=0).total_mult_adds)


def with_mult_adds(info: RunInfo, count=None) -> tuple[RunInfo, int | None]:
    """``(info, mult-adds)`` of a listed run; a run whose model fails to load turns broken.

    Only ``"ok"`` runs are loaded (zoo and ONNX architectures; never code).
    ``count`` replaces :func:`mult_adds` (a folder -> int callable).
    """
    if info.status != OK:
        return info, None
    try:
        return info, (count or mult_adds)(info.folder)
    except LoupeError as exc:
        log.warning("listing %s as broken: %s", info.folder, exc)
        return replace(info, status=BROKEN, problem=str(exc)), None


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
    ``runs_dir`` is given (each ``"ok"`` run's model is then loaded once; see
    :func:`with_mult_adds`)."""
    counts = None
    if runs_dir is not None:
        pairs = [with_mult_adds(r) for r in runs]
        runs, counts = [r for r, _ in pairs], [m for _, m in pairs]
    frame = pd.DataFrame([asdict(r) for r in runs], columns=list(RunInfo.__dataclass_fields__))
    if counts is not None:
        frame["mult_adds"] = pd.array(counts, dtype="Int64")
    return frame
