"""Summaries of a session for the terminal and CSV: the OOD separation report."""

from __future__ import annotations

import pandas as pd

from analysis.ood import separation_table
from analysis.steps.ood import JOINT_MAPS


def ood_report(session) -> pd.DataFrame:
    """Every score's AUROC and FPR@95 for the analysed dataset vs each extra one.

    Returns
    -------
    DataFrame
        Columns ``in_dataset, ood_dataset, score, description, mc_dropout,
        auroc, fpr_at_95tpr, mean_in, mean_ood``.
    """
    in_table = session.table()
    frames = []
    for key in session.extras:
        sep = separation_table(in_table, session.table(key))
        sep.insert(0, "ood_dataset", key)
        sep.insert(0, "in_dataset", session.dataset.key)
        frames.append(sep)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def map_overlap(session, key: str) -> list[dict]:
    """For each joint map: mean fraction of OOD samples' 10 NN that are in-distribution."""
    rows = []
    engine = session.extra(key)
    for (method, variant), name in JOINT_MAPS.items():
        if name not in session.extra_steps:
            continue
        s = engine.get(name).summary
        rows.append({"map": method, "embedding": variant,
                     "ood_nn_in_dist_2d": s["ood_in_dist_neighbors_2d"],
                     "ood_nn_in_dist_embedding": s["ood_in_dist_neighbors_embedding"],
                     "trustworthiness": s["trustworthiness"]})
    return rows


def print_ood_report(session, frame: pd.DataFrame) -> None:
    inf = session.artifact("inference").summary
    print(f"{session.name} on {session.dataset.key} ({len(session.dataset):,d} samples)")
    line = f"  accuracy without MC dropout {inf['accuracy']:.4f}"
    if "mc_dropout" in session.steps:
        mc = session.artifact("mc_dropout").summary
        line += f", with MC dropout (T={mc['samples']}) {mc['accuracy']:.4f}"
    print(line)
    for key in session.extras:
        n = len(session.extra(key).dataset)
        print(f"\nvs {key} ({n:,d} samples): higher score = more OOD; AUROC 0.5 = chance")
        sub = frame[frame["ood_dataset"] == key]
        print(f"  {'score':44s} {'MC':>3s} {'AUROC':>7s} {'FPR@95':>7s}")
        for _, r in sub.iterrows():
            print(f"  {r['description']:44s} {'yes' if r['mc_dropout'] else 'no':>3s} "
                  f"{r['auroc']:7.4f} {r['fpr_at_95tpr']:7.4f}")
        print("  overlap: mean fraction of an OOD sample's 10 nearest neighbours that are "
              "in-distribution")
        for row in map_overlap(session, key):
            print(f"    {row['map']:5s} {row['embedding']:5s} 2D {row['ood_nn_in_dist_2d']:.3f}"
                  f"   embedding {row['ood_nn_in_dist_embedding']:.3f}")
