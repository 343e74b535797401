"""Out-of-distribution scores and how well each separates two datasets.

Every score is oriented so that **higher means more likely out-of-distribution**
(more uncertain, farther from the training data).

Metrics
-------
AUROC
    Probability that a random OOD sample scores higher than a random
    in-distribution one (0.5 = chance, 1 = perfect separation).
FPR@95
    The usual OOD-detection convention (Hendrycks & Gimpel; Liang et al.):
    with the threshold that accepts 95% of in-distribution samples as
    in-distribution, the fraction of OOD samples that are also accepted.
    Lower is better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# (column in the sample table, label, uses MC dropout)
def score_columns() -> list[tuple[str, str, bool]]:
    """``(column, what it measures, computed with MC dropout)`` for every declared score.

    Read from the steps' column declarations (``score=True``), in plan order:
    each plain score is followed by its MC-dropout twin.
    """
    from analysis.registry import column_info, declared_columns

    cols = [c for c in declared_columns() if c.score]
    twins = {c.mc_twin for c in cols if c.mc_twin}
    out = []
    for col in cols:
        if col.name in twins:
            continue  # listed after its plain score
        out.append((col.name, col.label, col.mc))
        twin = column_info(col.mc_twin) if col.mc_twin else None
        if twin is not None:
            out.append((twin.name, twin.label, True))
    return out


def auroc(in_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve for OOD = positive, from the rank-sum statistic.

    Ties count one half, as in scikit-learn's ``roc_auc_score``.
    """
    from scipy.stats import rankdata

    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(ood_scores, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("AUROC needs samples from both datasets")
    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def fpr_at_tpr(in_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD samples accepted when ``tpr`` of in-distribution ones are.

    A sample is accepted as in-distribution when its score is at most the
    threshold; the threshold is the smallest in-distribution score that
    accepts at least ``tpr`` of them.
    """
    a = np.sort(np.asarray(in_scores, dtype=np.float64))
    b = np.asarray(ood_scores, dtype=np.float64)
    threshold = a[int(np.ceil(tpr * len(a))) - 1]
    return float((b <= threshold).mean())


def separation_table(in_table: pd.DataFrame, ood_table: pd.DataFrame,
                     tpr: float = 0.95) -> pd.DataFrame:
    """One row per score present in both tables: AUROC, FPR@95 and the means.

    Parameters
    ----------
    in_table, ood_table : DataFrame
        Sample tables (see :func:`add_score_columns`).
    """
    rows = []
    for col, label, mc in score_columns():
        if col not in in_table or col not in ood_table:
            continue
        a, b = in_table[col].to_numpy(), ood_table[col].to_numpy()
        rows.append({"score": col, "description": label, "mc_dropout": mc,
                     "auroc": auroc(a, b), f"fpr_at_{round(tpr * 100)}tpr": fpr_at_tpr(a, b, tpr),
                     "mean_in": float(np.mean(a)), "mean_ood": float(np.mean(b))})
    return pd.DataFrame(rows)


def neighbor_overlap(neighbor_idx: np.ndarray, n_in: int) -> np.ndarray:
    """``(N,)`` fraction of each sample's neighbours that are in-distribution.

    ``neighbor_idx`` (N, k) indexes a joint set whose first ``n_in`` rows are
    the in-distribution samples.
    """
    return (np.asarray(neighbor_idx) < n_in).mean(1).astype(np.float32)
