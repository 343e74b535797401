"""``python -m dashboard``: find or train the default run, analyse it, serve the dashboard."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from analysis.cli import add_executor_args, add_input_args
from cache.numba_dir import configure_numba_cache
from core.errors import USER_ERRORS
from dashboard.config import DashboardConfig

log = logging.getLogger("dashboard")
DEFAULT_RUN = Path("runs/mnist_cnn")
# With no --extra-dataset the Uncertainty & OOD page still compares against something, with
# nothing to download: corrupt:all, the 15 MNIST-C corruptions of the analysed data mixed
# (one drawn per sample). From near-harmless shifts (translate, rotate) to far ones
# (fog, stripe, canny edges), its scores overlap the digits' in part, so the histograms, the
# AUROC table and the "what a score misses" galleries have something to show; corrupt:inverse
# alone separates almost perfectly and teaches less. "--extra-dataset none" opts out.
DEFAULT_EXTRA_DATASETS = ("corrupt:all",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Loupe: explore a PyTorch image classifier in the browser. With no "
                    "arguments, trains (once) and serves runs/mnist_cnn on mnist.")
    p.add_argument("--checkpoint", action="append", metavar="RUN",
                   help="run folder (model.pt + run.json) or checkpoint file; repeat to open "
                        "several runs, switchable in the UI (default: runs/mnist_cnn, trained "
                        "when missing)")
    p.add_argument("--dataset", default="mnist",
                   help="dataset to analyse (mnist falls back to the embedded mnist-5k)")
    p.add_argument("--split", default="test", help="train or test (default test)")
    p.add_argument("--extra-dataset", action="append", default=[], metavar="NAME",
                   help="an out-of-distribution dataset (e.g. corrupt:fog, fashion-mnist, "
                        "notmnist, folder:PATH) analysed against --dataset for the Uncertainty "
                        "& OOD page; repeatable (default corrupt:all; none: no extra dataset)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--data-root", help="folder holding the datasets (else $LOUPE_DATA)")
    p.add_argument("--cache-dir", help="analysis cache (else $LOUPE_CACHE or ~/.cache/loupe)")
    p.add_argument("--model", dest="model_spec", metavar="PKG.MODULE:FACTORY",
                   help="bring your own model: a factory returning an nn.Module")
    p.add_argument("--weights", help="state_dict for --model")
    p.add_argument("--embedding-layer", help="module whose output is the embedding")
    p.add_argument("--task", default=None,
                   help="the model's task when the run does not say (see python -m analysis)")
    p.add_argument("--trust-code", action="store_true",
                   help="import the --model/--task code a run folder's run.json names (by "
                        "default opening such a run needs the same --model/--task given here)")
    p.add_argument("--limit", type=int, help="analyse only the first N samples")
    p.add_argument("--mc-samples", type=int, default=None,
                   help="MC-dropout passes (default 20 when the model has dropout; 0 skips); "
                        "use the same value as `python -m analysis run` to reuse its results")
    p.add_argument("--projection", nargs="*", default=["umap", "tsne"],
                   choices=["umap", "tsne"], help="2D maps to compute (default both)")
    p.add_argument("--metadata", default=None, metavar="PKG.MODULE:FUNCTIONS",
                   help="your own per-sample metadata functions (see python -m analysis "
                        "run --help); their meta_* columns appear everywhere")
    p.add_argument("--step-option", action="append", default=[], metavar="STEP.FIELD=VALUE",
                   help="set any analysis step's option (repeatable), e.g. "
                        "mc_dropout.seed=1 or umap.n_neighbors=30 (python -m analysis steps "
                        "lists them)")
    add_input_args(p)
    add_executor_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="folder of training runs compared on the Experiments page: every "
                        "sub-folder holding a model.pt (default runs)")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (never on a shared host)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true",
                   help="log every HTTP request and the libraries' own messages (faiss, "
                        "openTSNE, Dash)")
    return p


# Libraries whose INFO lines are noise to a user: werkzeug logs one line per HTTP request,
# faiss's loader reports the optional AVX2 build it did not find as an exception text,
# openTSNE explains parameters it ignores, Dash repeats "running on" after our own line.
CHATTY_LOGGERS = ("werkzeug", "faiss.loader", "openTSNE", "dash.dash")


class OncePerMessage(logging.Filter):
    """Let a warning (or worse) through once per process: the same fact in one line.

    Training and analysing both load the dataset, and each load would repeat
    the same fallback warning; INFO lines (timings, progress) are never dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def configure_logging(verbose: bool = False) -> None:
    """INFO to stderr, one line per warning; request logs and library chatter only when
    ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OncePerMessage) for f in handler.filters):
            handler.addFilter(OncePerMessage())
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        # A filter, not a level: Dash sets its logger's level itself when it starts serving.
        for f in [f for f in logger.filters if isinstance(f, WarningsOnly)]:
            logger.removeFilter(f)
        if not verbose:
            logger.addFilter(WarningsOnly())


class WarningsOnly(logging.Filter):
    """Drop a logger's records below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def config_from_args(args: argparse.Namespace) -> DashboardConfig:
    checkpoints = args.checkpoint or ([None] if args.model_spec and args.weights else
                                      [str(DEFAULT_RUN)])
    return DashboardConfig(
        checkpoints=checkpoints, dataset=args.dataset, split=args.split,
        extra_datasets=[d for d in args.extra_dataset or DEFAULT_EXTRA_DATASETS if d != "none"],
        data_root=args.data_root,
        cache_dir=args.cache_dir, model_spec=args.model_spec, weights=args.weights,
        embedding_layer=args.embedding_layer, limit=args.limit, device=args.device,
        host=args.host, port=args.port, debug=args.debug, progress=not args.quiet,
        runs_dir=args.runs_dir, mc_samples=args.mc_samples,
        projections=tuple(args.projection), input_size=args.input_size, mean=args.mean,
        std=args.std, task=args.task, trust_code=args.trust_code, metadata=args.metadata,
        step_options=tuple(args.step_option), executor=args.executor,
        ray_address=args.ray_address)


