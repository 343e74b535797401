"""``python -m analysis insights``: JSON out, --fail-on thresholds, bad values; the
per-sample insight columns in ``analysis export``. In-process on the tiny run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.cli import main


@pytest.fixture(scope="module")
def common(tiny_run, digits, data_root, tmp_path_factory) -> list[str]:
    cache = tmp_path_factory.mktemp("cli-insights-cache")
    extra = ["--data-root", data_root] if data_root else []
    return ["--checkpoint", str(tiny_run), "--dataset", digits, "--limit", "300",
            "--mc-samples", "0", "--projection", "--device", "cpu", "--cache-dir", str(cache),
            *extra]


@pytest.mark.parametrize("value", ["label_issues", "nope:3", "slice:many", "slice:-1"])
def test_bad_fail_on_exits_2_with_one_line(common, value, capsys):
    assert main(["insights", *common, "--fail-on", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --fail-on") and "KIND:COUNT" in err[0]


def test_insights_json_and_thresholds(common, tmp_path, capsys):
    out = tmp_path / "insights.json"
    assert main(["insights", *common, "--out", str(out)]) == 0
    found = json.loads(out.read_text())
    assert isinstance(found, list)
    for ins in found:
        assert {"kind", "title", "severity", "n", "sample_ids", "metrics",
                "explanation"} <= set(ins)
    counts: dict[str, int] = {}
    for ins in found:
        counts[ins["kind"]] = counts.get(ins["kind"], 0) + ins["n"]
    capsys.readouterr()
    kind, n = next(iter(counts.items()))
    # At the count: not crossed; one below: crossed, and the message names the kind.
    assert main(["insights", *common, "--fail-on", f"{kind}:{n}"]) == 0
    assert main(["insights", *common, "--fail-on", f"{kind}:{n - 1}",
                 "--fail-on", "leakage:0"]) == 1
    err = capsys.readouterr().err
    assert f"FAIL: {kind}: {n} samples (threshold {n - 1})" in err and "leakage" not in err


def test_export_has_the_per_sample_insight_columns(common, tmp_path):
    csv = tmp_path / "x.csv"
    assert main(["export", *common, "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert "slice" in frame and frame["slice"].min() >= -1
