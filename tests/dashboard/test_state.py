"""The run registry (dashboard/state.py) on a small real run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.columns import check_column, color_columns, column_title, numeric_columns
from dashboard.state import DashboardInputError, RunRegistry, get_registry, get_registry_of


def test_registry_keys_are_opaque_and_stable(registry, analysed_session):
    (key,) = registry.keys()
    assert len(key) == 12 and "/" not in key
    again = RunRegistry().add(analysed_session, "tiny_cnn")
    assert again.key == key
    (option,) = registry.options()
    assert option == {"label": "tiny_cnn · " + analysed_session.dataset.key, "value": key}
    assert str(analysed_session.store.directory) not in str(option)


def test_same_named_runs_get_distinct_labels(analysed_session):
    reg = RunRegistry()
    a = reg.add(analysed_session, "runs/a/tiny_cnn")
    b = reg.add(analysed_session, "runs/b/tiny_cnn")
    assert a.key != b.key and b.label == a.label + " (2)"
    assert reg.add(analysed_session, "runs/a/tiny_cnn").label == a.label  # re-adding keeps it


def test_registry_get_default_and_unknown(registry):
    assert registry.get(None).key == registry.default_key
    with pytest.raises(DashboardInputError, match="Unknown run 'nope'"):
        registry.get("nope")
    with pytest.raises(DashboardInputError, match="No run is open"):
        RunRegistry().get(None)


def test_deleted_cache_is_reported(deleted_cache_registry):
    with pytest.raises(DashboardInputError, match="was deleted"):
        deleted_cache_registry.get(None)


def test_points_map_to_samples_by_trace_and_point_index(entry):
    members = entry.members
    labels = entry.session.dataset.labels
    assert sum(len(m) for m in members) == len(labels)
    points = [{"curveNumber": 2, "pointIndex": 3}, {"curveNumber": 0, "pointNumber": 0},
              {"curveNumber": len(members), "pointIndex": 0, "customdata": 42},
              {"curveNumber": 1, "pointIndex": 10**6}, {"x": 1.0}]
    idx = entry.points_to_indices(points)
    assert idx.tolist() == [members[2][3], members[0][0], 42]
    assert labels[idx[0]] == 2 and labels[idx[1]] == 0


def test_sample_ids(entry):
    ids = entry.session.dataset.sample_ids
    assert entry.index_of(ids[7]) == 7
    with pytest.raises(DashboardInputError, match="does not exist"):
        entry.index_of("mnist:test:999999")
    assert entry.indices_of([ids[3], "bogus", ids[1]]).tolist() == [3, 1]


def test_thumbnail_is_memoised(entry):
    assert entry.thumbnail(0) is entry.thumbnail(0)
    assert entry.thumbnail(0, 3) != entry.thumbnail(0)


def test_columns(entry):
    table = entry.table
    numeric = numeric_columns(table)
    assert "loss" in numeric and "index" not in numeric and "correct" not in numeric
    colors = color_columns(table)
    assert colors[:2] == ["label", "pred"] and "correct" in colors and "loss" in colors
    assert check_column(None, colors, "label", "colour") == "label"
    with pytest.raises(DashboardInputError, match="Unknown colour column 'zz'"):
        check_column("zz", colors, "label", "colour")
    assert column_title("loss") == "loss (cross-entropy, nats)"
    assert "pixels" in column_title("pixel_dist_label")


def test_declared_columns_are_offered_with_their_units(entry):
    # image measurements and insight scores: offered like built-in columns, titled with
    # the unit their step declares (analysis.registry.column_info)
    table = entry.table
    numeric, colors = numeric_columns(table), color_columns(table)
    for col in ("stroke_thickness", "slant", "holes", "label_issue_score", "outlier_score",
                "near_duplicate_distance"):
        assert col in numeric and col in colors, col
    assert "is_label_issue" in colors and "duplicate_of" not in numeric
    assert column_title("slant") == "slant (degrees)"
    assert column_title("stroke_thickness") == "stroke_thickness (px)"
    assert column_title("no_such_column") == "no_such_column"


def test_registry_hangs_on_the_app(app, registry):
    from dash._get_app import app_context  # what Dash sets while it runs a callback

    assert app.server.extensions["loupe"] is registry
    assert get_registry_of(app) is registry and list(registry) == [registry.get(None)]
    token = app_context.set(app)
    try:
        assert get_registry() is registry
    finally:
        app_context.reset(token)
    assert np.all(registry.get(None).table.index == np.arange(len(registry.get(None).table)))


def test_lru_computes_a_key_once_when_threads_ask_together():
    import threading
    import time

    from dashboard.state import LRUCache

    cache, calls = LRUCache(4), []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["value"] * 5 and len(calls) == 1


# -- runs discovered under --runs-dir, opened on first selection --------------------------------
@pytest.fixture
def runs_dir(tmp_path, tiny_run):
    """A runs folder: the open run, a copy of it under another name, and a broken run."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny_cnn")
    shutil.copytree(tiny_run, runs / "other_cnn")
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{not json")
    return runs


def test_discovered_runs_are_listed_and_opened_once_with_progress(
        runs_dir, analysed_session, digits, data_root, tmp_path):
    import threading

    from dashboard.app import open_discovered_session
    from dashboard.config import DashboardConfig

    reg = RunRegistry()
    opened = reg.add(analysed_session, str(runs_dir / "tiny_cnn"))
    config = DashboardConfig(checkpoints=[], dataset=digits, data_root=data_root,
                             cache_dir=str(tmp_path / "cache"), device="cpu", limit=60,
                             mc_samples=2, projections=(), progress=False)
    calls = []

    def opener(folder):
        calls.append(folder)
        return open_discovered_session(config, folder)

    reg.session_opener = opener
    (found,) = reg.discover(runs_dir)  # the open one and the broken one are not offered
    assert found.name == "other_cnn" and reg.is_waiting(found.key) and "/" not in found.key
    assert reg.options() == [{"label": opened.label, "value": opened.key},
                             {"label": "other_cnn · not analysed yet", "value": found.key}]
    with pytest.raises(DashboardInputError, match="being analysed"):
        reg.get(found.key)

    steps = []
    results = []
    threads = [threading.Thread(target=lambda: results.append(reg.open_discovered(
        found.key, lambda k, n, step: steps.append((k, n, step))))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] is results[1]  # two browsers, one analysis
    entry = results[0]
    assert [k for k, _, _ in steps] == list(range(1, len(entry.session.steps) + 1))
    assert {n for _, n, _ in steps} == {len(entry.session.steps)}
    assert [s for _, _, s in steps] == list(entry.session.steps)
    assert not reg.is_waiting(found.key) and reg.resolve(found.key) == entry.key
    assert reg.get(found.key) is entry and len(entry.table) == 60
    assert reg.options()[1] == {"label": f"other_cnn · {digits}:test", "value": found.key}


def test_a_missing_runs_dir_discovers_nothing(tmp_path, registry):
    assert registry.discover(tmp_path / "nowhere") == []
    assert len(registry.options()) == 1


def test_declared_class_columns_are_class_columns():
    # suggested_label is declared kind="class" by the label_issues step: coloured with the
    # class palette and shown as class names, like label and pred.
    from dashboard.columns import class_columns, is_class_column

    assert is_class_column("label") and is_class_column("suggested_label")
    assert not is_class_column("label_issue_score") and not is_class_column("loss")
    table = pd.DataFrame({"label": [1], "suggested_label": [2], "loss": [0.1]})
    assert class_columns(table) == ["label", "suggested_label"]
