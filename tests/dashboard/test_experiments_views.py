"""The Experiments page's logic as plain functions, on three tiny runs trained on real digits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dashboard.state import DashboardInputError, RunRegistry
from dashboard.views import experiments as views
from dashboard.views.experiments_catalog import RunCatalog

# (run name, architecture, seed): different architectures so the runs disagree on samples.
RUNS = (("tiny_base", "tiny_base", 0), ("tiny_bn", "tiny_bn", 1),
        ("tiny_bn_nodrop", "tiny_bn_nodrop", 2))
TRAIN_SAMPLES = 2000
DIFF_SAMPLES = 300


def experiment_runs(base: Path, digits: str, data_root: str | None) -> Path:
    """``base/runs`` with the :data:`RUNS`, one epoch on 2,000 digits each (~2 s; trained
    once per test session).

    Both test modules call this with pytest's base temp folder, so the runs and
    the analysis cache next to them are shared.
    """
    from models.train import TrainConfig, train

    root = base / "runs"
    for name, arch, seed in RUNS:
        if not (root / name / "model.pt").is_file():
            train(TrainConfig(arch=arch, dataset=digits, epochs=1, limit=TRAIN_SAMPLES,
                              batch_size=32, lr=1e-2, seed=seed), root / name, device="cpu",
                  data_root=data_root, progress=False)
    return root


def experiments_config(base: Path, digits: str, data_root: str | None, runs_dir: Path):
    """The dashboard's config for the runs: the diff on the first 300 test digits."""
    from dashboard.config import DashboardConfig

    return DashboardConfig(checkpoints=[], dataset=digits, split="test", limit=DIFF_SAMPLES,
                           data_root=data_root, cache_dir=str(base / "experiments-cache"),
                           device="cpu", progress=False, runs_dir=str(runs_dir))


@pytest.fixture(scope="session")
def experiments_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "experiments"
    base.mkdir(exist_ok=True)
    return base


@pytest.fixture(scope="session")
def runs_dir(experiments_base, digits, data_root) -> Path:
    return experiment_runs(experiments_base, digits, data_root)


@pytest.fixture(scope="session")
def catalog(experiments_base, digits, data_root, runs_dir) -> RunCatalog:
    return RunCatalog(experiments_config(experiments_base, digits, data_root, runs_dir))


def meta_of(runs_dir: Path, name: str) -> dict:
    return json.loads((runs_dir / name / "run.json").read_text())


def direct_predictions(folder: Path, digits: str, data_root) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, predictions)`` of a run on the diff's samples, by a plain forward pass."""
    import torch

    from core.datasets import load_dataset
    from models.checkpoint import load_model

    model = load_model(folder)
    ds = load_dataset(digits, "test", data_root=data_root, limit=DIFF_SAMPLES,
                      image_shape=model.input_shape)
    with torch.inference_mode():
        logits = model.module.eval()(model.prepare(torch.from_numpy(ds.images)))
    return ds.labels, logits.argmax(1).numpy()


