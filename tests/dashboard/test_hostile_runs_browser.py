"""A runs folder from someone else, opened on the Experiments page in headless Chromium.

One run's ``run.json`` names code that would abort the server, another names a
module that leaves a marker file when imported, a third is not valid JSON.
Listing them must import nothing, show each with its status, and keep the
good run usable.
"""

from __future__ import annotations

import json
import shutil
import sys

from dash.testing.wait import until

from dashboard import ids

MARKER_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
def factory():
    raise SystemExit("never called")
"""


def test_hostile_run_folders_are_listed_never_imported(dash_duo, browser, tiny_run, tmp_path,
                                                       digits, data_root, monkeypatch):
    from dashboard.app import create_app
    from dashboard.config import DashboardConfig
    from dashboard.state import RunRegistry

    marker = tmp_path / "marker.txt"
    code = tmp_path / "code"
    code.mkdir()
    (code / "planted_loupe_module.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(code))
    runs = tmp_path / "runs"
    for name, edit in (("good", None), ("aborts", "os:abort"),
                       ("plants", "planted_loupe_module:factory"), ("garbled", "garbled")):
        shutil.copytree(tiny_run, runs / name)
        meta_file = runs / name / "run.json"
        if edit == "garbled":
            meta_file.write_text("{ not json")
        elif edit:
            meta = json.loads(meta_file.read_text())
            meta["model_spec"] = edit
            meta_file.write_text(json.dumps(meta))
    config = DashboardConfig(checkpoints=[], dataset=digits, split="test", limit=300,
                             data_root=data_root, cache_dir=str(tmp_path / "cache"),
                             device="cpu", progress=False, runs_dir=str(runs))
    browser.open(create_app(config, RunRegistry()), "/experiments")

    def cells(column: str) -> list[str]:
        """The grid's cells of ``column``, in display order."""
        return dash_duo.driver.execute_script(
            "return [...document.querySelectorAll('#' + arguments[0] + ' .ag-cell[col-id=\"'"
            " + arguments[1] + '\"]')].map(c => [+c.closest('.ag-row').getAttribute("
            "'row-index'), c.textContent.trim()]).sort((a, b) => a[0] - b[0]).map(p => p[1]);",
            ids.RUNS_TABLE, column)

    until(lambda: len(cells("key")) == 4, timeout=60)
    status = dict(zip(cells("key"), cells("status"), strict=True))
    assert status == {"aborts": "needs code", "garbled": "broken", "good": "ok",
                      "plants": "needs code"}
    problems = dict(zip(cells("key"), cells("problem"), strict=True))
    assert "--model planted_loupe_module:factory" in problems["plants"]
    assert not marker.exists()
    assert "planted_loupe_module" not in sys.modules
    assert str(runs) not in dash_duo.driver.page_source  # never a server path
    assert dash_duo.get_logs() == []
