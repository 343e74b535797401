"""The per-sample table of one analysed dataset (see :meth:`AnalysisSession.table`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.tasks import head_key

if TYPE_CHECKING:
    from analysis.engine import Engine

# Per-head columns repeated as ``<head>_<column>`` when a model has several heads.
HEAD_SUMMARY_COLUMNS = ("label", "pred", "correct", "loss", "confidence", "mc_pred")


def build_table(engine: Engine, steps: Sequence[str], head: str | None = None) -> pd.DataFrame:
    """The per-sample table of one engine's dataset (see :meth:`AnalysisSession.table`)."""
    ds = engine.dataset
    task = engine.model.task
    chosen = task.head(head)
    meta = task.sample_metadata(ds)
    targets = engine.get("inference")
    shared: dict[str, Any] = {}
    per_head: dict[str, dict[str, Any]] = {h: {} for h in task.head_names}
    for name in steps:
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
    return pd.DataFrame({c: out[c] for c in order})
