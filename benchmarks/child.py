"""Running a command line in a fresh interpreter and reading back what it measured; the
benchmarks' default model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# ``python -m analysis ARGV`` in a child that prints its wall time and peak memory.
CHILD = """
import json, resource, sys, time
sys.argv = ["python -m analysis"] + {argv!r}
from analysis.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
try:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("BENCH " + json.dumps({{"rc": rc, "seconds": time.perf_counter() - t,
      "peak_rss_mb": peak / 1024}}))
"""


def run_child(code: str, args: list[str], env: dict[str, str], keep_stdout: bool = False,
              show_stderr: bool = False) -> dict:
    """Run ``code`` in a fresh interpreter; return its ``BENCH {...}`` line (and its stdout).

    ``show_stderr`` lets the child's standard error through (progress of a long run)
    instead of keeping it for the error message.
    """
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                          stderr=None if show_stderr else subprocess.PIPE,
                          text=True, cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - started
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            out = json.loads(line[6:])
            out["wall_s"] = wall
            if keep_stdout:
                out["stdout"] = proc.stdout
            return out
    detail = proc.stderr[-3000:] if proc.stderr else "(its errors are printed above)"
    raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{detail}")


def train_default(args: argparse.Namespace, device: str, work: Path,
                  dataset: str = "mnist") -> str:
    """Train mnist_cnn for 3 epochs into ``work`` (when no --checkpoint is given)."""
    from models.train import TrainConfig, train

    checkpoint = str(work / "mnist_cnn")
    print("training mnist_cnn (3 epochs) for the benchmark ...", file=sys.stderr)
    train(TrainConfig(dataset=dataset), checkpoint, device=device, data_root=args.data_root,
          progress=False)
    return checkpoint
