"""``python -m analysis bench --scale 10000,70000[,1000000]``: how the analysis grows with N.

For each size N, a fresh process analyses ``mnist-scale:N`` (N augmented MNIST
training digits in a memory-mapped store, see :mod:`core.scale_data`) with
every step, from an empty artifact cache, as the command line runs them
(:meth:`AnalysisSession.run`: one after another, UMAP's layout in a child process
beside them). Before timing, one untimed run compiles numba (UMAP) for all sizes;
each size's image store is built when its session opens, timed apart as
"opening" and not counted in the steps. The child records the total wall and
CPU time (its own and its children's), and per step its wall time and the peak
resident memory of the process and its children while it ran (psutil, sampled
every 50 ms; overlapping steps share their peaks), and the peak of its anonymous
part (``RssAnon``: RSS also counts the pages of memory-mapped cache files a step
reads, which the kernel can drop; the anonymous part is what the processes
themselves hold). It reads back what the steps measured of themselves: the kNN
recall when the graph was approximate and the maps' trustworthiness. Between two
sizes, the growth exponent of each step is ``log(t2 / t1) / log(n2 / n1)`` (1 =
linear). ``--executor ray`` repeats the
sizes on a local Ray with the same CPUs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.child import run_child, train_default

# The child: one analysis of mnist-scale:N, step by step, with a memory sampler.
SCALE_CHILD = """
import json, sys, threading, time
import psutil
from analysis.executor import make_executor
from analysis.session import AnalysisSession

checkpoint, n, cache, data_root, mc, executor, address, background = sys.argv[1:9]
proc = psutil.Process()

