"""analysis/export.py: the per-sample table with neighbour ids, written atomically."""

from __future__ import annotations

import numpy as np
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


@pytest.fixture(scope="module")
def session_with_extra(tiny_model, digits, data_root, tmp_path_factory):
    """150 real test digits plus the same digits inverted (``corrupt:inverse``, generated on
    load) as an extra dataset, so the export has rows of two datasets."""
    from analysis.session import AnalysisSession
    from cache import ArtifactStore
    from core.datasets import load_dataset

    ds = load_dataset(digits, "test", data_root=data_root, limit=150)
    inverse = load_dataset(f"corrupt:inverse:{digits}", "test", data_root=data_root, limit=40)
    return AnalysisSession(tiny_model, ds, ArtifactStore(tmp_path_factory.mktemp("c")), "cpu",
                           mc_samples=0, projections=(), progress=False,
                           extra_datasets=[inverse])


@pytest.mark.parametrize("chunk_rows", [7, 64, 65_536])
def test_the_chunked_csv_equals_the_whole_frames(session_with_extra, tmp_path, chunk_rows):
    from analysis.export import write_export

    whole = write_csv(export_frame(session_with_extra), tmp_path / "whole.csv")
    out, rows, cols = write_export(session_with_extra, tmp_path / "chunked.csv",
                                   chunk_rows=chunk_rows)
    assert (rows, cols) == (190, pd.read_csv(whole).shape[1])
    assert out.read_bytes() == whole.read_bytes()
    assert not (tmp_path / "chunked.csv.tmp").exists()


def test_the_parquet_export_round_trips(session_with_extra, tmp_path):
    import pyarrow.parquet as pq

    from analysis.export import write_export

    frame = export_frame(session_with_extra)
    out, rows, cols = write_export(session_with_extra, tmp_path / "t.parquet", chunk_rows=64)
    assert (rows, cols) == frame.shape
    assert pq.ParquetFile(out).metadata.num_row_groups == 4  # 150 + 40 rows: 64, 64, 22, 40
    back = pd.read_parquet(out)
    assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
    schema = pq.read_schema(out)
    assert str(schema.field("neighbor_ids").type) == "list<element: string>"
    assert str(schema.field("neighbor_distances").type) == "list<element: float>"
    assert [list(v) for v in back["neighbor_ids"]] == \
        [v.split(";") for v in frame["neighbor_ids"]]
    np.testing.assert_allclose(np.stack(back["neighbor_distances"]),
                               [[float(d) for d in v.split(";")]
                                for v in frame["neighbor_distances"]], rtol=1e-5)
    for col in frame.columns.drop(["neighbor_ids", "neighbor_distances"]):
        left, right = frame[col], back[col]
        if pd.api.types.is_numeric_dtype(left) and not pd.api.types.is_bool_dtype(left):
            np.testing.assert_allclose(right.to_numpy(float), left.to_numpy(float),
                                       rtol=1e-6, equal_nan=True, err_msg=col)
        else:
            assert [None if pd.isna(v) else v for v in right] == \
                [None if pd.isna(v) else v for v in left], col
    assert back["dataset"].iloc[-1] != back["dataset"].iloc[0]  # the extra's rows follow
