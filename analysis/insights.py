"""Insights: where the model fails and why, as a ranked list.

Each insight is built from cached step artifacts (slices, label issues,
duplicates, outliers, class balance, OOD scores) by :func:`collect_insights`;
the dashboard's Insights page and ``python -m analysis insights`` show the
same list.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from analysis.evidence import Evidence, Insight  # noqa: F401 - re-exported

SEVERITIES = ("high", "medium", "low")
KINDS = ("slice", "cluster", "label_issues", "duplicates", "leakage", "outliers",
         "class_imbalance", "ood")


# -- collecting -------------------------------------------------------------------------------
# Severity rule (one per kind, so a reader can check a card's badge by hand):
#   slice, cluster   excess errors as a share of all the model's errors: >= 10% high,
#                    >= 3% medium, else low
#   label_issues     flagged share of the dataset: >= 1% high, >= 0.2% medium, else low
#   duplicates       duplicated share: >= 1% medium, else low
#   leakage          test samples duplicated in train: >= 1% of the test split high, else medium
#   outliers         error rate inside >= 3x outside: medium, else low
#   class_imbalance  largest / smallest class count: >= 10 high, >= 3 medium, > 1.5 low
#   ood              best AUROC of the OOD scores: < 0.8 high (the model cannot tell the
#                    data apart from its own), < 0.95 medium, else low
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}
OUTLIER_SHARE = 0.01
IMBALANCE_RATIO = 1.5


def grade(value: float, high: float | None, medium: float | None) -> str:
    """``high`` when ``value >= high``, ``medium`` when ``>= medium``, else ``low``."""
    if high is not None and value >= high:
        return "high"
    if medium is not None and value >= medium:
        return "medium"
    return "low"


def collect_insights(session) -> list[Insight]:
    """Every insight of an analysed session, most severe first (then by kind as listed
    in :class:`Insight`, then as each kind ranks them).

    Kinds whose step is not in the session's plan (or whose columns are absent
    from its table) are skipped; the steps that are planned are computed (cached).

    Parameters
    ----------
    session : AnalysisSession
    """
    table = session.table()
    found: list[Insight] = []
    if "slices" in session.steps:
        found += slice_insights(session.artifact("slices"), table)
    found += label_issue_insights(table)
    found += duplicate_insights(table)
    found += leakage_insights(session)
    found += outlier_insights(table)
    found += imbalance_insights(table)
    found += ood_insights(session, table)
    return sorted(found, key=lambda i: SEVERITY_ORDER[i.severity])


def _errors(table) -> int:
    correct = table["correct"].to_numpy(dtype=float)
    return int(np.nansum(correct == 0))


def _group_metrics(comparison: dict[str, float]) -> dict[str, tuple[float, float]]:
    return {"error_rate": (comparison["error_rate_inside"], comparison["error_rate_outside"]),
            "mean_loss": (comparison["mean_loss_inside"], comparison["mean_loss_outside"])}


def _worst_first(table, mask: np.ndarray, score: str = "loss") -> tuple[str, ...]:
    idx = np.flatnonzero(mask)
    values = np.nan_to_num(table[score].to_numpy(dtype=float)[idx], nan=-np.inf)
    idx = idx[np.argsort(-values, kind="stable")]
    return tuple(table["sample_id"].to_numpy()[idx].tolist())


def _rule_words(rule: str) -> str:
    return rule.replace(" == ", " = ").replace(" and ", ", ").replace("_", " ")


def _bin_words(evidence: Evidence) -> str:
    """The over-represented bin of a piece of evidence in words: ``stroke thickness <
    2.185`` (``..., within its class`` when the evidence is given the class)."""
    cell = evidence.condition.rsplit(" and ", 1)[-1]  # the class comes first when given
    words = cell.replace(evidence.column, evidence.label)
    return f"{words}, within its class" if evidence.given else words


def slice_insights(artifact, table) -> list[Insight]:
    """One insight per kept slice of the ``slices`` step (see :mod:`analysis.steps.slices`)."""
    total_errors = max(_errors(table), 1)
    ids = table["sample_id"].to_numpy()
    offsets, members = artifact["offsets"], artifact["members"]
    out = []
    for rank, rec in enumerate(artifact.summary["slices"]):
        idx = members[offsets[rank]:offsets[rank + 1]]
        evidence = tuple(Evidence(**e) for e in rec["explanation"])
        rate_in, rate_out = rec["error_rate_inside"], rec["error_rate_outside"]
        if rec["kind"] == "rule":
            what = _rule_words(rec["rule"])
        else:
            classes = {e.column: e.inside for e in evidence if e.column in ("label", "pred")}
            what = f"a cluster of {rec['n']:,d} samples"
            if "label" in classes:
                what += f", mostly {classes['label']}"
                if "pred" in classes and classes["pred"] != classes["label"]:
                    what += f" read as {classes['pred']}"
        title = f"{what[:1].upper()}{what[1:]}: {rate_in:.0%} wrong vs {rate_out:.1%} elsewhere"
        metadata = [e for e in evidence if e.column not in ("label", "pred")]
        hint = f" ({_bin_words(metadata[0])})" if metadata and rec["kind"] == "cluster" else ""
        out.append(Insight(
            kind="slice" if rec["kind"] == "rule" else "cluster", title=title,
            severity=grade(rec["excess_errors"] / total_errors, 0.10, 0.03),
            sample_ids=tuple(ids[idx].tolist()), n=int(rec["n"]), share=float(rec["share"]),
            metrics={"error_rate": (rate_in, rate_out),
                     "mean_loss": (rec["mean_loss_inside"], rec["mean_loss_outside"])},
            stats={"rank": rank, "errors": rec["errors"], "excess_errors": rec["excess_errors"],
                   "p_value": rec["p_value"], "q_value": rec["q_value"],
                   **({"scan_llr": rec["scan_llr"]} if "scan_llr" in rec else {})},
            explanation=evidence, rule=rec["rule"],
            suggestion="Look at its worst samples; collect or augment more data like them"
                       f"{hint}, or check their labels."))
    return out


def label_issue_insights(table) -> list[Insight]:
    """"N samples look mislabelled" from the ``label_issues`` columns, worst first."""
    from analysis.explain import compare_groups, explain

    if "is_label_issue" not in table or "label_issue_score" not in table:
        return []
    mask = table["is_label_issue"].to_numpy(dtype=bool)
    n = int(mask.sum())
    if n == 0:
        return []
    comparison = compare_groups(table, mask)
    flips = ""
    if "suggested_label" in table:
        pairs = table.loc[mask, ["label", "suggested_label"]].value_counts()
        (lab, sug), count = pairs.index[0], int(pairs.iloc[0])
        flips = f" The most common: {count} labelled {lab} that look like {sug}."
    score = table["label_issue_score"].to_numpy(dtype=float)
    return [Insight(
        kind="label_issues", title=f"{n:,d} samples look mislabelled",
        severity=grade(n / len(table), 0.01, 0.002),
        sample_ids=_worst_first(table, mask, "label_issue_score"), n=n, share=n / len(table),
        metrics={**_group_metrics(comparison),
                 "label_issue_score": (float(score[mask].mean()), float(score[~mask].mean()))},
        stats={"p_value": comparison["p_value"]},
        explanation=explain(table, mask),
        rule="is_label_issue == True",
        suggestion="Review these samples and fix their labels (suggested_label gives the "
                   f"likely class).{flips}")]


def duplicate_insights(table) -> list[Insight]:
    """Samples that duplicate (or nearly) another of the same dataset (``duplicate_of``)."""
    if "duplicate_of" not in table:
        return []
    dup = table["duplicate_of"].to_numpy()
    mask = dup >= 0 if np.issubdtype(dup.dtype, np.number) else \
        np.array([bool(v) and v == v for v in dup])
    n = int(mask.sum())
    if n == 0:
        return []
    score = "near_duplicate_distance" if "near_duplicate_distance" in table else "loss"
    ids = _worst_first(table, mask, score)
    if score == "near_duplicate_distance":
        ids = ids[::-1]  # closest first
    return [Insight(
        kind="duplicates", title=f"{n:,d} samples duplicate another sample",
        severity=grade(n / len(table), None, 0.01), sample_ids=ids, n=n, share=n / len(table),
        rule="duplicate_of >= 0" if np.issubdtype(dup.dtype, np.number) else "",
        suggestion="Drop the copies (or keep one of each), so they do not count twice in "
                   "training or in the test score.")]


def leakage_insights(session) -> list[Insight]:
    """Train/test pairs that are (near) copies, when both splits of one dataset are open
    (the analysed one and an extra one)."""
    if importlib.util.find_spec("analysis.steps.duplicates") is None:
        return []
    from analysis.steps.duplicates import find_leakage

    out = []
    main = session.dataset
    for engine in session.extras.values():
        other = engine.dataset
        if other.name != main.name or other.split == main.split:
            continue
        out += leakage_insight(main, other, find_leakage(main, other))
    return out


def leakage_insight(main, other, pairs: list[tuple[str, str, float]]) -> list[Insight]:
    """One insight for the (near-)copies ``(id in main, id in other, distance ratio)``
    (:func:`analysis.steps.duplicates.find_leakage`)."""
    if not pairs:
        return []
    test, col = (main, 0) if main.split != "train" else (other, 1)
    n_test = len({p[col] for p in pairs})
    share = n_test / len(test)
    ids = list(dict.fromkeys([p[0] for p in pairs] + [p[1] for p in pairs]))
    return [Insight(
        kind="leakage",
        title=f"{n_test:,d} {test.key} samples have a copy in the other split "
              f"({share:.1%} of {test.key})",
        severity="high" if share >= 0.01 else "medium", sample_ids=tuple(ids),
        n=len(ids), share=share,
        stats={"pairs": len(pairs), "exact_pairs": sum(p[2] == 0 for p in pairs)},
        suggestion=f"Remove the copies from one split: the score on {test.key} counts "
                   "samples the model has seen.")]


def outlier_insights(table) -> list[Insight]:
    """The top :data:`OUTLIER_SHARE` of samples by ``outlier_score``."""
    from analysis.explain import compare_groups, explain

    if "outlier_score" not in table:
        return []
    score = table["outlier_score"].to_numpy(dtype=float)
    n = max(1, int(round(OUTLIER_SHARE * len(table))))
    mask = np.zeros(len(table), dtype=bool)
    mask[np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:n]] = True
    comparison = compare_groups(table, mask)
    rate_in, rate_out = comparison["error_rate_inside"], comparison["error_rate_outside"]
    severe = rate_in >= 3 * rate_out if np.isfinite(rate_in) and rate_out > 0 else False
    return [Insight(
        kind="outliers",
        title=f"{n:,d} outliers (the {OUTLIER_SHARE:.0%} farthest from their neighbours): "
              f"{rate_in:.0%} wrong vs {rate_out:.1%}",
        severity="medium" if severe else "low",
        sample_ids=_worst_first(table, mask, "outlier_score"), n=n, share=n / len(table),
        metrics={**_group_metrics(comparison),
                 "outlier_score": (float(np.nanmean(score[mask])),
                                   float(np.nanmean(score[~mask])))},
        stats={"p_value": comparison["p_value"], "threshold": float(score[mask].min())},
        explanation=explain(table, mask),
        rule=f"outlier_score >= {float(score[mask].min())!r}",
        suggestion="Check whether they belong in the dataset (wrong crops, other sources); "
                   "keep the real ones and add more like them.")]


def imbalance_insights(table) -> list[Insight]:
    """Class imbalance: the largest class count over the smallest above
    :data:`IMBALANCE_RATIO`, with each class's accuracy."""
    labels = table["label"].to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.max() / counts.min() <= IMBALANCE_RATIO:
        return []
    ratio = float(counts.max() / counts.min())
    names = dict(zip(table["label"], table.get("label_name", table["label"]), strict=True))
    rare = classes[np.argmin(counts)]
    correct = table["correct"].to_numpy(dtype=float)
    overall = float(np.nanmean(correct))
    metrics = {f"accuracy {names[c]}": (float(np.nanmean(correct[labels == c])), overall)
               for c in classes}
    mask = labels == rare
    return [Insight(
        kind="class_imbalance",
        title=f"Classes are imbalanced: {names[classes[np.argmax(counts)]]} has "
              f"{ratio:.1f}x the samples of {names[rare]}",
        severity=grade(ratio, 10, 3), sample_ids=_worst_first(table, mask),
        n=int(mask.sum()), share=float(mask.mean()), metrics=metrics,
        stats={"ratio": ratio, "max_count": int(counts.max()), "min_count": int(counts.min())},
        rule=f"label == {rare.item() if hasattr(rare, 'item') else rare!r}",
        suggestion=f"Collect more {names[rare]} samples, or weight or resample the classes "
                   "in training.")]


