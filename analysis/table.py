"""The per-sample table of one analysed dataset (see :meth:`AnalysisSession.table`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.registry import get_step
from core.errors import ConfigError
from core.tasks import head_key

if TYPE_CHECKING:
    from analysis.engine import Engine

# Per-head columns repeated as ``<head>_<column>`` when a model has several heads.
HEAD_SUMMARY_COLUMNS = ("label", "pred", "correct", "loss", "confidence", "mc_pred")


def build_table(engine: Engine, steps: Sequence[str], head: str | None = None,
                columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The per-sample table of one engine's dataset (see :meth:`AnalysisSession.table`).

    ``columns`` (default: all) names the table columns wanted, in any order:
    the result is the full table's subset, in the full table's order, and
    only the steps that declare one of them (or that the derived columns need)
    are read. An unknown name raises :class:`~core.errors.ConfigError`.
    """
    ds = engine.dataset
    task = engine.model.task
    chosen = task.head(head)
    meta = task.sample_metadata(ds)
    targets = engine.get("inference")
    shared: dict[str, Any] = {}
    per_head: dict[str, dict[str, Any]] = {h: {} for h in task.head_names}
    needed = _needed_steps(steps, columns, task.head_names)
    for name in steps:
        if needed is not None and name not in needed:
            continue
        for col, values in engine.columns(name).items():
            if np.ndim(values) != 1:
                continue
            base, _, h = col.partition("@")
            if h:
                per_head[h][base] = values
            else:
                shared[base] = values
    # "Correct" only means something when the dataset is one the task is defined on.
    valid = task.accepts(ds)
    for h in task.heads:
        cols = per_head[h.name]
        target = targets[head_key("target", h.name)]
        cols["label"] = target
        names = np.asarray(list(ds.class_names) if np.array_equal(target, ds.labels)
                           else list(h.class_names), dtype=object)
        cols["label_name"] = np.where((target >= 0) & (target < len(names)),
                                      names[np.clip(target, 0, len(names) - 1)], "")
        cols["pred_name"] = np.asarray(h.class_names, dtype=object)[cols["pred"]]
        cols["correct"] = cols["pred"] == target if valid else np.nan
        if "mc_pred" in cols:
            cols["mc_correct"] = cols["mc_pred"] == target if valid else np.nan
    out: dict[str, Any] = {
        "sample_id": ds.sample_ids, "dataset": ds.name, "split": ds.split,
        "index": np.arange(len(ds)),
    }
    out.update(per_head[chosen.name])
    out.update(meta)
    if len(task.heads) > 1:
        for h in task.head_names:
            for col in HEAD_SUMMARY_COLUMNS:
                if col in per_head[h]:
                    out[f"{h}_{col}"] = per_head[h][col]
        out["total_loss"] = shared["total_loss"]
    out.update({k: v for k, v in shared.items() if k != "total_loss"})
    front = ["sample_id", "dataset", "split", "index", "label", "label_name", "pred",
             "pred_name", "correct", "loss", "confidence", "uncertainty"]
    order = front + [c for c in out if c not in front]
    if columns is not None:
        wanted = set(columns)
        unknown = sorted(wanted - set(order))
        if unknown:
            raise ConfigError(f"table columns {unknown} do not exist for {ds.key}; it has: "
                              f"{', '.join(order)}.")
        order = [c for c in order if c in wanted]
    return pd.DataFrame({c: out[c] for c in order})


# Columns the table derives from others: (derived, the step column it needs).
DERIVED = {"label_name": "pred", "pred_name": "pred", "correct": "pred", "mc_correct": "mc_pred"}


def _needed_steps(steps: Sequence[str], columns: Sequence[str] | None,
                  heads: Sequence[str]) -> set[str] | None:
    """The steps whose declared columns ``columns`` need; ``None``: every step (no
    ``columns``, or one no step declares, which only the full build can tell)."""
    if columns is None:
        return None
    declared = {name: {c.name for c in get_step(name).declared()} for name in steps}
    known = set().union(*declared.values()) | set(TABLE_OWN)
    # pred: every head's pred_name and correct are derived (cheap) whatever is asked
    bases = {"pred", "total_loss"} if len(heads) > 1 else {"pred"}
    for col in columns:
        # with several heads, "<head>_<column>" repeats a head's column
        names = {col} | {col[len(h) + 1:] for h in heads
                         if len(heads) > 1 and col.startswith(f"{h}_")}
        if not names & known:
            return None
        bases |= names
    bases |= {DERIVED[c] for c in bases if c in DERIVED}
    return {name for name, names in declared.items() if names & bases}


# Columns the table builds itself (not from a step's declarations); metadata columns are
# declared by the metadata step.
TABLE_OWN = ("sample_id", "dataset", "split", "index", "label", "label_name", "pred_name",
             "correct", "mc_correct")
