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
