"""The per-sample table as CSV, with the nearest neighbours' ids and distances."""

from __future__ import annotations

import os
from pathlib import Path

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


def write_csv(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``frame`` to ``out`` atomically (a temp file renamed into place), text cells
    escaped against spreadsheet formulas (:func:`escape_formulas`)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as "
                          f"{out}/samples.csv.")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist.")
    tmp = out.with_name(out.name + ".tmp")
    escape_formulas(frame).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    return out

