"""The Errors page's logic as plain functions, on the tiny analysed run (600 real test
digits): the matrix follows the shared selection, an empty cell says so, the shown cell
is outlined."""

from __future__ import annotations

import numpy as np

from dashboard.components.gallery import sample_gallery
from dashboard.views import errors as views


def click(true: str, pred: str) -> dict:
    return {"points": [{"x": pred, "y": true, "curveNumber": 0}]}


def hand_counts(labels, preds, n) -> list[list[int]]:
    """The confusion counts by a plain double loop (the reference)."""
    cm = [[0] * n for _ in range(n)]
    for t, p in zip(labels, preds, strict=True):
        cm[int(t)][int(p)] += 1
    return cm


def empty_cell(entry) -> tuple[str, str]:
    t = entry.table
    names = [str(n) for n in entry.class_names]
    seen = set(zip(t["label"], t["pred"], strict=True))
    for a in range(len(names)):
        for b in range(len(names)):
            if (a, b) not in seen:
                return names[a], names[b]
    raise AssertionError("every cell of the tiny run's matrix holds a sample")


def test_an_empty_cell_says_so_and_shows_no_other_cell(entry):
    true, pred = empty_cell(entry)
    store = views.cell_selection(entry, click(true, pred))
    assert store["ids"] == [] and store["cell"] == [true, pred]
    source, order, _, empty = views.cell_panel(entry, store)
    assert source is None and len(order) == 0
    assert empty == f"No samples with true {true} predicted as {pred}."
    # The clicked cell is the outlined one.
    fig = views.confusion_view(entry, store)
    names = [str(n) for n in entry.class_names]
    shape = fig.layout.shapes[0]
    assert (shape.x0 + 0.5, shape.y0 + 0.5) == (names.index(pred), names.index(true))


def test_no_selection_shows_and_outlines_the_most_confused_cell(entry):
    true, pred = views.most_confused(entry)
    fig = views.confusion_view(entry, None)
    names = [str(n) for n in entry.class_names]
    assert (fig.layout.shapes[0].x0 + 0.5, fig.layout.shapes[0].y0 + 0.5) == \
        (names.index(pred), names.index(true))
    assert not fig.layout.title.text  # all samples: no "selected" note
    t = entry.table
    assert np.array(fig.data[0].text).tolist() == \
        hand_counts(t["label"], t["pred"], len(names))
    source, order, _, empty = views.cell_panel(entry, None)
    assert empty is None and source.startswith("most confused")
    assert len(order) == len(views.cell_indices(entry, true, pred))


def test_matrix_counts_the_selection_and_a_cell_click_stays_within_it(entry):
    t = entry.table
    ids = entry.session.dataset.sample_ids
    chosen = np.arange(0, len(t), 3)  # every third sample: a selection made elsewhere
    selection = {"run": entry.key, "ids": ids[chosen].tolist(), "source": "map selection"}
    fig = views.confusion_view(entry, selection)
    names = [str(n) for n in entry.class_names]
    assert np.array(fig.data[0].text).tolist() == hand_counts(
        t["label"].to_numpy()[chosen], t["pred"].to_numpy()[chosen], len(names))
    assert fig.layout.title.text == f"{len(chosen)} selected samples (map selection)"
    assert not fig.layout.shapes  # a selection, not a cell, is shown
    # Clicking a cell of that matrix keeps only the cell's selected samples...
    true, pred = views.most_confused(entry)
    store = views.cell_selection(entry, click(true, pred), selection)
    want = [i for i in chosen if (names[t["label"].iat[i]], names[t["pred"].iat[i]])
            == (true, pred)]
    assert store["ids"] == ids[want].tolist()
    # ...and the matrix still counts the selection, the cell outlined.
    again = views.confusion_view(entry, store)
    assert np.array(again.data[0].text).tolist() == np.array(fig.data[0].text).tolist()
    assert len(again.layout.shapes) == 1
    # A second click is within the same selection, not within the first cell.
    other = views.cell_selection(entry, click(true, true), store)
    assert other["base"]["ids"] == selection["ids"]


def test_galleries_say_how_many_they_show(entry):
    order = views.worst_indices(entry, True, None)
    assert len(order) > views.GALLERY_SIZE, "the tiny run makes more mistakes than that"
    shown = sample_gallery(entry, order, limit=views.GALLERY_SIZE, order="(highest loss first)")
    note, gallery = shown.children
    assert note.children == f"showing {views.GALLERY_SIZE} of {len(order)} (highest loss first)"
    assert len(gallery.children) == views.GALLERY_SIZE
    caption = gallery.children[0].children[1].children
    row = entry.table.iloc[order[0]]
    assert caption[0] == f"true {row['label_name']}, pred {row['pred_name']}"
    assert caption[2] == f"loss {row['loss']:.2f}"
    # Not cut short: the gallery alone, no note.
    assert sample_gallery(entry, order[:3]).className == "loupe-gallery"
