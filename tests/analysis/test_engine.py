"""analysis/engine.py: content-addressed keys, reading back, recomputing only what changed."""

from __future__ import annotations

import copy
import logging
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.engine import Engine
from analysis.registry import STEPS, all_steps, get_step
from analysis.session import AnalysisSession
from cache import ArtifactStore
from core.datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]
FAST = ("inference", "mc_dropout", "pixel_centroids", "centroids", "neighbors")
MODEL_FREE = {"pixel_centroids"}


def dependents(name: str) -> set[str]:
    """``name`` and every registered step that requires it, directly or not."""
    all_steps()
    found = {name}
    changed = True
    while changed:
        changed = False
        for step, cls in STEPS.items():
            if step not in found and found & set(cls.requires):
                found.add(step)
                changed = True
    return found


@pytest.fixture(scope="module")
def small_ds(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=200)


def make_session(model, ds, directory, **kw):
    kw.setdefault("mc_samples", 4)
    kw.setdefault("projections", ())
    return AnalysisSession(model, ds, ArtifactStore(directory), "cpu", progress=False, **kw)


def test_second_run_reads_everything_back(tiny_model, small_ds, cache_dir):
    first = make_session(tiny_model, small_ds, cache_dir)
    records = first.run(FAST)
    assert [r.name for r in records] == list(FAST)
    assert {r.status for r in records} == {"computed"}
    second = make_session(tiny_model, small_ds, cache_dir)
    again = second.run(FAST)
    assert [(r.name, r.status) for r in again] == [(n, "cached") for n in FAST]
    assert [r.key for r in again] == [r.key for r in records]
    for name in FAST:
        for array, value in first.artifact(name).items():
            np.testing.assert_array_equal(second.artifact(name)[array], value)
    assert second.artifact("inference").summary == first.artifact("inference").summary
    assert second.run(FAST) == []  # the third time: held in memory, not even read


def test_changing_k_recomputes_only_the_neighbour_steps(tiny_model, small_ds, cache_dir):
    k10 = make_session(tiny_model, small_ds, cache_dir, projections=("umap", "tsne"))
    k5 = make_session(tiny_model, small_ds, cache_dir, k=5, projections=("umap", "tsne"))
    changed = {s for s in k10.steps if k10.engine.key(s) != k5.engine.key(s)}
    assert changed == dependents("neighbors") & set(k10.steps)
    assert {"neighbors", "umap", "tsne"} <= changed
    assert not changed & {"inference", "mc_dropout", "pixel_centroids", "centroids"}
    k10.run(FAST)
    status = {r.name: r.status for r in k5.run(FAST)}
    assert status == {"inference": "cached", "mc_dropout": "cached", "pixel_centroids": "cached",
                      "centroids": "cached", "neighbors": "computed"}


def perturbed(model, param_index: int, position: int, delta: float):
    clone = copy.deepcopy(model)
    params = list(clone.module.parameters())
    p = params[param_index % len(params)]
    with torch.no_grad():
        p.view(-1)[position % p.numel()] += delta
    return clone


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 100), st.integers(0, 10**6),
       st.floats(1e-4, 1.0) | st.floats(-1.0, -1e-4))
def test_new_weights_rekey_model_steps_only(tiny_model, small_ds, tmp_path, param_index,
                                            position, delta):
    store = ArtifactStore(tmp_path / "unused")
    plan = list(FAST) + ["umap", "tsne"]
    old = Engine(tiny_model, small_ds, store, torch.device("cpu"))
    new = Engine(perturbed(tiny_model, param_index, position, delta), small_ds, store,
                 torch.device("cpu"))
    for name in plan:
        same = old.key(name) == new.key(name)
        assert same == (name in MODEL_FREE), name
    assert not get_step("pixel_centroids").uses_model


