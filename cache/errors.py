"""The cache's own errors: it knows nothing of the analysis that uses it.

A :class:`CacheError` is an *expected*, user-fixable problem with a cache
folder (read-only, full, not writable, a bad size limit). Its message names
the folder and the fix; the command lines print it as one ``error:`` line and
exit with :attr:`CacheError.exit_code`.
"""

from __future__ import annotations

import os


class CacheError(Exception):
    """A cache folder cannot be used as asked: the message names the folder and the fix.

    Parameters
    ----------
    message : str
        What happened, naming the folder and the fix.
    folder : path, optional
        The cache folder concerned.
    """

    exit_code = 2

    def __init__(self, message: str, folder: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.folder = folder


def env_number(name: str, default: float, *, positive: bool, unit: str, example: str) -> float:
    """The number in environment variable ``name``, or ``default`` when it is unset.

    Raises :class:`CacheError` naming the variable, its value and a fix when the
    value is not a number, or is negative (``positive=False``) or not above zero
    (``positive=True``).
    """
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not (number > 0 if positive else number >= 0):  # also refuses nan
        bound = f"a positive number of {unit}" if positive else f"a number of {unit} >= 0"
        raise CacheError(f"{name}={value!r} must be {bound}; "
                         f"set it to e.g. {example} or unset it.")
    return number
