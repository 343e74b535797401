"""``python -m benchmarks.stepmem``: the peak memory one step adds, at several sizes.

For each size N and each step, a fresh process opens ``mnist-scale:N`` (the
memory-mapped store under ``$LOUPE_CACHE``), reads (or computes, once, into a
persistent artifact cache under ``--work``) the artifacts the step requires,
and then runs the step itself (``step.run``, nothing written to any cache)
while measuring:

- ``rss_mb``: the peak resident memory during the run minus the resident memory
  before it (the kernel's exact high-water mark, reset through
  ``/proc/self/clear_refs`` just before the run). Resident memory counts the pages
  of the memory-mapped images the step reads: at most N x C x H x W bytes,
  reclaimable page cache rather than memory the step holds.
- ``anon_mb``: the same for anonymous memory only (``RssAnon``, sampled every
  10 ms): what the step allocates.
- ``traced_mb`` (``--trace``): the peak of Python's and numpy's allocations
  (``tracemalloc``), and the lines that held most of it at that peak.

Example::

    LOUPE_DATA=/work/shared/data LOUPE_CACHE=/tmp/stepmem/stores \\
        python -m benchmarks.stepmem --checkpoint /tmp/lead/run_full \\
        --sizes 50000,200000 --steps slices,pixel_centroids,duplicates,image_metadata
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.child import run_child

# The child: the step's inputs from the persistent cache, then the step, measured.
STEP_CHILD = """
import gc, json, sys, threading, time
from analysis.registry import StepContext, get_step
from analysis.session import AnalysisSession

checkpoint, n, step_name, deps_cache, trace = sys.argv[1:6]

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

s = AnalysisSession.open(checkpoint, f"mnist-scale:{n}", "train", cache_dir=deps_cache,
                         device="cpu", mc_samples=0, projections=(), progress=False)
step = get_step(step_name)
inputs = {r: s.engine.get(r) for r in step.requires}
ctx = StepContext(s.model, s.dataset, s.device, inputs, {}, False, s.engine.executor)
config = s.engine.config(step_name)
gc.collect()
if trace == "1":
    import tracemalloc
    tracemalloc.start(8)
anon = [status("RssAnon")]
base_rss, base_anon = status("VmRSS"), anon[0]
stop = threading.Event()

def sample():
    while not stop.is_set():
        anon[0] = max(anon[0], status("RssAnon"))
        time.sleep(0.01)

threading.Thread(target=sample, daemon=True).start()
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
t = time.perf_counter()
art = step.run(ctx, config)
seconds = time.perf_counter() - t
stop.set()
anon[0] = max(anon[0], status("RssAnon"))
out = {"n": int(n), "step": step_name, "seconds": seconds,
       "rss_mb": (status("VmHWM") - base_rss) / 2**20,
       "anon_mb": (anon[0] - base_anon) / 2**20}
if trace == "1":
    _, peak = tracemalloc.get_traced_memory()
    out["traced_mb"] = peak / 2**20
print("BENCH " + json.dumps(out))
"""


def measure(checkpoint: str, n: int, step: str, work: Path, trace: bool = False) -> dict:
    """One fresh process: the peak memory ``step`` adds on ``mnist-scale:n``."""
    deps = work / f"deps-{n}"
    return run_child(STEP_CHILD, [checkpoint, str(n), step, str(deps), "1" if trace else "0"],
                     dict(os.environ))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stepmem", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--sizes", default="50000,200000")
    p.add_argument("--steps", default="slices,pixel_centroids,duplicates,image_metadata")
    p.add_argument("--work", default="/tmp/stepmem", help="persistent cache of the inputs")
    p.add_argument("--trace", action="store_true", help="also tracemalloc's peak (slower)")
    p.add_argument("--out", default=None, help="append one JSON line per measurement")
    args = p.parse_args(argv)
    work = Path(args.work)
    print(f"{'step':<18}{'N':>10}{'rss MB':>10}{'anon MB':>10}{'s':>8}"
          + (f"{'traced MB':>11}" if args.trace else ""))
    for n in (int(x) for x in args.sizes.split(",")):
        for step in args.steps.split(","):
            row = measure(args.checkpoint, n, step, work, args.trace)
            print(f"{step:<18}{n:>10,}{row['rss_mb']:>10.0f}{row['anon_mb']:>10.0f}"
                  f"{row['seconds']:>8.1f}"
                  + (f"{row['traced_mb']:>11.0f}" if args.trace else ""), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
