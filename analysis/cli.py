"""``python -m analysis``: run every analysis step, export the sample table, benchmark.

Expected mistakes (a missing file, a bad flag value) print one ``error:`` line
and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from cache.numba_dir import configure_numba_cache
from core.errors import USER_ERRORS, ConfigError

log = logging.getLogger("analysis")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="run folder written by `python -m models train`")
    p.add_argument("--model", dest="model_spec", help="your own model: package.module:factory")
    p.add_argument("--weights", help="state_dict file for --model")
    p.add_argument("--embedding-layer", help="module whose output is the embedding "
                   "(default: the input of the last Linear layer)")
    p.add_argument("--task", default=None,
                   help="the model's task when the run does not say: classification "
                        "(default), mnist-sum, or package.module:name (an core.tasks.Task)")
    p.add_argument("--trust-code", action="store_true",
                   help="import the --model/--task code a run folder's run.json names (by "
                        "default opening such a run needs the same --model/--task given here)")
    add_input_args(p)


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--input-size``, ``--mean``, ``--std``: the model's input contract."""
    g = p.add_argument_group("model input (default: the run's run.json, else inferred)")
    g.add_argument("--input-size", metavar="CxHxW",
                   help="what the model reads, e.g. 3x32x32 (or HxW); images are resized "
                        "and converted to it (default: channels from the first conv, size "
                        "from the data)")
    g.add_argument("--mean", metavar="M[,M,M]",
                   help="per-channel mean subtracted from pixels in [0, 1] (one value = "
                        "every channel); with --std; --mean 0 --std 1 = raw [0, 1] pixels")
    g.add_argument("--std", metavar="S[,S,S]", help="per-channel std pixels are divided by")