def ood_insights(session, table) -> list[Insight]:
    """For each extra dataset: how well the best OOD score separates it from the analysed
    one (see :mod:`analysis.ood`), explained by the domain gap (:func:`domain_gap`: the
    image measurements that differ most, the extra dataset's measured on demand)."""
    from analysis.ood import separation_table

    out = []
    for key in session.extras:
        other = session.table(key)
        frame = separation_table(table, other)
        if frame.empty:
            continue
        best = frame.loc[frame["auroc"].idxmax()]
        auroc = float(best["auroc"])
        score = str(best["score"])
        order = np.argsort(-other[score].to_numpy(dtype=float), kind="stable")
        fpr_col = next(c for c in frame.columns if c.startswith("fpr_at_"))
        measured = other
        if "image_metadata" in session.steps:  # the extra's measurements (cached, no model)
            cols = session.extra(key).columns("image_metadata")
            measured = other.assign(**{c: v for c, v in cols.items() if c not in other})
        gap = domain_gap(table, measured)
        out.append(Insight(
            kind="ood",
            title=f"{key} is separable from {session.dataset.key} with AUROC {auroc:.3f} "
                  f"({best['description']})",
            severity="high" if auroc < 0.8 else "medium" if auroc < 0.95 else "low",
            sample_ids=tuple(other["sample_id"].to_numpy()[order].tolist()), n=len(other),
            share=1.0, metrics={score: (float(best["mean_ood"]), float(best["mean_in"]))},
            stats={"auroc": auroc, fpr_col: float(best[fpr_col])}, explanation=gap,
            suggestion=f"Flag inputs with a high {score} before trusting the prediction; if "
                       f"{key} is data the model must handle, train on some of it"
                       + (f" (it differs most in {gap[0].label})." if gap else ".")))
    return out


