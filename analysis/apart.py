"""A map function in a child interpreter: UMAP's layout off this process's GIL and core.

umap-learn optimises its layout in numba code compiled without ``nogil``, on
one core. For the 35 s a 70,000-sample map takes, it holds this process's GIL,
so no other thread runs Python meanwhile (another step, the dashboard's
callbacks) and the second core idles; above ``fit_max`` samples, so do the
fit on a sample and ``transform``'s placing of the others (about 430 s at
1,000,000). From :data:`APART_MIN` samples up the map runs in a child
interpreter (``python -m analysis.apart FOLDER``) instead, while this process
goes on with other work:

- the arguments go to a private temporary folder (mode 0700) as ``.npy``
  files and a ``call.json`` of plain values; the result comes back as one
  ``.npy`` file. Both sides read them with ``allow_pickle=False``;
- the child calls only a function of the fixed table :data:`FUNCTIONS`, by
  its name: nothing in the folder names code;
- same function, same arguments, same (seeded) result: the test compares the
  two ways bit for bit;
- an error in the child is raised here with the end of its standard error;
- the child never outlives the call: an exception in the calling thread kills
  it, so does a ``cancel`` event set from another thread (see
  :func:`cancelled_by`: a session's run sets it when it fails), and the child
  exits by itself when this process dies (it watches its standard input, a
  pipe from this process, for end of file).

numba's cache folder reaches the child through ``NUMBA_CACHE_DIR`` (set at
process start, see :mod:`cache.numba_dir`), so it loads the compiled UMAP.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# name -> "module:function"; the child calls nothing else.
FUNCTIONS = {"umap_map": "analysis.maps:umap_map",
             "umap_sampled": "analysis.maps:umap_sampled"}
# From this many samples a map runs apart; below, starting a child (about 3 s of
# imports) costs more than the core it frees.
APART_MIN = 20_000
_ROOT = Path(__file__).resolve().parent.parent
_CANCEL = threading.local()


@contextmanager
def cancelled_by(event: threading.Event) -> Iterator[None]:
    """Within the block, this thread's :func:`call_apart` kills its child once ``event``
    is set (checked every 0.2 s) and raises :class:`Cancelled`."""
    before = getattr(_CANCEL, "event", None)
    _CANCEL.event = event
    try:
        yield
    finally:
        _CANCEL.event = before


class Cancelled(RuntimeError):
    """The child was stopped because its caller no longer wants the result."""


def call_apart(function: str, args: Sequence[np.ndarray], **kwargs: Any) -> np.ndarray:
    """``FUNCTIONS[function](*args, **kwargs)`` computed in a child interpreter.

    Parameters
    ----------
    function : str
        A key of :data:`FUNCTIONS`.
    args : sequence of arrays
        Positional arguments (numeric arrays: no objects).
    **kwargs
        Keyword arguments that JSON keeps as they are (numbers, strings, None).

    Returns
    -------
    np.ndarray
        The function's result.

    Raises
    ------
    ValueError
        ``function`` is not in the table.
    RuntimeError
        The child failed; the message ends with its standard error.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"call_apart: no function {function!r}; known: {sorted(FUNCTIONS)}")
    with tempfile.TemporaryDirectory(prefix="loupe-apart-") as tmp:
        folder = Path(tmp)
        for i, a in enumerate(args):
            np.save(folder / f"arg{i}.npy", np.asarray(a), allow_pickle=False)
        (folder / "call.json").write_text(json.dumps(
            {"function": function, "args": len(args), "kwargs": kwargs}))
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(_ROOT), *([path] if path else [])])}
        cancel = getattr(_CANCEL, "event", None)
        with open(folder / "stderr.txt", "w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", "analysis.apart", str(folder)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err, env=env, cwd=_ROOT)
            try:
                while True:
                    try:
                        proc.wait(timeout=0.2)
                        break
                    except subprocess.TimeoutExpired:
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(f"{function} stopped: the run it belonged to "
                                            "ended") from None
            except BaseException:  # this thread's error, an interrupt, a cancel: no orphan
                proc.kill()
                proc.wait()
                raise
            finally:
                proc.stdin.close()
            err.seek(0)
            said = err.read()[-3000:]
        if proc.returncode != 0:
            raise RuntimeError(f"{function} failed in its child process (exit "
                               f"{proc.returncode}):\n{said}")
        if said.strip():
            log.debug("%s child process said: %s", function, said)
        return np.load(folder / "out.npy", allow_pickle=False)


def main(argv: list[str]) -> int:
    """The child: read ``call.json`` and the arrays in ``argv[0]``, write ``out.npy``."""
    from cache.numba_dir import configure_numba_cache

    configure_numba_cache()  # the parent's NUMBA_CACHE_DIR when it set one
    folder = Path(argv[0])
    call = json.loads((folder / "call.json").read_text())
    module, name = FUNCTIONS[call["function"]].split(":")
    func = getattr(importlib.import_module(module), name)
    args = [np.load(folder / f"arg{i}.npy", mmap_mode="r", allow_pickle=False)
            for i in range(call["args"])]
    np.save(folder / "out.npy", np.asarray(func(*args, **call["kwargs"])), allow_pickle=False)
    return 0


def _exit_with_parent() -> None:
    """In the child: exit when standard input ends (the parent closed it, or died)."""
    def watch() -> None:
        while os.read(0, 4096):  # unbuffered: no lock held at interpreter shutdown
            pass
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    _exit_with_parent()
    try:
        code = main(sys.argv[1:])
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)  # not a shutdown that waits on the watching thread
