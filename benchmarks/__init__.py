"""Benchmarks: how fast and how big, measured (not run by the test suite's timing).

``python -m analysis bench`` runs :mod:`benchmarks.engine` (``--suite mnist``,
``rgb``, ``insights``, ``all``); ``python -m dashboard.bench`` runs
:mod:`benchmarks.server` (page latency, ``--clients`` for load). The others
run as ``python -m benchmarks.<name>``: :mod:`~benchmarks.samples` (the
sample table), :mod:`~benchmarks.uncertainty` (the Uncertainty page) and
:mod:`~benchmarks.browser` (page timings in headless Chromium).
They sit above every other layer and may import any of them; nothing imports
them but the two entry points.
"""
