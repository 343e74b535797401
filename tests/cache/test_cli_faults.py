"""Cache faults as a user meets them through ``python -m analysis run``: one ``error:`` line,
exit code 2, no traceback, and nothing already stored lost."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main
from cache.index import value_files

REPO = Path(__file__).resolve().parents[2]


def run_args(tiny_run: Path, cache: Path, data_root: str | None, *more: str) -> list[str]:
    extra = ["--data-root", data_root] if data_root else []
    return ["run", "--checkpoint", str(tiny_run), "--cache-dir", str(cache), "--device", "cpu",
            "--limit", "60", "--mc-samples", "0", "--projection", *extra, *more]


def statuses(out: str) -> dict[str, str]:
    """``{step: computed|cached}`` from the summary's step lines."""
    return dict(re.findall(r"^\s{4}(\w+)\s+(computed|cached)\s", out, re.M))


def run_main(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def filled(tiny_run, tmp_path, data_root, capsys):
    """A cache holding every step of the 60-sample run; returns ``(cache, args)``."""
    def fill(cache: Path) -> list[str]:
        args = run_args(tiny_run, cache, data_root)
        code, out, err = run_main(capsys, args)
        assert code == 0, err
        assert set(statuses(out).values()) == {"computed"}
        return args
    return fill


def test_read_only_cache_serves_and_refuses_to_compute(filled, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    args = filled(cache)
    import cache.index as index

    def erofs(folder, **settings):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))

    monkeypatch.setattr(index, "open_index", erofs)  # every write at the folder is refused
    monkeypatch.setattr("cache.store.open_index", erofs)
    code, out, err = run_main(capsys, args)
    assert code == 0, err
    assert statuses(out) and set(statuses(out).values()) == {"cached"}
    code, out, err = run_main(capsys, [*args, "--k", "5"])  # neighbors must be computed
    assert_one_error_line(code, err, f"cache folder {cache} is read-only and holds no result "
                                     "for step neighbors of", "pass --cache-dir to a writable")


def test_disk_full_ends_with_one_error_line_and_loses_nothing(filled, tmp_path, capsys,
                                                             monkeypatch):
    cache = tmp_path / "cache"
    args = filled(cache)
    files_before = sorted(value_files(cache / "artifacts"))
    import diskcache.core

    from cache.index import SafeDisk

    def full(self, full_path, iterator, mode, encoding=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_inline(self, value, read, key=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(diskcache.core.Disk, "_write", full)
    monkeypatch.setattr(SafeDisk, "store", full_inline)  # small values go to SQLite itself
    code, out, err = run_main(capsys, [*args, "--k", "5"])
    assert_one_error_line(code, err, f"cache folder {cache}: the disk is full (No space left on "
                                     "device), so the result for step neighbors of",
                          "--cache-dir")
    monkeypatch.undo()
    assert sorted(value_files(cache / "artifacts")) == files_before
    code, out, err = run_main(capsys, args)  # every earlier result is still there
    assert code == 0 and set(statuses(out).values()) == {"cached"}, err


def test_a_real_full_disk_through_a_real_process(tiny_run, tmp_path, data_root):
    """A 256 KB tmpfs fills up during the run: exit 2, one error line, no traceback."""
    where = tmp_path / "mnt"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "analysis",
                               *run_args(tiny_run, where / "c", data_root, "--limit", "2000")],
                              cwd=REPO, env=env, text=True, capture_output=True,
                              timeout=300)
        assert_one_error_line(proc.returncode, proc.stderr, f"cache folder {where / 'c'}",
                              "the disk is full", "--cache-dir")
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_damaged_index_heals_through_the_cli(filled, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    args = filled(cache)
    db = cache / "artifacts" / "cache.db"
    db.write_bytes(b"garbage" * 100)
    code, out, err = run_main(capsys, args)
    assert code == 0, err
    assert set(statuses(out).values()) == {"computed"}  # recomputed
    assert "moved aside to cache.db.damaged-" in caplog.text
    code, out, err = run_main(capsys, args)
    assert code == 0 and set(statuses(out).values()) == {"cached"}
