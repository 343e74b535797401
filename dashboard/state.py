"""The server-side registry: opaque run keys to opened analysis sessions.

The browser only ever holds a run *key* (a short hash) and sample ids; every
array stays here. The registry hangs on the Flask server
(``server.extensions["loupe"]``), so two apps (or two tests) never share it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cache import stable_hash
from core.errors import LoupeError
from dashboard.errors import DashboardInputError  # noqa: F401 - pages import it from here

if TYPE_CHECKING:
    from analysis.session import AnalysisSession

log = logging.getLogger(__name__)
EXTENSION = "loupe"

# Columns that identify a sample rather than describe it.
# Integer columns holding a class index: coloured with the class palette.


# Thumbnails kept per run entry (a 28x28 digit at scale 2 is ~1 kB of data URI).
THUMBNAIL_CACHE_SIZE = 4096
# Derived views kept per run entry (the export frame, the sample page's context map...).
MEMO_SIZE = 16


def run_of(key: object) -> str:
    """The run part of an entry key: a multi-head run's entries are ``<run>`` (its first
    head) and ``<run>-<head>``; every head of one run shares samples and selections."""
    return str(key).split("-", 1)[0]


class LRUCache:
    """A thread-safe mapping of at most ``maxsize`` entries, least recently used evicted.

    The server's memos (thumbnails, figures) are keyed by what browsers ask
    for; an unbounded dict would grow with every new request.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        """The value of ``key``; computed when missing, once: callers asking for a key
        being computed wait for it (a second session of the same run is never built)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                if key in self._data:  # computed by the caller this one waited for
                    self._data.move_to_end(key)
                    return self._data[key]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            with self._lock:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data


@dataclass
class RunEntry:
    """One analysed (model, dataset) pair and the data the pages draw from.

    Attributes
    ----------
    key : str
        Opaque id sent to the browser (never a path).
    label : str
        What the run selector shows: ``<run name> · <dataset>:<split>``.
    session : AnalysisSession
    head : str
        The model head this entry shows (a multi-head run has one entry per
        head, sharing the session): its label, prediction, loss... are the
        table's unprefixed columns.
    """

    key: str
    label: str
    session: AnalysisSession
    head: str = "class"
    _thumbs: LRUCache = field(default_factory=lambda: LRUCache(THUMBNAIL_CACHE_SIZE),
                              repr=False)
    _extra_tables: dict = field(default_factory=dict, repr=False)
    _memo: LRUCache = field(default_factory=lambda: LRUCache(MEMO_SIZE), repr=False)

    def memo(self, key: Hashable, compute: Callable[[], object]):
        """A derived view of this entry (never mutated by callers), computed once and kept
        among the :data:`MEMO_SIZE` most recently used."""
        return self._memo.get_or_compute(key, compute)

    @cached_property
    def table(self) -> pd.DataFrame:
        """The session's per-sample table for this entry's head, built once."""
        return self.session.table(head=self.head)

    @property
    def heads(self) -> list[str]:
        return self.session.heads

    def same_run(self, key: object) -> bool:
        """Whether ``key`` is this entry's or another head's of the same run (their
        samples, selections and clicks are shared)."""
        return isinstance(key, str) and run_of(key) == run_of(self.key)

    @cached_property
    def id_to_index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.session.dataset.sample_ids)}

    @cached_property
    def members(self) -> list[np.ndarray]:
        """Per class ``c``, the ``(n_c,)`` sample indices of the map's trace ``c``.

        A point the browser reports as (``curveNumber``, ``pointIndex``) is
        ``members[curveNumber][pointIndex]``: this survives plotly sending the
        arrays base64-encoded (``customdata`` is then missing from click data).
        """
        labels = self.table["label"].to_numpy()
        return [np.flatnonzero(labels == c) for c in range(len(self.class_names))]

    @property
    def class_names(self) -> list[str]:
        """The class names of this entry's head."""
        return self.session.class_names_of(self.head)

    def check_available(self) -> None:
        """Raise when the run's cache folder was deleted while the dashboard runs."""
        if not self.session.store.is_available():
            raise DashboardInputError(
                f"The analysis cache of run '{self.label}' was deleted while the dashboard was "
                "running. Restart the dashboard (python -m dashboard) to recompute it.")

    def index_of(self, sample_id: str) -> int:
        """Row index of ``sample_id``; a :class:`DashboardInputError` names a bad one."""
        try:
            return self.id_to_index[str(sample_id)]
        except (KeyError, TypeError):
            shown = str(sample_id) if len(str(sample_id)) <= 60 else str(sample_id)[:60] + "…"
            raise DashboardInputError(
                f"Sample '{shown}' does not exist in run '{self.label}' "
                f"(ids look like {self.session.dataset.sample_ids[0]}).") from None

    def selected_ids(self, selection: dict | None) -> list[str]:
        """The distinct known sample ids of the shared selection store, if it belongs to
        this run (at most :func:`dashboard.views.guard.selection_limit` of them)."""
        from dashboard.views.guard import selection_indices

        idx, _ = selection_indices(self, selection)
        return self.session.dataset.sample_ids[idx].tolist()

    def indices_of(self, sample_ids: Iterable[str]) -> np.ndarray:
        """``(M,)`` int64 row indices of known ids (unknown ids are skipped and logged)."""
        lookup = self.id_to_index
        ids = list(sample_ids or [])
        out = [lookup[s] for s in ids if s in lookup]
        if len(out) != len(ids):
            log.warning("%d unknown sample id(s) ignored", len(ids) - len(out))
        return np.asarray(out, dtype=np.int64)

    def points_to_indices(self, points: Sequence[dict]) -> np.ndarray:
        """Map plotly click/selection points to ``(M,)`` sample indices.

        Points of the class traces are looked up by (``curveNumber``,
        ``pointIndex``); points of any other trace (the highlight overlay) carry
        their sample index in ``customdata``, sent as a plain list.
        """
        from dashboard.views.guard import point_index

        out = []
        members = self.members
        n = len(self.id_to_index)
        for p in points or []:
            if not isinstance(p, dict):
                continue
            curve = point_index(p.get("curveNumber"))
            point = point_index(p.get("pointIndex", p.get("pointNumber")))
            if curve is None or point is None:  # missing, negative or not a number
                continue
            if curve < len(members):
                if point < len(members[curve]):
                    out.append(int(members[curve][point]))
            else:
                row = point_index(p.get("customdata"))
                if row is not None and row < n:
                    out.append(row)
        return np.asarray(out, dtype=np.int64)

    def thumbnail(self, index: int, scale: int = 2) -> str:
        """PNG data URI of sample ``index`` (memoised)."""
        from dashboard.images import image_data_uri

        index, scale = int(index), int(scale)
        if not 0 <= index < len(self.id_to_index) or not 1 <= scale <= 8:
            raise DashboardInputError(f"No sample {index} (or scale {scale}) to draw.")
        return self._thumbs.get_or_compute(
            (index, scale), lambda: image_data_uri(self.session.dataset.images[index], scale))

    # -- extra (out-of-distribution) datasets ---------------------------------------------
    def extra_table(self, key: str) -> pd.DataFrame:
        """The per-sample table of extra dataset ``key`` (``fashion-mnist:test``), built once."""
        if key not in self._extra_tables:
            try:
                self._extra_tables[key] = self.session.table(key, head=self.head)
            except LoupeError as exc:
                raise DashboardInputError(str(exc)) from None
        return self._extra_tables[key]

    def locate_extra(self, sample_id: str | None) -> tuple[str, int] | None:
        """``(extra dataset key, row)`` of an extra dataset's sample id; ``None`` otherwise.

        Ids are ``<dataset>:<split>:<row>`` (``fashion-mnist:test:5``), so the
        extra dataset's key is the id without its last field.
        """
        key, _, row = str(sample_id).rpartition(":")
        engine = self.session.extras.get(key)
        # isascii: "²".isdigit() is true but int("²") raises
        if engine is None or not (row.isascii() and row.isdigit()) \
                or int(row) >= len(engine.dataset):
            return None
        return key, int(row)


