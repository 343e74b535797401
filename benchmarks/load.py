"""Load benchmark: simulated users against a real server on 127.0.0.1.

``python -m benchmarks.server --clients 20 --seconds 60 --checkpoint RUN --cache-dir DIR``
serves the dashboard in this process (werkzeug, threaded, as ``python -m
dashboard`` does) and runs ``--clients`` threads that each behave like a
person: open the map, recolour it, hover and click samples, open the sample
page, ask for the heatmap of a new sample and of one seen before (polling the
background job like dash-renderer does, with the signed ``cacheKey``/``job``
handles and ``oldJob`` when superseded), select a region and export it. Each
request is the JSON body dash-renderer posts to ``/_dash-update-component``,
built from the server's own ``/_dash-dependencies``. Reported: errors, p50 and
p95 per request kind, and the server's RSS before and after (psutil).
Traffic goes only to the server this process starts, and stops at the deadline.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("benchmarks.load")


@dataclass
class LoadResult:
    """Per request kind, the seconds each request took; errors by kind."""

    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.timings[kind].append(seconds)

    def error(self, kind: str, text: str) -> None:
        with self.lock:
            self.errors[kind].append(text[:200])

    def rows(self) -> list[str]:
        out = []
        for kind in sorted(self.timings):
            ms = np.asarray(self.timings[kind]) * 1000
            out.append(f"{kind:<28} n={len(ms):<5d} p50 {np.percentile(ms, 50):8.1f} ms   "
                       f"p95 {np.percentile(ms, 95):8.1f} ms   max {ms.max():8.1f} ms")
        for kind, errs in sorted(self.errors.items()):
            out.append(f"ERRORS {kind}: {len(errs)} (first: {errs[0]})")
        return out


def page_end_id(html_text: str) -> str | None:
    """The signed ``end_id`` of a page load, from the index page's ``_dash-config``."""
    found = re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>',
                      html_text, re.S)
    return json.loads(found.group(1)).get("end_id") if found else None


