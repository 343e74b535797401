"""analysis/export.py: the per-sample table with neighbour ids, written atomically."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.export import export_frame, write_csv
from core.errors import ConfigError


def test_export_frame_and_csv(tiny_session, tmp_path):
    frame = export_frame(tiny_session)
    ids = tiny_session.dataset.sample_ids
    idx, _ = tiny_session.neighbors()
    assert frame["neighbor_ids"].iloc[7] == ";".join(ids[idx[7]])
    out = write_csv(frame, tmp_path / "t.csv")
    back = pd.read_csv(out)
    assert back.shape == frame.shape and list(back.columns) == list(frame.columns)
    assert not (tmp_path / "t.csv.tmp").exists()
    assert back["sample_id"].tolist() == list(ids)


def test_write_csv_errors(tmp_path):
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(ConfigError, match="is a directory"):
        write_csv(frame, tmp_path)
    with pytest.raises(ConfigError, match="folder .*nope does not exist"):
        write_csv(frame, tmp_path / "nope" / "x.csv")


def test_text_cells_that_look_like_formulas_are_escaped_numbers_are_not(tmp_path):
    from analysis.export import escape_formulas

    frame = pd.DataFrame({
        "sample_id": ["folder:test:0", "folder:test:1", "folder:test:2", "folder:test:3"],
        "label_name": ['=HYPERLINK("http://x.example","click")', "+1", "cat", "@SUM(A1)"],
        "pred_name": ["-2+3", "\tTAB", "\rCR", "dog"],
        "margin": [-0.5, 1.25, -3.0, 0.0],
        "pred": [-1, 2, 3, 4],
    })
    escaped = escape_formulas(frame)
    assert escaped["label_name"].tolist() == ["'=HYPERLINK(\"http://x.example\",\"click\")",
                                              "'+1", "cat", "'@SUM(A1)"]
    assert escaped["pred_name"].tolist() == ["'-2+3", "'\tTAB", "'\rCR", "dog"]
    assert frame["label_name"].iloc[2] == "cat" and frame["label_name"].iloc[0][0] == "="
    # (a bare CR is not quoted by pandas' writer: kept out of the file round trip)
    out = write_csv(frame.assign(pred_name=["-2+3", "\tTAB", "CR", "dog"]), tmp_path / "x.csv")
    back = pd.read_csv(out)
    assert back["margin"].tolist() == [-0.5, 1.25, -3.0, 0.0]  # still numbers
    assert back["pred"].tolist() == [-1, 2, 3, 4]
    assert pd.api.types.is_float_dtype(back["margin"]) and back["margin"].min() < 0
    assert back["label_name"].iloc[0].startswith("'=HYPERLINK")
    assert not any(str(v).startswith(("=", "+", "-", "@")) for v in back["label_name"])
