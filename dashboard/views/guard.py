"""Validation of what the browser sends, and of what the browser is shown.

Everything a callback receives (click, hover and selection data, stores, URL
values) comes from the browser and can be anything JSON can hold: these
plain functions turn it into sample indices or a :class:`DashboardInputError`
whose message the page shows, so bad input never becomes an HTTP 500 and
never makes the server do unbounded work. :func:`safe_message` is the other
direction: what an exception may tell the browser (no server paths).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from dashboard.errors import DashboardInputError

if TYPE_CHECKING:
    from dashboard.state import RunEntry

log = logging.getLogger(__name__)

# The most sample ids a selection may hold (or the dataset's size, if smaller).
MAX_SELECTION = 100_000
# Sample ids are short (``fashion-mnist:test:9999``); a longer one is not echoed back.
MAX_ID_LENGTH = 200


# -- browser events ------------------------------------------------------------------------
def point_index(value: object) -> int | None:
    """``value`` as a non-negative int (a curve or point number), else ``None``.

    Booleans, floats, strings and negative numbers are rejected: numpy would
    read ``-1`` as the last sample, not as an error.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        return None
    return int(value)


def event_points(data: object, limit: int | None = None) -> list[dict]:
    """The ``points`` of plotly click/hover/selection data, only the dict ones.

    Parameters
    ----------
    data : the graph's ``clickData`` / ``hoverData`` / ``selectedData`` (anything)
    limit : int, optional
        At most this many points are looked at; more raise a :class:`DashboardInputError`.
    """
    if not isinstance(data, Mapping):
        return []
    points = data.get("points")
    if not isinstance(points, list):
        return []
    if limit is not None and len(points) > limit:
        raise DashboardInputError(
            f"A selection holds at most {limit:,} samples; this one has {len(points):,} "
            "points. Select a smaller region.")
    return [p for p in points if isinstance(p, Mapping)]


def first_point(data: object) -> dict | None:
    """The first point of plotly event data (a dict), or ``None``."""
    points = event_points(data)
    return points[0] if points else None


def selection_limit(entry: RunEntry) -> int:
    """The most samples a selection of ``entry`` may hold."""
    return min(MAX_SELECTION, len(entry.id_to_index))


def selection_store(entry: RunEntry, indices: np.ndarray, source: str, what: str) -> dict:
    """The shared selection store of ``indices`` (in their order), cut to
    :func:`selection_limit` with a ``note`` saying so (``what``: "the selection"...)."""
    limit = selection_limit(entry)
    note = ""
    if len(indices) > limit:
        indices = indices[:limit]
        note = f"Only the first {limit:,} samples of {what} are kept (the limit)."
    return {"run": entry.key, "ids": entry.session.dataset.sample_ids[indices].tolist(),
            "source": source, "note": note}


def checked_sample_id(sample_id: object) -> str:
    """A sample id as sent by the browser: a short string, else a :class:`DashboardInputError`."""
    if not isinstance(sample_id, str | int) or isinstance(sample_id, bool):
        raise DashboardInputError("A sample id must be text like mnist:test:17.")
    text = str(sample_id)
    if len(text) > MAX_ID_LENGTH:
        raise DashboardInputError(f"A sample id of {len(text):,} characters is not a sample id "
                                  "(they look like mnist:test:17).")
    return text