class DashClient:
    """One simulated browser tab: dash-renderer's requests over ``requests``.

    ``end_id`` ``None`` loads the index page as a browser does, for this tab's own
    signed ``end_id`` (the server tells tabs apart by it).
    """

    def __init__(self, base: str, deps: list[dict], end_id: str | None = None) -> None:
        import requests

        self.base, self.deps = base, deps
        self.http = requests.Session()
        self.end_id = end_id if end_id or not base else \
            page_end_id(self.http.get(f"{base}/", timeout=60).text)
        self.old_job: str | None = None

    def dep(self, fragment: str, trigger: str) -> dict:
        """The callback writing ``fragment`` (``id.prop``) that ``trigger`` fires."""
        return next(d for d in self.deps if fragment in d["output"]
                    and any(f"{i['id']}.{i['property']}" == trigger for i in d["inputs"]))

    def body(self, fragment: str, values: dict[str, object], changed: list[str]) -> dict:
        """The request body of the callback whose output contains ``fragment`` fired by
        ``changed[0]``; inputs and states take ``values["<id>.<prop>"]`` (else ``None``)."""
        dep = self.dep(fragment, changed[0])
        output = dep["output"]
        outs = [dict(zip(("id", "property"), part.rsplit(".", 1), strict=True))
                for part in output.strip(".").split("...")]

        def spec(items):
            return [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in items]

        return {"output": output, "outputs": outs if output.startswith("..") else outs[0],
                "inputs": spec(dep["inputs"]), "state": spec(dep["state"]),
                "changedPropIds": changed}

    def post(self, body: dict, params: dict | None = None):
        params = dict(params or {})
        if self.end_id:
            params["endId"] = self.end_id
        response = self.http.post(f"{self.base}/_dash-update-component", json=body,
                                  params=params, timeout=120)
        if response.status_code not in (200, 204):
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")
        return response.json() if response.status_code == 200 else None

    def background(self, body: dict, interval: float = 0.15, timeout: float = 120) -> dict:
        """Start a background callback and poll it until its result comes (as the renderer)."""
        params = {"oldJob": self.old_job} if self.old_job else {}
        handles = self.post(body, params)
        if not handles or "cacheKey" not in handles:
            raise RuntimeError(f"no job handles: {str(handles)[:120]}")
        self.old_job = handles["job"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            time.sleep(interval)
            reply = self.post(body, {"cacheKey": handles["cacheKey"], "job": handles["job"]})
            if reply is None:  # 204: no update, the job was dropped (never by this tab)
                self.old_job = None
                raise RuntimeError("the job was dropped: no heatmap came")
            if "response" in reply:
                self.old_job = None
                return reply["response"]
        raise RuntimeError("background job timed out")


def person(client: DashClient, run_key: str, trace_sizes: list[int], result: LoadResult,
           deadline: float, seed: int, seen: list[str]) -> None:
    """One user's loop until ``deadline``: map, recolour, hover, click, sample, heatmaps,
    selection, export. ``trace_sizes``: the points of each class trace of the map."""
    from dashboard import ids as i

    rng = random.Random(seed)
    run = {"run": run_key}

    def call(kind: str, fragment: str, values: dict, trigger: str, background: bool = False):
        """One callback request (polled to the end when ``background``), timed."""
        body = client.body(fragment, {f"{i.RUN_STORE}.data": run, **values}, [trigger])
        start = time.perf_counter()
        try:
            out = client.background(body) if background else client.post(body)
        except Exception as exc:  # a failed request is a result of the benchmark
            result.error(kind, f"{type(exc).__name__}: {exc}")
            return None
        result.add(kind, time.perf_counter() - start)
        return out

    graph, color_select = f"{i.POPULATION_GRAPH}", f"{i.COLOR_SELECT}.value"
    map_values = {f"{i.PROJECTION_SELECT}.value": "umap", color_select: "label",
                  f"{i.SIZE_SELECT}.value": "loss"}
    while time.monotonic() < deadline:
        call("map: full figure", f"{graph}.figure", map_values, f"{i.PROJECTION_SELECT}.value")
        color = rng.choice(["pred", "uncertainty", "correct", "loss", "label"])
        call("map: recolour (patch)", f"{graph}.figure", {**map_values, color_select: color},
             color_select)
        curve = rng.randrange(len(trace_sizes))
        point = {"curveNumber": curve, "pointIndex": rng.randrange(trace_sizes[curve])}
        call("map: hover", f"{i.POPULATION_TOOLTIP}.show",
             {f"{graph}.hoverData": {"points": [point]}}, f"{graph}.hoverData")
        # a new sample (clicked on the map) or, one time in three, one seen before
        if seen and rng.random() < 0.33:
            sid, kind = rng.choice(seen), "seen"
        else:
            reply = call("map: click", f"{i.URL}.href",
                         {f"{graph}.clickData": {"points": [point]}}, f"{graph}.clickData")
            if reply is None:
                continue
            href = reply["response"][i.URL]["href"]
            sid, kind = re.search(r"id=([^&]+)", href).group(1), "new"
        sample_values = {f"{i.SAMPLE_STORE}.data": {"run": run_key, "id": sid},
                         f"{i.HEATMAP_METHOD}.value": "integrated_gradients",
                         f"{i.HEATMAP_TARGET}.value": "pred"}
        call("sample page", f"{i.SAMPLE_TITLE}.children", sample_values,
             f"{i.SAMPLE_STORE}.data")
        got = heatmap(client, run, sample_values, kind, result)
        if got and kind == "new":
            with result.lock:
                seen.append(sid)
                del seen[:-200]
        if rng.random() < 0.25:  # a box selection (every 25th point), then its export
            picked = [{"curveNumber": c, "pointIndex": n} for c, size in enumerate(trace_sizes)
                      for n in range(rng.randrange(25), size, 25)]
            reply = call("map: select", f"{i.SELECTION_STORE}.data",
                         {f"{graph}.selectedData": {"points": picked}}, f"{graph}.selectedData")
            if reply is not None:
                call("export selection (CSV)", f"{i.EXPORT_SELECTION_DOWNLOAD}.data",
                     {f"{i.EXPORT_SELECTION_CSV}.n_clicks": 1,
                      f"{i.SELECTION_STORE}.data": reply["response"][i.SELECTION_STORE]["data"]},
                     f"{i.EXPORT_SELECTION_CSV}.n_clicks")
        time.sleep(rng.uniform(0.2, 1.0))  # a person reads the page


def heatmap(client: DashClient, run: dict, sample_values: dict, kind: str,
            result: LoadResult):
    """Click -> heatmap as the page does it: the request callback draws a heatmap already
    computed at once; otherwise its request goes to the background job, polled to the end.
    Timed as one ``click -> heatmap (new|seen)``."""
    from dashboard import ids as i

    label = f"click -> heatmap ({kind})"
    start = time.perf_counter()
    body = client.body(f"{i.HEATMAP_REQUEST}.data", {f"{i.RUN_STORE}.data": run, **sample_values},
                       [f"{i.SAMPLE_STORE}.data"])
    try:
        reply = client.post(body)["response"]
        if i.SAMPLE_HEATMAP not in reply:  # not computed yet: the background job
            request = reply[i.HEATMAP_REQUEST]["data"]
            job = client.body(f"{i.SAMPLE_HEATMAP}.figure",
                              {f"{i.RUN_STORE}.data": run, f"{i.HEATMAP_REQUEST}.data": request},
                              [f"{i.HEATMAP_REQUEST}.data"])
            reply = client.background(job)
    except Exception as exc:  # a failed request is a result of the benchmark
        result.error(label, f"{type(exc).__name__}: {exc}")
        return None
    result.add(label, time.perf_counter() - start)
    return reply


def simulate_users(base: str, deps: list[dict], run_key: str, trace_sizes: list[int],
                   clients: int, seconds: float, out) -> None:
    """The users, run in a process of their own (so that their JSON work does not
    share the server's interpreter lock); timings and errors are put on queue ``out``."""
    logging.basicConfig(level=logging.WARNING)
    # warm-up: one user, a few seconds, not counted (first figures, imports)
    person(DashClient(base, deps), run_key, trace_sizes, LoadResult(),
           time.monotonic() + 5, seed=12345, seen=[])
    out.put("warm")
    result = LoadResult()
    deadline = time.monotonic() + seconds
    seen: list[str] = []
    users = [threading.Thread(target=person, name=f"bench-user-{n}",
                              args=(DashClient(base, deps), run_key, trace_sizes,
                                    result, deadline, n, seen)) for n in range(clients)]
    for user in users:
        user.start()
    for user in users:
        user.join()
    out.put((dict(result.timings), dict(result.errors)))


def run_load(app, entry, clients: int, seconds: float, port: int) -> tuple[LoadResult, dict]:
    """Serve ``app`` on 127.0.0.1:``port`` (this process) and run ``clients`` simulated
    users (another process) for ``seconds``.

    Returns the timings and ``{"rss_before_mb", "rss_after_mb", "threads_max", ...}``;
    RSS and threads are the server's.
    """
    import multiprocessing

    import psutil
    import requests
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="bench-server")
    thread.start()
    base = f"http://127.0.0.1:{port}"
    proc = psutil.Process()
    try:
        deps = requests.get(f"{base}/_dash-dependencies", timeout=30).json()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        users = ctx.Process(target=simulate_users, name="bench-users", daemon=True,
                            args=(base, deps, entry.key,
                                  [len(m) for m in entry.members], clients, seconds, queue))
        users.start()
        queue.get(timeout=300)  # warmed up
        rss_before, threads_max = proc.memory_info().rss, 0
        end = time.monotonic() + seconds + 300
        while users.is_alive() and queue.empty() and time.monotonic() < end:
            threads_max = max(threads_max, threading.active_count())
            time.sleep(0.5)
        timings, errors = queue.get(timeout=60)
        users.join(timeout=30)
        rss_after = proc.memory_info().rss
        result = LoadResult()
        result.timings.update(timings)
        result.errors.update(errors)
        stats = {"rss_before_mb": rss_before / 2**20, "rss_after_mb": rss_after / 2**20,
                 "server_threads_max": threads_max,
                 "jobs": dict(app._background_manager.stats)}
    finally:
        server.shutdown()
    return result, stats
