"""Server time of the Uncertainty & OOD page's callbacks, through Dash's HTTP endpoint.

``python -m benchmarks.uncertainty --checkpoint runs/mnist_cnn --extra-dataset
fashion-mnist`` opens the run (its analysis must be cached, or it is computed
first), then posts the requests the browser sends when ``/uncertainty`` loads
(page layout, controls, histograms, score table, joint map, galleries) to Flask's
test client and reports each callback's wall time and response size. The
first round includes building the per-sample tables; later rounds are what a
user sees on every visit once the run is open.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

log = logging.getLogger("benchmarks.uncertainty")


def _request(output: str, inputs: list[tuple[str, str, object]],
             state: list[tuple[str, str, object]]) -> dict:
    """The JSON body dash-renderer posts to ``/_dash-update-component``."""
    outs = [dict(zip(("id", "property"), part.rsplit(".", 1), strict=True))
            for part in output.strip(".").split("...")]

    def spec(items):
        return [{"id": i, "property": p, "value": v} for i, p, v in items]

    return {"output": output, "outputs": outs if output.startswith("..") else outs[0],
            "inputs": spec(inputs), "state": spec(state),
            "changedPropIds": [f"{i}.{p}" for i, p, _ in inputs]}


def page_requests(deps: list[dict], run_key: str, extra: str, joint_map: str) -> list[tuple]:
    """``(name, body)`` per callback the page load triggers, in the order the browser runs them."""
    from dashboard import ids

    def find(fragment: str) -> str:
        return next(d["output"] for d in deps if fragment in d["output"])

    run = (ids.RUN_STORE, "data", {"run": run_key})
    return [
        ("controls", _request(find(f"{ids.OOD_DATASET_SELECT}.options"), [run],
                              [("uncertainty-query", "data", {"dataset": None})])),
        ("histograms", _request(
            find(f"..{ids.UNCERTAINTY_HISTOGRAMS}.figure"),  # not in-uncertainty-histograms
            [(ids.OOD_DATASET_SELECT, "value", extra), (ids.OOD_HISTOGRAM_SCALE, "value", "log")],
            [run])),
        ("table", _request(
            find(f"{ids.OOD_TABLE}.rowData"), [(ids.OOD_DATASET_SELECT, "value", extra)],
            [run, (ids.OOD_GALLERY_SCORE, "value", None)])),
        ("joint map", _request(
            find(f"{ids.OOD_MAP}.figure"),
            [(ids.OOD_DATASET_SELECT, "value", extra), (ids.OOD_MAP_SELECT, "value", joint_map),
             (ids.OOD_COLOR_SELECT, "value", "dataset")],
            [run, (ids.SAMPLE_STORE, "data", None)])),
        ("galleries", _request(
            find(f"{ids.OOD_CONFIDENT_GALLERY}.children"),
            [(ids.OOD_GALLERY_SCORE, "value", "uncertainty")],
            [(ids.OOD_DATASET_SELECT, "value", extra), run])),
    ]


def main(argv: list[str] | None = None) -> int:
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig

    p = argparse.ArgumentParser(prog="python -m benchmarks.uncertainty",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="runs/mnist_cnn")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--extra-dataset", default="fashion-mnist")
    p.add_argument("--data-root")
    p.add_argument("--cache-dir")
    p.add_argument("--limit", type=int)
    p.add_argument("--map", default="joint_tsne", help="joint map to draw")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    config = DashboardConfig(checkpoints=[args.checkpoint], dataset=args.dataset,
                             extra_datasets=[args.extra_dataset], data_root=args.data_root,
                             cache_dir=args.cache_dir, limit=args.limit, progress=False)
    started = time.perf_counter()
    app = create_app(config)
    log.info("opened the run (analysis read from the cache) in %.2f s",
             time.perf_counter() - started)
    registry = app.server.extensions["loupe"]
    entry = registry.get(None)
    extra = next(iter(entry.session.extras))
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    requests = page_requests(deps, entry.key, extra, args.map)
    print(f"{entry.label} vs {extra}: {len(entry.session.dataset):,} + "
          f"{len(entry.session.extra(extra).dataset):,} samples, map {args.map}")
    import dash

    layout = next(pg["layout"] for pg in dash.page_registry.values()
                  if pg["path"] == "/uncertainty")
    totals = []
    for round_ in range(args.rounds):
        t0 = time.perf_counter()
        layout_s = time.perf_counter()
        layout()
        parts = [("layout", time.perf_counter() - layout_s, 0)]
        for name, body in requests:
            s = time.perf_counter()
            resp = client.post("/_dash-update-component", data=json.dumps(body),
                               content_type="application/json")
            if resp.status_code != 200:
                raise SystemExit(f"{name}: HTTP {resp.status_code}: {resp.get_data(True)[:500]}")
            parts.append((name, time.perf_counter() - s, len(resp.get_data())))
        totals.append(time.perf_counter() - t0)
        print(f"round {round_ + 1}: total {totals[-1]:.3f} s  " + "  ".join(
            f"{n} {t:.3f} s ({b / 1e3:.1f} kB)" for n, t, b in parts))
    later = totals[1:] or totals
    print(f"server time per page load: first {totals[0]:.3f} s, then median "
          f"{statistics.median(later):.3f} s (max {max(later):.3f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