def unique_known_indices(raw: object, lookup: Mapping[str, int], limit: int
                         ) -> tuple[np.ndarray, str | None]:
    """Row indices of the known, distinct ids in ``raw``, in first-seen order, and a note.

    At most ``limit`` ids of ``raw`` are read (the work is bounded whatever
    the browser sends); duplicates and unknown ids are dropped. The note
    (``None`` when nothing was dropped) says what was dropped, for the page.

    Returns
    -------
    indices : (M,) int64, M <= limit
    note : str or None
    """
    if not isinstance(raw, list | tuple):
        return np.zeros(0, dtype=np.int64), None
    notes = []
    if len(raw) > limit:
        notes.append(f"the selection held {len(raw):,} ids; only the first {limit:,} (the "
                     "limit) are used")
        raw = raw[:limit]
    seen: dict[int, None] = {}
    unknown = 0
    for sid in raw:
        row = lookup.get(sid) if isinstance(sid, str) else None
        if row is None:
            unknown += 1
        else:
            seen.setdefault(row, None)
    duplicates = len(raw) - unknown - len(seen)
    if unknown:
        notes.append(f"{unknown:,} unknown id(s) ignored")
    if duplicates:
        notes.append(f"{duplicates:,} repeated id(s) counted once")
    if notes:
        log.warning("selection cleaned: %s", "; ".join(notes))
    note = ("Selection: " + "; ".join(notes) + ".") if notes else None
    return np.fromiter(seen, dtype=np.int64, count=len(seen)), note


def selection_indices(entry: RunEntry, selection: object) -> tuple[np.ndarray, str | None]:
    """``(M,)`` distinct row indices of the shared selection store if it belongs to
    ``entry``'s run (else empty), at most :func:`selection_limit`, and a note on what
    was dropped (see :func:`unique_known_indices`)."""
    if not isinstance(selection, Mapping) or not entry.same_run(selection.get("run")):
        return np.zeros(0, dtype=np.int64), None
    return unique_known_indices(selection.get("ids"), entry.id_to_index, selection_limit(entry))


def selected_points(entry: RunEntry, selected: object) -> np.ndarray:
    """Sorted distinct ``(M,)`` indices of a map selection (``selectedData``).

    The map holds one point per sample plus a small overlay, so more points
    than :func:`selection_limit` (plus room for the overlay) is refused.
    """
    points = event_points(selected, limit=selection_limit(entry) + 64)
    return np.unique(entry.points_to_indices(points))


# -- what the browser may read ------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch's advice to load with weights_only=False (arbitrary code execution) is not ours.
_TORCH_HINT = re.compile(
    r"This file can still be loaded.*?(?=WeightsUnpickler error|$)|"
    r"Please use `torch\.serialization\.add_safe_globals.*?(?:function\.|$)|"
    r"Check the documentation of torch\.load.*?(?:\.html\.?|$)|"
    r"[^.\n]*weights_only[`\s]*(?:=|set to)\s*`?False[^.\n]*\.?", re.S)
_PATH_CHARS = r"[^\s'\"`:;,()\[\]{}<>|]"
_POSIX_PATH = re.compile(rf"(?<![\w.:/~-])~?/(?:{_PATH_CHARS}+/)*({_PATH_CHARS}+)?")
_WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\(?:[^\\\s'\"`]+\\)*([^\\\s'\"`]+)?")


def redact_paths(text: str) -> str:
    """Every absolute path in ``text`` replaced by its last part (the file name).

    ``/home/me/runs/a/model.pt`` becomes ``model.pt``; URLs (``http://...``)
    and relative paths (``runs/a``, which the user typed) are kept.
    """
    def name(match: re.Match) -> str:
        return match.group(1) or "…"

    return _WINDOWS_PATH.sub(name, _POSIX_PATH.sub(name, text))


def safe_message(exc: BaseException | str) -> str:
    """What an error may show the browser: no server path, no torch loading hint."""
    text = _ANSI.sub("", str(exc))
    text = _TORCH_HINT.sub("", text)
    text = redact_paths(text)
    return re.sub(r"[ \t]*\n\s*\n+|\n[ \t]+", "\n", text).strip()


def checked_choice(value: object, valid: Sequence[str], what: str) -> str:
    """``value`` when it is one of ``valid`` (strings), else a :class:`DashboardInputError`."""
    if isinstance(value, str) and value in valid:
        return value
    shown = value if isinstance(value, str) and len(value) <= 40 else type(value).__name__
    raise DashboardInputError(f"Unknown {what} '{shown}'; valid: {', '.join(valid)}.")