def test_other_key_parts(tiny_model, small_ds, tmp_path, digits, data_root):
    store = ArtifactStore(tmp_path / "unused")
    cpu = torch.device("cpu")
    base = Engine(tiny_model, small_ds, store, cpu)
    other_data = Engine(tiny_model, small_ds.head(150), store, cpu)
    layer = copy.deepcopy(tiny_model)
    layer.embedding_layer = "9"
    other_layer = Engine(layer, small_ds, store, cpu)
    other_mc = Engine(tiny_model, small_ds, store, cpu, {"mc_dropout": {"seed": 1}})
    for name in FAST:
        assert base.key(name) != other_data.key(name)  # content fingerprint
        assert (base.key(name) == other_layer.key(name)) == (name in MODEL_FREE)
        assert (base.key(name) == other_mc.key(name)) == (name not in dependents("mc_dropout"))
    v = get_step("inference").__class__
    old_version = v.version
    try:
        v.version = old_version + 1  # a new version of a step's code
        bumped = Engine(tiny_model, small_ds, store, cpu)
        assert bumped.key("inference") != base.key("inference")
        assert bumped.key("pixel_centroids") == base.key("pixel_centroids")
    finally:
        v.version = old_version


def test_corrupted_entry_is_recomputed_by_the_engine(tiny_model, small_ds, cache_dir, caplog):
    first = make_session(tiny_model, small_ds, cache_dir)
    first.run(["inference"])
    key = first.engine.key("inference")
    store = first.store
    # the value file: the entry's own, or its Arrow file's when stored columnar
    (filename,) = store.cache._sql("SELECT filename FROM Cache WHERE key IN (?, ?) AND "
                                   "filename IS NOT NULL", (key, key + ":columns")).fetchone()
    value_file = Path(store.cache.directory) / filename
    raw = bytearray(value_file.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    value_file.write_bytes(bytes(raw))
    second = make_session(tiny_model, small_ds, cache_dir)
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        (record,) = second.run(["inference"])
    assert record.status == "computed"
    assert any(key[:12] in r.getMessage() and "corrupted" in r.getMessage()
               for r in caplog.records)
    np.testing.assert_array_equal(second.artifact("inference")["logits@class"],
                                  first.artifact("inference")["logits@class"])
    third = make_session(tiny_model, small_ds, cache_dir)
    assert third.run(["inference"])[0].status == "cached"  # the recomputed value was stored


def test_a_large_result_is_held_memory_mapped_once_computed(tiny_model, small_ds, cache_dir):
    """A result stored columnar is read back at once: the engine holds (and hands out) the
    mapped, read-only arrays, not the ones the step computed."""
    session = AnalysisSession(tiny_model, small_ds, ArtifactStore(cache_dir, columnar_min_mb=0),
                              "cpu", progress=False, mc_samples=4, projections=())
    (record,) = session.run(["inference"])
    assert record.status == "computed"
    held = session.engine.get("inference")
    assert not held["embedding"].flags.writeable and held["embedding"].shape[0] == 200
    fresh = make_session(tiny_model, small_ds, cache_dir)  # read from the disk
    np.testing.assert_array_equal(fresh.artifact("inference")["embedding"], held["embedding"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc: Linux")
def test_pages_a_step_read_of_its_mapped_inputs_are_released(tiny_model, small_ds, cache_dir):
    """Once a step has run, the pages it read of its memory-mapped inputs no longer
    count in the process's memory, and the inputs read the same afterwards."""
    from core.memory import mapping_rss

    session = AnalysisSession(tiny_model, small_ds, ArtifactStore(cache_dir, columnar_min_mb=0),
                              "cpu", progress=False, mc_samples=4, projections=())
    session.run(["inference"])
    emb = session.engine.get("inference")["embedding"]
    copy = np.array(emb)  # reads every page of the mapped column
    held = mapping_rss(emb)
    assert held >= emb.nbytes
    session.run(["neighbors"])  # reads the embedding, then releases it
    assert mapping_rss(emb) <= held - emb.nbytes + 2 * mmap.PAGESIZE  # partial end pages
    np.testing.assert_array_equal(emb, copy)


def test_killed_cli_run_recovers(tiny_run, tiny_model, digits, data_root, cache_dir):
    limit = 400
    ds = load_dataset(digits, "test", data_root=data_root, limit=limit)
    inference_key = Engine(tiny_model, ds, ArtifactStore(cache_dir / "unused"),
                           torch.device("cpu")).key("inference")
    cmd = [sys.executable, "-m", "analysis", "run", "--checkpoint", str(tiny_run),
           "--dataset", digits, "--limit", str(limit), "--cache-dir", str(cache_dir),
           "--device", "cpu", "--mc-samples", "20"]
    if data_root:
        cmd += ["--data-root", data_root]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd + ["--projection", "tsne"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = ArtifactStore(cache_dir)
    deadline = time.monotonic() + 120
    while inference_key not in store and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    assert inference_key in store
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store.close()
    rerun = subprocess.run(cmd + ["--projection"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    status = {line.split()[0]: line.split()[1] for line in rerun.stdout.splitlines()
              if line.startswith("    ")}
    assert status["inference"] == "cached"
    assert set(status) >= {"inference", "mc_dropout", "pixel_centroids", "centroids",
                           "neighbors"}
    assert set(status.values()) <= {"cached", "computed"}
    assert "tsne" not in status


def test_threads_asking_for_a_step_at_once_compute_it_once(tiny_model, small_ds, cache_dir):
    """The dashboard serves requests and background jobs from threads of one process."""
    from concurrent.futures import ThreadPoolExecutor

    session = make_session(tiny_model, small_ds, cache_dir)
    engine = session.engine
    barrier = __import__("threading").Barrier(4)

    def ask(name):
        barrier.wait()
        return engine.get(name)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ask, ["mc_dropout", "inference", "mc_dropout", "centroids"]))
    assert got[0] is got[2]
    computed = [r.name for r in engine.records if r.status == "computed"]
    assert sorted(computed) == sorted(set(computed))  # nothing computed twice
    assert {"inference", "mc_dropout", "centroids"} <= set(computed)
    plain = make_session(tiny_model, small_ds, cache_dir.parent / "again").engine
    for name in ("inference", "mc_dropout"):  # the same numbers as one thread alone
        for array, value in plain.get(name).items():
            np.testing.assert_array_equal(engine.get(name)[array], value)


def test_two_different_steps_are_computed_at_once(tiny_model, small_ds, cache_dir):
    """Each step has its own lock: a step that takes long does not hold up another."""
    import threading

    from analysis.registry import Step, register
    from cache import Artifact

    entered, release = threading.Event(), threading.Event()

    class Blocking(Step):
        name = "test_blocking_step"
        uses_model = False

        def run(self, ctx, config):
            entered.set()
            assert release.wait(60), "never released"
            return Artifact({"x": np.zeros(3)})

    register(Blocking)
    try:
        engine = make_session(tiny_model, small_ds, cache_dir).engine
        slow = threading.Thread(target=engine.get, args=("test_blocking_step",))
        slow.start()
        assert entered.wait(60)
        engine.get("pixel_centroids")  # while the other step is still running
        assert not engine.done("test_blocking_step")
        release.set()
        slow.join(60)
        assert engine.done("test_blocking_step") and engine.done("pixel_centroids")
        assert [r.name for r in engine.records] == ["pixel_centroids", "test_blocking_step"]
    finally:
        release.set()
        del STEPS["test_blocking_step"]


def test_run_starts_the_umap_map_as_soon_as_its_inputs_are_ready(tiny_model, small_ds,
                                                                  cache_dir, monkeypatch):
    """From APART_MIN samples UMAP is a background step: it starts after the neighbours, in
    its child process, runs beside the steps planned after them, and gives the map
    computed in turn."""
    import analysis.apart as apart

    session = make_session(tiny_model, small_ds, cache_dir, projections=("umap",))
    config = session.engine.config("umap")
    assert not get_step("umap").background(len(small_ds), config)
    assert get_step("umap").background(apart.APART_MIN, config)
    assert get_step("umap").background(config.fit_max + 1, config)  # fitted on a sample, apart
    for joint in ("joint_umap", "mc_joint_umap", "joint_tsne", "mc_joint_tsne"):
        step = get_step(joint)
        for n in (apart.APART_MIN, step.Config().fit_max + 1):
            assert step.background(n, step.Config()) == joint.endswith("umap")
        assert not step.background(apart.APART_MIN - 1, step.Config())
    assert not get_step("slices").background(10**6, session.engine.config("slices"))
    monkeypatch.setattr(apart, "APART_MIN", len(small_ds))
    children = []
    real = apart.call_apart
    monkeypatch.setattr(apart, "call_apart", lambda *a, **k: children.append(a[0]) or real(*a, **k))
    steps = session.steps
    assert steps.index("neighbors") < steps.index("slices") < steps.index("umap")
    records = {r.name: r for r in session.run()}
    assert set(records) == set(steps) and children == ["umap_map"]
    umap, slices = records["umap"], records["slices"]
    assert umap.started < slices.started < umap.started + umap.seconds  # they overlapped
    monkeypatch.setattr(apart, "APART_MIN", 10**9)  # now in this process, in turn
    alone = make_session(tiny_model, small_ds, cache_dir.parent / "alone",
                         projections=("umap",))
    turns = [r.name for r in alone.run(background=False)]
    assert turns == alone.steps and children == ["umap_map"]
    np.testing.assert_array_equal(alone.artifact("umap")["coords"],
                                  session.artifact("umap")["coords"])


def test_a_sampled_umap_map_runs_apart_beside_the_later_steps(tiny_model, small_ds, cache_dir,
                                                                monkeypatch):
    """Past ``fit_max`` the map is fitted on a sample and the rest placed, in the child as
    well, beside the steps after the neighbours; the same map as in this process."""
    import analysis.apart as apart

    opts = {"umap": {"fit_max": 150, "fit_sample": 100}}
    monkeypatch.setattr(apart, "APART_MIN", len(small_ds))
    children = []
    real = apart.call_apart
    monkeypatch.setattr(apart, "call_apart", lambda *a, **k: children.append(a[0]) or real(*a, **k))
    session = make_session(tiny_model, small_ds, cache_dir, projections=("umap",),
                           step_options=opts)
    records = {r.name: r for r in session.run()}
    assert children == ["umap_sampled"]
    umap, slices = records["umap"], records["slices"]
    assert umap.started < slices.started < umap.started + umap.seconds  # they overlapped
    art = session.artifact("umap")
    assert art["fitted"].sum() == 100 and np.isfinite(art["coords"]).all()
    monkeypatch.setattr(apart, "APART_MIN", 10**9)  # now in this process, in turn
    alone = make_session(tiny_model, small_ds, cache_dir.parent / "alone", projections=("umap",),
                         step_options=opts)
    alone.run(background=False)
    assert children == ["umap_sampled"]
    np.testing.assert_array_equal(alone.artifact("umap")["coords"], art["coords"])


def test_an_error_in_a_background_step_reaches_the_caller(tiny_model, small_ds, cache_dir,
                                                          monkeypatch):
    import threading

    import analysis.apart as apart
    import analysis.steps.projection as projection

    threads = []

    def broken(*args, **kwargs):
        threads.append(threading.current_thread().name)
        raise RuntimeError("the map broke")

    monkeypatch.setattr(apart, "APART_MIN", 1)
    monkeypatch.setattr(projection, "umap_anywhere", broken)
    session = make_session(tiny_model, small_ds, cache_dir, projections=("umap",))
    with pytest.raises(RuntimeError, match="the map broke"):
        session.run()
    assert threads and threads[0].startswith("loupe-background")
    assert not session.engine.done("umap") and session.engine.done("neighbors")


def test_an_error_beside_a_background_step_stops_its_child(tiny_model, small_ds, cache_dir,
                                                           monkeypatch, caplog):
    import psutil

    import analysis.apart as apart

    def failing(self, ctx, config):
        raise RuntimeError("mc_distances broke")

    monkeypatch.setattr(apart, "APART_MIN", 1)
    monkeypatch.setattr(STEPS["mc_distances"], "run", failing)
    session = make_session(tiny_model, small_ds, cache_dir, projections=("umap",))
    steps = session.steps
    assert steps.index("neighbors") < steps.index("mc_distances") < steps.index("umap")
    with pytest.raises(RuntimeError, match="mc_distances broke"):
        session.run()
    assert not session.engine.done("umap")  # its child (seconds of imports) was stopped
    assert not [p for p in psutil.Process().children(recursive=True)
                if "analysis.apart" in " ".join(p.cmdline())]
