"""cache/numba_dir.py: numba's cache is private to the user and never in a shared folder."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cache.numba_dir import configure_numba_cache, default_numba_cache_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def numba_env(monkeypatch, tmp_path):
    """Whatever a test points numba at is put back afterwards (env and numba's config)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        monkeypatch.setattr(numba_config, "CACHE_DIR", numba_config.CACHE_DIR)
    return tmp_path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_default_folder_is_per_user_and_private(numba_env):
    used = configure_numba_cache()
    assert used == numba_env / "xdg" / "loupe" / f"numba-{os.geteuid()}"
    assert used == default_numba_cache_dir()
    assert mode_of(used) == 0o700 and os.environ["NUMBA_CACHE_DIR"] == str(used)
    assert configure_numba_cache() == used  # a second call keeps it


def test_an_explicit_numba_cache_dir_is_kept_when_safe(numba_env, monkeypatch):
    mine = numba_env / "mine"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(mine))
    assert configure_numba_cache() == mine and mode_of(mine) == 0o700


def assert_refused(folder: Path, caplog, why: str) -> None:
    with caplog.at_level(logging.WARNING, logger="cache.numba_dir"):
        assert configure_numba_cache(folder) is None
    assert f"numba cache folder {folder} {why}" in caplog.text
    assert "compiled-code cache is off for this process" in caplog.text
    instead = Path(os.environ["NUMBA_CACHE_DIR"])
    assert instead != folder and instead.is_dir() and list(instead.iterdir()) == []
    assert mode_of(instead) == 0o700 and instead.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_group_or_world_writable_folder_is_refused_with_a_warning(numba_env, caplog, mode):
    shared = numba_env / "shared"
    shared.mkdir()
    shared.chmod(mode)
    assert_refused(shared, caplog, f"is writable by its group or by everyone (mode {mode:04o})")


def test_a_folder_owned_by_someone_else_is_refused_with_a_warning(numba_env, caplog,
                                                                  monkeypatch):
    theirs = numba_env / "theirs"
    theirs.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)  # nobody
    else:  # cannot give a folder away: it reads as another user's
        real_stat = os.stat
        monkeypatch.setattr("cache.numba_dir.os.stat", lambda p, *a, **k: os.stat_result(
            (*real_stat(p)[:4], os.geteuid() + 1, *real_stat(p)[5:])))
    uid = 65534 if os.geteuid() == 0 else os.geteuid() + 1
    assert_refused(theirs, caplog, f"is owned by uid {uid}, not by this user")


def test_sessions_leave_the_environment_alone():
    """Only the CLIs' start sets NUMBA_CACHE_DIR; nothing in a request path does."""
    for module in ("analysis/session.py", "analysis/engine.py", "analysis/steps/projection.py",
                   "analysis/steps/ood.py", "dashboard/app.py", "dashboard/state.py"):
        assert "NUMBA_CACHE_DIR" not in (REPO / module).read_text(), module


# -- a planted index file ----------------------------------------------------------------------
JIT_MODULE = """
from numba import njit

@njit(cache=True)
def add(a, b):
    return a + b
"""

VICTIM = textwrap.dedent("""
    import os, pathlib, pickle, sys
    from cache.numba_dir import configure_numba_cache

    where = sys.argv[1]
    used = configure_numba_cache()
    import jitted  # decorating picks numba's cache folder

    index = pathlib.Path(jitted.add._cache._cache_file._index_path)

    class Planted:
        def __reduce__(self):
            return (pathlib.Path.touch, (pathlib.Path(os.environ["MARKER"]),))

    payload = pickle.dumps(Planted())
    if where == "used":  # the control: numba does load an index file found where it looks
        targets = [index]
    else:  # Loupe's (shared) cache folder, where numba's cache used to be, and the module's tree
        targets = [pathlib.Path(os.environ["LOUPE_CACHE"]) / "numba" / index.relative_to(used),
                   pathlib.Path(jitted.__file__).parent / "__pycache__" / index.name]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
    print(used, index, flush=True)
    assert jitted.add(1, 2) == 3
""")


@pytest.mark.parametrize("where", ["used", "old places"])
def test_an_index_file_planted_in_a_shared_cache_is_never_loaded(tmp_path, where):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "jitted.py").write_text(JIT_MODULE)
    marker = tmp_path / "code-ran"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "mod")]),
               XDG_CACHE_HOME=str(tmp_path / "xdg"), LOUPE_CACHE=str(tmp_path / "cache"),
               MARKER=str(marker))
    proc = subprocess.run([sys.executable, "-c", VICTIM, where], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    used, index = proc.stdout.split()
    assert Path(used) == tmp_path / "xdg" / "loupe" / f"numba-{os.geteuid()}"
    assert Path(index).is_relative_to(used) and mode_of(Path(used)) == 0o700
    if where == "used":
        assert marker.exists(), "the planted file should be loaded where numba looks"
    else:
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists()
        assert (tmp_path / "cache" / "numba").is_dir()  # planted there, and ignored
