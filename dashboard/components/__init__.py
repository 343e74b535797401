"""Reusable layout pieces: sample galleries, messages, the navbar."""
