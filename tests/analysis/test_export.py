"""analysis/export.py: the per-sample table with neighbour ids, written atomically."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.errors import ConfigError
from analysis.export import export_frame, write_csv


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
