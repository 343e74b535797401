"""The sample analysis of an extra-dataset (out-of-distribution) sample.

``/sample?id=fashion-mnist:test:5`` shows what the model thought the sample
was (its probabilities, with and without MC dropout), the heatmap of that
belief, and its nearest in-distribution samples (from the ``distances``
step), on the joint map. :mod:`dashboard.pages.sample` calls in here when
the id belongs to an extra dataset (:meth:`RunEntry.locate_extra`).
"""

from __future__ import annotations

import numpy as np
from dash import html

from analysis.attribution import METHODS, normalize_heatmap
from dashboard import figures
from dashboard.components.gallery import sample_gallery
from dashboard.figures import uncertainty as ufig
from dashboard.images import image_data_uri
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.sample import (
    ALL_CLASSES,
    metadata_groups,
    metadata_view,
    raw_metadata_table,
    target_options,
)
from dashboard.views.uncertainty import NEAREST_K, map_options

EXTRA_TARGETS_NOTE = "ground-truth class"  # not among the model's classes: left out


def extra_sample_of(entry: RunEntry, store: dict | None) -> tuple[str, int] | None:
    """``(extra dataset key, row)`` when the sample store holds an extra dataset's sample."""
    if not isinstance(store, dict) or not entry.same_run(store.get("run")):
        return None
    return entry.locate_extra(store.get("id"))


def extra_target_options(class_names) -> list[dict]:
    """Heatmap targets without the ground truth (an OOD label is not one of the model's)."""
    return [o for o in target_options(class_names) if o["label"] != EXTRA_TARGETS_NOTE]


def extra_metadata(entry: RunEntry, row) -> html.Div:
    """An extra dataset's row grouped with plain words: no loss, no correctness and no
    distance measured against its own label (another label space than the model's)."""
    return metadata_view(*metadata_groups(row, entry.class_names, entry.session.k,
                                          in_distribution=False))


# Raw columns of an extra sample that compare it with a class of another label space.
NO_GROUND_TRUTH = ("correct", "mc_correct", "loss")


def extra_sample_view(entry: RunEntry, key: str, row: int) -> tuple:
    """The sample page's outputs for an extra dataset's sample.

    Returns ``(title, image src, grouped metadata, raw metadata, probabilities figure,
    heatmap target options, nearest in-distribution gallery, joint map)``.
    """
    session = entry.session
    table = entry.extra_table(key)
    r = table.iloc[row]
    lines = [html.B(str(r["sample_id"])), html.Br(),
             f"out of distribution: a {key} sample ('{r['label_name']}')"]
    mc_probs = session.mc_probabilities_of(entry.head, key)
    probs = ufig.ood_probability_figure(session.probabilities_of(entry.head, key)[row],
                                        entry.class_names,
                                        None if mc_probs is None else mc_probs[row])
    neighbors, distances = session.reference_neighbors(key)
    nearest = neighbors[row][:NEAREST_K]
    d = distances[row][:NEAREST_K]
    names = entry.table["label_name"]
    captions = [f"class {names.iat[j]}\ndistance {dj:.2f}"
                for j, dj in zip(nearest, d, strict=True)]
    gallery = sample_gallery(entry, nearest, captions)
    return (html.Div(lines, className="text-danger"),
            image_data_uri(session.dataset_of(key).images[row], 6), extra_metadata(entry, r),
            raw_metadata_table(r, skip=NO_GROUND_TRUTH), probs,
            extra_target_options(entry.class_names), gallery,
            extra_mini_map(entry, key, row, nearest))


def extra_mini_map(entry: RunEntry, key: str, row: int, nearest: np.ndarray):
    """The joint map with the sample (star) and its nearest in-distribution samples (rings)."""
    options = map_options(entry)
    if not options:
        return figures.empty_figure("no joint map computed")
    name = options[0]["value"]
    n_in = len(entry.session.dataset)
    fig = ufig.joint_map_figure(entry.session.joint_map(key, name), n_in,
                                entry.session.dataset.key, key, map_name=name,
                                map_label=options[0]["label"],
                                highlight=nearest, focus=n_in + row)
    fig.update_layout(showlegend=False, margin={"l": 50, "r": 10, "t": 10, "b": 45})
    return fig


def extra_attribution(entry: RunEntry, key: str, row: int, method: str, target: int,
                      n_steps: int = 50, layer: str | None = None) -> np.ndarray:
    """``(H, W)`` heatmap of extra sample ``row`` for class ``target`` (cached by the session)."""
    return entry.session.attribute(row, method, int(target), n_steps, dataset=key,
                                   head=entry.head, layer=layer)


def extra_heatmap_view(entry: RunEntry, key: str, row: int, method: str, target: str,
                       layer: str | None = None):
    """The heatmap figure of an extra sample: one target, or every class as small multiples."""
    spec = METHODS.get(method) if isinstance(method, str) else None
    if spec is None:
        method = method if isinstance(method, str) and len(method) <= 40 else type(method).__name__
        raise DashboardInputError(f"Unknown heatmap method '{method}'; valid: "
                                  f"{', '.join(METHODS)}.")
    names = entry.class_names
    image = entry.session.dataset_of(key).images[row]
    probs = entry.session.probabilities_of(entry.head, key)[row]
    if target == ALL_CLASSES:
        heats = np.stack([extra_attribution(entry, key, row, method, c, layer=layer)
                          for c in range(len(names))])
        heats = normalize_heatmap(heats, spec.signed)  # one scale so panels compare
        titles = [f"{n} ({probs[c]:.0%})" for c, n in enumerate(names)]
        return figures.heatmap_grid_figure(image, list(heats), spec.signed, titles)
    if target == "label":
        raise DashboardInputError(f"A {key} sample has no ground-truth class among the "
                                  "model's; pick the predicted class or a class.")
    if target == "pred":
        cls = int(np.argmax(probs))
    elif str(target).isascii() and str(target).isdigit() and 0 <= int(target) < len(names):
        cls = int(target)
    else:
        raise DashboardInputError(f"Unknown heatmap target '{str(target)[:40]}'.")
    heat = normalize_heatmap(extra_attribution(entry, key, row, method, cls, layer=layer),
                             spec.signed)
    title = f"{spec.label} for class {names[cls]}"
    return figures.heatmap_figure(image, heat, spec.signed,
                                  title + " (red: for, blue: against)" if spec.signed else title)