def input_spec_of(args: argparse.Namespace):
    """The :class:`~models.inputs.InputSpec` the flags declare."""
    from models.inputs import spec_from_flags

    return spec_from_flags(getattr(args, "input_size", None), getattr(args, "mean", None),
                           getattr(args, "std", None))


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist",
                   help="mnist, fashion-mnist, notmnist, mnist-5k, folder:PATH (ImageFolder "
                        "layout, optionally with train/ and test/ sub-folders), csv:FILE "
                        "(columns path,label[,split]), corrupt:NAME or mnist-scale:N (N "
                        "augmented MNIST digits in a memory-mapped store)")
    p.add_argument("--split", default="test", help="train or test")
    p.add_argument("--limit", type=int, default=None, help="analyse the first N samples")
    p.add_argument("--data-root", default=None, help="folder searched before $LOUPE_DATA")
    p.add_argument("--cache-dir", default=None,
                   help="artifact cache (default $LOUPE_CACHE or ~/.cache/loupe/cache)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_step_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mc-samples", type=int, default=None,
                   help="MC-dropout passes (default 20 when the model has dropout; 0 skips)")
    p.add_argument("--projection", nargs="*", default=["umap", "tsne"],
                   choices=["umap", "tsne"], help="2D maps to compute")
    p.add_argument("--k", type=int, default=10, help="nearest neighbours per sample")
    p.add_argument("--attribution", default=None, metavar="METHOD",
                   help="also compute heatmaps of the misclassified samples "
                        "(integrated_gradients, saliency, gradcam, occlusion)")
    p.add_argument("--gradcam-layer", default=None, metavar="NAME",
                   help="GradCAM's layer, a module name (default: the last conv block's output)")
    p.add_argument("--extra-dataset", action="append", default=[], metavar="NAME",
                   help="an out-of-distribution dataset analysed against --dataset "
                        "(repeatable; e.g. fashion-mnist, notmnist, folder:PATH, csv:FILE); "
                        "converted to the model's input")
    p.add_argument("--metadata", default=None, metavar="PKG.MODULE:FUNCTIONS",
                   help="your own per-sample metadata: a function or list of functions "
                        "f(images (N,C,H,W) in [0,1], labels) -> (N,) array or dict of them; "
                        "columns named meta_<name> (see README, Metadata)")
    p.add_argument("--step-option", action="append", default=[], metavar="STEP.FIELD=VALUE",
                   help="set any step's option (repeatable), e.g. mc_dropout.seed=1 or "
                        "umap.n_neighbors=30; `python -m analysis steps` lists them")


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address`` (see :mod:`analysis.executor`)."""
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"),
                   help="where inference, MC dropout and image metadata run their batches: "
                        "in this process (default) or on Ray Data workers")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --executor ray: a running Ray cluster (`ray start --head` prints "
                        "it; 'auto' finds a local one); default: start Ray on this machine")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compute every step (cached) and print a summary")
    export = sub.add_parser("export", help="write the per-sample table as CSV")
    ood = sub.add_parser("ood", help="how well each uncertainty score separates --dataset "
                                     "from each --extra-dataset (AUROC, FPR@95)")
    insights = sub.add_parser("insights", help="where the model fails and why, as JSON; "
                                               "--fail-on makes it a CI check")
    for sp in (run, export, ood, insights):
        add_model_args(sp)
        add_data_args(sp)
        add_step_args(sp)
        add_executor_args(sp)
    export.add_argument("--out", required=True,
                        help="CSV file to write (FILE.parquet: a Parquet file, columnar)")
    export.add_argument("--head", default=None,
                        help="head whose label/pred/loss fill the unprefixed columns "
                             "(multi-head models; every head also has <head>_* columns)")
    ood.add_argument("--out", default=None, help="CSV file for the score table")
    insights.add_argument("--out", default=None, help="JSON file of the insights (a list)")
    insights.add_argument("--fail-on", action="append", default=[], metavar="KIND:COUNT",
                          help="exit 1 when insights of KIND (slice, cluster, label_issues, "
                               "duplicates, leakage, outliers, class_imbalance, ood) hold more "
                               "than COUNT samples in all (leakage:0 fails on any); repeatable")
    compare = sub.add_parser("compare", help="per-sample differences between two runs")
    compare.add_argument("--checkpoint", action="append", required=True,
                         help="run folder; give exactly two (A then B)")
    add_data_args(compare)
    compare.add_argument("--head", default=None,
                         help="the compared head of multi-head models (default: the first)")
    compare.add_argument("--out", default=None, help="CSV of the per-sample differences")
    steps = sub.add_parser("steps", help="list the analysis steps: when each runs, its options "
                                         "(for --step-option) and its columns")
    steps.add_argument("--columns", action="store_true", help="also describe every column")
    runs = sub.add_parser("runs", help="list every run under a runs folder")
    runs.add_argument("--runs-dir", default="runs", help="folder of run folders (default runs)")
    runs.add_argument("--out", default=None, help="also write the table as CSV")
    bench = sub.add_parser("bench", help="time each step against the naive way "
                                         "(--suite rgb: colour photo patches, your own CNN)")
    bench.add_argument("--n", type=int, default=10_000, help="samples of the MNIST test set")
    bench.add_argument("--checkpoint", default=None,
                       help="run folder (default: train mnist_cnn for 3 epochs into a temp dir)")
    bench.add_argument("--data-root", default=None)
    bench.add_argument("--device", default="auto")
    bench.add_argument("--repeats", type=int, default=3, help="repeats of each timed step")
    bench.add_argument("--skip-naive", action="store_true",
                       help="time only Loupe's way (the naive baselines take minutes)")
    bench.add_argument("--suite", default="mnist", choices=["mnist", "rgb", "all", "insights"],
                       help="mnist (default): the MNIST rows; rgb: 32x32 colour photo patches "
                            "and a small CNN of your own, end to end; all: both; insights: "
                            "the insight steps and image measurements on MNIST test and train")
    bench.add_argument("--rgb-n", type=int, default=10_000, help="RGB test images (--suite rgb)")
    bench.add_argument("--rgb-train-n", type=int, default=10_000,
                       help="RGB train images for the small CNN")
    bench.add_argument("--rgb-epochs", type=int, default=3, help="epochs of the small CNN")
    bench.add_argument("--scale", default=None, metavar="N1,N2,...",
                       help="growth: analyse mnist-scale:N at each size, every step from an "
                            "empty cache, time and peak memory per step (e.g. 10000,70000)")
    bench.add_argument("--mc-samples", type=int, default=20,
                       help="MC-dropout passes in the --scale runs (default 20)")
    bench.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"),
                       help="with --scale: ray also runs every size on a local Ray")
    bench.add_argument("--stores", default=None, metavar="DIR",
                       help="with --scale: keep the mnist-scale image stores in DIR between "
                            "benchmarks (the 1,000,000-sample one takes minutes to build)")
    bench.add_argument("--sequential", action="store_true",
                       help="with --scale: every step in turn, UMAP not beside the others "
                            "(still in its child process; to compare with the default)")
    bench.add_argument("--out", default=None, help="also write the results as JSON")
    return p


def open_session(args: argparse.Namespace):
    from analysis.executor import make_executor
    from analysis.session import AnalysisSession

    executor = make_executor(getattr(args, "executor", "inprocess"),
                             getattr(args, "ray_address", None))
    executor.prepare()  # Ray: starts its workers while the model and the data load
    return AnalysisSession.open(
        args.checkpoint, args.dataset, args.split, model_spec=args.model_spec,
        weights=args.weights, embedding_layer=args.embedding_layer, data_root=args.data_root,
        cache_dir=args.cache_dir, device=args.device, limit=args.limit,
        mc_samples=args.mc_samples, k=args.k, projections=args.projection,
        extra_datasets=args.extra_dataset, attribution=args.attribution, task=args.task,
        input_spec=input_spec_of(args), trust_code=args.trust_code,
        gradcam_layer=args.gradcam_layer, metadata=getattr(args, "metadata", None),
        step_options=step_options_of(getattr(args, "step_option", [])), executor=executor)


def step_options_of(texts: list[str]) -> dict[str, dict]:
    """``["mc_dropout.samples=30", ...]`` -> ``{"mc_dropout": {"samples": 30}}``."""
    from analysis.registry import parse_step_option

    out: dict[str, dict] = {}
    for text in texts:
        step, field_name, value = parse_step_option(text)
        out.setdefault(step, {})[field_name] = value
    return out


def print_summary(session, records, seconds: float) -> None:
    from models.inputs import normalisation_flags

    inf = session.artifact("inference").summary
    ds = session.dataset
    print(f"{session.name} on {ds.key} ({len(ds):,d} samples, {session.device}):")
    model = session.model
    print(f"  input {'x'.join(map(str, model.input_shape))}, "
          f"{normalisation_flags(model.mean, model.std)}")
    for note in session.input_notes:
        print(f"  assumed: {note}")
    check = session.preprocessing()
    declared = check["results"][0]
    print(f"  preprocessing check on {check['n']} samples: "
          + ", ".join(f"{r['name']} {r['accuracy']:.1%}" for r in check["results"]))
    if check["warning"]:
        print(f"  WARNING: {check['warning']}")
    elif declared["name"] != check["best"]:
        print("  (the best alternative is not clearly better: the declared one is kept)")
    mc = session.artifact("mc_dropout").summary if "mc_dropout" in session.steps else None
    for head in session.heads:
        name = "" if len(session.heads) == 1 else f"head {head}: "
        print(f"  {name}accuracy {inf[head]['accuracy']:.4f}   mean loss "
              f"{inf[head]['mean_loss']:.4f}")
        if mc is not None:
            print(f"  {name}MC dropout (T={mc['samples']}) accuracy {mc[head]['accuracy']:.4f}")
    for proj in session.projections:
        q = session.artifact(proj).summary
        print(f"  {proj}: trustworthiness {q['trustworthiness']:.4f}, "
              f"10-NN kept {q['knn_preservation']:.3f}")
    if "attribution" in session.steps:
        a = session.artifact("attribution").summary
        print(f"  heatmaps of {a['count']} misclassified samples ({args_method(session)})")
    print("  steps:")
    for r in records:
        print(f"    {r.name:16s} {r.status:9s} {r.seconds:7.2f} s")
    print(f"  total {seconds:.2f} s")


def run_compare(args: argparse.Namespace) -> int:
    from analysis.compare import compare_sessions, print_comparison
    from analysis.session import AnalysisSession

    if len(args.checkpoint) != 2:
        raise ConfigError(f"compare needs exactly two --checkpoint, got {len(args.checkpoint)}.")
    a, b = (AnalysisSession.open(c, args.dataset, args.split, data_root=args.data_root,
                                 cache_dir=args.cache_dir, device=args.device, limit=args.limit,
                                 mc_samples=0, projections=())
            for c in args.checkpoint)
    cmp = compare_sessions(a, b, head=args.head)
    print_comparison(cmp)
    if args.out:
        from analysis.export import write_csv

        write_csv(cmp.frame, args.out)
        print(f"wrote {args.out}")
    return 0


def list_runs(args: argparse.Namespace) -> int:
    from analysis.runs import discover_runs, runs_table

    frame = runs_table(discover_runs(args.runs_dir), args.runs_dir)
    if frame.empty:
        print(f"no runs under {args.runs_dir}")
        return 0
    shown = frame[["name", "arch", "parameters", "mult_adds", "epochs", "best_train_acc",
                   "best_test_acc", "final_test_loss", "training_time_s", "augment", "status",
                   "problem"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        from analysis.export import write_csv

        write_csv(frame, args.out)
        print(f"wrote {args.out}")
    return 0


def list_steps(columns: bool = False) -> int:
    """Print every registered step: datasets, requirements, options and columns."""
    import dataclasses

    from analysis.registry import STEPS, all_steps

    for name in all_steps():
        cls = STEPS[name]
        print(f"{name}  (v{cls.version}; runs on: {', '.join(cls.datasets)}"
              f"{'; requires ' + ', '.join(cls.requires) if cls.requires else ''})")
        for f in dataclasses.fields(cls.Config):
            print(f"    --step-option {name}.{f.name}={f.default!r}")
        for col in cls.declared():
            line = f"    column {col.name} ({col.kind}{', ' + col.unit if col.unit else ''})"
            print(f"{line}: {col.description}" if columns and col.description else line)
    return 0


def parse_fail_on(values: list[str]) -> dict[str, int]:
    """``["label_issues:10", ...]`` -> ``{"label_issues": 10}``; a bad value is a ConfigError."""
    from analysis.insights import KINDS

    out = {}
    for value in values:
        kind, _, count = value.partition(":")
        if kind not in KINDS or not count.isdigit():
            raise ConfigError(f"--fail-on {value!r}: use KIND:COUNT with KIND one of "
                              f"{', '.join(KINDS)} and COUNT a whole number, e.g. "
                              "label_issues:10.")
        out[kind] = int(count)
    return out


def write_insights(session, out: str | None, thresholds: dict[str, int]) -> int:
    """Print the insights, write them as JSON, and return 1 when a threshold is crossed."""
    import json
    from pathlib import Path

    insights = session.insights()
    for ins in insights:
        print(f"[{ins.severity:6s}] {ins.kind:15s} {ins.n:7,d}  {ins.title}")
    if not insights:
        print("no insights")
    if out:
        path = Path(out)
        if not path.parent.exists():
            raise ConfigError(f"--out {out}: folder {path.parent} does not exist.")
        path.write_text(json.dumps([json_ready(i.to_dict()) for i in insights], indent=1,
                                   allow_nan=False))
        print(f"wrote {out}")
    failed = 0
    for kind, limit in thresholds.items():
        count = sum(i.n for i in insights if i.kind == kind)
        if count > limit:
            print(f"FAIL: {kind}: {count} samples (threshold {limit})", file=sys.stderr)
            failed = 1
    return failed


def json_ready(value):
    """``value`` with numpy scalars as Python numbers and NaN/inf as ``None`` (strict JSON)."""
    import math

    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def args_method(session) -> str:
    return session.engine.config("attribution").method


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    configure_numba_cache()  # before anything imports numba (UMAP)
    args = build_parser().parse_args(argv)
    session = None
    try:
        if args.command == "bench":
            from benchmarks.engine import run_bench

            return run_bench(args)
        started = time.perf_counter()
        if args.command == "compare":
            return run_compare(args)
        if args.command == "runs":
            return list_runs(args)
        if args.command == "steps":
            return list_steps(args.columns)
        if args.command == "ood" and not args.extra_dataset:
            raise ConfigError("analysis ood needs at least one --extra-dataset "
                              "(e.g. fashion-mnist).")
        thresholds = parse_fail_on(args.fail_on) if args.command == "insights" else {}
        session = open_session(args)
        records = session.run()
        if args.command == "insights":
            return write_insights(session, args.out, thresholds)
        if args.command == "run":
            print_summary(session, records, time.perf_counter() - started)
        elif args.command == "ood":
            from analysis.report import ood_report, print_ood_report

            frame = ood_report(session)
            print_ood_report(session, frame)
            if args.out:
                from analysis.export import write_csv

                write_csv(frame, args.out)
                print(f"wrote {args.out}")
        else:
            from analysis.export import write_export

            out, rows, cols = write_export(session, args.out, head=args.head)
            print(f"wrote {out}: {rows:,d} rows x {cols} columns")
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished steps are cached; run again to resume.", file=sys.stderr)
        return 130
    finally:
        if session is not None:
            session.engine.executor.close()  # stops a Ray this command started
    return 0
