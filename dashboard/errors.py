"""The dashboard's own expected error (below the state and the views, imported by both)."""

from __future__ import annotations

from core.errors import LoupeError


class DashboardInputError(LoupeError):
    """Bad input reaching the dashboard (URL, store, stale key): shown as a message."""
