"""User-facing errors.

A :class:`LoupeError` is an *expected* mistake (a bad path, a malformed file, an
unknown name). The CLIs print its message and exit with code 2 instead of a
traceback; anything else is a bug and keeps its traceback. The cache raises its
own :class:`~cache.errors.CacheError` (it knows nothing of the analysis); the
CLIs catch :data:`USER_ERRORS`, both kinds.
"""

from __future__ import annotations

from cache.errors import CacheError


class LoupeError(Exception):
    """An expected, user-fixable error: the message names the input and the fix."""

    exit_code = 2


class DataError(LoupeError):
    """A dataset file or folder is missing, truncated or malformed."""


class ConfigError(LoupeError):
    """A flag, name or value given by the user is invalid."""


class CheckpointError(LoupeError):
    """A checkpoint or model factory cannot be loaded."""


USER_ERRORS: tuple[type[Exception], ...] = (LoupeError, CacheError)
"""What the CLIs print as one ``error:`` line (each has an ``exit_code``)."""
