"""The slices step's parts on data generated here: Leiden on a planted graph, SliceLine
rules on a planted failing group, the ranking's tests and clean-ups checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import false_discovery_control, fisher_exact

from analysis.registry import make_config
from analysis.steps.slices import (
    ClusterMembers,
    by_size,
    leiden_clusters,
    rank_slices,
    refine_thresholds,
    rule_slices,
    scan_llr,
)


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
    # "planted" lies inside the two larger groups, holds most of their excess errors and
    # concentrates them more surely: it replaces them.
    assert names == ["planted"]
    assert kept[0][3]["q_value"] == pytest.approx(q[0])
    a = err[group].sum()
    rate_out = err[~group].mean()
    assert kept[0][3]["excess_errors"] == pytest.approx(a - group.sum() * rate_out)


def test_scan_statistic_is_the_bernoulli_likelihood_ratio():
    from scipy.stats import binom

    a, n, total_err, total_n = 30, 100, 80, 2000
    c, m = total_err - a, total_n - n
    # Hand evaluation: binomial log-likelihoods at the maximum-likelihood rates.
    two = binom.logpmf(a, n, a / n) + binom.logpmf(c, m, c / m)
    one = binom.logpmf(a, n, total_err / total_n) + binom.logpmf(c, m, total_err / total_n)
    assert scan_llr(a, n, total_err, total_n) == pytest.approx(two - one)
    # Zero where the rate inside is not higher; a bigger group at the same rates scores more.
    assert scan_llr(2, 100, 80, 2000) == 0.0
    assert scan_llr(60, 200, 160, 4000) == pytest.approx(2 * (two - one))
    got = scan_llr(np.array([30, 2, 0]), np.array([100, 100, 0]), total_err, total_n)
    assert got[0] == pytest.approx(two - one) and got[1] == 0 and got[2] == 0


def graded(n: int = 6000, seed: int = 1) -> pd.DataFrame:
    """Generated: the thinnest 10% of the 7s fail 80% of the time, the next 30% of them
    10% (a soft edge, as a model learns a corruption), every other sample 2%."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    thick = rng.normal(2.0, 0.3, n)
    q10, q40 = np.quantile(thick[label == 7], [0.1, 0.4])
    rate = np.where((label == 7) & (thick < q10), 0.8,
                    np.where((label == 7) & (thick < q40), 0.10, 0.02))
    wrong = rng.random(n) < rate
    return pd.DataFrame({"label": label, "pred": np.where(wrong, 1, label), "correct": ~wrong,
                         "loss": wrong * 2.0, "stroke_thickness": thick}), q10


def test_thresholds_go_where_the_errors_stop_concentrating():
    table, q10 = graded()
    wrong = ~table["correct"].to_numpy()
    (part,) = refine_thresholds(table, ["stroke_thickness < 2.5", "label == 7"], wrong)[:1]
    cut = float(part.split(" ")[-1])
    x, sevens = table["stroke_thickness"].to_numpy(), (table["label"] == 7).to_numpy()
    # Hand evaluation over the same candidate cuts: the scan statistic's best one...
    qs = np.quantile(x[sevens], np.linspace(0, 1, 41)[1:-1])
    cuts = np.unique([float(f"{q:.4g}") for q in qs])
    llr = [scan_llr(wrong[sevens & (x < c)].sum(), (sevens & (x < c)).sum(), wrong.sum(),
                    len(x)) for c in cuts]
    assert cut == cuts[int(np.argmax(llr))]
    # ... which is near the 10% edge, where the most excess errors would lie far beyond it
    # (every band of the 7s fails more often than the 2% outside).
    excess = [wrong[sevens & (x < c)].sum() - (sevens & (x < c)).sum() * wrong[~(sevens & (
        x < c))].mean() for c in cuts]
    assert abs((x[sevens] < cut).mean() - 0.1) <= 0.05
    assert (x[sevens] < cuts[int(np.argmax(excess))]).mean() >= 0.3


