"""The per-sample table as CSV, with the nearest neighbours' ids and distances."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError


def export_frame(session, head: str | None = None) -> pd.DataFrame:
    """The full table plus ``neighbor_ids`` and ``neighbor_distances`` (``;``-separated).

    Rows of the extra datasets follow the analysed dataset's (the ``dataset``
    column tells them apart); their neighbours are the nearest samples of the
    analysed (in-distribution) dataset.

    Parameters
    ----------
    session : AnalysisSession
    head : str, optional
        The head whose columns are unprefixed (multi-head models).
    """
    ids = session.dataset.sample_ids
    k = session.k
    frames = []
    for key in [None, *session.extras]:
        table = session.table(key, head=head)
        if key is None:
            idx, dist = session.neighbors()
        else:
            art = session.extra(key).get("distances")
            idx, dist = art["reference_neighbors"][:, :k], art["reference_distances"][:, :k]
        table["neighbor_ids"] = [";".join(ids[row]) for row in idx]
        table["neighbor_distances"] = [";".join(f"{d:.6g}" for d in row) for row in dist]
        frames.append(table)
    return pd.concat(frames, ignore_index=True, sort=False)


# OWASP's CSV-injection rule: a cell starting with one of these is read as a formula by
# spreadsheets (a class folder named "=HYPERLINK(...)" would run when the CSV is opened).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells starting with ``= + - @``, tab or CR get a
    leading ``'``, so spreadsheets show them as text instead of running them.

    Only text (object or string dtype) columns are touched: numeric columns,
    negative numbers included, stay numbers.
    """
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if not (pd.api.types.is_object_dtype(series.dtype)
                or pd.api.types.is_string_dtype(series.dtype)
                or isinstance(series.dtype, pd.CategoricalDtype)):
            continue
        values = series.astype(object)
        risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
        if risky.any():
            out[col] = values.where(~risky, "'" + values[risky].astype(str))
    return out


def _checked(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as "
                          f"{out}/samples.csv.")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist.")
    return out


def write_csv(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``frame`` to ``out`` atomically (a temp file renamed into place), text cells
    escaped against spreadsheet formulas (:func:`escape_formulas`)."""
    out = _checked(out)
    tmp = out.with_name(out.name + ".tmp")
    escape_formulas(frame).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    return out


CHUNK_ROWS = 65_536


def export_chunks(session, head: str | None = None, chunk_rows: int = CHUNK_ROWS,
                  lists: bool = False) -> Iterator[pd.DataFrame]:
    """:func:`export_frame` in chunks of at most ``chunk_rows`` rows, never whole.

    ``lists=True`` gives each row's ``neighbor_ids`` as a list of sample ids and
    its ``neighbor_distances`` as a float32 array (nearest first) instead of the
    CSV's ``;``-joined strings; Parquet stores them as list columns.

    Every chunk has the columns and dtypes the one concatenated frame would
    have (a column missing from a dataset's table is empty there, and its
    dtype widened as :func:`pandas.concat` widens it), so the chunks written
    one after the other give the same file. The neighbour-id strings, the
    bulk of the export, exist for one chunk at a time.
    """
    ids = session.dataset.sample_ids
    k = session.k
    tables = []
    for key in [None, *session.extras]:
        if key is None:
            idx, dist = session.neighbors()
        else:
            art = session.extra(key).get("distances")
            idx, dist = art["reference_neighbors"][:, :k], art["reference_distances"][:, :k]
        tables.append((session.table(key, head=head), idx, dist))

    def with_neighbors(table: pd.DataFrame, idx: np.ndarray, dist: np.ndarray, rows: slice
                       ) -> pd.DataFrame:
        part = table.iloc[rows].reset_index(drop=True)
        if lists:
            part["neighbor_ids"] = [list(ids[row]) for row in idx[rows]]
            part["neighbor_distances"] = list(np.asarray(dist[rows], dtype=np.float32))
        else:
            part["neighbor_ids"] = [";".join(ids[row]) for row in idx[rows]]
            part["neighbor_distances"] = [";".join(f"{d:.6g}" for d in row)
                                          for row in dist[rows]]
        return part

    # The concatenated frame's columns and dtypes, from one row of each table.
    template = pd.concat([with_neighbors(t, i, d, slice(0, 1)) for t, i, d in tables],
                         ignore_index=True, sort=False).dtypes
    for table, idx, dist in tables:
        for start in range(0, len(table), chunk_rows):
            part = with_neighbors(table, idx, dist, slice(start, start + chunk_rows))
            part = part.reindex(columns=template.index)
            changed = {c: t for c, t in template.items() if part[c].dtype != t}
            yield part.astype(changed) if changed else part


def write_export(session, out: str | os.PathLike, head: str | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> tuple[Path, int, int]:
    """Write :func:`export_frame` to ``out`` in row chunks, atomically.

    ``out`` ending in ``.parquet`` is written as Parquet (one row group a
    chunk; values as they are, no formula escaping: no spreadsheet reads it
    as text; the neighbours as list columns, see :func:`export_chunks`);
    anything else as CSV, byte for byte :func:`write_csv` of the whole frame.

    Returns
    -------
    path, rows, columns
    """
    out = _checked(out)
    tmp = out.with_name(out.name + ".tmp")
    rows = cols = 0
    try:
        if out.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            writer = None
            try:
                for part in export_chunks(session, head, chunk_rows, lists=True):
                    table = pa.Table.from_pandas(part, preserve_index=False,
                                                 schema=writer.schema if writer else None)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, _parquet_schema(table.schema))
                        table = table.cast(writer.schema)
                    writer.write_table(table, row_group_size=chunk_rows)
                    rows, cols = rows + len(part), part.shape[1]
            finally:
                if writer is not None:
                    writer.close()
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                for part in export_chunks(session, head, chunk_rows):
                    escape_formulas(part).to_csv(fh, index=False, header=rows == 0,
                                                 float_format="%.6g")
                    rows, cols = rows + len(part), part.shape[1]
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out, rows, cols


def _parquet_schema(inferred):
    """``inferred`` with text for a column whose first chunk held no value to type it."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
              for f in inferred]
    return pa.schema(fields, metadata=inferred.metadata)