# -- the table ----------------------------------------------------------------------------------
def test_table_rows_equal_run_json(catalog, runs_dir):
    from analysis.runs import mult_adds

    records = views.table_records(catalog.table())
    assert [r["id"] for r in records] == sorted(name for name, _, _ in RUNS)
    for rec in records:
        meta = meta_of(runs_dir, rec["id"])
        history = meta["history"]
        assert rec["key"] == rec["id"] and rec["arch"] == meta["arch"]
        assert rec["dataset"] == meta["dataset"]
        assert rec["parameters"] == meta["parameters"]
        assert rec["epochs"] == len(history) == 1
        assert rec["best_train_acc"] == max(h["train_acc"] for h in history)
        assert rec["best_test_acc"] == max(h["test_acc"] for h in history)
        assert rec["final_test_loss"] == history[-1]["test_loss"]
        assert rec["training_time_s"] == meta["wall_time_s"]
        assert rec["mult_adds"] == mult_adds(runs_dir / rec["id"]) > 0
        assert rec["augment"] == "no"
    # The browser gets run names, never a server path.
    assert str(runs_dir) not in json.dumps(records)
    columns = {c["field"]: c for c in views.table_columns()}
    assert set(columns) <= set(records[0])
    assert columns["best_test_acc"]["cellDataType"] == "number"  # numeric sorting
    # the pinned run name is wide enough to read (the grid sizes columns before its rows)
    assert columns["key"]["pinned"] == "left" and columns["key"]["minWidth"] >= 150
    assert "d3.format('.2%')" in columns["best_test_acc"]["valueFormatter"]["function"]
    best = max(records, key=lambda r: r["best_test_acc"])["best_test_acc"]
    styled = {c["field"]: c for c in views.table_styles(catalog.table())}
    condition = styled["best_test_acc"]["cellStyle"]["styleConditions"][0]["condition"]
    assert condition == f"params.value == {float(best)!r}"
    assert views.ticked_runs([{"id": "a", "key": "a"}, {"x": 1}, "junk", {"id": 3}]) == ["a"]


def test_mult_adds_are_computed_once_per_model(catalog, monkeypatch):
    catalog.table()
    from dashboard.views import experiments_catalog

    def fail(folder):
        raise AssertionError(f"{folder} loaded again")

    monkeypatch.setattr(experiments_catalog, "mult_adds", fail)
    assert catalog.table()["mult_adds"].notna().all()


def test_missing_or_empty_runs_dir_is_a_message(tmp_path, catalog):
    from dashboard.config import DashboardConfig

    missing = RunCatalog(DashboardConfig(checkpoints=[], runs_dir=str(tmp_path / "nowhere")))
    with pytest.raises(DashboardInputError, match="nowhere") as err:
        missing.table()
    assert "python -m models train --out" in str(err.value)
    assert str(tmp_path) not in str(err.value)  # the folder's name, never a server path
    (tmp_path / "empty").mkdir()
    empty = RunCatalog(DashboardConfig(checkpoints=[], runs_dir=str(tmp_path / "empty")))
    with pytest.raises(DashboardInputError, match="No run under 'empty'"):
        empty.table()
    with pytest.raises(DashboardInputError, match="Unknown run 'x'"):
        catalog.folder("x")


# -- curves and summaries -----------------------------------------------------------------------
def test_curves_have_one_trace_per_run_and_split(catalog):
    keys = ["tiny_bn", "tiny_base"]
    fig = views.curves_figure(catalog, keys)
    loss = [t for t in fig.data if t.xaxis == "x"]
    acc = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.name for t in loss] == [f"{k} · {s}" for k in keys for s in ("train", "test")]
    assert len(acc) == len(loss) == 2 * len(keys)
    assert [t.line.dash for t in loss] == ["solid", "dash"] * len(keys)
    assert loss[0].line.color == loss[1].line.color != loss[2].line.color
    history = catalog.history("tiny_bn")
    assert list(loss[1].y) == [h["test_loss"] for h in history]
    assert list(acc[1].y) == pytest.approx([h["test_acc"] * 100 for h in history])
    summaries = views.summaries_view(catalog, keys)
    assert len(summaries) == 2 and "Total params" in summaries[0].children[1].children
    assert views.shown_runs(catalog, None) == [name for name, _, _ in sorted(RUNS)]
    assert views.shown_runs(catalog, {"order": keys}) == keys


def test_a_run_keeps_its_colour_whatever_is_ticked(catalog):
    everything = sorted(name for name, _, _ in RUNS)

    def colour(keys, key):
        fig = views.curves_figure(catalog, keys)
        return next(t.line.color for t in fig.data if t.name == f"{key} · train")

    last = everything[-1]
    assert colour([last], last) == colour(everything[::-1], last) == colour(everything, last)
    assert len({colour(everything, k) for k in everything}) == len(everything)


