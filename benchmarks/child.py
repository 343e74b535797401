"""Running a command line in a fresh interpreter and reading back what it measured; the
benchmarks' default model."""

from __future__ import annotations

import argparse
import json
import os
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


# Prepended to every child's code: it exits once the read end of a pipe from the
# benchmark ends, i.e. when the benchmark is gone (a kill of the benchmark alone
# would otherwise leave a long child running and skew the next measurement).
WATCH_PARENT = """import os as _os, threading as _threading
def _watch_parent(fd={fd}):
    while _os.read(fd, 4096):
        pass
    _os._exit(1)
_threading.Thread(target=_watch_parent, daemon=True).start()
"""


def run_child(code: str, args: list[str], env: dict[str, str], keep_stdout: bool = False,
              show_stderr: bool = False) -> dict:
    """Run ``code`` in a fresh interpreter; return its ``BENCH {...}`` line (and its stdout).

    ``show_stderr`` lets the child's standard error through (progress of a long run)
    instead of keeping it for the error message. The child ends with this process
    (see :data:`WATCH_PARENT`), and on any exception here, an interrupt included.
    """
    started = time.perf_counter()
    read, write = os.pipe()
    try:
        with subprocess.Popen([sys.executable, "-c", WATCH_PARENT.format(fd=read) + code, *args],
                              env=env, stdout=subprocess.PIPE, pass_fds=(read,),
                              stderr=None if show_stderr else subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parent.parent) as proc:
            os.close(read)
            read = -1
            try:
                stdout, stderr = proc.communicate()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
    wall = time.perf_counter() - started
    for line in stdout.splitlines():
        if line.startswith("BENCH "):
            out = json.loads(line[6:])
            out["wall_s"] = wall
            if keep_stdout:
                out["stdout"] = stdout
            return out
    detail = stderr[-3000:] if stderr else "(its errors are printed above)"
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