def anon(pid="self"):  # resident anonymous memory (not file pages mapped from the cache)
    with open(f"/proc/{pid}/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("RssAnon"))

def memory():  # (RSS, anonymous RSS) of this process and its children (UMAP's, Ray's)
    rss, held = proc.memory_info().rss, anon()
    for child in proc.children(recursive=True):
        try:
            rss, held = rss + child.memory_info().rss, held + anon(child.pid)
        except (psutil.Error, OSError, StopIteration):  # ended meanwhile
            pass
    return rss, held

history = []  # (perf_counter, RSS, anonymous RSS, CPU seconds), every 50 ms
stop = threading.Event()

def now():
    cpu = proc.cpu_times()
    return (time.perf_counter(), *memory(),
            cpu.user + cpu.system + cpu.children_user + cpu.children_system)

def sample():
    while not stop.is_set():
        history.append(now())
        time.sleep(0.05)

threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
executor = make_executor(executor, address or None)
executor.prepare()  # as the command line does: Ray starts its workers while the data load
s = AnalysisSession.open(checkpoint, f"mnist-scale:{n}", "train", cache_dir=cache,
                         data_root=data_root or None, device="cpu", mc_samples=int(mc),
                         progress=False, executor=executor)
opened = time.perf_counter() - started
history.append(now())
base = history[-1]  # the totals count the steps, not the opening
records = s.run(background=background == "1")  # by default as the command line runs them
history.append(now())
stop.set()
steps = []
for r in records:  # a step's peaks: over the samples taken while it ran (others may overlap)
    inside = [h for h in history if r.started <= h[0] <= r.started + r.seconds] or \
        [min(history, key=lambda h: abs(h[0] - r.started))]
    steps.append({"step": r.name, "seconds": r.seconds, "started_s": r.started - started,
                  "cpu_s": inside[-1][3] - inside[0][3],
                  "peak_rss_mb": max(h[1] for h in inside) / 2**20,
                  "peak_anon_mb": max(h[2] for h in inside) / 2**20,
                  "summary": {k: v for k, v in s.engine.get(r.name).summary.items()
                              if isinstance(v, (int, float, str, bool))}})
    print(f"  N={int(n):,} {r.name}: {r.seconds:.1f} s from {r.started - started:.1f} s "
          f"(process CPU meanwhile {steps[-1]['cpu_s']:.1f} s), "
          f"peak {steps[-1]['peak_rss_mb']:.0f} MB "
          f"(anonymous {steps[-1]['peak_anon_mb']:.0f})", file=sys.stderr, flush=True)
s.engine.executor.close()
hwm = max(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")),
          max(h[1] for h in history) // 1024)
print("BENCH " + json.dumps({"n": int(n), "open_s": opened, "steps": steps,
                             "total_s": time.perf_counter() - started,
                             "steps_s": history[-1][0] - base[0],
                             "cpu_s": history[-1][3] - base[3],
                             "peak_rss_mb": hwm / 1024,
                             "peak_anon_mb": max(h[2] for h in history) / 2**20}))
"""

# Summary keys the steps report about their own quality, shown when present.
QUALITY_KEYS = ("knn_method", "ann_recall", "ann_recall_at_10", "trustworthiness",
                "trustworthiness_fitted", "trustworthiness_held_out")


def parse_sizes(text: str) -> list[int]:
    """``"10000,70000"`` -> ``[10000, 70000]`` (positive, increasing)."""
    from core.errors import ConfigError

    try:
        sizes = [int(t.replace("_", "")) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--scale {text!r}: give sample counts separated by commas, "
                          "e.g. --scale 10000,70000.") from None
    if not sizes or any(n < 100 for n in sizes) or sizes != sorted(set(sizes)):
        raise ConfigError(f"--scale {text!r}: give increasing sample counts of at least 100, "
                          "e.g. --scale 10000,70000.")
    return sizes


def growth(rows: list[dict]) -> dict[str, list[float | None]]:
    """Per step, the exponent ``log(t2/t1) / log(n2/n1)`` between consecutive sizes."""
    out: dict[str, list[float | None]] = {}
    for a, b in zip(rows, rows[1:], strict=False):
        ta = {s["step"]: s["seconds"] for s in a["steps"]}
        for s in b["steps"]:
            t1, t2 = ta.get(s["step"]), s["seconds"]
            ok = t1 is not None and t1 > 0.05 and t2 > 0
            out.setdefault(s["step"], []).append(
                math.log(t2 / t1) / math.log(b["n"] / a["n"]) if ok else None)
    return out


def scale_bench(checkpoint: str, sizes: list[int], data_root: str | None, work: Path,
                mc_samples: int = 20, executors: tuple[str, ...] = ("inprocess",),
                stores: str | None = None, sequential: bool = False) -> dict:
    """Run the child for each size (and executor); returns rows and growth exponents.

    ``stores`` keeps the ``mnist-scale:N`` image stores in that folder between
    benchmarks (building the 1,000,000-sample one takes minutes); default: in ``work``.
    ``sequential`` runs every step in turn (no UMAP beside the others), for comparison.
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba"),  # stores live under LOUPE_CACHE
           "LOUPE_CACHE": str(Path(stores).resolve()) if stores else str(work / "stores")}
    results: dict = {"sizes": sizes, "mc_samples": mc_samples, "runs": {},
                     "sequential": sequential}
    # Untimed: numba compiles UMAP once (on at most 2,000 samples).
    print("scale bench: warming the numba cache ...", file=sys.stderr, flush=True)
    run_child(SCALE_CHILD, [checkpoint, str(min(sizes[0], 2000)), str(work / "cache-warm"),
                            data_root or "", "0", "inprocess", "", "1"], env)
    for executor in executors:
        rows = []
        for n in sizes:
            print(f"scale bench: {executor}, N={n:,} ...", file=sys.stderr, flush=True)
            cache = work / f"cache-{executor}-{n}"
            row = run_child(SCALE_CHILD, [checkpoint, str(n), str(cache), data_root or "",
                                          str(mc_samples), executor, "",
                                          "0" if sequential else "1"], env,
                            show_stderr=True)
            rows.append(row)
        results["runs"][executor] = {"rows": rows, "growth": growth(rows)}
    return results


def _short(n: int) -> str:
    """``300`` -> ``300``, ``70000`` -> ``70k``, ``1000000`` -> ``1M``."""
    for size, unit in ((1_000_000, "M"), (1000, "k")):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{unit}"
    return str(n)


def format_scale(results: dict) -> str:
    """A plain-text table per executor: seconds and peak MB per step and size."""
    lines = [f"growth (mnist-scale:N, all steps, MC T={results['mc_samples']}, fresh cache"
             + (", every step in turn)" if results.get("sequential") else ")")]
    for executor, run in results["runs"].items():
        rows = run["rows"]
        head = "step".ljust(22) + "".join(f"{r['n']:>12,} s   MB" for r in rows) + \
            "".join(f"  exp {_short(a['n'])}-{_short(b['n'])}"
                    for a, b in zip(rows, rows[1:], strict=False))
        lines += ["", f"[{executor}]", head]
        for step in rows[0]["steps"]:
            name = step["step"]
            cells = ""
            for r in rows:
                s = next((x for x in r["steps"] if x["step"] == name), None)
                cells += f"{s['seconds']:>14.1f} {s['peak_rss_mb']:>5.0f}" if s else " " * 20
            exps = run["growth"].get(name, [])
            cells += "".join(f"{e:>13.2f}" if e is not None else " " * 13 for e in exps)
            lines.append(name.ljust(22) + cells)
        lines.append("opening (data, store)".ljust(22) + "".join(
            f"{r['open_s']:>14.1f}      " for r in rows))
        lines.append("total, peak".ljust(22) + "".join(
            f"{r['total_s']:>14.1f} {r['peak_rss_mb']:>5.0f}" for r in rows))
        if all("steps_s" in r for r in rows):
            lines.append("steps wall, CPU s".ljust(22) + "".join(
                f"{r['steps_s']:>14.1f} {r['cpu_s']:>5.0f}" for r in rows))
        if all("peak_anon_mb" in r for r in rows):
            lines.append("peak anonymous MB".ljust(22) + "".join(
                f"{r['peak_anon_mb']:>20.0f}" for r in rows))
        for r in rows:
            quality = {f"{s['step']}.{k}": v for s in r["steps"]
                       for k, v in s["summary"].items() if k in QUALITY_KEYS}
            if quality:
                lines.append(f"  N={r['n']:,}: " + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in quality.items()))
    return "\n".join(lines)


def run_scale(args: argparse.Namespace, checkpoint: str | None, work: Path) -> dict:
    sizes = parse_sizes(args.scale)
    checkpoint = checkpoint or train_default(args, "cpu", work)
    executors = ("inprocess", "ray") if getattr(args, "executor", "") == "ray" else \
        ("inprocess",)
    return scale_bench(checkpoint, sizes, args.data_root, work, args.mc_samples, executors,
                       getattr(args, "stores", None), getattr(args, "sequential", False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--scale", default="10000,70000")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"))
    p.add_argument("--stores", default=None,
                   help="folder that keeps the image stores between benchmarks")
    p.add_argument("--sequential", action="store_true",
                   help="every step in turn, UMAP not beside the others (for comparison)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loupe-scale-") as tmp:
        results = run_scale(args, args.checkpoint, Path(tmp))
    print(format_scale(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
