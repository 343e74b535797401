"""Cache keys: a sha256 over a canonical JSON of everything a result depends on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

#: Metadata of a config field (``dataclasses.field(default=..., metadata=OMIT_AT_DEFAULT)``)
#: that cache keys leave out while it holds its default: adding such an option to a
#: step's ``Config`` keeps the keys of every result computed before it existed.
OMIT_AT_DEFAULT = {"loupe_key": "omit_at_default"}


def canonical(obj: Any) -> Any:
    """A JSON-able, order-independent form of configs, tuples, numpy scalars and paths."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = dataclasses.asdict(obj)
        for f in dataclasses.fields(obj):
            if f.metadata.get("loupe_key") == "omit_at_default" and data[f.name] == f.default:
                del data[f.name]
        return {"__type__": type(obj).__name__, **canonical(data)}
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
