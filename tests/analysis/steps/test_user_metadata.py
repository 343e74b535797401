"""analysis/steps/user_metadata.py: a user's metadata module (written by the test) on real
digits, through the step, a session and the CLI; every wrong return is a ConfigError."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.registry import column_info
from analysis.steps import user_metadata as um
from core.datasets import load_dataset
from core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

META = '''
import numpy as np


def top_ink(images, labels):
    """Fraction of the ink in the top half of the image."""
    ink = images.sum(axis=(1, 3))  # (N, H): ink per row
    half = ink.shape[1] // 2
    return ink[:, :half].sum(1) / np.maximum(ink.sum(1), 1e-9)


top_ink.unit = "fraction"


def stats(images, labels):
    return {"max_pixel": images.max(axis=(1, 2, 3)), "is_even": labels % 2 == 0}


functions = [top_ink, stats]


def wrong_shape(images, labels):
    return images.mean(axis=(1, 2))


def with_nan(images, labels):
    out = images.mean(axis=(1, 2, 3))
    out[0] = np.nan
    return out


def a_list(images, labels):
    return [0.0] * len(images)


def text(images, labels):
    return np.array(["a"] * len(images))


def bad_name(images, labels):
    return {"top ink": images.mean(axis=(1, 2, 3))}


def scanner_b(images, labels):
    """Whether the scan came from scanner B (it leaves a faint mark in the top-left corner)."""
    return images[:, 0, 0, 0] > 0
'''


@pytest.fixture
def meta_pkg(tmp_path, monkeypatch):
    """A user's package ``usermeta_<n>.meta`` on sys.path (unique name per test)."""
    name = f"usermeta_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "meta.py").write_text(META)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name


@pytest.fixture(scope="module")
def digits_300(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=300)


def test_columns_match_a_hand_computation_on_real_digits(meta_pkg, digits_300):
    functions = um.resolve_functions(f"{meta_pkg}.meta:functions")
    cols = um.compute(functions, digits_300.images, digits_300.labels, batch=128)
    assert set(cols) == {"meta_top_ink", "meta_max_pixel", "meta_is_even"}
    x = digits_300.images[:, 0].astype(np.float64) / 255
    want = x[:, :14].sum((1, 2)) / x.sum((1, 2))
    np.testing.assert_allclose(cols["meta_top_ink"], want, rtol=1e-5)
    np.testing.assert_array_equal(cols["meta_is_even"], digits_300.labels % 2 == 0)
    assert all(v.shape == (300,) and v.dtype == np.float32 for v in cols.values())
    info = column_info("meta_top_ink")
    assert info.unit == "fraction" and info.description.startswith("Fraction of the ink")
    assert info.interpretable


def test_a_single_function_is_accepted(meta_pkg, digits_300):
    cols = um.compute(um.resolve_functions(f"{meta_pkg}.meta:top_ink"), digits_300.images[:10],
                      digits_300.labels[:10])
    assert list(cols) == ["meta_top_ink"]


@pytest.mark.parametrize("attr, fragment", [
    ("wrong_shape", "wrong_shape returned shape (64, 28) for 64 images; it must be (64,)"),
    ("with_nan", "with_nan returned 1 non-finite value(s)"),
    ("a_list", "a_list returned a list; it must return a NumPy array"),
    ("text", "text returned <U1 values; they must be real numbers"),
    ("bad_name", "column name 'top ink' must be a Python identifier"),
])
def test_wrong_returns_name_the_function(meta_pkg, digits_300, attr, fragment):
    functions = um.resolve_functions(f"{meta_pkg}.meta:{attr}")
    with pytest.raises(ConfigError) as err:
        um.compute(functions, digits_300.images[:64], digits_300.labels[:64])
    assert fragment in str(err.value)


@pytest.mark.parametrize("spec, fragment", [
    ("nomodule", "must look like package.module:functions"),
    ("no_such_pkg_xyz.meta:functions", "cannot import 'no_such_pkg_xyz.meta'"),
    ("{pkg}.meta:nothing", "has no attribute 'nothing'"),
    ("{pkg}.meta:META_NUMBER", "is not a function"),
])
def test_bad_specs_are_config_errors(meta_pkg, spec, fragment, tmp_path):
    (tmp_path / meta_pkg / "meta.py").write_text(META + "\nMETA_NUMBER = [3]\n")
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        um.resolve_functions(spec.format(pkg=meta_pkg))


def test_the_key_follows_the_source(meta_pkg, tmp_path):
    first = um.metadata_options(f"{meta_pkg}.meta:functions")
    assert first == um.metadata_options(f"{meta_pkg}.meta:functions")
    (tmp_path / meta_pkg / "meta.py").write_text(META.replace("half = ink.shape[1] // 2",
                                                              "half = ink.shape[1] // 3"))
    importlib.reload(importlib.import_module(f"{meta_pkg}.meta"))
    assert um.metadata_options(f"{meta_pkg}.meta:functions")["source"] != first["source"]