@dataclass(frozen=True)
class DiscoveredRun:
    """A run folder found under ``--runs-dir`` and not opened yet (see
    :meth:`RunRegistry.discover`): the selector lists it, the first selection opens it."""

    key: str
    name: str
    folder: str


# What opening a discovered run reports: (step number from 1, steps in all, step name).
OpenProgress = Callable[[int, int, str], None]


class RunRegistry:
    """Opaque run keys to :class:`RunEntry`, in the order they were added, plus the runs
    discovered under ``--runs-dir`` that are opened on their first selection."""

    def __init__(self) -> None:
        self._entries: dict[str, RunEntry] = {}
        self._folders: dict[str, str] = {}  # entry base key -> resolved run folder
        self._discovered: dict[str, DiscoveredRun] = {}
        self._opened: dict[str, str] = {}  # discovered key -> its entry's key
        self._opening = LRUCache(1024)  # one opening per discovered run, however many ask
        self._write_lock = threading.Lock()
        self._status: dict[str, tuple[str, bool]] = {}  # discovered key -> (text, failed)
        # run folder -> an opened, not yet run, AnalysisSession on the dashboard's data
        self.session_opener: Callable[[str], AnalysisSession] | None = None

    def add(self, session: AnalysisSession, checkpoint: str | None = None) -> RunEntry:
        """Register an opened (and run) session, one entry per head; returns the first
        head's entry."""
        ds = session.dataset
        base = stable_hash("loupe-dashboard-run", session.engine.model_id, ds.key,
                           ds.fingerprint, str(checkpoint))[:12]
        label = f"{session.name} · {ds.key}"
        taken = {e.label for k, e in self._entries.items() if run_of(k) != base}
        if label in taken:  # two run folders of the same name: number them
            label = next(f"{label} ({n})" for n in range(2, len(taken) + 3)
                         if f"{label} ({n})" not in taken)
        if checkpoint is not None and Path(checkpoint).exists():
            self._folders[base] = str(Path(checkpoint).resolve())
        entries = []
        for i, head in enumerate(session.heads):
            key = base if i == 0 else f"{base}-{head}"
            entry = RunEntry(key, label, session, head)
            # Built now, not in the first page's callbacks (which then wait on nothing).
            _ = entry.table, entry.members
            entries.append(entry)
        # Copy on write: callbacks iterate the entries while a run opened in the
        # background is added; they keep iterating the dict they started with.
        with self._write_lock:
            self._entries = {**self._entries, **{e.key: e for e in entries}}
        return entries[0]

    def keys(self) -> list[str]:
        return list(self._entries)

    def options(self) -> list[dict]:
        """Run selector options ``[{"label", "value"}]``: one per open run (its first head),
        then the discovered runs not opened yet (their label says so)."""
        # A discovered run keeps its key once opened: the selector's value stays valid.
        alias = {entry: key for key, entry in self._opened.items()}
        opened = [{"label": e.label, "value": alias.get(e.key, e.key)}
                  for e in self._entries.values() if e.head == e.session.heads[0]]
        waiting = [{"label": f"{d.name} · not analysed yet", "value": d.key}
                   for d in self._discovered.values() if d.key not in self._opened]
        return opened + waiting

    # -- runs discovered under --runs-dir -----------------------------------------------------
    def discover(self, runs_dir: str | Path) -> list[DiscoveredRun]:
        """List every openable run under ``runs_dir`` that is not open yet (nothing is
        loaded: :func:`analysis.runs.discover_runs` reads ``run.json`` only).

        Runs that need their code (``--model``/``--task``) or are broken are
        left out: the Experiments page lists them with the reason. A missing
        ``runs_dir`` discovers nothing.
        """
        from analysis.runs import OK, discover_runs

        try:
            found = discover_runs(runs_dir)
        except LoupeError as exc:
            log.info("no runs discovered: %s", exc)
            return []
        open_folders = set(self._folders.values())
        names = {e.session.name for e in self._entries.values()}
        added = []
        for info in found:
            if info.status != OK or info.folder in open_folders:
                continue
            key = "r" + stable_hash("loupe-dashboard-discovered", info.folder)[:11]
            name = info.name if info.name not in names else \
                f"{info.name} ({Path(info.folder).parent.name})"
            self._discovered.setdefault(key, DiscoveredRun(key, name, info.folder))
            added.append(self._discovered[key])
        return added

    def is_waiting(self, key: object) -> bool:
        """Whether ``key`` is a discovered run not opened yet."""
        return isinstance(key, str) and key in self._discovered and key not in self._opened

    def start_opening(self, key: str) -> None:
        """Open discovered run ``key`` in a background thread (once; later calls do
        nothing); :meth:`opening_status` tells how far it got."""
        with self._write_lock:
            if key in self._status or key in self._opened:
                return
            run = self._discovered.get(key)
            if run is None:
                raise DashboardInputError(f"Unknown run '{str(key)[:40]}': reload the page.")
            self._status[key] = (f"Opening run {run.name}…", False)

        def report(k: int, n: int, step: str) -> None:
            self._status[key] = (f"Analysing run {run.name}: step {k} of {n} ({step})…", False)

        def work() -> None:
            try:
                self.open_discovered(key, report)
                self._status[key] = ("", False)
            except DashboardInputError as exc:
                self._status[key] = (str(exc), True)
            except Exception:  # noqa: BLE001 - said on the page, logged in full
                log.exception("opening run %s failed", run.name)
                self._status[key] = (f"Run {run.name} could not be opened; the server log "
                                     "says why.", True)

        threading.Thread(target=work, name=f"loupe-open-{key}", daemon=True).start()

    def opening_status(self, key: str) -> tuple[str, bool]:
        """``(text, failed)`` of discovered run ``key``'s opening (``""`` once open)."""
        return self._status.get(key, ("", False))

    def resolve(self, key: str | None) -> str | None:
        """The entry key behind ``key`` (a discovered run, once opened, is its entry)."""
        return self._opened.get(key, key) if isinstance(key, str) else key

    def open_discovered(self, key: str, progress: OpenProgress | None = None) -> RunEntry:
        """Open and analyse discovered run ``key`` with :attr:`session_opener` (once:
        concurrent callers wait for the first and share its entry).

        Parameters
        ----------
        progress : called before each step with (k, n, step name)

        Raises
        ------
        DashboardInputError
            Unknown key, or the run cannot be opened on the dashboard's data (the
            message says why).
        """
        if key in self._opened:
            return self._entries[self._opened[key]]
        run = self._discovered.get(key)
        if run is None:
            raise DashboardInputError(f"Unknown run '{str(key)[:40]}': reload the page.")

        open_session = self.session_opener
        if open_session is None:
            raise DashboardInputError("This dashboard opens no other run.")

        def compute() -> RunEntry:
            try:
                session = open_session(run.folder)
                steps = list(session.steps)
                n = len(steps) + (1 if session.extras else 0)
                for k, step in enumerate(steps, 1):
                    if progress is not None:
                        progress(k, n, step)
                    session.run([step])
                if session.extras:
                    if progress is not None:
                        progress(n, n, "the extra datasets")
                    session.run()
            except LoupeError as exc:
                raise DashboardInputError(f"Run {run.name} cannot be opened here: {exc}") \
                    from None
            entry = self.add(session, run.folder)
            self._opened[key] = entry.key
            return entry

        return self._opening.get_or_compute(key, compute)

    def head_options(self, key: str | None) -> list[dict]:
        """Head selector options of the run of entry ``key``: ``{"label": head, "value": key}``."""
        entry = self._entries.get(self.resolve(key) or self.default_key)
        if entry is None:  # a stale key: the page that uses it shows the message
            return []
        base = run_of(entry.key)
        return [{"label": e.head, "value": e.key} for k, e in self._entries.items()
                if run_of(k) == base]

    @property
    def default_key(self) -> str | None:
        return next(iter(self._entries), None)

    def get(self, key: str | None) -> RunEntry:
        """The entry for ``key`` (the default run when ``None``).

        Raises
        ------
        DashboardInputError
            Unknown key (e.g. a stale store after a restart) or a deleted cache.
        """
        if not self._entries:
            raise DashboardInputError("No run is open. Start the dashboard with --checkpoint.")
        key = self.resolve(key) or self.default_key
        if self.is_waiting(key):
            raise DashboardInputError("This run is being analysed: its pages open when the "
                                      "analysis is done (see the progress under the menu).")
        try:
            entry = self._entries[key]
        except KeyError:
            raise DashboardInputError(
                f"Unknown run '{key}'. It may come from an earlier session of the dashboard; "
                "pick a run from the selector.") from None
        entry.check_available()
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        """The entries, in the order they were added."""
        return iter(self._entries.values())


def attach_registry(server, registry: RunRegistry) -> None:
    """Hang ``registry`` on a Flask ``server``."""
    server.extensions[EXTENSION] = registry


def get_registry_of(app) -> RunRegistry:
    """The registry attached to a Dash ``app`` (see :func:`attach_registry`)."""
    return app.server.extensions[EXTENSION]


def get_registry() -> RunRegistry:
    """The registry of the app serving the current callback."""
    import dash

    return dash.get_app().server.extensions[EXTENSION]


def run_key_of(store: dict | None) -> str | None:
    """The run key held in an app-level store (``None`` when unset or malformed)."""
    if isinstance(store, dict) and isinstance(store.get("run"), str):
        return store["run"]
    return None


def get_entry(store: dict | None) -> RunEntry:
    """The :class:`RunEntry` selected by the run store."""
    return get_registry().get(run_key_of(store))
