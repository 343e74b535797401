"""What changed between two checkpoints on the same data: flips, loss deltas, McNemar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.tasks import head_key

FLIP_LABELS = {(True, True): "both correct", (False, False): "both wrong",
               (True, False): "correct -> wrong", (False, True): "wrong -> correct"}


@dataclass
class Comparison:
    """Per-sample differences of run B against run A.

    Attributes
    ----------
    frame : DataFrame
        One row per sample: ``sample_id, label, pred_a, pred_b, correct_a,
        correct_b, flip, pred_changed, loss_a, loss_b, loss_delta`` (B - A;
        positive = B is worse on that sample).
    summary : dict
        Accuracy of each, the flip counts, McNemar's exact p-value, and per
        class the accuracy change.
    """

    frame: pd.DataFrame
    summary: dict


def mcnemar_p(b_only_wrong: int, a_only_wrong: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    from scipy.stats import binomtest

    n = b_only_wrong + a_only_wrong
    if n == 0:
        return 1.0
    return float(binomtest(b_only_wrong, n, 0.5).pvalue)


def compare_sessions(a, b, head: str | None = None) -> Comparison:
    """Compare two :class:`~analysis.session.AnalysisSession` on the same dataset.

    ``head`` picks the compared head of multi-head models (default: the first);
    both runs must have it, with the same classes.
    """
    if a.dataset.fingerprint != b.dataset.fingerprint:
        raise ConfigError(f"The runs were analysed on different data ({a.dataset.key} vs "
                          f"{b.dataset.key}, or different --limit); compare them on the same "
                          "--dataset, --split and --limit.")
    ha = a.task.head(head)
    if ha.name not in b.heads:
        raise ConfigError(f"Run {b.name} has no head {ha.name!r} (its heads: "
                          f"{', '.join(b.heads)}); compare runs of the same task.")
    hb = b.task.head(ha.name)
    if len(ha.class_names) != len(hb.class_names):
        raise ConfigError(f"Run {a.name} has {len(ha.class_names)} classes and {b.name} has "
                          f"{len(hb.class_names)}: they are not comparable.")
    ia, ib = a.artifact("inference"), b.artifact("inference")
    key = ha.name
    labels = ia[head_key("target", key)]
    if not np.array_equal(labels, ib[head_key("target", key)]):
        raise ConfigError(f"Runs {a.name} and {b.name} have different targets for head "
                          f"{key!r} on {a.dataset.key}: their tasks differ.")
    pa, pb = ia[head_key("pred", key)], ib[head_key("pred", key)]
    la, lb = ia[head_key("loss", key)], ib[head_key("loss", key)]
    ca, cb = pa == labels, pb == labels
    frame = pd.DataFrame({
        "sample_id": a.dataset.sample_ids,
        "index": np.arange(len(labels)),
        "label": labels,
        "pred_a": pa, "pred_b": pb,
        "correct_a": ca, "correct_b": cb,
        "flip": [FLIP_LABELS[(x, y)] for x, y in zip(ca.tolist(), cb.tolist(), strict=True)],
        "pred_changed": pa != pb,
        "loss_a": la, "loss_b": lb,
        "loss_delta": lb - la,
    })
    to_wrong = int((ca & ~cb).sum())
    to_right = int((~ca & cb).sum())
    per_class = []
    for c, name in enumerate(ha.class_names):
        m = labels == c
        if m.any():
            per_class.append({"class": name, "n": int(m.sum()),
                              "acc_a": float(ca[m].mean()), "acc_b": float(cb[m].mean()),
                              "acc_change": float(cb[m].mean() - ca[m].mean()),
                              "flips": int((ca[m] != cb[m]).sum())})
    per_class.sort(key=lambda r: (-r["flips"], r["acc_change"]))
    summary = {
        "run_a": a.name, "run_b": b.name, "dataset": a.dataset.key, "n": int(len(labels)),
        "head": key,
        "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()),
        "correct_to_wrong": to_wrong, "wrong_to_correct": to_right,
        "prediction_changed": int(frame["pred_changed"].sum()),
        "mcnemar_p": mcnemar_p(to_wrong, to_right),
        "mean_loss_delta": float(np.nanmean(frame["loss_delta"])),
        "per_class": per_class,
    }
    return Comparison(frame, summary)


def print_comparison(cmp: Comparison, top: int = 5) -> None:
    s = cmp.summary
    head = f", head {s['head']}" if s.get("head") not in (None, "class") else ""
    print(f"{s['run_a']} (A) vs {s['run_b']} (B) on {s['dataset']} ({s['n']:,d} samples{head})")
    print(f"  accuracy A {s['accuracy_a']:.4f}   B {s['accuracy_b']:.4f}   "
          f"mean loss change {s['mean_loss_delta']:+.4f}")
    print(f"  correct -> wrong {s['correct_to_wrong']}   wrong -> correct "
          f"{s['wrong_to_correct']}   prediction changed {s['prediction_changed']}")
    print(f"  McNemar exact p = {s['mcnemar_p']:.4g}"
          + ("  (the difference is significant at 0.05)" if s["mcnemar_p"] < 0.05 else ""))
    print("  classes that changed most:")
    for r in s["per_class"][:top]:
        print(f"    {r['class']:>12s}: {r['flips']:4d} flips, accuracy {r['acc_a']:.4f} -> "
              f"{r['acc_b']:.4f}")
