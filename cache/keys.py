"""Cache keys: a sha256 over a canonical JSON of everything a result depends on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


def canonical(obj: Any) -> Any:
    """A JSON-able, order-independent form of configs, tuples, numpy scalars and paths."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **canonical(dataclasses.asdict(obj))}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stable_hash(*parts: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``parts``."""
    text = json.dumps(canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
