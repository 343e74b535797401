"""dashboard/views/guard.py and the views that use it: whatever the browser sends is
checked, bounded and answered with a message, never an exception Dash turns into a 500."""

from __future__ import annotations

import time

import numpy as np
import pytest
from dash import html

from dashboard.components.messages import error_alert
from dashboard.state import DashboardInputError, LRUCache
from dashboard.views import guard
from dashboard.views import population as pop
from dashboard.views.errors import cell_selection
from dashboard.views.export import export_table, selection_export
from dashboard.views.metadata import checked_bins
from dashboard.views.sample import heatmap_view, resolve_sample, sample_index


def texts(component) -> str:
    """All the text of a Dash component tree."""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(texts(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else texts(children)


# -- points -----------------------------------------------------------------------------------
def test_point_index_refuses_negatives_and_non_integers():
    assert guard.point_index(0) == 0 and guard.point_index(np.int64(7)) == 7
    for bad in (-1, -10_000, True, 1.0, "3", None, [1], {"a": 1}):
        assert guard.point_index(bad) is None


def test_a_negative_point_index_opens_nothing(entry):
    members = entry.members
    last = int(members[0][-1])
    # numpy would have read -1 as the last point of the trace
    assert pop.clicked_index(entry, {"points": [{"curveNumber": 0, "pointIndex": -1}]}) is None
    assert pop.clicked_index(entry, {"points": [{"curveNumber": -1, "pointIndex": 0}]}) is None
    overlay = len(members)
    assert pop.clicked_index(entry, {"points": [{"curveNumber": overlay, "pointIndex": 0,
                                                 "customdata": -3}]}) is None
    assert pop.clicked_index(entry, {"points": [{"curveNumber": overlay, "pointIndex": 0,
                                                 "customdata": len(entry.table)}]}) is None
    point = {"curveNumber": 0, "pointIndex": len(members[0]) - 1}
    assert pop.clicked_index(entry, {"points": [point]}) == last


@pytest.mark.parametrize("data", [None, [], "x", 3, {"points": "x"}, {"points": None},
                                  {"points": [1, "a", None]},
                                  {"points": [{"curveNumber": "0", "pointIndex": "1"}]},
                                  {"points": [{"curveNumber": [0], "pointIndex": {}}]},
                                  {"points": [{"curveNumber": 0.5, "pointIndex": 2}]},
                                  {"points": [{}]}])
def test_malformed_click_data_opens_nothing(entry, data):
    assert pop.clicked_index(entry, data) is None
    store = pop.selection_from_points(entry, data)
    assert store["ids"] == [] and store["run"] == entry.key
    assert cell_selection(entry, data) is None


def test_a_confusion_cell_click_is_checked(entry):
    names = [str(n) for n in entry.class_names]
    store = cell_selection(entry, {"points": [{"x": names[1], "y": names[1]}]})
    assert store is not None and len(store["ids"]) > 0
    assert cell_selection(entry, {"points": [{"x": "nope", "y": names[1]}]}) is None
    assert cell_selection(entry, {"points": [{"x": {"a": 1}, "y": names[1]}]}) is None


# -- selections -------------------------------------------------------------------------------
def test_a_selection_is_deduplicated_filtered_and_capped(entry, monkeypatch):
    ids = entry.session.dataset.sample_ids
    store = {"run": entry.key, "ids": [ids[3], ids[3], "nope", 17, ids[1], ids[3]]}
    idx, note = guard.selection_indices(entry, store)
    assert idx.tolist() == [3, 1]
    assert "2 unknown" in note and "2 repeated" in note
    assert entry.selected_ids(store) == [ids[3], ids[1]]
    # a million duplicates: only the first `limit` are even read, and the page says so
    monkeypatch.setattr(guard, "MAX_SELECTION", 50)
    huge = {"run": entry.key, "ids": [ids[0]] * 1_000_000}
    start = time.perf_counter()
    idx, note = guard.selection_indices(entry, huge)
    assert time.perf_counter() - start < 0.5
    assert idx.tolist() == [0] and "only the first 50" in note
    summary, order = pop.selection_view(entry, huge)
    assert order.tolist() == [0] and "only the first 50" in texts(summary)
    frame, note = selection_export(entry, huge)
    assert len(frame) == 1 and "only the first 50" in note
    assert len(export_table(entry, [ids[0]] * 1000 + [ids[2]])) == 1  # still at most 50 read
    # another run's or a malformed store selects nothing
    for bad in (None, [], {"run": "other", "ids": [ids[0]]}, {"run": entry.key, "ids": "x"}):
        assert guard.selection_indices(entry, bad)[0].size == 0


def test_a_map_selection_beyond_the_limit_is_cut_with_a_note(entry, monkeypatch):
    monkeypatch.setattr(guard, "MAX_SELECTION", 10)
    points = [{"curveNumber": 0, "pointIndex": i} for i in range(len(entry.members[0]))]
    store = pop.selection_from_points(entry, {"points": points})
    assert len(store["ids"]) == 10 and "first 10" in store["note"]
    summary, _ = pop.selection_view(entry, store)
    assert "first 10" in texts(summary)
    small = pop.selection_from_points(entry, {"points": points[:3]})
    assert len(small["ids"]) == 3 and small["note"] == ""


# -- sample, projection, columns ---------------------------------------------------------------
def test_sample_ids_and_heatmap_choices_are_checked(entry):
    with pytest.raises(DashboardInputError, match="characters is not a sample id"):
        resolve_sample(entry, "x" * 10_000, None)
    with pytest.raises(DashboardInputError):
        sample_index(entry, {"run": entry.key, "id": ["mnist:test:1"]})
    with pytest.raises(DashboardInputError, match="Unknown heatmap method 'list'"):
        heatmap_view(entry, 0, ["integrated_gradients"], "pred")
    with pytest.raises(DashboardInputError, match="Unknown heatmap target"):
        heatmap_view(entry, 0, "saliency", "²")  # isdigit() but not int()-able
    with pytest.raises(DashboardInputError, match="Unknown heatmap target"):
        heatmap_view(entry, 0, "saliency", "-1")
    assert entry.locate_extra("fashion-mnist:test:²") is None


def test_an_unknown_projection_or_column_is_a_message(entry):
    with pytest.raises(DashboardInputError, match="Unknown projection 'pca'"):
        pop.map_figure(entry, "pca", "label", "loss")
    with pytest.raises(DashboardInputError, match="Unknown projection 'dict'"):
        pop.highlight_patch(entry, {"a": 1}, None)
    with pytest.raises(DashboardInputError, match="Unknown colour column"):
        pop.map_figure(entry, "umap", "nope", "loss")
    with pytest.raises(DashboardInputError, match="Unknown colour column 'list'"):
        pop.map_figure(entry, "umap", ["label"], "loss")  # unhashable: not a memo key
    with pytest.raises(DashboardInputError, match="Unknown size column"):
        pop.map_figure(entry, "umap", "label", {"a": 1})
    with pytest.raises(DashboardInputError):
        pop.make_sizes(entry, ["loss"])
    assert checked_bins(None) == 20 and checked_bins(30) == 30
    for bad in (0, 10**9, "20", True, [5]):
        with pytest.raises(DashboardInputError, match="Bins"):
            checked_bins(bad)


# -- caches -----------------------------------------------------------------------------------
def test_lru_cache_is_bounded_and_keeps_the_recent():
    cache = LRUCache(3)
    for i in range(10):
        assert cache.get_or_compute(i, lambda i=i: i * i) == i * i
    assert len(cache) == 3 and 9 in cache and 0 not in cache
    cache.get_or_compute(7, lambda: pytest.fail("recomputed"))
    cache.get_or_compute(10, lambda: 100)
    assert 7 in cache and 8 not in cache


def test_thumbnails_are_bounded_and_checked(entry, monkeypatch):
    from dashboard import state

    monkeypatch.setattr(state, "THUMBNAIL_CACHE_SIZE", 5)
    fresh = state.RunEntry(entry.key, entry.label, entry.session, entry.head)
    for i in range(20):
        assert fresh.thumbnail(i).startswith("data:image/png;base64,")
    assert len(fresh._thumbs) == 5
    for bad in (-1, len(entry.table)):
        with pytest.raises(DashboardInputError):
            fresh.thumbnail(bad)


# -- what the browser is shown -----------------------------------------------------------------
TORCH_ERROR = (
    "Cannot load weights /home/alice/secret/runs/a/model.pt: Weights only load failed. This "
    "file can still be loaded, to do so you have two options, \x1b[1mdo those steps only if "
    "you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch 2.6, we changed the "
    "default value of the `weights_only` argument in `torch.load` from `False` to `True`. "
    "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but it can "
    "result in arbitrary code execution. Do it only if you got the file from a trusted source."
    "\n\t(2) Alternatively, to load with `weights_only=True` please check the recommended steps "
    "in the following error message.\n\tWeightsUnpickler error: Unsupported global: GLOBAL "
    "__main__.X was not an allowed global by default. Please use "
    "`torch.serialization.add_safe_globals([__main__.X])` or the "
    "`torch.serialization.safe_globals([__main__.X])` context manager to allowlist this global "
    "if you trust this class/function.\n\nCheck the documentation of torch.load to learn more "
    "about types accepted by default with weights_only "
    "https://pytorch.org/docs/stable/generated/torch.load.html.")


def test_safe_message_hides_paths_and_torch_hints():
    text = guard.safe_message(TORCH_ERROR)
    assert "/home" not in text and "alice" not in text and "secret" not in text
    assert "model.pt" in text and "Weights only load failed" in text
    assert "weights_only` set to `False" not in text and "False" not in text
    assert "\x1b" not in text and "add_safe_globals" not in text
    assert "Unsupported global" in text
    assert guard.safe_message("cache /tmp/x/y/cache.db is gone, see ~/.cache/loupe/z.json") \
        == "cache cache.db is gone, see z.json"
    assert guard.safe_message(r"file C:\Users\bob\runs\model.pt missing") == \
        "file model.pt missing"
    kept = "open http://127.0.0.1:8050/sample?id=mnist:test:1 or runs/mnist_cnn (relative)"
    assert guard.safe_message(kept) == kept


def test_error_alerts_never_show_a_server_path():
    alert = error_alert(DashboardInputError(TORCH_ERROR))
    assert "/home/alice" not in alert.children and "model.pt" in alert.children
    assert isinstance(alert.children, str)
    assert html.Div(alert)  # still a component


def test_the_dashboard_csv_escapes_formulas_and_keeps_numbers(entry):
    import io

    import pandas as pd

    from dashboard.views.export import to_csv_text

    frame = export_table(entry).head(5).copy()
    frame["label_name"] = '=HYPERLINK("http://x.example","x")'
    frame["margin"] = -frame["margin"].abs() - 0.5  # negative numbers stay numbers
    back = pd.read_csv(io.StringIO(to_csv_text(frame)))
    assert (back["label_name"] == "'=HYPERLINK(\"http://x.example\",\"x\")").all()
    assert pd.api.types.is_float_dtype(back["margin"]) and (back["margin"] < 0).all()