def domain_gap(table, other) -> tuple[Evidence, ...]:
    """The domain gap: the measurements that differ most between the analysed dataset's
    samples (``table``) and an extra dataset's (``other``), as the explanation of "the
    sample comes from the extra dataset" (:func:`analysis.explain.explain` over the
    interpretable columns both tables have, the class and the prediction left out: an
    extra dataset's classes need not be the analysed one's).

    Returns
    -------
    tuple of Evidence, most informative first; ``inside`` is the extra dataset's mean,
    ``outside`` the analysed one's.
    """
    import pandas as pd

    from analysis.explain import CLASS_COLUMNS, explain, interpretable_columns

    columns = [c for c in interpretable_columns(table)
               if c in other and c not in CLASS_COLUMNS]
    if not columns or len(other) == 0 or len(table) == 0:
        return ()
    both = pd.concat([table[columns], other[columns]], ignore_index=True)
    inside = np.r_[np.zeros(len(table), dtype=bool), np.ones(len(other), dtype=bool)]
    return explain(both, inside, columns)


def explain_selection(table, indices) -> Insight:
    """The ``selection`` insight of the rows ``indices`` of ``table`` (see
    :meth:`analysis.session.AnalysisSession.explain`)."""
    from analysis.explain import compare_groups, explain
    from core.errors import ConfigError

    idx = np.unique(np.asarray(indices, dtype=np.int64))
    if idx.size == 0 or idx.min() < 0 or idx.max() >= len(table):
        raise ConfigError(f"Selection out of range 0..{len(table) - 1} (or empty): "
                          f"{idx.tolist()[:5]}")
    mask = np.zeros(len(table), dtype=bool)
    mask[idx] = True
    comparison = compare_groups(table, mask)
    return Insight(
        kind="selection", title=f"Selection of {idx.size:,d} samples", severity="low",
        sample_ids=_worst_first(table, mask), n=int(idx.size), share=idx.size / len(table),
        metrics=_group_metrics(comparison),
        stats={k: comparison[k] for k in ("errors", "excess_errors", "p_value")},
        explanation=explain(table, mask))