def test_session_table_has_the_user_columns(meta_pkg, tiny_model, digits_300, tmp_path):
    from analysis.session import AnalysisSession
    from cache import ArtifactStore

    session = AnalysisSession(tiny_model, digits_300, ArtifactStore(tmp_path / "c"), "cpu",
                              mc_samples=0, projections=(), progress=False,
                              metadata=f"{meta_pkg}.meta:functions")
    assert "user_metadata" in session.steps
    table = session.table()
    for col in ("meta_top_ink", "meta_max_pixel", "ink_area", "label_issue_score",
                "is_label_issue", "suggested_label", "duplicate_of", "outlier_score"):
        assert col in table, col
    # cached: a second session reads it back without importing anything new
    again = AnalysisSession(tiny_model, digits_300, ArtifactStore(tmp_path / "c"), "cpu",
                            mc_samples=0, projections=(), progress=False,
                            metadata=f"{meta_pkg}.meta:functions")
    records = again.run(["user_metadata"])
    assert [r.status for r in records] == ["cached"]
    np.testing.assert_array_equal(again.table()["meta_top_ink"], table["meta_top_ink"])


def test_cli_export_with_metadata(meta_pkg, tiny_run, digits, data_root, tmp_path):
    import os

    out = tmp_path / "table.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    args = [sys.executable, "-m", "analysis", "export", "--checkpoint", str(tiny_run),
            "--dataset", digits, "--limit", "200", "--mc-samples", "0", "--projection",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
            "--metadata", f"{meta_pkg}.meta:functions", "--out", str(out)]
    if data_root:
        args += ["--data-root", data_root]
    proc = subprocess.run(args, cwd=REPO, env=env, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert {"meta_top_ink", "meta_max_pixel", "meta_is_even", "stroke_thickness"} <= set(frame)
    bad = subprocess.run(args[:-4] + ["--metadata", f"{meta_pkg}.meta:wrong_shape", "--out",
                                      str(out)], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: --metadata function wrong_shape returned shape" in bad.stderr


def test_without_metadata_the_step_has_no_columns(digits_300):
    from types import SimpleNamespace

    step = um.UserMetadata()
    art = step.run(SimpleNamespace(dataset=digits_300), step.Config())
    assert step.columns(art, step.Config()) == {}


def test_slices_find_and_explain_a_group_only_user_metadata_describes(meta_pkg, tiny_model,
                                                                      digits, data_root,
                                                                      tmp_path):
    """Generated here from real digits: a seeded 15% of them "come from scanner B", which
    sets their top-left pixel to 1 of 255 (invisible: the model's predictions do not move
    and no built-in measurement tells them apart) and whose labels were entered one class
    off. Only the
    user's ``scanner_b`` column describes the group; the slice finder must use it as it
    uses a built-in column, and the slice's explanation must name it."""
    import dataclasses

    from analysis.session import AnalysisSession
    from cache import ArtifactStore

    ds = load_dataset(digits, "test", data_root=data_root, limit=1000)
    group = np.random.default_rng(0).random(len(ds)) < 0.15
    images = ds.images.copy()
    assert (ds.images[:, 0, 0, 0] == 0).all()  # MNIST's corners are black
    images[group, 0, 0, 0] = 1
    labels = np.where(group, (ds.labels + 1) % 10, ds.labels)
    ds = dataclasses.replace(ds, images=images, labels=labels)
    session = AnalysisSession(tiny_model, ds, ArtifactStore(tmp_path / "c"), "cpu",
                              mc_samples=0, projections=(), progress=False,
                              metadata=f"{meta_pkg}.meta:scanner_b")
    table = session.table()
    assert table["meta_scanner_b"].to_numpy()[group].all()  # constant inside the group
    found = [i for i in session.insights() if i.kind == "slice" and "meta_scanner_b" in i.rule]
    assert found, [i.rule for i in session.insights() if i.kind == "slice"]
    ins = found[0]
    inside = np.isin(ds.sample_ids, np.asarray(ins.sample_ids, dtype=object))
    assert (inside & group).sum() / (inside | group).sum() >= 0.8
    assert np.array_equal(table.eval(ins.rule).to_numpy(dtype=bool), inside)
    evidence = {e.column: e for e in ins.explanation}
    assert "meta_scanner_b" in evidence
    scanner = evidence["meta_scanner_b"]
    assert scanner.inside == pytest.approx(table["meta_scanner_b"][inside].mean())
    assert scanner.inside > 0.9 and scanner.outside < 0.1
    assert scanner.label == "meta scanner b"
    assert session.artifact("slices").summary["columns"].count("meta_scanner_b") == 1
