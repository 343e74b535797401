"""Adding a step is one new module: found, planned, cached, exported, offered by the dashboard.

The step modules here are written by the test into a temporary folder (the
way a contributor adds ``analysis/steps/<name>.py``, or a package names its
module in the ``loupe.steps`` entry-point group); nothing else is edited.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import analysis.steps
from analysis import registry

STEP_SOURCE = '''
"""A throwaway step: the mean pixel brightness of each image, times a factor."""

from dataclasses import dataclass

import numpy as np

from analysis.registry import Column, Step, StepContext, register
from cache import Artifact


@register
class {cls}(Step):
    name = "{name}"
    uses_model = False
    datasets = ("main",)
    declares = (Column("{column}", "numeric", "0-1", description="Mean pixel value."),)

    @dataclass(frozen=True)
    class Config:
        factor: float = 1.0

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        images = ctx.dataset.images.reshape(len(ctx.dataset), -1)
        return Artifact({{"value": images.mean(1).astype(np.float32) / 255 * config.factor}})

    def columns(self, artifact: Artifact, config: Config) -> dict:
        return {{"{column}": artifact["value"]}}
'''


def _forget(name: str, module: str) -> None:
    registry.STEPS.pop(name, None)
    sys.modules.pop(module, None)


@pytest.fixture
def new_step_file(tmp_path):
    """``thrown_away.py`` in a folder searched as part of ``analysis.steps``."""
    folder = tmp_path / "more_steps"
    folder.mkdir()
    (folder / "thrown_away.py").write_text(STEP_SOURCE.format(
        cls="ThrownAway", name="thrown_away", column="thrown_away_brightness"))
    analysis.steps.__path__.append(str(folder))
    yield "thrown_away", "thrown_away_brightness"
    analysis.steps.__path__.remove(str(folder))
    _forget("thrown_away", "analysis.steps.thrown_away")


def test_a_new_step_file_is_planned_cached_exported_and_offered(new_step_file, tiny_model,
                                                                digits, data_root, tmp_path):
    from analysis.export import export_frame
    from analysis.session import AnalysisSession
    from cache import ArtifactStore
    from core.datasets import load_dataset
    from dashboard.columns import color_columns, numeric_columns
    from dashboard.state import RunRegistry

    name, column = new_step_file
    assert name in registry.discover_steps(refresh=True)
    ds = load_dataset(digits, "test", data_root=data_root, limit=120)
    store = ArtifactStore(tmp_path / "cache")
    session = AnalysisSession(tiny_model, ds, store, "cpu", mc_samples=0, projections=(),
                              progress=False)
    assert name in session.steps and name not in session.extra_steps
    records = {r.name: r.status for r in session.run()}
    assert records[name] == "computed"
    frame = export_frame(session)
    expected = ds.images.reshape(len(ds), -1).mean(1) / 255
    np.testing.assert_allclose(frame[column].to_numpy(), expected, rtol=1e-5)
    # cached: a second session on the same store reads it back
    again = AnalysisSession(tiny_model, ds, store, "cpu", mc_samples=0, projections=(),
                            progress=False)
    assert {r.name: r.status for r in again.run()}[name] == "cached"
    # the dashboard's colour-by and loss-vs-metadata controls offer it, with its unit
    entry = RunRegistry().add(again)
    assert column in color_columns(entry.table) and column in numeric_columns(entry.table)
    from dashboard.columns import column_title

    assert column_title(column) == "thrown_away_brightness (0-1)"  # the declared unit
    # its option is settable like any other
    opts = {name: {"factor": 2.0}}
    doubled = AnalysisSession(tiny_model, ds, store, "cpu", mc_samples=0, projections=(),
                              progress=False, step_options=opts)
    doubled.run()
    np.testing.assert_allclose(doubled.table()[column], 2 * expected, rtol=1e-5)
    store.close()


def install(site, dist: str, module: str, source: str, monkeypatch) -> None:
    """An installed distribution, as pip leaves it: ``module`` and a dist-info folder naming
    it in the loupe.steps group, on the import path."""
    site.mkdir()
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))


def test_an_installed_plugin_step_is_found_through_its_entry_point(tmp_path, monkeypatch):
    install(tmp_path / "site", "loupe_plugin", "loupe_plugin_step", STEP_SOURCE.format(
        cls="PluginStep", name="plugin_step", column="plugin_brightness"), monkeypatch)
    try:
        assert "plugin_step" in registry.discover_steps(refresh=True)
        assert registry.column_info("plugin_brightness").unit == "0-1"
        assert "plugin_step" in registry.plan(registry.Plan())
    finally:
        monkeypatch.undo()  # the distribution is uninstalled...
        _forget("plugin_step", "loupe_plugin_step")
    registry.discover_steps(refresh=True)  # ...and a new discovery no longer finds it
    assert "plugin_step" not in registry.all_steps()


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch, caplog):
    install(tmp_path / "site", "broken_loupe", "broken_loupe_step",
            "raise ImportError('needs libfoo')\n", monkeypatch)
    registry.discover_steps(refresh=True)
    assert "broken_loupe_step" in caplog.text and "needs libfoo" in caplog.text
    assert "inference" in registry.all_steps()
    monkeypatch.undo()
    sys.modules.pop("broken_loupe_step", None)


def test_plan_follows_requirements_and_order():
    plan = registry.plan(registry.Plan(mc_samples=20, projections=("umap", "tsne")))
    for name in plan:  # every requirement comes first
        for dep in registry.STEPS[name].requires:
            assert plan.index(dep) < plan.index(name), (dep, name)
    assert plan[:3] == ["preprocessing_check", "inference", "mc_dropout"]
    assert plan[-2:] == ["umap", "tsne"]
    extra = registry.plan(registry.Plan(mc_samples=0, projections=("tsne",), extra=True))
    assert "preprocessing_check" not in extra and "mc_dropout" not in extra
    assert extra[-2:] == ["joint_neighbors", "joint_tsne"]
    assert "attribution" in registry.plan(registry.Plan(attribution="saliency"))


def test_step_options_are_parsed_by_the_config_field_type():
    assert registry.parse_step_option("mc_dropout.samples=30") == ("mc_dropout", "samples", 30)
    assert registry.parse_step_option("umap.min_dist=0.25") == ("umap", "min_dist", 0.25)
    assert registry.parse_step_option("attribution.method = saliency")[2] == "saliency"
    for bad, says in (("mc_dropout.samples=many", "'many' is not an int"),
                      ("mc_dropout.draws=3", "no option 'draws'; valid: samples"),
                      ("nosuchstep.x=1", "Unknown analysis step 'nosuchstep'"),
                      ("samples=3", "write STEP.FIELD=VALUE")):
        with pytest.raises(registry.ConfigError, match=says):
            registry.parse_step_option(bad)


def test_table_of_scores_is_read_from_declarations():
    from analysis.ood import score_columns

    scores = [c for c, _, _ in score_columns()]
    declared = [c.name for c in registry.declared_columns() if c.score]
    assert sorted(scores) == sorted(declared)
    assert scores.index("mc_entropy") == scores.index("entropy") + 1  # twin after plain
