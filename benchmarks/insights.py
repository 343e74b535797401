"""``python -m analysis bench --suite insights``: the insight steps and the image
measurements on the MNIST test (10,000) and training (60,000) images.

Each step is timed computed afresh (its cached result deleted) with every step it
needs already cached, median over ``--repeats``; the prerequisites (inference, the
kNN graph) are timed once and reported apart. Targets: all insight steps
and the measurements at most 15 s on the test images and 90 s on the training
images, on 2 CPU cores.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

INSIGHT_STEPS = ("image_metadata", "label_issues", "duplicates", "outliers", "slices")
TARGETS_S = {"test": 15.0, "train": 90.0}


def insights_bench(checkpoint: str, data_root: str | None, device: str, repeats: int,
                   work: Path, splits: tuple[str, ...] = ("test", "train"),
                   limit: int | None = None) -> dict:
    """Seconds per step and in total, per split (see the module docstring)."""
    from analysis.insights import collect_insights
    from analysis.session import AnalysisSession

    os.environ.setdefault("NUMBA_CACHE_DIR", str(work / "numba"))
    # Imported before timing: a first import costs seconds on a busy machine.
    import igraph  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sliceline  # noqa: F401

    out: dict = {}
    for split in splits:
        s = AnalysisSession.open(checkpoint, "mnist", split, data_root=data_root, limit=limit,
                                 cache_dir=work / f"insights-{split}", device=device,
                                 mc_samples=0, projections=(), progress=False)
        eng = s.engine
        row: dict = {"n": len(s.dataset), "prerequisites_s": {}, "steps_s": {}}
        for name in ("inference", "neighbors"):
            started = time.perf_counter()
            eng.get(name)
            row["prerequisites_s"][name] = time.perf_counter() - started
        for name in INSIGHT_STEPS:
            for dep in _requirements(name):
                eng.get(dep)
            times = []
            for _ in range(repeats):
                eng._memory.pop(name, None)
                s.store.delete(eng.key(name))
                started = time.perf_counter()
                eng.get(name)
                times.append(time.perf_counter() - started)
            row["steps_s"][name] = statistics.median(times)
        started = time.perf_counter()
        row["insights"] = len(collect_insights(s))
        row["collect_s"] = time.perf_counter() - started
        row["total_s"] = sum(row["steps_s"].values()) + row["collect_s"]
        row["target_s"] = TARGETS_S[split] if limit is None else None
        out[split] = row
    return out


def _requirements(name: str) -> list[str]:
    from analysis.registry import get_step

    return list(get_step(name).requires)


def format_insights(results: dict) -> str:
    lines = [f"insight steps + image measurements, {os.cpu_count()} CPU cores "
             "(medians; each step afresh, its inputs cached):"]
    for split, row in results.items():
        pre = ", ".join(f"{k} {v:.2f} s" for k, v in row["prerequisites_s"].items())
        target = f" (target {row['target_s']:.0f} s)" if row.get("target_s") else ""
        lines.append(f"  mnist:{split} ({row['n']:,d} images): total {row['total_s']:.2f} s"
                     f"{target}; prerequisites not counted: {pre}")
        for name, sec in row["steps_s"].items():
            lines.append(f"    {name:16s} {sec:8.2f} s")
        lines.append(f"    {'collect_insights':16s} {row['collect_s']:8.2f} s "
                     f"({row['insights']} insights)")
    return "\n".join(lines)
