"""Galleries of clickable sample thumbnails: every one links to the sample analysis."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
from dash import dcc, html

from dashboard.state import RunEntry


def sample_href(sample_id: str) -> str:
    """The sample analysis page of ``sample_id``."""
    return f"/sample?id={quote(str(sample_id), safe=':')}"


def sample_gallery(entry: RunEntry, indices: Sequence[int], captions: Sequence[str] | None = None,
                   limit: int = 60, empty: str = "No samples.") -> html.Div:
    """Thumbnails of ``indices`` (at most ``limit``), each a link to its sample page.

    Parameters
    ----------
    entry : RunEntry
    indices : sample row indices, in display order
    captions : one caption per index; default ``label → pred`` and the loss
    """
    indices = [int(i) for i in np.asarray(indices, dtype=np.int64)[:limit]]
    if not indices:
        return html.Div(empty, className="text-muted small")
    table = entry.table
    ids = entry.session.dataset.sample_ids
    cards = []
    for n, i in enumerate(indices):
        row = table.iloc[i]
        cap = captions[n] if captions is not None else \
            f"{row['label_name']}→{row['pred_name']} · {row['loss']:.2f}"
        wrong = "" if bool(row["correct"]) else " wrong"
        cards.append(dcc.Link(
            [html.Img(src=entry.thumbnail(i), alt=str(ids[i])), html.Span(cap, className="cap")],
            href=sample_href(ids[i]), className="loupe-thumb" + wrong,
            title=f"{ids[i]}: true {row['label_name']}, predicted {row['pred_name']}, "
                  f"loss {row['loss']:.4f}"))
    return html.Div(cards, className="loupe-gallery")
