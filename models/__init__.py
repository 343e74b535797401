"""Loupe's model zoo, training loop and checkpoint format."""
