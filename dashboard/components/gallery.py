"""Galleries of clickable sample thumbnails: every one links to the sample analysis.

Captions are short plain words, at most a few lines (``"\\n"`` separates them):
``true 2, pred 3`` / ``loss 0.12``; the thumbnail's tooltip holds the full text.
A gallery showing fewer thumbnails than it was given says so (``showing 80 of 199``).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
from dash import dcc, html

from dashboard.state import RunEntry


def sample_href(sample_id: str) -> str:
    """The sample analysis page of ``sample_id``."""
    return f"/sample?id={quote(str(sample_id), safe=':')}"


def true_pred_caption(true: object, pred: object, second: str | None = None) -> str:
    """``true 2, pred 3`` (and a second line, e.g. ``loss 0.12`` or ``distance 5.99``)."""
    first = f"true {true}, pred {pred}"
    return first if second is None else f"{first}\n{second}"


def caption_children(caption: str) -> str | list:
    """A caption's lines as children of its ``.cap`` span (a line break between lines)."""
    if "\n" not in str(caption):
        return str(caption)
    out: list = []
    for n, line in enumerate(str(caption).split("\n")):
        out += ([html.Br()] if n else []) + [line]
    return out


def shown_note(shown: int, total: int, order: str = "") -> html.Div | None:
    """``showing 80 of 199`` (and how they were chosen) when a gallery is cut short."""
    if total <= shown:
        return None
    return html.Div(f"showing {shown:,} of {total:,}{' ' + order if order else ''}",
                    className="small text-muted mb-1 loupe-shown-note")


def sample_gallery(entry: RunEntry, indices: Sequence[int], captions: Sequence[str] | None = None,
                   limit: int = 60, empty: str = "No samples.", order: str = "") -> html.Div:
    """Thumbnails of ``indices`` (at most ``limit``), each a link to its sample page.

    Parameters
    ----------
    entry : RunEntry
    indices : (M,) sample row indices, in display order (all of them: the gallery
        shows the first ``limit`` and says ``showing limit of M``)
    captions : one caption per index (lines separated by ``"\\n"``); default
        ``true 2, pred 3`` / ``loss 0.12``
    order : how the shown ones were chosen, appended to the note (``highest loss first``)

    Returns
    -------
    html.Div
        The ``.loupe-gallery`` of links; when cut short, a Div holding the
        ``showing N of M`` note and that gallery.
    """
    everything = np.asarray(indices, dtype=np.int64)
    indices = [int(i) for i in everything[:limit]]
    if not indices:
        return html.Div(empty, className="text-muted small")
    table = entry.table
    ids = entry.session.dataset.sample_ids
    cards = []
    for n, i in enumerate(indices):
        row = table.iloc[i]
        cap = captions[n] if captions is not None else \
            true_pred_caption(row["label_name"], row["pred_name"], f"loss {row['loss']:.2f}")
        wrong = "" if bool(row["correct"]) else " wrong"
        cards.append(dcc.Link(
            [html.Img(src=entry.thumbnail(i), alt=str(ids[i])),
             html.Span(caption_children(cap), className="cap")],
            href=sample_href(ids[i]), className="loupe-thumb" + wrong,
            title=f"{ids[i]}: true {row['label_name']}, predicted {row['pred_name']}, "
                  f"loss {row['loss']:.4f}" + ("" if captions is None else
                                               f" ({str(cap).replace(chr(10), ', ')})")))
    gallery = html.Div(cards, className="loupe-gallery")
    note = shown_note(len(indices), len(everything), order)
    return gallery if note is None else html.Div([note, gallery])
