"""benchmarks/child.py: a measured child reports back, and never outlives its benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks.child import run_child

REPO = Path(__file__).resolve().parents[2]


def test_the_child_s_bench_line_comes_back_with_its_wall_time():
    out = run_child('import json, sys\nprint("noise")\nprint("BENCH " + json.dumps('
                    '{"rc": 0, "arg": sys.argv[1]}))\n', ["seven"], dict(os.environ),
                    keep_stdout=True)
    assert out["rc"] == 0 and out["arg"] == "seven" and out["wall_s"] > 0
    assert out["stdout"].startswith("noise")


def test_a_child_without_a_bench_line_raises_with_its_error():
    with pytest.raises(RuntimeError, match=r"benchmark child failed \(1\)(.|\n)*ZeroDivision"):
        run_child("1 / 0\n", [], dict(os.environ))


def test_the_child_exits_when_the_benchmark_is_killed(tmp_path):
    """A benchmark killed alone (SIGKILL: no clean-up runs) takes its measured child along."""
    pid_file = tmp_path / "child.pid"
    bench = ("import os, sys\n"
             "from benchmarks.child import run_child\n"
             "code = ('import os, sys, time\\n'\n"
             "        'open(sys.argv[1], \"w\").write(str(os.getpid()))\\n'\n"
             "        'time.sleep(120)\\n')\n"
             "run_child(code, [sys.argv[1]], dict(os.environ))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", bench, str(pid_file)], env=env, cwd=REPO)
    child = None
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        child = psutil.Process(int(pid_file.read_text()))
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its benchmark"
            time.sleep(0.1)
    finally:
        parent.kill()
        if child is not None and _alive(child):
            child.kill()


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's exit status may wait for a reaper)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_no_descriptor_is_left_open():
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        run_child('print("BENCH {}")\n', [], dict(os.environ))
    with pytest.raises(RuntimeError):
        run_child("raise SystemExit(3)\n", [], dict(os.environ))
    assert set(os.listdir("/proc/self/fd")) <= before