def test_epoch_ticks_are_whole_numbers():
    from dashboard.figures.experiments import epoch_ticks, runs_curves_figure

    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e} for e in (1, 2, 3)]
    fig = runs_curves_figure([("r", history)])
    axis = fig.layout.xaxis
    assert (axis.tickmode, axis.tick0, axis.dtick) == ("linear", 0, 1)
    long = [("r", [{"epoch": e} for e in range(1, 41)])]
    assert epoch_ticks(long)["dtick"] == 4  # at most 10 ticks, still whole epochs


def test_pair_follows_ticking_order_and_swaps():
    store = views.pair_store(["b"], None, swap=False)
    assert store == {"order": ["b"], "a": None, "b": None}
    store = views.pair_store(["a", "b"], store, swap=False)  # the table lists rows in its order
    assert (store["a"], store["b"]) == ("b", "a")
    swapped = views.pair_store(None, store, swap=True)
    assert views.pair_of(swapped) == ("a", "b")
    assert views.pair_of(views.pair_store(["a", "b"], swapped, swap=False)) == ("a", "b")
    three = views.pair_store(["a", "b", "c"], swapped, swap=False)
    assert views.pair_of(three) is None and three["order"] == ["b", "a", "c"]


# -- the diff -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ab_store():
    return {"order": ["tiny_base", "tiny_bn"], "a": "tiny_base", "b": "tiny_bn"}


@pytest.fixture(scope="session")
def flipped(runs_dir, digits, data_root) -> dict[str, np.ndarray]:
    """The flipped sample indices, from the two runs' own predictions."""
    labels, pred_a = direct_predictions(runs_dir / "tiny_base", digits, data_root)
    _, pred_b = direct_predictions(runs_dir / "tiny_bn", digits, data_root)
    ca, cb = pred_a == labels, pred_b == labels
    out = {"to_wrong": np.flatnonzero(ca & ~cb), "to_right": np.flatnonzero(~ca & cb)}
    assert len(out["to_wrong"]) + len(out["to_right"]) > 0, "the tiny runs agree everywhere"
    return out


def test_diff_summary_and_gallery_show_the_flips(catalog, ab_store, flipped):
    line, summary, gallery, head = views.diff_view(catalog, ab_store)
    assert head == "class" and ", head" not in str(line)  # one head: not named
    assert views.diff_head_choices(catalog, ab_store, head)[2] == {"display": "none"}
    assert "tiny_base" in str(line) and "tiny_bn" in str(line)
    stats = summary.children[0].children
    counts = [c.children for c in stats if getattr(c, "className", "") in
              ("text-danger", "text-success")]
    assert counts == [str(len(flipped["to_wrong"])), str(len(flipped["to_right"]))]
    assert "McNemar exact p" in str(summary)
    thumbs = [t for section in gallery.children[1::2] for t in
              (section.children if isinstance(section.children, list) else [])]
    shown = sorted(t.id["index"] for t in thumbs)
    expected = np.concatenate([flipped["to_wrong"], flipped["to_right"]])
    assert set(shown) <= set(expected.tolist())
    assert len(shown) == min(len(flipped["to_wrong"]), views.GALLERY_SIZE) + \
        min(len(flipped["to_right"]), views.GALLERY_SIZE)
    assert views.diff_view(catalog, {"order": ["tiny_bn"]})[1].children == views.SELECT_HINT


