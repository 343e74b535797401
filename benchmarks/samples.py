"""Sample-table benchmark: one ``getRowsRequest`` block answered on a large table.

``python -m benchmarks.samples --checkpoint RUN --dataset mnist --split test
--limit 2000 --rows 70000 --cache-dir DIR [--data-root DIR]`` analyses ``--limit``
real samples (or reads them from the cache), repeats the run's per-sample table
until it has ``--rows`` rows (ids made unique), and times
:func:`dashboard.views.samples.rows_response` for blocks of 100 rows at random
offsets: sorted by loss, then sorted and filtered (wrong predictions with a
confidence range), then with an id search as well; each for the first block of a
query (the whole table filtered and sorted) and for the next ones (scrolling, the
row order cached). Reported: median and p95 in milliseconds and a block's JSON size.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time

import numpy as np
import pandas as pd

log = logging.getLogger("benchmarks.samples")

SORT = [{"colId": "loss", "sort": "desc"}]
FILTER = {"correct": {"filterType": "text", "type": "wrong"},
          "confidence": {"filterType": "number", "type": "inRange", "filter": 0.1,
                         "filterTo": 0.99}}


def repeated_table(table: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``table`` repeated to ``rows`` rows, each copy's sample ids made unique."""
    copies = -(-rows // len(table))
    big = pd.concat([table] * copies, ignore_index=True).iloc[:rows].copy()
    big["sample_id"] = [f"{sid}#{n // len(table)}" if n >= len(table) else sid
                        for n, sid in enumerate(big["sample_id"])]
    return big


def time_blocks(entry, request: dict, search: str | None, repeats: int, cold: bool,
                seed: int = 0) -> tuple[list[float], int, int]:
    """Seconds per block at random offsets; the matching row count; one block's JSON bytes.

    ``cold``: the entry's cached row orders are dropped before each block, so each one
    filters and sorts the whole table (the first block after a new filter or sort);
    otherwise only the first does (scrolling).
    """
    from dashboard.state import LRUCache
    from dashboard.views.samples import ORDER_CACHE_SIZE, TableQuery, rows_response, table_cache

    response, _ = rows_response(entry, TableQuery({**request, "startRow": 0, "endRow": 100},
                                                  search))
    count, size = response["rowCount"], len(json.dumps(response))
    rng = random.Random(seed)
    out = []
    for _ in range(repeats):
        start = rng.randrange(0, max(1, count - 100))
        if cold:
            table_cache(entry).orders = LRUCache(ORDER_CACHE_SIZE)
        t0 = time.perf_counter()
        rows_response(entry, TableQuery({**request, "startRow": start, "endRow": start + 100},
                                        search))
        out.append(time.perf_counter() - t0)
    return out, count, size


def main(argv: list[str] | None = None) -> int:
    from analysis.session import AnalysisSession
    from dashboard.state import RunEntry

    parser = argparse.ArgumentParser(prog="python -m benchmarks.samples")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=70_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    session = AnalysisSession.open(args.checkpoint, args.dataset, args.split,
                                   data_root=args.data_root, cache_dir=args.cache_dir,
                                   device="cpu", limit=args.limit, progress=False)
    session.run()
    entry = RunEntry("bench", "bench", session)
    entry.__dict__["table"] = repeated_table(entry.table, args.rows)  # the cached property
    print(f"sample table: {len(entry.table):,} rows x {len(entry.table.columns)} columns "
          f"({args.limit:,} real {args.dataset}:{args.split} samples repeated)")
    for name, request, search in [
            ("sort by loss", {"sortModel": SORT, "filterModel": {}}, None),
            ("sort + filter (wrong, confidence in [0.1, 0.99])",
             {"sortModel": SORT, "filterModel": FILTER}, None),
            ("sort + filter + id search '7'", {"sortModel": SORT, "filterModel": FILTER}, "7")]:
        for cold in (True, False):
            seconds, count, size = time_blocks(entry, request, search, args.repeats, cold)
            ms = np.asarray(seconds) * 1000
            print(f"{name}, {'first block' if cold else 'scrolling'}: {count:,} rows match; "
                  f"block of 100: median {statistics.median(ms):.1f} ms, "
                  f"p95 {np.percentile(ms, 95):.1f} ms, {size / 1024:.1f} kB JSON")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
