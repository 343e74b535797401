"""analysis/apart.py: a map in a child interpreter gives the in-process map, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from analysis.apart import FUNCTIONS, call_apart, main
from analysis.maps import (
    stratified_sample,
    umap_anywhere,
    umap_map,
    umap_sampled,
    umap_sampled_anywhere,
)
from analysis.steps.neighbors import knn_graph

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits_graph():
    x = load_digits().data[:600].astype(np.float32)
    idx, dist = knn_graph(x, 20)
    return x, idx, dist


def test_the_child_gives_the_same_map(digits_graph):
    x, idx, dist = digits_graph
    here = umap_map(x, idx, dist, seed=3, n_epochs=100)
    apart = call_apart("umap_map", [x, idx, dist], seed=3, n_epochs=100)
    assert apart.dtype == here.dtype and apart.shape == (600, 2)
    np.testing.assert_array_equal(apart, here)


def test_the_child_gives_the_same_sampled_map():
    """Above ``fit_max`` the fit on a sample and the placing of the rest run apart too."""
    data = load_digits()
    x = data.data.astype(np.float32)
    fitted = stratified_sample(data.target, 600, seed=1)
    here = umap_sampled(x, fitted, seed=2, n_epochs=60)
    apart = call_apart("umap_sampled", [x, fitted], seed=2, n_epochs=60)
    assert apart.dtype == np.float32 and apart.shape == (len(x), 2)
    assert np.isfinite(apart).all()
    np.testing.assert_array_equal(apart, here)


def test_umap_sampled_anywhere_goes_apart_from_the_threshold(monkeypatch):
    import analysis.apart as apart

    x = load_digits().data[:300].astype(np.float32)
    fitted = np.arange(0, 300, 2)
    calls = []
    monkeypatch.setattr(apart, "call_apart", lambda *a, **k: calls.append((a, k)) or "apart")
    monkeypatch.setattr(apart, "APART_MIN", len(x))
    assert umap_sampled_anywhere(x, fitted, seed=4) == "apart"
    (name, (sent_x, sent_fitted)), kwargs = calls[0]
    assert name == "umap_sampled" and kwargs == {"seed": 4}
    assert sent_fitted.dtype == np.int64
    np.testing.assert_array_equal(sent_fitted, fitted)
    monkeypatch.setattr(apart, "APART_MIN", len(x) + 1)
    assert umap_sampled_anywhere(x, fitted, seed=4, n_epochs=20).shape == (len(x), 2)
    assert len(calls) == 1


def test_umap_anywhere_goes_apart_from_the_threshold(digits_graph, monkeypatch):
    import analysis.apart as apart

    x, idx, dist = digits_graph
    calls = []
    monkeypatch.setattr(apart, "call_apart", lambda *a, **k: calls.append(a) or "apart")
    monkeypatch.setattr(apart, "APART_MIN", len(x))
    assert umap_anywhere(x, idx, dist, seed=0) == "apart"
    monkeypatch.setattr(apart, "APART_MIN", len(x) + 1)
    assert umap_anywhere(x, idx, dist, seed=0, n_epochs=20).shape == (len(x), 2)
    assert len(calls) == 1
    _, (sent_x, sent_idx, sent_dist) = calls[0]
    assert sent_idx.shape == (len(x), 14)  # only the columns a 15-neighbour map reads
    np.testing.assert_array_equal(sent_dist, dist[:, :14])


def test_a_cancel_stops_the_child_and_raises(digits_graph):
    import threading

    import psutil

    from analysis.apart import Cancelled, cancelled_by

    x, idx, dist = digits_graph
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with cancelled_by(stop), pytest.raises(Cancelled, match="umap_map stopped"):
        call_apart("umap_map", [x, idx, dist], seed=0)
    assert not [p for p in psutil.Process().children(recursive=True)
                if "analysis.apart" in " ".join(p.cmdline())]


def test_the_child_exits_when_its_parent_goes(tmp_path, digits_graph):
    """A parent that dies closes the child's standard input; the child then exits."""
    x, idx, dist = digits_graph
    for i, a in enumerate((x, idx, dist)):
        np.save(tmp_path / f"arg{i}.npy", a)
    (tmp_path / "call.json").write_text(json.dumps(
        {"function": "umap_map", "args": 3, "kwargs": {"seed": 0}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "analysis.apart", str(tmp_path)],
                             stdin=subprocess.PIPE, env=env, cwd=REPO)
    child.stdin.close()  # as the kernel does when the parent dies
    assert child.wait(60) == 1
    assert not (tmp_path / "out.npy").exists()


def test_an_error_in_the_child_is_raised_here_with_its_words(digits_graph):
    x, idx, dist = digits_graph
    with pytest.raises(RuntimeError, match=r"umap_map failed in its child process(.|\n)*Error"):
        call_apart("umap_map", [x, idx[:10], dist], seed=0)  # graph of 10 rows for 600 points


def test_only_the_table_s_functions_are_called(tmp_path):
    with pytest.raises(ValueError, match="no function 'os.system'"):
        call_apart("os.system", [])
    # The child reads a name, never a module path: a folder naming code runs nothing.
    (tmp_path / "call.json").write_text(json.dumps(
        {"function": "os:system", "args": 0, "kwargs": {"command": "touch pwned"}}))
    with pytest.raises(KeyError):
        main([str(tmp_path)])
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert set(FUNCTIONS) == {"umap_map", "umap_sampled"}


def test_arrays_are_read_without_pickle(tmp_path):
    np.save(tmp_path / "arg0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "call.json").write_text(json.dumps(
        {"function": "umap_map", "args": 1, "kwargs": {}}))
    with pytest.raises(ValueError, match="allow_pickle|Python objects"):
        main([str(tmp_path)])


def test_umap_s_kernels_are_cached_for_the_next_process(tmp_path):
    """umap-learn compiles three kernels uncached; ``import_umap`` caches them (~7 s each
    process otherwise)."""
    folder = tmp_path / "numba"
    folder.mkdir(mode=0o700)
    code = ("import numpy as np\n"
            "from analysis.maps import umap_map\n"
            "from analysis.steps.neighbors import knn_graph\n"
            "x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)\n"
            "umap_map(x, *knn_graph(x, 15), n_epochs=10)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO, timeout=300)
    saved = {p.name.split(".")[1].split("-")[0] for p in folder.rglob("*.nbi")}
    assert {"smooth_knn_dist", "compute_membership_strengths"} <= saved
    assert any("optimize_layout_euclidean_single_epoch" in name for name in saved)