def test_diff_map_highlights_exactly_the_flipped_samples(catalog, ab_store, flipped):
    messages = []
    fig = views.diff_map(catalog, ab_store, messages.append)
    assert messages and "umap" in messages[-1]
    coords = catalog.session("tiny_bn").projection("umap")
    rest, to_wrong, to_right = fig.data
    for trace, idx in ((to_wrong, flipped["to_wrong"]), (to_right, flipped["to_right"])):
        np.testing.assert_allclose(np.column_stack([trace.x, trace.y]), coords[idx], rtol=1e-6)
        assert trace.marker.size > rest.marker.size and trace.marker.line.width > 0
    assert len(rest.x) == len(coords) - len(flipped["to_wrong"]) - len(flipped["to_right"])
    assert rest.hoverinfo == "skip" and rest.marker.color == "#c3c8ce"
    axis = fig.layout.coloraxis
    assert axis.cmin == -axis.cmax and axis.cmax > 0  # diverging, centred at 0
    delta = catalog.comparison("tiny_base", "tiny_bn").frame["loss_delta"].to_numpy()
    np.testing.assert_allclose(to_wrong.marker.color, delta[flipped["to_wrong"]], rtol=1e-5)
    # A click on a highlighted point is the sample at (curveNumber, pointIndex).
    if len(flipped["to_right"]):
        point = {"curveNumber": 2, "pointIndex": len(flipped["to_right"]) - 1}
        assert views.clicked_index(catalog, ab_store, [point]) == flipped["to_right"][-1]
    assert views.clicked_index(catalog, ab_store, [{"curveNumber": 0, "pointIndex": 0}]) is None


def test_open_flipped_registers_run_b_once(catalog, ab_store, flipped):
    registry = RunRegistry()
    index = int(np.concatenate([flipped["to_wrong"], flipped["to_right"]])[0])
    href, run_store, sample_store, options, value, head_options, head_value, head_box = \
        views.open_flipped(registry, catalog, ab_store, index)
    assert head_value == value and head_box == {"display": "none"} and len(head_options) == 1
    sid = catalog.session("tiny_bn").dataset.sample_ids[index]
    assert href == f"/sample?id={sid}" and sample_store == {"run": value, "id": sid}
    assert run_store == {"run": value} and options == registry.options()
    assert len(registry) == 1 and registry.get(value).label.startswith("tiny_bn · ")
    again = views.open_flipped(registry, catalog, ab_store, index)
    assert again[4] == value and len(registry) == 1
    with pytest.raises(DashboardInputError):
        views.open_flipped(registry, catalog, ab_store, 10**6)


def test_runs_trained_on_different_datasets_are_a_message(tmp_path, catalog, runs_dir):
    from dashboard.config import DashboardConfig

    other = tmp_path / "runs"
    for name in ("tiny_base", "tiny_bn"):
        shutil.copytree(runs_dir / name, other / name)
    meta = json.loads((other / "tiny_bn" / "run.json").read_text())
    meta["dataset"] = "fashion-mnist"
    (other / "tiny_bn" / "run.json").write_text(json.dumps(meta))
    mixed = RunCatalog(DashboardConfig(**{**vars(catalog.config), "runs_dir": str(other)}))
    with pytest.raises(DashboardInputError, match="trained on .* and run B .* on fashion-mnist"):
        views.diff_view(mixed, {"a": "tiny_base", "b": "tiny_bn"})


def test_cli_runs_dir_flag():
    from dashboard import cli

    assert cli.config_from_args(cli.build_parser().parse_args([])).runs_dir == "runs"
    args = cli.build_parser().parse_args(["--runs-dir", "runs/series"])
    assert cli.config_from_args(args).runs_dir == "runs/series"


# -- two multi-head runs: the diff on a chosen head ------------------------------------------------
SUM_RUNS = (("sum_a", 0), ("sum_b", 1))


def sum_runs(base: Path, digits: str, data_root: str | None) -> Path:
    """``base/sum-runs`` with two ``sum_net`` runs (``mnist-sum``: digit and sum heads),
    one epoch on 800 digits each (trained once per test session)."""
    from models.train import TrainConfig, train

    root = base / "sum-runs"
    for name, seed in SUM_RUNS:
        if not (root / name / "model.pt").is_file():
            train(TrainConfig(arch="sum_net", task="mnist-sum", dataset=digits, epochs=1,
                              limit=800, batch_size=64, seed=seed), root / name, device="cpu",
                  data_root=data_root, progress=False)
    return root


@pytest.fixture(scope="session")
def sum_catalog(experiments_base, digits, data_root) -> RunCatalog:
    root = sum_runs(experiments_base, digits, data_root)
    return RunCatalog(experiments_config(experiments_base, digits, data_root, root))