def ensure_default_run(config: DashboardConfig, explicit: bool) -> None:
    """Train ``runs/mnist_cnn`` when the default run is asked for and missing."""
    if explicit or (DEFAULT_RUN / "model.pt").is_file():
        return
    from models.train import TrainConfig, train

    log.info("no %s yet: training mnist_cnn on %s (about a minute on 2 cores)", DEFAULT_RUN,
             config.dataset)
    train(TrainConfig(arch="mnist_cnn", dataset=config.dataset, epochs=3), DEFAULT_RUN,
          device=config.device, data_root=config.data_root, progress=config.progress)


def warm_up_in_background(entries: list) -> threading.Thread:
    """Import Captum and explain one sample per run in a daemon thread (and prepare the
    map's rasteriser when a run is large).

    Done while the server already answers (the import alone takes ~1.7 s, most
    of it matplotlib pulled in by Captum): the pages open at once, and the
    first heatmap, usually asked for seconds later, does not pay for it.
    """
    from dashboard.views.population_scale import DEFAULT_MAX_POINTS
    from dashboard.views.sample import warm_up_attribution

    def work() -> None:
        for entry in entries:
            try:
                warm_up_attribution(entry)
            except Exception as exc:  # noqa: BLE001 - an optimisation: a click shows the error
                log.warning("heatmap warm-up of %s failed: %s", entry.label, exc)
        # A map past DEFAULT_MAX_POINTS is drawn as an image: datashader's import and
        # compilation (10-18 s on 2 busy cores) is paid here, not by the first visit.
        if any(len(entry.table) > DEFAULT_MAX_POINTS for entry in entries):
            from dashboard.figures.raster import warm_up

            warm_up()

    thread = threading.Thread(target=work, name="loupe-heatmap-warm-up", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    configure_numba_cache()  # before anything imports numba (UMAP)
    try:
        config = config_from_args(args)
        ensure_default_run(config, explicit=bool(args.checkpoint or args.model_spec))
        from dashboard.app import create_app
        from dashboard.state import get_registry_of
        app = create_app(config)
        warm_up_in_background(list(get_registry_of(app)))
    except USER_ERRORS as exc:
        log.error("%s", exc)
        return exc.exit_code
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who reaches this address can use the dashboard",
                    config.host)
    log.info("Loupe is ready on http://%s:%d", config.host, config.port)
    app.run(host=config.host, port=config.port, debug=config.debug)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
