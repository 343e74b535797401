"""``user_metadata``: per-sample columns computed by functions of your own.

``--metadata mypkg.meta:functions`` names a module attribute holding one
function or a list/tuple of them. Each is called on batches::

    fn(images, labels) -> (B,) array  or  {name: (B,) array, ...}

with ``images`` a ``(B, C, H, W)`` float32 array in [0, 1] (the dataset's
pixels as stored) and ``labels`` ``(B,)`` int64. Every value must be finite
and numeric (bool allowed). The columns are named ``meta_<function name>``
(one array) or ``meta_<key>`` (a dict), so they never collide with Loupe's
own columns, and they appear everywhere a built-in column does (colour-by,
loss vs metadata, the export, the insights' explanations).

A column's unit and description come from optional function attributes
(``fn.unit = "fraction"``, ``fn.description = "..."``), else the first line of
the function's docstring.

Results are cached under the hash of the functions' source code
(``inspect.getsource``): edit a function and it is recomputed. Importing the
module is what naming it on the command line asks for; nothing read from a
run folder or the cache ever imports code.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.registry import Column, Plan, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError

log = logging.getLogger(__name__)
PREFIX = "meta_"
BATCH = 4096
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Declarations of the user columns seen in this process (filled as functions run).
_DECLARED: dict[str, Column] = {}


def resolve_functions(spec: str) -> list[Callable]:
    """Import ``package.module:attr`` (one function, or a list/tuple of them)."""
    from models.checkpoint import import_attr

    obj = import_attr(spec, "--metadata", "functions", ConfigError)
    attr = spec.split(":", 1)[1]
    functions = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    if not functions:
        raise ConfigError(f"--metadata {spec!r}: {attr} is an empty list.")
    for fn in functions:
        if not callable(fn):
            raise ConfigError(f"--metadata {spec!r}: {fn!r} is not a function; give a "
                              "function or a list of functions.")
    return functions


def source_hash(functions: Sequence[Callable]) -> str:
    """sha256 over the functions' qualified names and source code."""
    h = hashlib.sha256()
    for fn in functions:
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            raise ConfigError(f"--metadata: cannot read the source of {_name(fn)} (define it "
                              "with def in a .py file), so its results cannot be "
                              "cached.") from None
        h.update(f"{getattr(fn, '__module__', '')}.{_name(fn)}\n{src}\n".encode())
    return h.hexdigest()


def metadata_options(spec: str) -> dict[str, str]:
    """The ``user_metadata`` step's options for ``--metadata spec`` (imports it)."""
    return {"spec": spec, "source": source_hash(resolve_functions(spec))}


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))


def _declare(name: str, fn: Callable) -> Column:
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    description = getattr(fn, "description", None) or (doc[0] if doc else
                                                       f"Computed by {_name(fn)}.")
    col = Column(name, "numeric", unit=str(getattr(fn, "unit", "") or ""),
                 description=str(description), interpretable=True)
    _DECLARED[name] = col
    return col


def _checked(value, fn: Callable, n: int) -> np.ndarray:
    what = f"--metadata function {_name(fn)}"
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ConfigError(f"{what} returned a {type(value).__name__}; it must return a NumPy "
                          f"array of shape ({n},) or a dict of name -> such arrays.")
    if value.shape != (n,):
        raise ConfigError(f"{what} returned shape {value.shape} for {n} images; it must be "
                          f"({n},): one value per image.")
    if value.dtype == bool:
        value = value.astype(np.float32)
    if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
        raise ConfigError(f"{what} returned {value.dtype} values; they must be real numbers.")
    if not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise ConfigError(f"{what} returned {bad} non-finite value(s) (NaN or inf) of {n}; "
                          "every image needs a finite value.")
    return value.astype(np.float32)


def compute(functions: Sequence[Callable], images: np.ndarray, labels: np.ndarray,
            batch: int = BATCH) -> dict[str, np.ndarray]:
    """Run every function over ``(N, C, H, W)`` uint8 ``images`` in batches.

    Returns
    -------
    dict of column name (``meta_...``) to (N,) float32
    """
    n = len(images)
    out: dict[str, list[np.ndarray]] = {}
    owner: dict[str, Callable] = {}
    for start in range(0, n, batch):
        x = images[start:start + batch].astype(np.float32) / np.float32(255.0)
        y = labels[start:start + batch].astype(np.int64)
        seen: set[str] = set()
        for fn in functions:
            result = fn(x, y)
            if isinstance(result, dict):
                items = list(result.items())
            else:
                items = [(getattr(fn, "__name__", "value"), result)]
            for key, value in items:
                if not isinstance(key, str) or not _NAME.match(key):
                    raise ConfigError(f"--metadata function {_name(fn)}: column name {key!r} "
                                      "must be a Python identifier (letters, digits, _).")
                name = PREFIX + key
                if name in seen or (name in owner and owner[name] is not fn):
                    raise ConfigError(f"--metadata: two functions return the column {key!r}; "
                                      "rename one.")
                if start > 0 and name not in out:
                    raise ConfigError(f"--metadata function {_name(fn)} returned new column "
                                      f"{key!r} for a later batch; return the same names "
                                      "every time.")
                seen.add(name)
                owner[name] = fn
                out.setdefault(name, []).append(_checked(value, fn, len(x)))
        missing = set(out) - seen
        if missing:
            raise ConfigError(f"--metadata: column(s) {', '.join(sorted(missing))} missing from "
                              "a later batch; return the same names every time.")
    for name, fn in owner.items():
        _declare(name, fn)
    return {name: np.concatenate(parts) for name, parts in out.items()}


@register
class UserMetadata(Step):
    """The ``--metadata`` functions' columns (see the module docstring).

    Artifact arrays
    ---------------
    one ``(N,)`` float32 array per column, named ``meta_<name>``; none without ``--metadata``
    """

    name = "user_metadata"
    version = 1
    uses_model = False
    datasets = ("main",)
    order = 85

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return bool(plan.metadata)

    @classmethod
    def plan_options(cls, plan: Plan) -> dict:
        return metadata_options(plan.metadata) if plan.metadata else {}

    @dataclass(frozen=True)
    class Config:
        spec: str = ""
        source: str = ""  # sha256 of the functions' source: part of the cache key

    @classmethod
    def declared(cls) -> tuple[Column, ...]:
        return tuple(_DECLARED.values())

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if not config.spec:  # no --metadata: no columns (so other steps may always require it)
            return Artifact({}, summary={"columns": [], "spec": "", "declared": {}})
        functions = resolve_functions(config.spec)
        if source_hash(functions) != config.source:
            raise ConfigError(f"--metadata {config.spec}: the functions changed since the "
                              "session was opened; open it again.")
        cols = compute(functions, ctx.dataset.images, ctx.dataset.labels)
        return Artifact(cols, summary={"columns": list(cols), "spec": config.spec,
                                       "declared": {c: [_DECLARED[c].unit,
                                                        _DECLARED[c].description]
                                                    for c in cols}})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        for name, (unit, description) in artifact.summary.get("declared", {}).items():
            if name not in _DECLARED:  # read back from the cache: declare it again
                _DECLARED[name] = Column(name, "numeric", unit=unit, description=description,
                                         interpretable=True)
        return {c: artifact[c] for c in artifact.summary["columns"]}
