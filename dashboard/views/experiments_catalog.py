"""The runs under ``--runs-dir`` as the Experiments page sees them, cached per app.

The browser holds run *names* only; :class:`RunCatalog` maps them to folders on
the server and keeps what is costly: each model's mult-adds and summary (each
model is loaded once), the opened sessions and the comparisons.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.compare import Comparison, compare_sessions
from analysis.runs import (
    RunInfo,
    mult_adds,
    read_run,
    run_folders,
    runs_table,
    with_mult_adds,
)
from analysis.session import AnalysisSession
from core.errors import CheckpointError, ConfigError, LoupeError
from dashboard.state import DashboardInputError, LRUCache
from dashboard.views.guard import safe_message
from models.checkpoint import META_FILE, WEIGHTS_FILE, read_run_meta

if TYPE_CHECKING:
    from dashboard.config import DashboardConfig

log = logging.getLogger(__name__)
EXTENSION = "loupe-experiments"
PROJECTION = "umap"  # the diff map's projection; the only one the compared sessions compute
LISTING_TTL_S = 2.0  # how long a listing of the runs folder is reused
KEEP_SESSIONS = 6
KEEP_COMPARISONS = 4
KEEP_COMPUTED = 512  # listed rows and model summaries, keyed by folder and file times


def missing_runs_message(runs_dir: str) -> str:
    return (f"No runs folder '{runs_dir}'. Train runs into it with `python -m models train "
            f"--out {runs_dir}/NAME` (one sub-folder per run), or start the dashboard with "
            "--runs-dir DIR.")


def _stamp(folder: Path) -> tuple[int, int]:
    """Modification times of the weights and ``run.json`` (0 when absent): a retrained run is
    a new run."""
    return tuple(p.stat().st_mtime_ns if p.is_file() else 0
                 for p in (folder / WEIGHTS_FILE, folder / META_FILE))


class RunCatalog:
    """The runs under ``config.runs_dir``, keyed by run name, with per-app caches.

    Parameters
    ----------
    config : DashboardConfig
        ``runs_dir``, and the dataset, split, limit, data root, cache and
        device every compared run is analysed on.
    """

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._listing: tuple[float, dict[str, Path]] | None = None
        # Bounded and thread-safe: callbacks of several browsers share the catalog.
        self._computed = LRUCache(KEEP_COMPUTED)
        self._sessions = LRUCache(KEEP_SESSIONS)
        self._comparisons = LRUCache(KEEP_COMPARISONS)

    @property
    def runs_dir(self) -> Path:
        return Path(self.config.runs_dir).expanduser()

    @property
    def runs_dir_name(self) -> str:
        """What the browser is told: the folder's name only, never a server path."""
        return self.runs_dir.name or str(self.config.runs_dir)

    def folders(self) -> dict[str, Path]:
        """Run name -> folder, in :func:`~analysis.runs.discover_runs`'s order.

        Two folders of the same name (at different depths) get ``name (2)``.

        Raises
        ------
        DashboardInputError
            The runs folder is missing or holds no run; the message says how to
            create runs.
        """
        if self._listing and time.monotonic() - self._listing[0] < LISTING_TTL_S:
            return self._listing[1]
        root, shown = self.runs_dir, self.runs_dir_name
        if not root.is_dir():
            raise DashboardInputError(missing_runs_message(shown))
        out: dict[str, Path] = {}
        try:
            found = run_folders(root)
        except ConfigError as exc:  # vanished meanwhile
            raise DashboardInputError(str(exc)) from None
        for folder in found:
            key, n = folder.name, 2
            while key in out:
                key, n = f"{folder.name} ({n})", n + 1
            out[key] = folder.resolve()
        if not out:
            raise DashboardInputError(
                f"No run under '{shown}' yet (no sub-folder holds a {WEIGHTS_FILE}). Train one "
                f"with `python -m models train --out {shown}/NAME`.")
        self._listing = (time.monotonic(), out)
        return out

    def folder(self, key: str) -> Path:
        try:
            return self.folders()[key]
        except KeyError:
            raise DashboardInputError(f"Unknown run '{key}': it is no longer under "
                                      f"'{self.runs_dir_name}'. Reload the page.") from None

    def _cached(self, what: str, folder: Path, compute: Callable[[], object]):
        return self._computed.get_or_compute((what, str(folder), _stamp(folder)), compute)

    # -- what the table and the curves show ---------------------------------------------------
    def table(self) -> pd.DataFrame:
        """One row per run: ``key``, :func:`~analysis.runs.runs_table`'s columns (``status``
        and ``problem`` say when a run needs its code or is broken), ``mult_adds``.

        Nothing is imported: mult-adds are computed (once per folder and file
        times) only for ``"ok"`` runs, whose models are zoo or ONNX ones.
        """
        folders = self.folders()
        listed = [self._cached("listed", f, lambda f=f: _with_mult_adds(read_run(f)))
                  for f in folders.values()]
        frame = runs_table([info for info, _ in listed])
        frame.insert(0, "key", list(folders))
        # The browser is told names, never server paths (see runs_dir_name).
        frame["problem"] = [p.replace(str(self.runs_dir.resolve()), self.runs_dir_name)
                            if isinstance(p, str) else p for p in frame["problem"]]
        frame = frame.drop(columns="folder")
        frame["mult_adds"] = [count for _, count in listed]
        return frame

    def meta(self, key: str) -> dict:
        """The run's ``run.json`` (empty when absent or broken; the table says why)."""
        try:
            return read_run_meta(self.folder(key))
        except CheckpointError as exc:
            log.warning("run %s: %s", key, exc)
            return {}

    def history(self, key: str) -> list[dict]:
        return list(self.meta(key).get("history") or [])

    def summary(self, key: str) -> str:
        """torchinfo's table of the run's model (layers, shapes, parameters, mult-adds)."""
        return self._cached("summary", self.folder(key), lambda: _model_summary(self.folder(key)))

    # -- the per-sample diff ------------------------------------------------------------------
    def session(self, key: str) -> AnalysisSession:
        """The run opened on the dashboard's dataset, split and limit (nothing computed yet)."""
        folder = self.folder(key)

        def open_session() -> AnalysisSession:
            c = self.config
            try:
                return AnalysisSession.open(
                    folder, c.dataset, c.split, data_root=c.data_root, cache_dir=c.cache_dir,
                    device=c.device, limit=c.limit, projections=(PROJECTION,), progress=False,
                    trust_code=c.trust_code)
            except LoupeError as exc:
                raise DashboardInputError(f"Run {key}: {safe_message(exc)}") from None

        return self._sessions.get_or_compute((str(folder), _stamp(folder)), open_session)

    def shared_heads(self, a: str, b: str) -> list[str]:
        """The heads both runs have, in run A's order (``["class"]`` for classifiers)."""
        heads_b = set(self.session(b).heads)
        return [h for h in self.session(a).heads if h in heads_b]

    def comparison(self, a: str, b: str, head: str | None = None) -> Comparison:
        """:func:`analysis.compare.compare_sessions` of run B against run A on ``head``
        (default: the first shared head), cached.

        Raises
        ------
        DashboardInputError
            The runs were trained on different datasets, or cannot be compared.
        """
        data_a, data_b = self.meta(a).get("dataset"), self.meta(b).get("dataset")
        if data_a and data_b and data_a != data_b:
            raise DashboardInputError(
                f"Run A ({a}) was trained on {data_a} and run B ({b}) on {data_b}: a per-sample "
                "diff compares two models on the same samples. Tick two runs trained on the "
                "same dataset.")
        fa, fb = self.folder(a), self.folder(b)
        def compare() -> Comparison:
            try:
                return compare_sessions(self.session(a), self.session(b), head)
            except LoupeError as exc:
                raise DashboardInputError(f"Runs {a} and {b} cannot be compared: "
                                          f"{safe_message(exc)}") from None

        return self._comparisons.get_or_compute(
            (str(fa), _stamp(fa), str(fb), _stamp(fb), head), compare)


def _with_mult_adds(info: RunInfo) -> tuple[RunInfo, int | None]:
    """:func:`~analysis.runs.with_mult_adds`; a model torchinfo cannot summarise keeps its row."""
    try:
        return with_mult_adds(info, mult_adds)
    except (RuntimeError, ValueError) as exc:
        log.warning("mult-adds of %s: %s", info.name, exc)
        return info, None


def _model_summary(folder: Path) -> str:
    from analysis.runs import model_summary
    from models.checkpoint import load_model

    try:
        return model_summary(load_model(folder))
    except (LoupeError, RuntimeError, ValueError) as exc:
        return f"No summary: {safe_message(exc)}"


def attach_catalog(server, catalog: RunCatalog) -> None:
    """Hang ``catalog`` on a Flask ``server`` (one per app, like the run registry)."""
    server.extensions[EXTENSION] = catalog


def get_catalog() -> RunCatalog:
    """The catalog of the app serving the current callback."""
    import dash

    return dash.get_app().server.extensions[EXTENSION]