def direct_sum_flips(catalog: RunCatalog, digits, data_root) -> np.ndarray:
    """Indices whose sum-head correctness differs between the runs, by plain forward passes
    with the number computed here from the sample ids."""
    import torch

    from core.datasets import load_dataset
    from core.tasks import number_from_ids
    from models.checkpoint import load_model

    correct = []
    for name, _ in SUM_RUNS:
        model = load_model(catalog.folder(name))
        ds = load_dataset(digits, "test", data_root=data_root, limit=DIFF_SAMPLES)
        number = number_from_ids(ds.sample_ids, 10)
        with torch.inference_mode():
            sum_logits = model.module.eval()(
                model.prepare(torch.from_numpy(ds.images)),
                torch.nn.functional.one_hot(torch.from_numpy(number), 10).float())["sum"]
        correct.append(sum_logits.argmax(1).numpy() == ds.labels + number)
    return np.flatnonzero(correct[0] != correct[1])


def test_multi_head_runs_are_diffed_on_the_chosen_head(sum_catalog, digits, data_root):
    store = {"order": ["sum_a", "sum_b"], "a": "sum_a", "b": "sum_b"}
    line, _, _, head = views.diff_view(sum_catalog, store)
    assert head == "digit" and "head digit" in str(line)
    options, value, box = views.diff_head_choices(sum_catalog, store, head)
    assert [o["value"] for o in options] == ["digit", "sum"] and box == {"display": "flex"}
    on_sum = {**store, "head": "sum"}
    line, summary, gallery, head = views.diff_view(sum_catalog, on_sum)
    assert head == "sum" and "head sum" in str(line)
    frame = sum_catalog.comparison("sum_a", "sum_b", "sum").frame
    flips = np.flatnonzero(frame["correct_a"].to_numpy() != frame["correct_b"].to_numpy())
    np.testing.assert_array_equal(flips, direct_sum_flips(sum_catalog, digits, data_root))
    assert frame["label"].max() > 9  # sum targets (0-18), not digits
    stats = summary.children[0].children
    counts = [int(c.children) for c in stats if getattr(c, "className", "") in
              ("text-danger", "text-success")]
    assert sum(counts) == len(flips)
    # The gallery and the map name the sum head's classes.
    titles = [t.title for section in gallery.children[1::2] if isinstance(section.children, list)
              for t in section.children]
    assert len(titles) == min(len(flips), 2 * views.GALLERY_SIZE)
    for t in titles:
        true = int(t.split("true ")[1].split(",")[0])
        assert 0 <= true <= 18
    fig = views.diff_map(sum_catalog, on_sum)
    assert sum(len(tr.x) for tr in fig.data[1:]) == len(flips)
    # A head the runs do not have falls back to the first shared one.
    assert views.diff_head(sum_catalog, {**store, "head": "nope"}) == "digit"


def test_a_flipped_sum_sample_opens_on_the_sum_head(sum_catalog):
    on_sum = {"order": ["sum_a", "sum_b"], "a": "sum_a", "b": "sum_b", "head": "sum"}
    frame = sum_catalog.comparison("sum_a", "sum_b", "sum").frame
    index = int(np.flatnonzero(frame["correct_a"].to_numpy() != frame["correct_b"].to_numpy())[0])
    registry = RunRegistry()
    href, run_store, sample_store, _, run_value, head_options, head_value, head_box = \
        views.open_flipped(registry, sum_catalog, on_sum, index)
    entry = registry.get(run_store["run"])
    assert entry.head == "sum" and head_value == entry.key != run_value
    assert sample_store == {"run": entry.key, "id": frame["sample_id"].iloc[index]}
    assert [o["label"] for o in head_options] == ["digit", "sum"] and head_box != \
        {"display": "none"}
    assert registry.get(run_value).head == "digit"  # the run selector names the run
    assert views.open_flipped(registry, sum_catalog, on_sum, index)[6] == head_value
    assert len(registry.keys()) == 2  # one run, two heads: added once
