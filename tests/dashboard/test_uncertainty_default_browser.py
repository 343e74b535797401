"""The Uncertainty & OOD page is never blank: with no extra dataset, and with corrupt:inverse.

Real digits (the first 300 test digits of ``mnist`` under LOUPE_DATA, else the
embedded ``mnist-5k``) and their built-in shifted copy, so nothing here needs
a second dataset on disk. Helpers and callbacks as plain functions first
(numbers checked against a hand-written evaluation), then headless Chromium.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.common.exceptions import StaleElementReferenceException

from dashboard import ids
from dashboard.views import uncertainty as views

SLICE = 300
INVERSE = "corrupt:inverse"
BARS_JS = "return document.querySelectorAll(arguments[0] + ' .barlayer .trace').length"


@pytest.fixture(scope="module")
def inverse_session(tiny_run, digits, data_root, tmp_path_factory):
    """The tiny run on 300 test digits + their inverted copy, MC T=5, t-SNE only."""
    from analysis.session import AnalysisSession

    session = AnalysisSession.open(tiny_run, digits, "test", data_root=data_root,
                                   cache_dir=tmp_path_factory.mktemp("inverse-cache"),
                                   device="cpu", limit=SLICE, extra_datasets=[INVERSE],
                                   mc_samples=5, projections=("tsne",), progress=False)
    session.run()
    return session


def sibling(session, mc_samples: int, extras: bool):
    """The same model, digits and cache, with or without MC dropout and the extra set."""
    from analysis.session import AnalysisSession

    extra = list(session.extras.values())[0].dataset
    out = AnalysisSession(session.model, session.dataset, session.store, "cpu",
                          mc_samples=mc_samples, projections=("tsne",), progress=False,
                          extra_datasets=[extra] if extras else [])
    out.run()
    return out


def entry_of(session):
    from dashboard.state import RunRegistry

    return RunRegistry().add(session, "tiny_cnn")


def page_module():
    import sys

    import dash

    name = next(p["module"] for p in dash.page_registry.values() if p["path"] == "/uncertainty")
    return sys.modules[name]


# -- plain functions -------------------------------------------------------------------------
def test_in_distribution_histograms_are_correct_vs_wrong_shares(inverse_session):
    entry = entry_of(sibling(inverse_session, 5, extras=False))
    assert views.in_score_columns(entry) == ["mc_entropy", "mc_mutual_info", "mc_uncertainty"]
    fig = views.in_histograms_view(entry)
    assert len(fig.data) == 6  # 3 scores x (correct, wrong)
    t = entry.table
    # By hand: the MC prediction's correctness, shares of each group per bin in %.
    ok = t["mc_pred"].to_numpy() == t["label"].to_numpy()
    v = t["mc_entropy"].to_numpy()
    edges = np.linspace(v.min(), v.max(), 31)
    want_ok = 100 * np.histogram(v[ok], edges)[0] / ok.sum()
    want_wrong = 100 * np.histogram(v[~ok], edges)[0] / (~ok).sum()
    np.testing.assert_allclose(fig.data[0].y, want_ok)
    np.testing.assert_allclose(fig.data[1].y, want_wrong)
    assert fig.data[0].name == f"correct predictions ({ok.sum():,})"
    # The panel title's AUROC: share of (wrong, correct) pairs ranked the right way round.
    pairs = (v[~ok][:, None] > v[ok][None, :]).mean() + \
        0.5 * (v[~ok][:, None] == v[ok][None, :]).mean()
    assert f"AUROC wrong vs correct {pairs:.3f}" in fig.layout.annotations[0].text


def test_most_uncertain_gallery_ranks_by_the_score(inverse_session):
    entry = entry_of(inverse_session)
    view = views.most_uncertain_view(entry, "mc_mutual_info")
    # cut short: the gallery says so above its thumbnails
    note, gallery = view.children[1].children
    assert note.children == f"showing {views.GALLERY_SIZE} of {SLICE:,} (most uncertain first)"
    hrefs = [a.href for a in gallery.children]
    t = entry.table
    want = t["sample_id"].to_numpy()[np.argsort(-t["mc_mutual_info"].to_numpy(),
                                                kind="stable")[:views.GALLERY_SIZE]]
    assert hrefs == [f"/sample?id={sid}" for sid in want]
    assert "most uncertain samples by mutual information" in view.children[0].children
    with pytest.raises(views.DashboardInputError, match="Unknown uncertainty score 'loss'"):
        views.most_uncertain_view(entry, "loss")


def test_without_dropout_the_plain_scores_are_shown(dash_config, inverse_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    entry = registry.add(sibling(inverse_session, 0, extras=False), "no-mc")
    assert views.in_score_columns(entry) == ["entropy", "uncertainty"]
    create_app(dash_config, registry)
    page = page_module()
    fig, summary, options, score = page.draw_in_distribution({"run": entry.key})
    assert len(fig.data) == 4 and score == "entropy"
    assert [o["value"] for o in options] == ["entropy", "uncertainty"]
    assert "The model has no dropout" in "".join(map(str, summary.children))
    _, _, _, _, message, section, hint, hint_style = page.init_controls({"run": entry.key}, {})
    assert message.children == views.NO_DROPOUT
    assert section == {"display": "none"} and hint_style == {"display": "block"}
    assert "corrupt:all" in str(hint)


def test_dashboard_cli_opens_corrupt_all_unless_told_none():
    from dashboard.cli import build_parser, config_from_args

    def extras(*argv):
        return config_from_args(build_parser().parse_args(list(argv))).extra_datasets

    assert extras() == ["corrupt:all"]
    assert extras("--extra-dataset", "none") == []
    assert extras("--extra-dataset", "corrupt:fog", "--extra-dataset", "notmnist") == \
        ["corrupt:fog", "notmnist"]


# -- in the browser --------------------------------------------------------------------------
def page_text(duo) -> str:
    return duo.driver.execute_script("return document.body.innerText")


def test_default_like_start_without_extra_dataset(dash_duo, browser, dash_config,
                                                  inverse_session):
    """A run with no extra dataset: histograms, the most uncertain samples and a hint."""
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    entry = registry.add(sibling(inverse_session, 5, extras=False), "bare")
    browser.open(create_app(dash_config, registry), "/uncertainty")
    hist = f"#{ids.IN_UNCERTAINTY_HISTOGRAMS}"
    dash_duo.wait_for_element(f"{hist} .barlayer .trace", timeout=30)
    until(lambda: dash_duo.driver.execute_script(BARS_JS, hist) == 6, timeout=20)
    thumbs = f"#{ids.IN_MOST_UNCERTAIN_GALLERY} a.loupe-thumb"
    dash_duo.wait_for_element(thumbs, timeout=20)
    assert len(dash_duo.find_elements(thumbs)) == views.GALLERY_SIZE
    assert "AUROC wrong vs correct" in dash_duo.find_element(hist).text
    assert "correct predictions" in dash_duo.find_element(hist).text  # the legend shows
    hint = dash_duo.find_element(f"#{ids.OOD_HINT}")
    assert hint.is_displayed()
    for words in ("python -m dashboard --extra-dataset corrupt:all", "dataset-fashion-mnist",
                  "/usr/share/datasets", "--data-root", "LOUPE_DATA"):
        assert words in hint.text
    assert not dash_duo.find_element(f"#{ids.OOD_SECTION}").is_displayed()
    assert "`" not in page_text(dash_duo)
    browser.screenshot("uncertainty-no-extra")

    # Ranking by another score redraws the gallery; its first thumbnail opens that sample.
    dash_duo.select_dcc_dropdown(f"#{ids.IN_UNCERTAINTY_SCORE}",
                                 "least confident (1 - max p), MC dropout")
    t = entry.table
    top = t["sample_id"].iat[int(np.argmax(t["mc_uncertainty"].to_numpy()))]
    # read in the page, not through an element the redraw may replace (stale reference)
    first_href = "const a = document.querySelector(arguments[0]); return a ? a.href : '';"
    until(lambda: dash_duo.driver.execute_script(first_href, thumbs).endswith(f"id={top}"),
          timeout=20)
    def click_first() -> bool:  # the gallery may be drawn once more between find and click
        try:
            dash_duo.find_elements(thumbs)[0].click()
        except StaleElementReferenceException:
            return False
        return True

    until(click_first, timeout=20)
    dash_duo.wait_for_contains_text(f"#{ids.SAMPLE_TITLE}", top, timeout=20)
    assert dash_duo.get_logs() == []


def test_with_corrupt_inverse_the_ood_part_shows(dash_duo, browser, dash_config,
                                                 inverse_session):
    from dashboard.app import create_app
    from dashboard.state import RunRegistry

    registry = RunRegistry()
    registry.add(inverse_session, "tiny_cnn")
    browser.open(create_app(dash_config, registry), "/uncertainty")
    ood_hist = f"#{ids.UNCERTAINTY_HISTOGRAMS}"
    dash_duo.wait_for_element(f"{ood_hist} .barlayer .trace", timeout=40)
    until(lambda: dash_duo.driver.execute_script(BARS_JS, ood_hist) == 2 * 11, timeout=20)
    key = next(iter(inverse_session.extras))
    assert key.startswith("corrupt-inverse-")
    assert key in dash_duo.find_element(f"#{ids.OOD_DATASET_SELECT}").text
    rows = f"#{ids.OOD_TABLE} .ag-center-cols-container .ag-row"
    until(lambda: len(dash_duo.find_elements(rows)) == 11, timeout=20)
    dash_duo.wait_for_element(f"#{ids.OOD_CONFIDENT_GALLERY} a.loupe-thumb", timeout=20)
    until(lambda: dash_duo.driver.execute_script(BARS_JS, f"#{ids.IN_UNCERTAINTY_HISTOGRAMS}")
          == 6, timeout=20)
    assert not dash_duo.find_element(f"#{ids.OOD_HINT}").is_displayed()
    assert "`" not in page_text(dash_duo)
    assert "correct predictions" in dash_duo.find_element(f"#{ids.IN_UNCERTAINTY_HISTOGRAMS}").text
    assert key in dash_duo.find_element(ood_hist).text  # the legend names the shifted set
    browser.set_viewport(1280, 3000)  # the whole page in one screenshot
    time.sleep(1)
    browser.screenshot("uncertainty-corrupt-inverse")
    assert dash_duo.get_logs() == []


def test_the_ood_insight_shows_the_extra_datasets_samples(inverse_session):
    # The ood insight lists the inverted digits: its card draws them from the extra
    # dataset (not "unknown ids" of this run) and offers no map selection.
    from dashboard.views import insights as insight_views

    entry = entry_of(inverse_session)
    (ood,) = [i for i in inverse_session.insights() if i.kind == "ood"]
    key = insight_views.extra_dataset_of(entry, ood)
    assert key is not None and key.startswith("corrupt-inverse")
    card = insight_views.insight_card(entry, ood, 0)
    gallery = card.children.children[2].children[1]
    hrefs = [a.href for a in gallery.children]
    assert hrefs == [f"/sample?id={sid}" for sid in ood.sample_ids[:insight_views.GALLERY_SIZE]]
    buttons = [c for c in card.children.children[0].children
               if getattr(c, "children", None) == "Select on the map"]
    assert buttons and buttons[0].style == {"display": "none"}
