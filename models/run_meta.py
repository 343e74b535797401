"""``run.json``: the one reader and its validator.

Everything that reads a run folder's metadata (loading a model, listing runs,
the Experiments page) goes through :func:`read_run_meta`, so a malformed file
gives the same :class:`~core.errors.CheckpointError` everywhere, naming the
file and the field. Reading never imports anything: ``model_spec`` and ``task``
are kept as strings (see :func:`code_specs`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from core.errors import CheckpointError

WEIGHTS_FILE = "model.pt"
META_FILE = "run.json"
SHA_FIELD = "weights_sha256"
ONNX_PREFIX = "onnx:"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(path: Path, field: str, expected: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return CheckpointError(f"{path}: field {field!r} must be {expected}, got {shown}. Fix or "
                           "delete the file (retrain with `python -m models train`).")


def _check_input(norm: Any, path: Path) -> None:
    if not isinstance(norm, dict):
        raise _fail(path, "input", "a dict with shape, mean and std", norm)
    shape = norm.get("shape")
    if shape is not None and not (
            isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise _fail(path, "input.shape", "a list of 3 positive ints [C, H, W]", shape)
    for key in ("mean", "std"):
        value = norm.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        ok = bool(values) and all(_number(v) and math.isfinite(v) for v in values)
        if ok and key == "std":
            ok = all(v > 0 for v in values)
        if ok and isinstance(value, list) and shape is not None:
            ok = len(values) in (1, shape[0])  # one value, or one per channel
        if not ok:
            what = "a positive number" if key == "std" else "a finite number"
            raise _fail(path, f"input.{key}", f"{what} or a list of them (one per channel)",
                        value)


def _check_history(history: Any, path: Path) -> None:
    if not isinstance(history, list):
        raise _fail(path, "history", "a list of per-epoch dicts", history)
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            raise _fail(path, f"history[{i}]", "a dict of numbers", record)
        for key, value in record.items():
            if not _number(value):
                raise _fail(path, f"history[{i}].{key}", "a number", value)


def validate_run_meta(meta: Any, path: Path) -> dict:
    """Check the types and ranges of a parsed ``run.json``; return it unchanged.

    Only the fields Loupe reads are checked; unknown fields are kept as they are.

    Parameters
    ----------
    meta : object
        ``json.loads`` of the file.
    path : Path
        The file, named in the error.

    Raises
    ------
    CheckpointError
        Naming ``path`` and the first bad field (e.g. ``'class_names'``,
        ``'input.std'``, ``'history[2].test_acc'``).
    """
    if not isinstance(meta, dict):
        raise _fail(path, "(top level)", "a JSON object", meta)
    for key in ("arch", "dataset"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise _fail(path, key, "a string", meta[key])
    for key in ("embedding_layer", "task", "model_spec"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise _fail(path, key, "a non-empty string or null", value)
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise _fail(path, "class_names", "a non-empty list of strings", names)
    if "history" in meta:
        _check_history(meta["history"], path)
    if meta.get("input") is not None:
        _check_input(meta["input"], path)
    params = meta.get("parameters")
    if params is not None and not (isinstance(params, int) and not isinstance(params, bool)
                                   and params >= 0):
        raise _fail(path, "parameters", "a non-negative int", params)
    for key in ("wall_time_s", "best_test_acc", "best_train_acc"):
        value = meta.get(key)
        if value is not None and not _number(value):
            raise _fail(path, key, "a number or null", value)
    hyper = meta.get("hyperparameters")
    if hyper is not None and not isinstance(hyper, dict):
        raise _fail(path, "hyperparameters", "a dict", hyper)
    sha = meta.get(SHA_FIELD)
    if sha is not None and not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise _fail(path, SHA_FIELD, "64 lowercase hex digits", sha)
    return meta


def read_run_meta(folder: str | Path) -> dict:
    """The validated ``run.json`` of ``folder`` (``{}`` when the folder has none).

    Raises
    ------
    CheckpointError
        The file is not valid JSON or a field has the wrong type (see
        :func:`validate_run_meta`).
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}). Fix or delete the file "
                              "(retrain with `python -m models train`).") from None
    return validate_run_meta(meta, path)


def is_code_spec(spec: str | None, onnx_is_data: bool = True) -> bool:
    """``pkg.mod:name`` names code to import; built-in names (and, for a model, ``onnx:``
    paths) are data. A task is never ONNX: there ``onnx:x`` would import ``onnx``."""
    return bool(spec) and ":" in spec and not (onnx_is_data and spec.startswith(ONNX_PREFIX))


def code_specs(meta: dict) -> list[tuple[str, str]]:
    """``[(flag, spec)]`` of the code a run needs: its ``--model`` and/or ``--task``."""
    return [(flag, meta[key]) for flag, key in (("--model", "model_spec"), ("--task", "task"))
            if is_code_spec(meta.get(key), onnx_is_data=key == "model_spec")]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
