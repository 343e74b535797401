"""``python -m analysis bench``: Loupe's steps against the way a user does them by hand.

Everything runs on the same data in the same invocation:

1. End to end, each in a fresh process: ``analysis run`` (all steps, MC T=20,
   UMAP and t-SNE) with an empty artifact cache and an empty numba cache
   (the first run ever on a machine), with an empty artifact cache and a warm
   numba cache (the usual "first run"), and fully cached. Wall time and peak RSS.
2. Step by step against the naive way: a plain DataLoader forward loop; MC
   dropout as T full passes; scikit-learn's ``TSNE``; umap-learn with its
   defaults in a fresh process; scikit-learn's brute-force kNN; a Python loop of
   per-sample Captum calls. Medians over ``--repeats`` for the cheap ones.
   Projection quality (exact trustworthiness, 10-NN kept) for both ways.

``--suite rgb`` (or ``all``) adds colour data Loupe has never seen: 32x32
patches of scikit-image's photographs as a PNG folder, a small CNN of the
user's own, end to end in fresh processes (:mod:`benchmarks.rgb`).
``--suite insights``: the insight steps and the image measurements on the 10,000
test and 60,000 training images (:mod:`benchmarks.insights`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.child import CHILD, run_child, train_default
from core.datasets import load_dataset

# Peak RSS from VmHWM: Linux keeps ru_maxrss across fork + exec, so a child's
# ru_maxrss is at least the bench process's own RSS when it forked.
NAIVE_UMAP = """
import json, time, sys
t0 = time.perf_counter()
import numpy as np, umap
t1 = time.perf_counter()
emb = np.load(sys.argv[1])
coords = umap.UMAP(random_state=0).fit_transform(emb)
np.save(sys.argv[2], coords.astype(np.float32))
print("BENCH " + json.dumps({"import_s": t1 - t0, "fit_s": time.perf_counter() - t1}))
"""


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def end_to_end(checkpoint: str, data_root: str | None, n: int, device: str, work: Path) -> dict:
    argv = ["run", "--checkpoint", checkpoint, "--dataset", "mnist", "--split", "test",
            "--limit", str(n), "--mc-samples", "20", "--device", device]
    if data_root:
        argv += ["--data-root", data_root]
    env = dict(os.environ)
    results = {}
    cold_numba = work / "numba-cold"
    env_cold = {**env, "NUMBA_CACHE_DIR": str(cold_numba)}
    results["first_ever"] = run_child(CHILD.format(argv=argv + ["--cache-dir", str(work / "c1")]),
                                   [], env_cold)
    results["empty_cache"] = run_child(CHILD.format(argv=argv + ["--cache-dir", str(work / "c2")]),
                                    [], env_cold)
    results["cached"] = run_child(CHILD.format(argv=argv + ["--cache-dir", str(work / "c2")]),
                               [], env_cold)
    return results


def step_comparison(checkpoint: str, data_root: str | None, n: int, device: str, repeats: int,
                    work: Path, skip_naive: bool) -> dict:
    from analysis.attribution import attribute
    from analysis.quality import knn_preservation, trustworthiness
    from analysis.session import AnalysisSession
    from analysis.steps.neighbors import knn_graph

    os.environ.setdefault("NUMBA_CACHE_DIR", str(work / "numba-cold"))
    s = AnalysisSession.open(checkpoint, "mnist", "test", data_root=data_root, limit=n,
                             cache_dir=work / "c3", device=device, mc_samples=20, progress=False)
    rows: dict[str, dict] = {}
    eng = s.engine

    def fresh(name: str):
        eng._memory.pop(name, None)
        s.store.delete(eng.key(name))
        return eng.get(name)

    rows["forward pass"] = {"loupe_s": _median(lambda: fresh("inference"), repeats)}
    rows["mc_dropout T=20"] = {"loupe_s": _median(lambda: fresh("mc_dropout"), repeats)}
    rows["exact kNN (k=90 graph)"] = {"loupe_s": _median(lambda: fresh("neighbors"), repeats)}
    emb = s.embeddings
    high = s.artifact("neighbors")["indices"]
    maps = {}
    for proj in ("umap", "tsne"):
        t = time.perf_counter()
        maps[proj] = fresh(proj)["coords"]
        rows[proj] = {"loupe_s": time.perf_counter() - t}
    x = s.dataset.images[:100]
    pred = s.predictions_of()[:100]
    attribute(s.model, x[:1], int(pred[0]), device=s.device)  # warm-up
    per = [_median(lambda i=i: attribute(s.model, x[i:i + 1], int(pred[i]), device=s.device), 1)
           for i in range(30)]
    rows["IG one sample (50 steps)"] = {"loupe_s": statistics.median(per),
                                        "loupe_p95_s": float(np.percentile(per, 95))}
    rows["IG 100 samples"] = {"loupe_s": _median(
        lambda: attribute(s.model, x, pred, device=s.device), 1)}

    if not skip_naive:
        model = s.model.module.to(s.device).eval()
        ds = torch.utils.data.TensorDataset(s.model.prepare(torch.as_tensor(s.dataset.images)))

        def naive_forward():
            out = []
            with torch.no_grad():
                for (xb,) in torch.utils.data.DataLoader(ds, batch_size=64):
                    out.append(torch.softmax(model(xb.to(s.device)), 1).cpu().numpy())
            return np.concatenate(out)

        rows["forward pass"]["naive_s"] = _median(naive_forward, repeats)

        def naive_mc():
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.train()
            try:
                return np.stack([naive_forward() for _ in range(20)])
            finally:
                model.eval()

        rows["mc_dropout T=20"]["naive_s"] = _median(naive_mc, 1)
        from sklearn.manifold import TSNE
        from sklearn.neighbors import NearestNeighbors

        rows["exact kNN (k=90 graph)"]["naive_s"] = _median(
            lambda: NearestNeighbors(n_neighbors=91, algorithm="brute").fit(emb).kneighbors(emb),
            repeats)
        t = time.perf_counter()
        naive_maps = {"tsne": TSNE(random_state=0).fit_transform(emb).astype(np.float32)}
        rows["tsne"]["naive_s"] = time.perf_counter() - t
        np.save(work / "emb.npy", emb)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba-naive")}
        out = run_child(NAIVE_UMAP, [str(work / "emb.npy"), str(work / "umap.npy")], env)
        rows["umap"]["naive_s"] = out["wall_s"]
        rows["umap"]["naive_fit_s"] = out["fit_s"]
        naive_maps["umap"] = np.load(work / "umap.npy")

        def naive_ig():
            from captum.attr import IntegratedGradients

            ig = IntegratedGradients(model)
            for i in range(len(x)):
                xi = s.model.prepare(torch.as_tensor(x[i:i + 1]))
                ig.attribute(xi, target=int(pred[i]), n_steps=50)

        rows["IG 100 samples"]["naive_s"] = _median(naive_ig, 1)
        for proj, coords in naive_maps.items():
            low = knn_graph(coords, 10)[0]
            rows[proj]["naive_trustworthiness"] = trustworthiness(emb, coords, 10, high, low)
            rows[proj]["naive_knn_kept"] = knn_preservation(high, low, 10)
    for proj, coords in maps.items():
        low = knn_graph(coords, 10)[0]
        rows[proj]["loupe_trustworthiness"] = trustworthiness(emb, coords, 10, high, low)
        rows[proj]["loupe_knn_kept"] = knn_preservation(high, low, 10)
    return rows


def _format(results: dict) -> str:
    lines = [f"Loupe bench: {results['n']:,d} MNIST test samples on {results['device']}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}", ""]
    e2e = results["end_to_end"]
    lines.append("analysis run, all steps (MC T=20, UMAP + t-SNE), fresh process:")
    for label, key in (("first run ever (numba compiles)", "first_ever"),
                       ("empty artifact cache", "empty_cache"), ("everything cached", "cached")):
        r = e2e[key]
        lines.append(f"  {label:34s} {r['wall_s']:7.2f} s wall   "
                     f"peak RSS {r['peak_rss_mb']:7.0f} MB")
    lines += ["", f"{'step':26s} {'loupe s':>9s} {'naive s':>9s} {'speed-up':>9s}  quality"]
    for name, row in results["steps"].items():
        naive = row.get("naive_s")
        ratio = f"{naive / row['loupe_s']:8.1f}x" if naive else "       --"
        q = ""
        if "loupe_trustworthiness" in row:
            q = f"trust {row['loupe_trustworthiness']:.4f}, kNN kept {row['loupe_knn_kept']:.3f}"
            if "naive_trustworthiness" in row:
                q += (f" | naive trust {row['naive_trustworthiness']:.4f}, "
                      f"kNN kept {row['naive_knn_kept']:.3f}")
        if "loupe_p95_s" in row:
            q = f"p95 {row['loupe_p95_s'] * 1000:.1f} ms"
        naive_txt = f"{naive:9.2f}" if naive else "       --"
        lines.append(f"{name:26s} {row['loupe_s']:9.3f} {naive_txt} {ratio}  {q}")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    from core.device import resolve_device

    device = str(resolve_device(args.device))
    suite = getattr(args, "suite", "mnist")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as tmp:
        work = Path(tmp)
        if getattr(args, "scale", None):
            from benchmarks.scale import format_scale, run_scale

            results["scale"] = run_scale(args, args.checkpoint, work)
            print(format_scale(results["scale"]), flush=True)
        elif suite in ("mnist", "all"):
            results = mnist_bench(args, device, work)
            print(_format(results), flush=True)
        if suite == "insights":
            from benchmarks.insights import format_insights, insights_bench

            checkpoint = args.checkpoint or train_default(args, device, work)
            results["insights"] = insights_bench(checkpoint, args.data_root, device,
                                                 args.repeats, work)
            print(format_insights(results["insights"]))
        if suite in ("rgb", "all"):
            from benchmarks.rgb import format_rgb, rgb_bench

            print("building the RGB photo-patch folder and training its small CNN ...",
                  file=sys.stderr)
            results["rgb"] = rgb_bench(work, n_test=args.rgb_n, n_train=args.rgb_train_n,
                                       epochs=args.rgb_epochs, device=device)
            if suite == "all":
                print()
            print(format_rgb(results["rgb"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def mnist_bench(args: argparse.Namespace, device: str, work: Path) -> dict:
    """The MNIST rows: end to end and step by step against the naive way."""
    ds = load_dataset("mnist", "test", data_root=args.data_root)
    n = min(args.n, len(ds))
    checkpoint = args.checkpoint or train_default(args, device, work, ds.name)
    return {"n": n, "device": device, "dataset": ds.name,
            "end_to_end": end_to_end(checkpoint, args.data_root, n, device, work),
            "steps": step_comparison(checkpoint, args.data_root, n, device, args.repeats,
                                     work, args.skip_naive)}
