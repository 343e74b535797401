"""Loupe dashboard (Dash)."""
