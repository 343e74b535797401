"""dashboard/views/experiments_catalog.py: listing runs that need code or are broken."""

from __future__ import annotations

import json
import shutil

import pytest

from dashboard.config import DashboardConfig
from dashboard.state import DashboardInputError
from dashboard.views.experiments_catalog import RunCatalog

MARKER_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")


def factory():
    raise SystemExit("never called")
'''


@pytest.fixture
def catalog(tiny_run, tmp_path, monkeypatch, digits, data_root):
    marker = tmp_path / "imported.txt"
    (tmp_path / "marker_mod.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "good")
    shutil.copytree(tiny_run, runs / "nested" / "good")
    for name, change in (("code", {"model_spec": "marker_mod:factory"}),
                         ("broken", {"input": {"shape": [1, 28, 28], "std": 0}})):
        shutil.copytree(tiny_run, runs / name)
        meta = json.loads((runs / name / "run.json").read_text())
        (runs / name / "run.json").write_text(json.dumps({**meta, **change}))
    config = DashboardConfig(checkpoints=[], runs_dir=str(runs), dataset=digits,
                             data_root=data_root, cache_dir=str(tmp_path / "cache"),
                             device="cpu", progress=False, limit=50)
    return RunCatalog(config), runs, marker


def test_table_lists_every_run_without_importing(catalog):
    cat, runs, marker = catalog
    table = cat.table().set_index("key")
    assert list(table.index) == ["broken", "code", "good", "good (2)"]
    assert table.loc["code", "status"] == "needs code"
    assert table.loc["code", "problem"] == "needs its code (--model marker_mod:factory)"
    assert table.loc["broken", "status"] == "broken"
    assert "field 'input.std'" in table.loc["broken", "problem"]
    assert table.loc[["code", "broken"], "mult_adds"].isna().all()  # nothing built
    assert table.loc["good", "mult_adds"] == table.loc["good (2)", "mult_adds"] > 0
    assert str(runs) not in table.to_json()  # the browser is told names, never server paths
    assert cat.meta("broken") == {} and cat.meta("good")["arch"] == "mnist_cnn"
    assert not marker.exists()


def test_opening_a_run_that_needs_code_says_which_flag(catalog):
    cat, _, marker = catalog
    with pytest.raises(DashboardInputError, match="Pass --model marker_mod:factory"):
        cat.session("code")
    assert cat.summary("code").startswith("No summary: ")
    assert not marker.exists()