def test_a_concentrated_part_of_a_broad_slice_replaces_it_and_a_random_half_does_not():
    """Generated: a broad slice (all thin digits, 25% of the data) whose error rate is
    raised a little everywhere and a lot in its thin 7s, which hold about half of its
    excess errors; a homogeneous slice, and a random half of it."""
    rng = np.random.default_rng(2)
    n = 10_000
    label = rng.integers(0, 10, n)
    thick = rng.normal(2.0, 0.3, n)
    broad = thick < np.quantile(thick, 0.25)
    core = broad & (label == 7)
    rate = np.where(core, 0.6, np.where(broad, 0.06, 0.03))
    wrong = rng.random(n) < rate
    table = pd.DataFrame({"label": label, "pred": label, "correct": ~wrong,
                          "loss": wrong * 2.0, "stroke_thickness": thick})
    config = make_config("slices")
    kept = rank_slices(table, [("rule", broad, "broad"), ("rule", core, "core")], config)
    assert [rule for _, _, rule, _ in kept] == ["core"]

    # Hand check of the condition: the core holds at least half of the broad slice's excess
    # errors (though not 80%) and its scan statistic is higher.
    def excess(m):
        return wrong[m].sum() - m.sum() * wrong[~m].mean()

    assert 0.5 <= excess(core) / excess(broad) < 0.8
    assert scan_llr(wrong[core].sum(), core.sum(), wrong.sum(), n) > scan_llr(
        wrong[broad].sum(), broad.sum(), wrong.sum(), n)
    # A homogeneous failing group is not replaced by a random part of it holding most of
    # its excess errors (at the same rate: a lower scan statistic); the part, nearly the
    # same samples, is dropped: the whole group stays the one description.
    table2, group = planted()
    part = group & (np.random.default_rng(3).random(len(group)) < 0.85)
    wrong2 = ~table2["correct"].to_numpy()
    assert wrong2[part].sum() - part.sum() * wrong2[~part].mean() >= 0.8 * (
        wrong2[group].sum() - group.sum() * wrong2[~group].mean())
    kept2 = rank_slices(table2, [("rule", group, "group"), ("rule", part, "part")], config)
    assert [rule for _, _, rule, _ in kept2] == ["group"]


def test_a_broad_slice_that_is_mostly_the_union_of_two_sharper_ones_gives_way_to_them():
    """Generated: two failing groups (thin 7s, thin 3s), each with about a third of the
    excess errors of "all thin digits", which holds both; neither alone holds half, so
    the pair is what replaces it."""
    rng = np.random.default_rng(4)
    n = 10_000
    label = rng.integers(0, 10, n)
    thick = rng.normal(2.0, 0.3, n)
    broad = thick < np.quantile(thick, 0.3)
    seven, three = broad & (label == 7), broad & (label == 3)
    rate = np.where(seven | three, 0.7, np.where(broad, 0.12, 0.03))
    wrong = rng.random(n) < rate
    table = pd.DataFrame({"label": label, "pred": label, "correct": ~wrong,
                          "loss": wrong * 2.0, "stroke_thickness": thick})

    def excess(m):
        return wrong[m].sum() - m.sum() * wrong[~broad].mean()

    assert excess(seven) < 0.5 * excess(broad) and excess(three) < 0.5 * excess(broad)
    assert excess(seven) + excess(three) >= 0.5 * excess(broad)
    groups = [("rule", broad, "broad"), ("rule", seven, "sevens"), ("rule", three, "threes")]
    kept = rank_slices(table, groups, make_config("slices"))
    assert sorted(rule for _, _, rule, _ in kept) == ["sevens", "threes"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=60))
