"""The slices step's parts on data generated here: Leiden on a planted graph, SliceLine
rules on a planted failing group, the ranking's tests and clean-ups checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from analysis.registry import make_config
from analysis.steps.slices import leiden_clusters, rank_slices, rule_slices


def planted(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Generated: class, a thickness, noise; 2% base error rate, 70% inside the
    group "label 7 and thickness below 1.75" (the thinnest fifth of the 7s)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    thick = rng.normal(2.0, 0.3, n)
    group = (label == 7) & (thick < 1.75)
    wrong = np.where(group, rng.random(n) < 0.7, rng.random(n) < 0.02)
    pred = np.where(wrong, (label + 1) % 10, label)
    table = pd.DataFrame({"label": label, "pred": pred, "correct": ~wrong,
                          "loss": np.where(wrong, 2.0, 0.1) + rng.random(n) * 0.01,
                          "stroke_thickness": thick, "noise": rng.normal(size=n)})
    return table, group


def test_leiden_finds_two_planted_communities():
    # Two groups of 30 whose neighbours all lie in their own group.
    rng = np.random.default_rng(0)
    idx = np.array([[(j + rng.integers(1, 30)) % 30 + 30 * (j // 30) for _ in range(5)]
                    for j in range(60)])
    labels = leiden_clusters(idx, seed=0, resolution=0.5)
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1
    assert labels[0] != labels[30]
    assert np.array_equal(labels, leiden_clusters(idx, seed=0, resolution=0.5))  # seeded


def test_rules_recover_the_planted_group_and_reproduce_as_queries():
    table, group = planted()
    config = make_config("slices")
    rules = rule_slices(table, ["label", "stroke_thickness", "noise"], config)
    assert rules
    for _, mask, rule in rules:
        assert np.array_equal(table.eval(rule).to_numpy(), mask), rule
    kept = rank_slices(table, rules, config)
    kind, mask, rule, stats = kept[0]
    assert "label == 7" in rule and "stroke_thickness <" in rule
    jaccard = (mask & group).sum() / (mask | group).sum()
    assert jaccard >= 0.5


def test_ranking_tests_corrects_and_orders_by_excess_errors():
    table, group = planted()
    err = ~table["correct"].to_numpy()
    groups = [("rule", group, "planted"),
              ("rule", (table["label"] == 3).to_numpy(), "label == 3"),  # no effect
              ("rule", group | (table["label"] == 2).to_numpy(), "planted or 2"),
              ("rule", (table["label"] == 7).to_numpy(), "label == 7")]
    kept = rank_slices(table, groups, make_config("slices"))
    # Hand evaluation of the one-sided Fisher test and Benjamini-Hochberg over all four.
    ps = []
    for _, mask, _ in groups:
        a, b = err[mask].sum(), (~err[mask]).sum()
        c, d = err[~mask].sum(), (~err[~mask]).sum()
        ps.append(fisher_exact([[a, b], [c, d]], "greater").pvalue)
    q = false_discovery_control(ps)
    names = [rule for _, _, rule, _ in kept]
    assert "label == 3" not in names  # not significant (or no excess)
    # "planted" lies inside the two larger groups and holds >= 80% of their excess errors:
    # it replaces them.
    assert names == ["planted"]
    assert kept[0][3]["q_value"] == pytest.approx(q[0])
    a = err[group].sum()
    rate_out = err[~group].mean()
    assert kept[0][3]["excess_errors"] == pytest.approx(a - group.sum() * rate_out)
