"""The Uncertainty & OOD page on real slices: 300 digits vs 300 Fashion-MNIST images.

Helpers as plain functions first, then headless Chromium: the page draws its
histograms, map and table, and a real click on an OOD point of ``ood-map``
opens that sample's analysis (identified server side from curveNumber +
pointIndex, since plotly sends the arrays base64 and click data lacks
customdata).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from dash.testing.wait import until
from scipy.spatial import cKDTree
from selenium.webdriver.common.action_chains import ActionChains

from dashboard import ids
from dashboard.figures import uncertainty as ufig
from dashboard.state import DashboardInputError
from dashboard.views import ood_sample
from dashboard.views import uncertainty as views

SLICE = 300
OOD = "fashion-mnist:test"
MAP = "joint_tsne"
PIXEL_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(arguments[1]), r.top + ya._offset + ya.d2p(arguments[2])];
"""
TRACE_LEN_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const t = gd && gd._fullData ? gd._fullData[arguments[1]] : null;
return t ? t.x.length : -1;
"""


@pytest.fixture(scope="session")
def ood_session(tiny_run, digits, data_root, tmp_path_factory):
    """The tiny run on 300 test digits + 300 Fashion-MNIST test images, MC T=5, t-SNE only."""
    from analysis.session import AnalysisSession
    from core.datasets import find_idx_dir

    if find_idx_dir("fashion-mnist", data_root) is None:
        pytest.skip("fashion-mnist idx files not found; set LOUPE_DATA (e.g. ../shared/data)")
    session = AnalysisSession.open(tiny_run, digits, "test", data_root=data_root,
                                   cache_dir=tmp_path_factory.mktemp("ood-cache"), device="cpu",
                                   limit=SLICE, extra_datasets=["fashion-mnist"], mc_samples=5,
                                   projections=("tsne",), progress=False)
    session.run()
    return session


@pytest.fixture
def ood_entry(ood_session):
    from dashboard.state import RunRegistry

    return RunRegistry().add(ood_session, "tiny_cnn")


@pytest.fixture
def ood_app(dash_config, ood_entry):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    registry.add(ood_entry.session, "tiny_cnn")
    return create_app(dash_config, registry)


def plain_session(ood_session, mc_samples: int, extras: bool):
    """The same model and digits (same cache) without MC dropout and/or extra datasets."""
    from analysis.session import AnalysisSession

    extra = [ood_session.extra(OOD).dataset] if extras else []
    session = AnalysisSession(ood_session.model, ood_session.dataset, ood_session.store, "cpu",
                              mc_samples=mc_samples, projections=("tsne",), progress=False,
                              extra_datasets=extra)
    session.run()
    return session


# -- plain functions -------------------------------------------------------------------------
def test_score_table_is_the_ood_report(ood_entry):
    from analysis.report import ood_report

    table = views.score_table(ood_entry, OOD)
    report = ood_report(ood_entry.session).set_index("score")
    assert len(table) == len(report) == 11
    for _, row in table.iterrows():
        assert row["auroc"] == pytest.approx(report.loc[row["score"], "auroc"])
        assert row["fpr_at_95tpr"] == pytest.approx(report.loc[row["score"], "fpr_at_95tpr"])
    assert table["auroc"].is_monotonic_decreasing
    records = views.table_records(table)
    assert set(records[0]) == {"score", "tooltip"} | {c["field"] for c in views.table_columns()}
    assert records[0]["tooltip"] == f"column {records[0]['score']} of the sample table"


def test_map_points_resolve_to_sample_ids(ood_entry):
    ds = ood_entry.session.dataset
    extra = ood_entry.session.extra(OOD).dataset
    assert views.point_sample_id(ood_entry, OOD, {"curveNumber": 1, "pointIndex": 7}) == \
        extra.sample_ids[7]
    assert views.point_sample_id(ood_entry, OOD, {"curveNumber": 0, "pointIndex": 3}) == \
        ds.sample_ids[3]
    overlay = {"curveNumber": ufig.OVERLAY_TRACE, "pointIndex": 0, "customdata": SLICE + 4}
    assert views.point_sample_id(ood_entry, OOD, overlay) == extra.sample_ids[4]
    assert views.point_sample_id(ood_entry, OOD, {"curveNumber": 1, "pointIndex": SLICE}) is None
    assert ood_entry.locate_extra(f"{OOD}:12") == (OOD, 12)
    assert ood_entry.locate_extra(ds.sample_ids[12]) is None
    assert ood_entry.locate_extra(f"{OOD}:{SLICE}") is None
    img, name, text = views.hover_body(ood_entry, OOD, f"{OOD}:7")
    row = ood_entry.extra_table(OOD).iloc[7]
    assert img.src.startswith("data:image/png") and name.children.children == f"{OOD}:7"
    assert text.children == f"{row['label_name']} · predicted {row['pred_name']} " \
                            f"({row['confidence']:.1%})"
    assert views.hover_body(ood_entry, OOD, ds.sample_ids[3])[2].children.startswith("true ")


def test_map_view_counts_and_open_sample_highlight(ood_entry):
    store = {"run": ood_entry.key, "id": f"{OOD}:9"}
    fig = views.map_view(ood_entry, OOD, MAP, "dataset", store)
    assert [len(t.x) for t in fig.data] == [SLICE, SLICE, 1 + views.NEAREST_K]
    nearest = ood_entry.session.extra(OOD).get("distances")["reference_neighbors"][9]
    assert list(fig.data[2].customdata) == [SLICE + 9, *nearest[:views.NEAREST_K].tolist()]
    with pytest.raises(DashboardInputError, match="Unknown joint map"):
        views.map_view(ood_entry, OOD, "joint_pca", "dataset")


def test_overlap_table_reports_each_joint_map(ood_entry):
    table = views.overlap_table(ood_entry, OOD)
    rows = table.children[1].children
    assert [r.children[1].children for r in rows] == ["plain", "MC-averaged"]  # t-SNE only
    summary = ood_entry.session.extra(OOD).get(MAP).summary
    assert rows[0].children[2].children == f"{summary['ood_in_dist_neighbors_2d']:.1%}"


def test_galleries_rank_by_the_score(ood_entry):
    ood, in_dist, title = views.galleries_view(ood_entry, OOD, None)
    assert title.startswith("uncertainty")
    # both cut short: each says so above its thumbnails
    note, ood = ood.children
    assert note.children == f"showing {views.GALLERY_SIZE} of {len(ood_entry.extra_table(OOD)):,}" \
        " (lowest score first)"
    links = [c.href.split("id=")[1] for c in ood.children]
    extra = ood_entry.extra_table(OOD)
    want = extra.sort_values("uncertainty", kind="stable")["sample_id"][:views.GALLERY_SIZE]
    assert links == want.tolist()  # most confident OOD first
    worst = ood_entry.table["uncertainty"].to_numpy().argmax()
    note, in_dist = in_dist.children
    assert note.children.startswith(f"showing {views.GALLERY_SIZE} of ")
    assert in_dist.children[0].href.endswith(ood_entry.session.dataset.sample_ids[worst])


def test_extra_sample_view(ood_entry):
    title, src, grouped, _, probs, targets, gallery, mini = ood_sample.extra_sample_view(
        ood_entry, OOD, 5)
    # no distance to a digit class picked by a clothing label (see test_sample_views.py)
    assert "true class's centroid" not in str(grouped) and "nearest class centroid" in str(grouped)
    assert f"{OOD}:5" in str(title) and src.startswith("data:image/png")
    assert [t.name for t in probs.data] == ["without MC dropout", "with MC dropout (mean)"]
    assert "label" not in [o["value"] for o in targets]
    nearest = ood_entry.session.extra(OOD).get("distances")["reference_neighbors"][5][:10]
    assert [c.href.split("id=")[1] for c in gallery.children] == \
        ood_entry.session.dataset.sample_ids[nearest].tolist()
    assert mini.data[2].customdata[0] == SLICE + 5
    with pytest.raises(DashboardInputError, match="no ground-truth class"):
        ood_sample.extra_heatmap_view(ood_entry, OOD, 5, "saliency", "label")


def test_no_extra_dataset_and_no_dropout(ood_session):
    from dashboard.state import RunRegistry

    bare = RunRegistry().add(plain_session(ood_session, 5, extras=False), "bare")
    with pytest.raises(DashboardInputError, match="--extra-dataset fashion-mnist"):
        views.check_extra(bare, None)
    no_mc = RunRegistry().add(plain_session(ood_session, 0, extras=True), "no-mc")
    assert not any(c.startswith("mc_") for c in views.score_columns(no_mc, OOD))
    fig = views.histograms_view(no_mc, OOD)
    assert "mc_entropy: not computed (needs a model with dropout)" in \
        [a.text for a in fig.layout.annotations]
    assert [o["value"] for o in views.map_options(no_mc)] == [MAP]


def page_module(app):
    """The ``/uncertainty`` page module the app loaded (its callbacks are plain functions)."""
    import sys

    import dash

    name = next(p["module"] for p in dash.page_registry.values() if p["path"] == "/uncertainty")
    return sys.modules[name]


def test_controls_callback_tells_about_missing_dropout(dash_config, ood_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    entry = registry.add(plain_session(ood_session, 0, extras=True), "no-mc")
    page = page_module(create_app(dash_config, registry))
    options, key, maps, map_name, message, section, hint, _ = \
        page.init_controls({"run": entry.key}, {})
    assert (key, map_name) == (OOD, MAP) and len(options) == 1 and len(maps) == 1
    assert message.children == views.NO_DROPOUT
    assert section == {"display": "block"} and hint is None
    message = page.init_controls({"run": entry.key}, {"dataset": "cifar:test"})[4]
    assert message.children == \
        f"Unknown extra dataset 'cifar:test'; this run has: {OOD}."
    message = page.init_controls({"run": "stale"}, {})[4]
    assert "Unknown run 'stale'" in message.children


# -- in the browser --------------------------------------------------------------------------
def scroll_to(duo, element) -> None:
    """Bring ``element`` to the middle of the window, as a person scrolls to it."""
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def wait_for_ood_map(duo) -> None:
    duo.wait_for_element(f"#{ids.OOD_MAP} .nsewdrag", timeout=30)
    until(lambda: duo.driver.execute_script(TRACE_LEN_JS, ids.OOD_MAP, 1) == SLICE, timeout=30)
    # Below the in-distribution part: scroll the map into the window before pointing at it.
    scroll_to(duo, duo.find_element(f"#{ids.OOD_MAP}"))
    time.sleep(0.5)  # let the WebGL scene settle before pointing at it


def isolated_ood_row(session) -> int:
    """An OOD row far from every other point of the joint map, inside its frame."""
    xy = session.extra(OOD).get(MAP)["coords"].astype(np.float64)
    xy = (xy - xy.min(0)) / np.ptp(xy, 0)
    inner = np.all((xy > 0.1) & (xy < 0.9), axis=1)
    dist, _ = cKDTree(xy).query(xy, k=2)
    score = np.where(inner, dist[:, 1], -1)
    score[:len(session.dataset)] = -1
    return int(np.argmax(score)) - len(session.dataset)


def test_page_renders_histograms_map_and_table(dash_duo, browser, ood_app, ood_entry):
    browser.open(ood_app, "/uncertainty")
    wait_for_ood_map(dash_duo)
    dash_duo.wait_for_element(f"#{ids.UNCERTAINTY_HISTOGRAMS} .barlayer .trace", timeout=30)
    n_bars = dash_duo.driver.execute_script(
        "return document.querySelectorAll('#uncertainty-histograms .barlayer .trace').length")
    assert n_bars == 2 * 11  # 11 scores x 2 datasets
    assert dash_duo.driver.execute_script(TRACE_LEN_JS, ids.OOD_MAP, 0) == SLICE
    rows = dash_duo.find_elements(f"#{ids.OOD_TABLE} .ag-center-cols-container .ag-row")
    assert len(rows) == 11  # one row per score
    table = views.score_table(ood_entry, OOD)

    def first_row(col: str) -> str:
        return dash_duo.find_element(
            f"#{ids.OOD_TABLE} .ag-center-cols-container .ag-row[row-index='0'] "
            f".ag-cell[col-id='{col}']").text

    assert first_row("auroc") == f"{table['auroc'].iat[0]:.3f}"
    # Sorting is the grid's own: FPR@95's header sorts ascending, then descending.
    header = f"#{ids.OOD_TABLE} .ag-header-cell[col-id='fpr_at_95tpr'] .ag-header-cell-label"
    fpr = table["fpr_at_95tpr"]
    assert fpr.iat[0] != fpr.max()  # the default order (best AUROC first) is not this one
    for want in (fpr.min(), fpr.max()):
        scroll_to(dash_duo, dash_duo.find_element(header))
        dash_duo.find_element(header).click()
        until(lambda want=want: first_row("fpr_at_95tpr") == f"{want:.3f}", timeout=10)
    dash_duo.wait_for_element(f"#{ids.OOD_CONFIDENT_GALLERY} a.loupe-thumb", timeout=20)
    assert "AUROC" in dash_duo.find_element(f"#{ids.UNCERTAINTY_HISTOGRAMS}").text
    dash_duo.find_elements(f"#{ids.OOD_COLOR_SELECT} input")[1].click()  # by predicted class
    # Null-safe: until the re-colour lands the layout has no colour axis yet.
    until(lambda: dash_duo.driver.execute_script(
        "const p = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return ((p && p._fullLayout && p._fullLayout.coloraxis) || {}).cmax;",
        ids.OOD_MAP) == 9.5, timeout=20)
    browser.screenshot("uncertainty")
    assert dash_duo.get_logs() == []


def test_click_on_ood_point_opens_its_sample(dash_duo, browser, ood_app, ood_session):
    browser.open(ood_app, "/uncertainty")
    wait_for_ood_map(dash_duo)
    row = isolated_ood_row(ood_session)
    n_in = len(ood_session.dataset)
    x, y = ood_session.extra(OOD).get(MAP)["coords"][n_in + row]
    px, py = dash_duo.driver.execute_script(PIXEL_JS, ids.OOD_MAP, float(x), float(y))
    actions = ActionChains(dash_duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(int(round(px)), int(round(py)))
    actions.w3c_actions.pointer_action.click()
    actions.perform()

    sample_id = f"{OOD}:{row}"
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", sample_id, timeout=20)
    assert f"id={sample_id}" in dash_duo.driver.current_url
    assert "out of distribution" in dash_duo.find_element(f"#{ids.SAMPLE_TITLE}").text
    dash_duo.wait_for_element(f"#{ids.SAMPLE_PROBABILITIES} .barlayer .trace", timeout=20)
    dash_duo.wait_for_element(f"#{ids.SAMPLE_HEATMAP} .hm image", timeout=60)
    links = dash_duo.find_elements(f"#{ids.SIMILARS_GALLERY} a.loupe-thumb")
    nearest = ood_session.extra(OOD).get("distances")["reference_neighbors"][row][:10]
    assert [a.get_attribute("href").split("id=")[1] for a in links] == \
        ood_session.dataset.sample_ids[nearest].tolist()
    until(lambda: dash_duo.driver.execute_script(TRACE_LEN_JS, ids.SIMILARS_MAP, 2) == 11,
          timeout=20)
    browser.screenshot("uncertainty-ood-sample")
    assert dash_duo.get_logs() == []


def test_run_without_extra_dataset_says_how_to_add_one(dash_duo, browser, dash_config,
                                                       ood_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    registry.add(plain_session(ood_session, 5, extras=False), "bare")
    browser.open(create_app(dash_config, registry), "/uncertainty")
    dash_duo.wait_for_contains_text(f"#{ids.OOD_HINT}", "--extra-dataset fashion-mnist",
                                    timeout=20)
    assert "--extra-dataset corrupt:all" in dash_duo.find_element(f"#{ids.OOD_HINT}").text
    assert not dash_duo.find_element(f"#{ids.OOD_SECTION}").is_displayed()
    assert dash_duo.get_logs() == []


def test_cli_passes_extra_datasets_to_the_session(ood_session, monkeypatch):
    """``python -m dashboard --extra-dataset fashion-mnist`` opens ONE run with an extra set."""
    from analysis.session import AnalysisSession
    from dashboard.cli import build_parser, config_from_args
    from dashboard.config import open_runs

    calls = []

    def fake_open(checkpoint, dataset, split, **kwargs):
        calls.append((checkpoint, dataset, split, kwargs))
        return ood_session

    monkeypatch.setattr(AnalysisSession, "open", staticmethod(fake_open))
    args = build_parser().parse_args(["--checkpoint", "runs/x", "--extra-dataset",
                                      "fashion-mnist", "--extra-dataset", "notmnist"])
    registry = open_runs(config_from_args(args))
    assert len(registry) == 1 and len(calls) == 1
    assert calls[0][:3] == ("runs/x", "mnist", "test")
    assert calls[0][3]["extra_datasets"] == ["fashion-mnist", "notmnist"]
    assert list(registry.get(None).session.extras) == [OOD]