def test_by_size_numbers_groups_from_the_largest(labels):
    labels = np.asarray(labels)
    got = by_size(labels)
    sizes = np.bincount(got)
    assert (np.diff(sizes) <= 0).all()  # 0 the largest, then smaller or equal
    # the same partition: equal labels stay equal, different ones different
    assert ((labels[:, None] == labels[None]) == (got[:, None] == got[None])).all()
    firsts = [np.flatnonzero(got == g)[0] for g in range(len(sizes))]
    for g in range(len(sizes) - 1):  # ties: the group seen first comes first
        if sizes[g] == sizes[g + 1]:
            assert firsts[g] < firsts[g + 1]


def test_leiden_and_overlaps_in_blocks_equal_the_whole_on_a_real_graph(tiny_session,
                                                                        monkeypatch):
    # The tiny run's real kNN graph (300 MNIST test digits), its edges handed to igraph 100
    # at a time: the same graph, so the same communities, as built from one edge list.
    import random

    import igraph

    import analysis.steps.slices as slices_mod

    indices = tiny_session.artifact("neighbors")["indices"][:, :10]
    n, k = indices.shape
    edges = np.stack([np.repeat(np.arange(n), k), indices.reshape(-1)], 1)
    edges = np.unique(np.sort(edges, 1), axis=0)
    graph = igraph.Graph(n=n, edges=edges.tolist())
    igraph.set_random_number_generator(random.Random(0))
    try:
        part = graph.community_leiden(objective_function="modularity", resolution=1.0,
                                      n_iterations=2)
    finally:
        igraph.set_random_number_generator(random)
    whole = slices_mod.by_size(np.asarray(part.membership))
    monkeypatch.setattr(slices_mod, "EDGE_BLOCK", 100)
    assert len(edges) > 300
    got = leiden_clusters(indices, seed=0, resolution=1.0)
    np.testing.assert_array_equal(got, whole)
    # seeded: the same again
    np.testing.assert_array_equal(leiden_clusters(indices, seed=0, resolution=1.0), got)
    # igraph draws from the ``random`` module again afterwards: reseeding it repeats a run
    runs = []
    for _ in range(2):
        random.seed(5)
        runs.append(graph.community_leiden(objective_function="modularity", resolution=1.0,
                                           n_iterations=2, beta=0.5).membership)
    assert runs[0] == runs[1]
    assert whole.max() >= 2 and graph.modularity(whole.tolist()) > 0.5
    # The clusters' overlaps counted 7 samples at a time: the numbers of one (S, N) product.
    masks = [whole == c for c in range(whole.max() + 1)]
    masks.append(masks[0] | masks[1])
    rng = np.random.default_rng(0)
    valid, wrong = rng.random(n) < 0.9, rng.random(n) < 0.2  # generated here
    wrong &= valid
    stack = np.stack(masks).astype(np.float32)
    expected = (stack.sum(1), stack @ stack.T, stack @ valid.astype(np.float32),
                stack @ wrong.astype(np.float32))
    for got, want in zip(slices_mod._overlaps(masks, valid, wrong, block=7), expected,
                         strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_clusters_as_members_rank_as_their_masks():
    """Cluster groups held as labels (made into masks only when needed) give the same
    kept slices, statistics and order as the same groups given as masks."""
    table, group = planted()
    rng = np.random.default_rng(1)
    clusters = np.where(group, 0, rng.integers(1, 40, len(table)))  # cluster 0 is the group
    config = make_config("slices")
    rules = rule_slices(table, ["label", "stroke_thickness", "noise"], config)
    lazy = [("cluster", ClusterMembers(clusters, c), "") for c in range(40)] + rules
    dense = [("cluster", clusters == c, "") for c in range(40)] + rules
    got, want = rank_slices(table, lazy, config), rank_slices(table, dense, config)
    assert got and [k[0] for k in got] == [k[0] for k in want]
    assert any(kind == "cluster" for kind, *_ in got)  # the planted cluster is kept
    for (k1, m1, r1, s1), (k2, m2, r2, s2) in zip(got, want, strict=True):
        assert isinstance(m1, np.ndarray) and np.array_equal(m1, m2)
        assert (k1, r1) == (k2, r2) and s1 == s2
