"""The Sample page's heatmap paths as plain functions: cached at once, else a job."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.state import DashboardInputError
from dashboard.views.sample import NotCached, checked_layer, gradcam_layer_options, heatmap_view


def heat(figure) -> bytes:
    """The heatmap trace's values (the trace over the image)."""
    return np.asarray(figure.data[1].z, dtype=np.float32).tobytes()


def test_a_heatmap_not_yet_computed_is_not_computed_on_the_fast_path(entry):
    index = 17
    with pytest.raises(NotCached):
        heatmap_view(entry, index, "saliency", "pred", cached_only=True)
    computed = heatmap_view(entry, index, "saliency", "pred")
    again = heatmap_view(entry, index, "saliency", "pred", cached_only=True)
    assert heat(again) == heat(computed)


def test_gradcam_layers_are_offered_and_checked(entry):
    options, default = gradcam_layer_options(entry)
    names = [o["value"] for o in options]
    assert names and default == names[-1]
    assert checked_layer(entry, "gradcam", names[0]) == names[0]
    assert checked_layer(entry, "saliency", names[0]) is None  # other methods ignore it
    with pytest.raises(DashboardInputError, match="Unknown GradCAM layer"):
        checked_layer(entry, "gradcam", "no.such.layer")
    first = heatmap_view(entry, 3, "gradcam", "pred", names[0])
    last = heatmap_view(entry, 3, "gradcam", "pred", names[-1])
    assert heat(first) != heat(last)


# -- the grouped metadata -----------------------------------------------------------------------
def all_rows(groups):
    return [row for _, rows in groups for row in rows]


def test_metadata_groups_use_plain_words_and_say_each_value_once(entry):
    from dashboard.views.sample import metadata_groups

    t = entry.table
    i = int(np.flatnonzero(~t["correct"].to_numpy())[0])  # a misclassified test digit
    row = t.iloc[i]
    groups, notes = metadata_groups(row, entry.class_names, entry.session.k)
    titles = [title for title, _ in groups]
    assert titles[:4] == ["Prediction", "Uncertainty (MC dropout)", "Distances", "Map position"]
    rows = all_rows(groups)
    labels = [label for label, _, _ in rows]
    assert not [label for label in labels if "_" in label]  # no internal column name
    for _, group in groups:  # "margin" is said once per group (plain and MC dropout)
        assert len({label for label, _, _ in group}) == len(group)
    assert len(rows) < len(t.columns) - 10  # ~40 columns, restatements and ids left out
    # the loss once, formatted from the table, with its unit
    losses = [(v, u) for label, v, u in rows if label == "loss"]
    assert losses == [(f"{row['loss']:.4g}", "cross-entropy, nats")]
    values = [v for _, v, _ in rows]
    assert values.count(f"{row['loss']:.4g}") == 1
    by_label = {label: v for label, v, _ in rows}
    assert by_label["predicted class"] == f"{row['pred_name']} (wrong)"
    assert by_label["confidence"] == f"{row['confidence']:.1%}"
    # a wrong prediction: the predicted class's centroid differs from the true one's
    (pred_distance,) = [v for label, v in by_label.items()
                        if label.startswith("embedding space: to the predicted class's")]
    assert pred_distance == f"{row['embedding_dist_pred']:.4g}"
    umap = f"({row['umap_x']:.4g}, {row['umap_y']:.4g})"
    assert ("UMAP", umap, "arbitrary units") in rows
    assert not notes


def test_out_of_distribution_metadata_measures_no_distance_to_its_foreign_label(entry):
    """A row read as an extra dataset's: its label is from another label space, so no
    distance against it; the nearest in-distribution centroid instead (hand-computed)."""
    from dashboard.views.sample import metadata_groups

    row = entry.table.iloc[3]
    groups, notes = metadata_groups(row, entry.class_names, entry.session.k,
                                    in_distribution=False)
    rows = all_rows(groups)
    text = " ".join(label for label, _, _ in rows)
    assert "true class's centroid" not in text and "other centroid" not in text
    assert "loss" not in text and "minus own" not in text
    by_label = {label: v for label, v, _ in rows}
    nearest = min(row["embedding_dist_label"], row["embedding_dist_other"])
    cls = entry.class_names[int(row["embedding_nearest_class"])]
    assert by_label["embedding space: nearest class centroid"] == f"{cls} at {nearest:.4g}"
    assert by_label["its own label"].endswith("(not a class of this model)")
    assert len(notes) == 1 and "another dataset's classes" in notes[0]


def test_raw_columns_keep_the_internal_names(entry):
    from dashboard.views.sample import raw_metadata_table

    names = [r.children[0].children for r in raw_metadata_table(entry.table.iloc[0]).children
             .children]
    assert "neg_margin" in names and "umap_x" in names and "sample_id" not in names


def test_the_readme_s_sample_example_exists_on_the_default_start():
    """The README's /sample?id= example is an id of the data `python -m dashboard` opens
    without LOUPE_DATA (the embedded mnist-5k test split)."""
    import re
    from pathlib import Path

    from core.datasets import load_dataset

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    examples = re.findall(r"/sample\?id=([\w-]+:\w+:\d+)", readme)
    assert examples
    default = load_dataset("mnist-5k", "test")
    assert examples[0] in set(default.sample_ids)
