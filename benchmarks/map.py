"""``python -m benchmarks.map --points 1000000``: the population map at scale.

An analysed run (``--checkpoint``; without one, a tiny CNN trained for one
epoch on 2,000 real digits) is analysed on ``--base`` test digits and then
*tiled* to ``--points`` samples (:class:`TiledSession`: its rows repeated,
its map coordinates jittered), so the dashboard sees a run of that size
without analysing it. Measured with the functions the callbacks call
(median of ``--repeat``):

* **first render**: the whole map's figure (a datashader image) built and
  serialised to JSON as Dash does, with warm kernels and nothing memoised;
  the first one of the process (datashader's numba compile) apart;
* **pan/zoom re-render**: the figure for a zoomed or panned view, as an
  image (many points in view: from the whole map's image a ``dash.Patch``
  of the image, note, ranges and hover grid) and as points (few);
* **hover** (nearest sample; the KD-tree's build apart), **box and lasso
  selection** against all points;
* with ``--browser``: in headless Chromium, from opening the page to the map
  image drawn, and from a zoom (``Plotly.relayout``, as a mouse zoom emits
  it) to the new image drawn.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmarks.map_browser import views_of
from benchmarks.server import timed, to_json

log = logging.getLogger("benchmarks.map")

GOALS = {"first render": 3.0, "pan/zoom re-render": 0.5}  # seconds, at 1,000,000 points


# -- a large run without analysing one ----------------------------------------------------------
class TiledImages:
    """``images[i]`` of a tiled dataset: the base image of row ``take[i]``."""

    def __init__(self, images: np.ndarray, take: np.ndarray) -> None:
        self._images, self._take = images, take

    def __getitem__(self, index):
        return self._images[self._take[index]]

    def __len__(self) -> int:
        return len(self._take)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._take), *self._images.shape[1:])


class TiledDataset:
    """A dataset seen as its rows ``take`` (repeated): ids ``<dataset>:<split>:<i>`` for
    ``i`` in ``0..len(take)-1``, labels and images of the base rows."""

    def __init__(self, base, take: np.ndarray) -> None:
        self._base, self.take = base, take
        self.labels = base.labels[take]
        self.images = TiledImages(base.images, take)

    def __getattr__(self, name: str):
        return getattr(self._base, name)

    def __len__(self) -> int:
        return len(self.take)

    @cached_property
    def sample_ids(self) -> np.ndarray:
        key = self._base.key
        return np.array([f"{key}:{i}" for i in range(len(self.take))], dtype=object)

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self._base.fingerprint}-tiled-{len(self.take)}".encode()
                              ).hexdigest()


class TiledSession:
    """An analysed :class:`~analysis.session.AnalysisSession` seen as ``points`` samples.

    Row ``i`` is the base session's row ``i % n``: the same table row (its
    ``sample_id`` and ``index`` renumbered) and map position plus a small
    seeded jitter (``jitter`` times each axis's spread), so the points are
    distinct. Everything else (the model, the cache, similars of base rows)
    is the base session's. For benchmarks and tests of the map at a scale
    that would take hours to analyse on 2 cores; the Sample page of a row past
    ``n`` is not meant to work.
    """

    def __init__(self, session, points: int, seed: int = 0, jitter: float = 0.01) -> None:
        n = len(session.dataset)
        if points < n:
            raise ValueError(f"points must be at least the base run's {n:,} samples")
        self._base, self._seed, self._jitter = session, seed, jitter
        self.take = np.resize(np.arange(n), points)
        self.dataset = TiledDataset(session.dataset, self.take)
        self._coords: dict[str, np.ndarray] = {}
        self._tables: dict = {}

    def __getattr__(self, name: str):
        return getattr(self._base, name)

    def projection(self, method: str) -> np.ndarray:
        """``(points, 2)`` float32: the base map tiled and jittered."""
        if method not in self._coords:
            base = self._base.projection(method)
            rng = np.random.default_rng(self._seed)
            spread = base.std(axis=0) * self._jitter
            xy = base[self.take] + rng.normal(size=(len(self.take), 2)) * spread
            self._coords[method] = xy.astype(np.float32)
        return self._coords[method]

    def table(self, dataset: str | None = None, head: str | None = None):
        if dataset is not None:
            return self._base.table(dataset, head=head)
        if head not in self._tables:
            table = self._base.table(head=head).iloc[self.take].reset_index(drop=True)
            table["sample_id"] = self.dataset.sample_ids
            if "index" in table.columns:
                table["index"] = np.arange(len(table))
            self._tables[head] = table
        return self._tables[head]

    def similars(self, indices, k: int = 10):
        n = len(self._base.dataset)
        return self._base.similars(np.asarray(indices) % n, k)


def tiny_session(base: int, cache_dir: str | None, data_root: str | None, folder: Path):
    """A one-epoch ``mnist_cnn`` (2,000 digits) analysed on ``base`` test digits, UMAP only."""
    from analysis.session import AnalysisSession
    from core.datasets import find_idx_dir
    from models.train import TrainConfig, train

    digits = "mnist" if find_idx_dir("mnist", data_root) else "mnist-5k"
    # Kept in --cache-dir when given, so a second run reuses the run and its analysis.
    run = (Path(cache_dir) if cache_dir else folder) / f"bench-map-run-{digits}"
    if not (run / "model.pt").exists():
        train(TrainConfig(arch="mnist_cnn", dataset=digits, epochs=1, limit=2000,
                          batch_size=64), run, device="cpu", data_root=data_root,
              progress=False)
    session = AnalysisSession.open(run, digits, "test", data_root=data_root,
                                   cache_dir=cache_dir or folder / "cache", device="cpu",
                                   limit=base, progress=False, mc_samples=0,
                                   projections=("umap",))
    session.run()
    return session, str(run)


# -- measurements -------------------------------------------------------------------------------


def server_timings(entry, repeat: int, limit: int, seed: int) -> dict[str, list[float]]:
    from dashboard.figures.raster import warm_up
    from dashboard.state import RunEntry
    from dashboard.views.population_scale import (
        kd_tree,
        large_map_update,
        map_point_index,
        selection_from_region,
        view_update,
    )

    coords = entry.session.projection("umap")
    out: dict[str, list[float]] = {}

    def fresh_entry() -> RunEntry:
        new = RunEntry(entry.key, entry.label, entry.session, entry.head)
        _ = new.table, new.members, new.id_to_index  # built at start-up in the app
        return new

    def first_render(color: str) -> float:
        """The whole map in a fresh entry (nothing memoised), built and serialised."""
        fresh = fresh_entry()
        start = time.perf_counter()
        to_json(large_map_update(fresh, "umap", color, "loss", None, None, limit)[0])
        return time.perf_counter() - start

    start = time.perf_counter()
    warm_up()
    out["datashader compile (once per process, warm_up)"] = [time.perf_counter() - start]
    out["first render (whole map, image)"] = [first_render("label") for _ in range(repeat)]
    out["first render, colour by loss"] = [first_render("loss") for _ in range(repeat)]
    many, few = views_of(coords, (4 * limit,) * repeat, seed), \
        views_of(coords, (limit // 2,) * repeat, seed + 1)
    for name, relayouts in (("pan/zoom re-render (image)", many),
                            ("pan/zoom re-render (points)", few)):
        out[name] = [_timed_once(lambda r=r: to_json(view_update(
            entry, r, "umap", "label", "loss", None, None, limit)[0])) for r in relayouts]
    start = time.perf_counter()
    kd_tree(entry, "umap")
    out["KD-tree build (once per map)"] = [time.perf_counter() - start]
    rng = np.random.default_rng(seed)
    out["hover -> nearest sample"] = [_timed_once(lambda p=p: map_point_index(
        entry, "umap", {"points": [{"curveNumber": 99, "x": float(p[0]), "y": float(p[1])}]},
        limit)) for p in coords[rng.integers(len(coords), size=repeat)]]
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    box = {"range": {"x": [float(lo[0] + 0.3 * (hi - lo)[0]), float(lo[0] + 0.6 * (hi - lo)[0])],
                     "y": [float(lo[1] + 0.3 * (hi - lo)[1]), float(lo[1] + 0.6 * (hi - lo)[1])]}}
    angle = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    mid, rad = (lo + hi) / 2, (hi - lo) / 4
    lasso = {"lassoPoints": {"x": (mid[0] + rad[0] * np.cos(angle)).tolist(),
                             "y": (mid[1] + rad[1] * np.sin(angle)).tolist()}}
    out["box selection (all points)"] = timed(
        lambda: selection_from_region(entry, "umap", box), repeat)
    out["lasso selection, 200 vertices (all points)"] = timed(
        lambda: selection_from_region(entry, "umap", lasso), repeat)
    return out


def _timed_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m benchmarks.map", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=1_000_000, help="samples on the map")
    p.add_argument("--base", type=int, default=2000, help="analysed test digits to tile")
    p.add_argument("--checkpoint", help="an analysed run folder (default: train a tiny one)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=os.environ.get("LOUPE_DATA"))
    p.add_argument("--cache-dir")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--max-points", type=int, default=None,
                   help="points drawn as points (default: the dashboard's, 50,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--browser", action="store_true", help="also time it in headless Chromium")
    p.add_argument("--port", type=int, default=8124)
    p.add_argument("--json", help="also write the timings to this file")
    args = p.parse_args(argv)

    from core.errors import LoupeError
    from dashboard.state import RunRegistry
    from dashboard.views.population_scale import DEFAULT_MAX_POINTS

    limit = args.max_points or DEFAULT_MAX_POINTS
    with tempfile.TemporaryDirectory() as folder:
        try:
            if args.checkpoint:
                from analysis.session import AnalysisSession

                session = AnalysisSession.open(args.checkpoint, args.dataset, "test",
                                               data_root=args.data_root, device="cpu",
                                               cache_dir=args.cache_dir, limit=args.base,
                                               progress=False, projections=("umap",))
                session.run()
            else:
                session, _ = tiny_session(args.base, args.cache_dir, args.data_root,
                                          Path(folder))
        except LoupeError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        tiled = TiledSession(session, args.points, args.seed)
        registry = RunRegistry()
        start = time.perf_counter()
        entry = registry.add(tiled, "tiled")
        log.info("%s tiled to %d samples (table, ids and members in %.1f s)", entry.label,
                 args.points, time.perf_counter() - start)
        timings = server_timings(entry, args.repeat, limit, args.seed)
        if args.browser:
            from benchmarks.map_browser import browser_timings

            timings.update(browser_timings(registry, entry, folder, args.port, args.repeat,
                                           limit))
    lines = [f"{args.points:,} points (tiled from {len(session.dataset):,}); load average "
             + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"]
    for name, secs in timings.items():
        # seconds, shown in ms, unless the name states its unit ("[kB]", "[count]")
        unit = name[name.rindex("[") + 1:-1] if name.endswith("]") else "ms"
        values = np.asarray(secs) * (1000 if unit == "ms" else 1)
        lines.append(f"{name:<72} n={len(values):<3d} median {np.median(values):8.1f} "
                     f"{unit:<5} max {values.max():8.1f} {unit}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"points": args.points, "max_points": limit, "timings_s": timings,
                       "goals_s": GOALS}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
