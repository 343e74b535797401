"""``python -m benchmarks.server``: server-side timings of the dashboard's hot paths.

Measured with the same functions the callbacks call:

* **click -> heatmap**: a click's (curveNumber, pointIndex) mapped to the sample,
  the sample chosen, and its Integrated Gradients heatmap figure built and
  serialised, for samples never explained before (computed) and again (read
  back from the cache). The background job's process start is timed apart.
* **population figure at N points** (default 70,000): the run's real table
  tiled to N rows with jitter, figure built and serialised to JSON as Dash does.
* **re-colour / re-size**: the ``dash.Patch`` built and serialised (no coordinates).
* with ``--browser``: the same in headless Chromium, end to end
  (:mod:`benchmarks.browser`): first render of the map, a re-colour,
  a click on the map until the heatmap is drawn.
* with ``--clients N --seconds S``: instead of the above, a load test of N
  simulated users on a server on 127.0.0.1 (:mod:`benchmarks.load`):
  errors, p50/p95 per request kind, server memory before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.server")


@dataclass
class Timing:
    name: str
    seconds: list[float]

    def row(self) -> str:
        ms = np.asarray(self.seconds) * 1000
        return (f"{self.name:<46} n={len(ms):<4d} median {np.median(ms):8.1f} ms   "
                f"p95 {np.percentile(ms, 95):8.1f} ms   max {ms.max():8.1f} ms")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def to_json(obj) -> str:
    """Serialise like Dash does (plotly's encoder)."""
    from plotly.io.json import to_json_plotly

    return to_json_plotly(obj)


def bench_click_to_heatmap(entry, samples: int, seed: int) -> list[Timing]:
    """(curveNumber, pointIndex) -> sample -> heatmap figure JSON, uncached then cached."""
    from dashboard.views.sample import heatmap_view, resolve_sample

    rng = np.random.default_rng(seed)
    members = entry.members
    picks = []
    for _ in range(samples):
        curve = int(rng.integers(len(members)))
        picks.append((curve, int(rng.integers(len(members[curve])))))

    def click(curve: int, point: int) -> None:
        index = int(entry.points_to_indices([{"curveNumber": curve, "pointIndex": point}])[0])
        store = resolve_sample(entry, str(entry.session.dataset.sample_ids[index]), None)
        i = entry.index_of(store["id"])
        to_json(heatmap_view(entry, i, "integrated_gradients", "pred"))

    first = [timed(lambda c=c, p=p: click(c, p), 1)[0] for c, p in picks]
    again = [timed(lambda c=c, p=p: click(c, p), 1)[0] for c, p in picks]
    return [Timing("click -> IG heatmap (computed)", first),
            Timing("click -> IG heatmap (cached)", again)]


def bench_background_start(repeat: int) -> list[Timing]:
    """Starting a background job and reading its result: a thread (Loupe) vs a fork (Dash)."""
    import tempfile

    from multiprocess import Process

    from dashboard.jobs import background_manager

    with tempfile.TemporaryDirectory() as folder:
        manager = background_manager(Path(folder))

        def job_fn(key, _progress_key, _args, _context) -> None:
            manager.handle.set(key, 1)

        def thread_job() -> None:
            key = f"bench-{time.perf_counter_ns()}"
            manager.call_job_fn(key, job_fn, [], {})
            while not manager.result_ready(key):
                time.sleep(0.0005)

        def forked_process() -> None:
            proc = Process(target=lambda: None)
            proc.start()
            proc.join()

        return [Timing("background job start -> result (thread)", timed(thread_job, repeat)),
                Timing("forked process start+exit (Dash's default)",
                       timed(forked_process, repeat))]


def tiled_entry_arrays(entry, points: int, seed: int) -> dict:
    """The run's coordinates, labels and columns tiled to ``points`` rows (jittered)."""
    rng = np.random.default_rng(seed)
    n = len(entry.table)
    take = np.resize(np.arange(n), points)
    coords = entry.session.projection(entry.session.projections[0])[take]
    coords = (coords + rng.normal(0, 0.05, coords.shape)).astype(np.float32)
    labels = entry.session.dataset.labels[take]
    members = [np.flatnonzero(labels == c) for c in range(len(entry.class_names))]
    return {"coords": coords, "labels": labels, "members": members,
            "loss": entry.table["loss"].to_numpy()[take],
            "uncertainty": entry.table["uncertainty"].to_numpy()[take],
            "pred": entry.table["pred"].to_numpy()[take]}


def bench_population(entry, points: int, repeat: int, seed: int) -> tuple[list[Timing], dict]:
    from dash import Patch

    from dashboard import figures

    a = tiled_entry_arrays(entry, points, seed)
    names = entry.class_names
    label_color = figures.color_spec(a["labels"], "class", "label", names)
    sizes = figures.size_spec(a["loss"])
    sizes_unc = figures.size_spec(a["uncertainty"])

    def build() -> str:
        return to_json(figures.population_figure(a["coords"], a["members"], names, label_color,
                                                 sizes, "umap", [], None))

    def recolor(values, kind, title) -> str:
        spec = figures.color_spec(values, kind, title, names)
        per_trace, axis = figures.recolor_payload(spec, a["members"])
        patch = Patch()
        for i, v in enumerate(per_trace):
            patch["data"][i]["marker"]["color"] = v
        patch["layout"]["coloraxis"] = axis
        return to_json(patch.to_plotly_json())

    def resize() -> str:
        patch = Patch()
        for i, v in enumerate(figures.resize_payload(sizes_unc, a["members"])):
            patch["data"][i]["marker"]["size"] = v
        return to_json(patch.to_plotly_json())

    sizes_bytes = {"figure": len(build()),
                   "recolour patch": len(recolor(a["uncertainty"], "numeric", "uncertainty")),
                   "resize patch": len(resize())}
    return [Timing(f"population figure build+JSON ({points:,} pts)", timed(build, repeat)),
            Timing(f"re-colour by uncertainty, patch ({points:,} pts)",
                   timed(lambda: recolor(a["uncertainty"], "numeric", "uncertainty"), repeat)),
            Timing(f"re-colour by prediction, patch ({points:,} pts)",
                   timed(lambda: recolor(a["pred"], "class", "pred"), repeat)),
            Timing(f"re-size by uncertainty, patch ({points:,} pts)", timed(resize, repeat))
            ], sizes_bytes


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/mnist_cnn")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", default="test")
    p.add_argument("--data-root")
    p.add_argument("--cache-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=40, help="clicks to time")
    p.add_argument("--points", type=int, default=70_000, help="points on the map")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--seed", type=int, default=None,
                   help="sample choice (default: from the clock, so heatmaps are new)")
    p.add_argument("--mc-samples", type=int, default=None,
                   help="MC-dropout passes of the session (0 skips the step)")
    p.add_argument("--projections", nargs="+", default=["umap", "tsne"])
    p.add_argument("--browser", action="store_true",
                   help="also time the population page in headless Chromium")
    p.add_argument("--port", type=int, default=8123, help="port of the --browser server")
    p.add_argument("--json", help="also write the timings to this file")
    p.add_argument("--clients", type=int, default=0,
                   help="load test: this many simulated users against a server on 127.0.0.1")
    p.add_argument("--seconds", type=float, default=60, help="load test duration")
    args = p.parse_args(argv)

    import torch

    from analysis.session import AnalysisSession
    from core.errors import LoupeError
    from dashboard.state import RunRegistry

    seed = args.seed if args.seed is not None else int(time.time())
    try:
        session = AnalysisSession.open(args.checkpoint, args.dataset, args.split,
                                       data_root=args.data_root, cache_dir=args.cache_dir,
                                       device=args.device, progress=False,
                                       mc_samples=args.mc_samples,
                                       projections=tuple(args.projections))
        session.run()
    except LoupeError as exc:
        log.error("%s", exc)
        return exc.exit_code
    registry = RunRegistry()
    entry = registry.add(session, args.checkpoint)
    _ = entry.table, entry.members  # built once at start-up in the app too
    log.info("%s: %d samples, torch threads %d", entry.label, len(entry.table),
             torch.get_num_threads())
    if args.clients:
        return load_main(registry, entry, args)
    timings = bench_click_to_heatmap(entry, args.samples, seed)
    timings += bench_background_start(args.repeat)
    pop, sizes = bench_population(entry, args.points, args.repeat, seed)
    timings += pop
    if args.browser:
        import tempfile

        from benchmarks.browser import browser_timings
        from dashboard.app import create_app
        from dashboard.config import DashboardConfig
        from dashboard.views.sample import warm_up_attribution

        with tempfile.TemporaryDirectory() as jobs:
            app = create_app(DashboardConfig(checkpoints=[], cache_dir=jobs, progress=False),
                             registry)
            warm_up_attribution(entry)  # as python -m dashboard does before serving
            for name, secs in browser_timings(app, entry, args.port, args.repeat).items():
                timings.append(Timing(f"browser: {name} ({len(entry.table):,} pts)", secs))
    lines = [f"{entry.label}, {len(entry.table):,} samples; load average "
             + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"]
    lines += [t.row() for t in timings]
    lines += [f"payload {k}: {v / 1e6:.2f} MB" for k, v in sizes.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"dataset": entry.label, "samples": len(entry.table), "seed": seed,
                       "timings_s": {t.name: t.seconds for t in timings},
                       "payload_bytes": sizes}, fh, indent=1)
    return 0


def load_main(registry, entry, args) -> int:
    """``--clients N --seconds S``: the load test (:mod:`benchmarks.load`)."""
    import tempfile

    from benchmarks.load import run_load
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig
    from dashboard.views.sample import warm_up_attribution

    with tempfile.TemporaryDirectory() as jobs:
        app = create_app(DashboardConfig(checkpoints=[], cache_dir=jobs, progress=False),
                         registry)
        warm_up_attribution(entry)
        load_before = os.getloadavg()
        result, stats = run_load(app, entry, args.clients, args.seconds, args.port)
    lines = [f"{entry.label}, {len(entry.table):,} samples; {args.clients} clients for "
             f"{args.seconds:g} s; load average before "
             + " ".join(f"{v:.2f}" for v in load_before) + ", after "
             + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"]
    lines += result.rows()
    lines.append(f"errors: {sum(len(e) for e in result.errors.values())}")
    lines.append(f"server RSS {stats['rss_before_mb']:.0f} MB -> {stats['rss_after_mb']:.0f} MB; "
                 f"server threads at most {stats['server_threads_max']}; "
                 f"jobs {stats['jobs']}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"timings_s": dict(result.timings), "errors": dict(result.errors),
                       **stats}, fh, indent=1)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
