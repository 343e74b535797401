"""Loupe's analysis engine: datasets, the step registry, the steps, and the CLI.

Nothing here imports Dash or Plotly.
"""
