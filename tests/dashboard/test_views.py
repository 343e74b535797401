"""The callbacks' logic as plain functions (dashboard/views/, components/), on a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dash import html
from dash.exceptions import PreventUpdate

from dashboard.components.gallery import sample_gallery, sample_href
from dashboard.components.navbar import select_run_store
from dashboard.state import DashboardInputError
from dashboard.views import population as pop
from dashboard.views.errors import cell_indices, most_confused, worst_indices
from dashboard.views.sample import (
    ALL_CLASSES,
    heatmap_view,
    metadata_table,
    resolve_sample,
    sample_index,
    target_options,
)


def patch_ops(patch) -> list[dict]:
    return patch.to_plotly_json()["operations"]


def test_control_options_defaults_and_url_values(entry):
    proj_opts, proj, color_opts, color, size_opts, size = pop.control_options(entry, None)
    assert proj == "umap" and color == "label" and size == "loss"
    assert {o["value"] for o in proj_opts} == {"umap", "tsne"}
    assert "uncertainty" in [o["value"] for o in color_opts]
    assert size_opts[0]["value"] == pop.NO_SIZE
    chosen = pop.control_options(entry, {"color": "loss", "size": "none", "projection": "tsne"})
    assert (chosen[1], chosen[3], chosen[5]) == ("tsne", "loss", "none")
    with pytest.raises(DashboardInputError, match="Unknown colour column 'x'"):
        pop.control_options(entry, {"color": "x"})
    with pytest.raises(DashboardInputError, match="Unknown projection"):
        pop.control_options(entry, {"projection": "pca"})


def test_map_figure_and_patches_never_resend_coordinates(entry):
    fig = pop.map_figure(entry, "umap", "label", "loss")
    n = len(entry.class_names)
    assert len(fig["data"]) == n + 1 + max(n, 2)  # classes, overlay, legend keys
    recolor = patch_ops(pop.recolor_patch(entry, "uncertainty"))
    resize = patch_ops(pop.resize_patch(entry, "entropy"))
    for ops in (recolor, resize):
        for op in ops:
            assert "x" not in op["location"] and "y" not in op["location"]
    colors = [op for op in recolor if op["location"][-1] == "color"]
    assert len(colors) == len(entry.class_names)
    assert colors[0]["params"]["value"]["dtype"] == "f4"
    with pytest.raises(DashboardInputError):
        pop.recolor_patch(entry, "no_such_column")
    # Colour by correctness: the legend is retitled and lists two keys, no class.
    ops = {tuple(op["location"]): op["params"]["value"]
           for op in patch_ops(pop.recolor_patch(entry, "correct"))}
    assert ops[("layout", "legend")]["title"]["text"] == "prediction"
    assert ops[("data", 0, "showlegend")] is False
    keys = [ops[("data", n + 1 + k, "name")] for k in range(2)]
    assert keys == ["correct", "wrong"] and ops[("data", n + 3, "showlegend")] is False
    assert pop.size_note("loss").startswith("size: percentile rank of loss")


def test_highlight_follows_the_clicked_sample_of_this_run(entry):
    sid = entry.session.dataset.sample_ids[5]
    similars, focus = pop.highlight_of(entry, {"run": entry.key, "id": sid})
    assert focus == 5 and len(similars) == pop.SIMILARS_K and 5 not in similars
    assert pop.highlight_of(entry, {"run": "other", "id": sid}) == ([], None)
    ops = patch_ops(pop.highlight_patch(entry, "umap", {"run": entry.key, "id": sid}))
    (op,) = ops
    assert op["location"] == ["data", len(entry.class_names)]
    assert op["params"]["value"]["customdata"] == [5, *similars]


def test_context_map_is_light_but_keeps_the_overlay(entry):
    sid = entry.session.dataset.sample_ids[5]
    fig = pop.context_map_figure(entry, {"run": entry.key, "id": sid}, max_points=100)
    data = fig["data"]
    assert sum(len(t["x"]) for t in data[:-1]) <= 100 + len(entry.class_names)
    assert list(data[-1]["customdata"])[0] == 5 and len(data[-1]["customdata"]) == 11
    # the context is built once; another sample only changes the overlay
    other = pop.context_map_figure(entry, {"run": entry.key, "id": entry.session.dataset
                                           .sample_ids[7]}, max_points=100)
    assert other["data"][0] is data[0] and list(other["data"][-1]["customdata"])[0] == 7
    assert list(fig["data"][-1]["customdata"])[0] == 5  # the first answer was not mutated


def test_selection_summary(entry):
    idx = np.arange(20)
    text = json.dumps(pop.selection_summary(entry, idx).to_plotly_json(), default=str)
    acc = entry.table["correct"].iloc[:20].mean()
    assert "20" in text and f"{acc:.1%}" in text
    empty = pop.selection_summary(entry, np.array([], dtype=np.int64))
    assert "Drag a box" in empty.children


def test_resolve_sample(entry):
    ids = entry.session.dataset.sample_ids
    assert resolve_sample(entry, ids[3], None) == {"run": entry.key, "id": ids[3]}
    worst = int(np.argmax(entry.table["loss"]))
    assert resolve_sample(entry, None, None)["id"] == ids[worst]
    kept = {"run": entry.key, "id": ids[9]}
    assert resolve_sample(entry, None, kept) == kept
    with pytest.raises(DashboardInputError, match="does not exist"):
        resolve_sample(entry, "mnist:test:999999", None)
    with pytest.raises(DashboardInputError, match="No sample chosen"):
        sample_index(entry, {"run": "other", "id": ids[0]})


def test_heatmap_view_single_and_all_classes(entry):
    one = heatmap_view(entry, 0, "integrated_gradients", "pred")
    assert [t.type for t in one.data] == ["image", "heatmap"]
    assert one.data[1].zmin == -1.0 and np.abs(np.asarray(one.data[1].z)).max() <= 1.0
    grid = heatmap_view(entry, 0, "saliency", ALL_CLASSES)
    assert len(grid.data) == 2 * len(entry.class_names) and grid.data[1].zmin == 0.0
    assert heatmap_view(entry, 0, "gradcam", "3").layout.title.text.endswith("class 3")
    with pytest.raises(DashboardInputError, match="Unknown heatmap method"):
        heatmap_view(entry, 0, "magic", "pred")
    with pytest.raises(DashboardInputError, match="Unknown heatmap target"):
        heatmap_view(entry, 0, "saliency", "99")


def test_heatmaps_run_on_one_torch_thread_and_restore_the_count(entry):
    import torch

    from dashboard.views.sample import single_torch_thread

    before = torch.get_num_threads()
    with single_torch_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    heatmap_view(entry, 1, "saliency", "label")
    assert torch.get_num_threads() == before


def test_target_options_and_metadata(entry):
    values = [o["value"] for o in target_options(entry.class_names)]
    assert values[:3] == ["pred", "label", ALL_CLASSES] and values[3:] == [
        str(i) for i in range(len(entry.class_names))]
    labels = [r.children[0].children for table in metadata_table(entry, 0).children
              if table.className == "loupe-meta" for r in table.children.children]
    assert "sample_id" not in labels and "loss" in labels


def test_cell_indices_and_worst(entry):
    t = entry.table
    idx = cell_indices(entry, "3", "5")
    assert np.all(t["label"].to_numpy()[idx] == 3) and np.all(t["pred"].to_numpy()[idx] == 5)
    assert len(idx) == int(((t["label"] == 3) & (t["pred"] == 5)).sum())
    with pytest.raises(DashboardInputError):
        cell_indices(entry, "3", "Z")
    true, pred = most_confused(entry)
    biggest = t[~t["correct"]].groupby(["label", "pred"]).size().max()
    assert len(cell_indices(entry, true, pred)) == biggest and true != pred
    worst = worst_indices(entry, False, 5)
    assert np.all(np.diff(t["loss"].to_numpy()[worst]) <= 0)
    wrong = worst_indices(entry, True, 100)
    assert not t["correct"].to_numpy()[wrong].any()


def test_gallery_links_every_thumbnail_to_its_sample(entry):
    ids = entry.session.dataset.sample_ids
    gallery = sample_gallery(entry, [4, 2], ["a", "b"])
    links = gallery.children
    assert [a.href for a in links] == [sample_href(ids[4]), sample_href(ids[2])]
    assert links[0].children[1].children == "a"
    assert isinstance(sample_gallery(entry, []), html.Div)
    assert sample_href("mnist:test:7") == "/sample?id=mnist:test:7"


def test_select_run_store_clears_the_selection():
    assert select_run_store("b", {"run": "a"}) == ({"run": "b"},
                                                  {"run": "b", "ids": [], "source": ""})
    with pytest.raises(PreventUpdate):
        select_run_store("a", {"run": "a"})


def test_export_table_full_and_selection(entry):
    from analysis.export import export_frame
    from dashboard.views.export import csv_name, export_table

    full = export_table(entry)
    assert list(full.columns) == list(export_frame(entry.session).columns)
    ids = entry.session.dataset.sample_ids
    sel = export_table(entry, [ids[9], ids[2], "bogus"])
    assert sel["sample_id"].tolist() == [ids[2], ids[9]]
    name = csv_name(entry, "-selection")
    assert name.endswith("-selection.csv") and "/" not in name and ":" not in name
