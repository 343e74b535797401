"""``python -m dashboard``'s flags, the app factory and what the server sends."""

from __future__ import annotations

import json
import logging

import dash
import pytest

from dashboard import cli, ids
from dashboard.config import DashboardConfig, open_runs

ISSUE_IDS = ("population-graph", "projection-select", "color-select", "size-select",
             "selection-grid", "sample-image", "sample-probabilities", "heatmap-method",
             "heatmap-target", "sample-heatmap", "similars-gallery", "confusion-matrix",
             "metadata-graph", "training-graph", "export-csv", "export-selection-csv")


def test_defaults_are_safe():
    config = cli.config_from_args(cli.build_parser().parse_args([]))
    assert (config.host, config.port, config.debug) == ("127.0.0.1", 8050, False)
    assert config.checkpoints == ["runs/mnist_cnn"] and config.dataset == "mnist"


def test_flags():
    args = cli.build_parser().parse_args([
        "--checkpoint", "runs/a", "--checkpoint", "runs/b", "--dataset", "fashion-mnist",
        "--split", "train", "--extra-dataset", "notmnist", "--host", "0.0.0.0", "--port", "9000",
        "--data-root", "/data", "--cache-dir", "/c", "--limit", "50", "--device", "cpu",
        "--embedding-layer", "fc1", "--debug", "--quiet"])
    config = cli.config_from_args(args)
    assert config.checkpoints == ["runs/a", "runs/b"]
    assert (config.dataset, config.split, config.extra_datasets) == ("fashion-mnist", "train",
                                                                      ["notmnist"])
    assert (config.port, config.limit, config.debug, config.progress) == (9000, 50, True, False)
    assert config.jobs_dir.parent.as_posix() == "/c"
    own = cli.config_from_args(cli.build_parser().parse_args(
        ["--model", "pkg.mod:make", "--weights", "w.pt"]))
    assert own.checkpoints == [None] and own.model_spec == "pkg.mod:make"


def test_stable_ids_are_in_one_module():
    values = {v for k, v in vars(ids).items() if k.isupper()}
    assert set(ISSUE_IDS) <= values


def test_bad_checkpoint_is_a_message_not_a_traceback(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    code = cli.main(["--checkpoint", str(tmp_path / "missing"), "--cache-dir",
                     str(tmp_path / "c"), "--quiet"])
    assert code == 2
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_explicit_checkpoint_is_never_retrained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.ensure_default_run(DashboardConfig(), explicit=True)
    assert not (tmp_path / "runs").exists()


def test_open_runs_reads_back_the_cache(tiny_run, analysed_session, digits, data_root):
    config = DashboardConfig(checkpoints=[str(tiny_run)], dataset=digits, data_root=data_root,
                             cache_dir=str(analysed_session.store.directory), device="cpu",
                             limit=len(analysed_session.dataset), progress=False)
    registry = open_runs(config)
    (entry,) = [registry.get(k) for k in registry.keys()]
    assert all(r.status != "computed" for r in entry.session.engine.records)
    assert len(entry.table) == len(analysed_session.dataset)


def test_app_registers_every_page_and_leaks_no_path(app, registry, analysed_session, tiny_run):
    paths = {p["path"] for p in dash.page_registry.values()}
    assert {"/", "/sample", "/errors", "/metadata", "/training", "/export"} <= paths
    assert app.config.suppress_callback_exceptions
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert str(analysed_session.store.directory) not in layout
    assert str(tiny_run) not in layout and registry.default_key in layout
    stores = {c["props"]["id"] for c in json.loads(layout)["props"]["children"]
              if c.get("type") == "Store"}
    assert stores == {ids.RUN_STORE, ids.SELECTION_STORE, ids.SAMPLE_STORE}


@pytest.mark.parametrize("path", ["/", "/sample?id=nope", "/errors", "/metadata?column=zz",
                                  "/training", "/export", "/no-such-page"])
def test_every_url_is_served(app, path):
    assert app.server.test_client().get(path).status_code == 200


def test_metadata_flag_reaches_the_session(tiny_run, digits, tmp_path, caplog):
    args = cli.build_parser().parse_args(["--metadata", "pkg.meta:functions"])
    assert cli.config_from_args(args).metadata == "pkg.meta:functions"
    # opening imports the named module: a missing one is one message, before any step runs
    caplog.set_level(logging.ERROR)
    code = cli.main(["--checkpoint", str(tiny_run), "--dataset", digits, "--limit", "50",
                     "--cache-dir", str(tmp_path / "c"), "--quiet", "--metadata",
                     "no_such_pkg_xyz.meta:functions"])
    assert code == 2
    assert any("--metadata 'no_such_pkg_xyz.meta:functions': cannot import" in r.getMessage()
               for r in caplog.records)


@pytest.fixture
def logging_restored():
    """Undo :func:`cli.configure_logging`'s filters after the test."""
    yield
    for handler in logging.getLogger().handlers:
        for f in [f for f in handler.filters if isinstance(f, cli.OncePerMessage)]:
            handler.removeFilter(f)
    for name in cli.CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, cli.WarningsOnly)]:
            logger.removeFilter(f)


def test_requests_are_logged_only_with_verbose(caplog, logging_restored):
    assert cli.build_parser().parse_args(["--verbose"]).verbose
    assert not cli.build_parser().parse_args([]).verbose
    caplog.set_level(logging.INFO)
    cli.configure_logging(verbose=False)
    logging.getLogger("werkzeug").info('127.0.0.1 - - "POST /_dash-update-component" 200')
    logging.getLogger("faiss.loader").info("Could not load library with AVX2 support")
    logging.getLogger("werkzeug").warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
    caplog.clear()
    cli.configure_logging(verbose=True)
    logging.getLogger("werkzeug").info('127.0.0.1 - - "GET / HTTP/1.1" 200')
    assert len(caplog.records) == 1


def test_a_warning_is_one_line_however_often_it_is_logged(logging_restored):
    once = cli.OncePerMessage()
    make = logging.getLogger("core.datasets").makeRecord
    fallback = [make("core.datasets", logging.WARNING, __file__, 1,
                     "MNIST idx files not found under %s", ("/data",), None) for _ in range(3)]
    assert [once.filter(r) for r in fallback] == [True, False, False]
    info = [make("analysis.engine", logging.INFO, __file__, 1, "computed umap", (), None)
            for _ in range(2)]
    assert [once.filter(r) for r in info] == [True, True]  # progress lines are kept
