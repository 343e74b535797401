"""The per-sample table as CSV, with the nearest neighbours' ids and distances."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis.errors import ConfigError


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


def write_csv(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``frame`` to ``out`` atomically (a temp file renamed into place)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as "
                          f"{out}/samples.csv.")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist.")
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    return out

