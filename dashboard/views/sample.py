"""Sample analysis helpers: choosing the sample, its metadata, the heatmap figures."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from dash import html

from analysis.attribution import METHODS, normalize_heatmap
from core.errors import LoupeError
from dashboard import figures
from dashboard.columns import ID_COLUMNS, column_unit, column_words
from dashboard.state import DashboardInputError, RunEntry
from dashboard.views.guard import checked_sample_id

ALL_CLASSES = "all"
SIMILARS_K = 10


_THREADS_GUARD = threading.Lock()
_threads_state = {"users": 0, "before": 0}


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    One image's attribution is too small to gain from threads, and on a busy
    2-core machine a 2-thread OpenMP region waits for its slower thread:
    Integrated Gradients measured 16 ms on one thread against 234 ms on two.
    Heatmap jobs are threads of one server: the count set by the first to
    enter is restored by the last to leave (nested or overlapping uses).
    """
    import torch

    with _THREADS_GUARD:
        if _threads_state["users"] == 0:
            _threads_state["before"] = torch.get_num_threads()
        _threads_state["users"] += 1
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _THREADS_GUARD:
            _threads_state["users"] -= 1
            if _threads_state["users"] == 0:
                torch.set_num_threads(_threads_state["before"])


def warm_up_attribution(entry: RunEntry) -> None:
    """Import Captum and explain one sample in the server process.

    Done before serving, so the first click does not pay for it (the first
    Integrated Gradients call costs ~0.5 s, later ones ~20-40 ms).
    """
    import captum.attr  # noqa: F401

    with single_torch_thread():
        entry.session.attribute(0, "integrated_gradients", "pred")


def target_options(class_names) -> list[dict]:
    """Heatmap targets: the prediction, the label, each class, or all classes at once."""
    opts = [{"label": "predicted class", "value": "pred"},
            {"label": "ground-truth class", "value": "label"},
            {"label": "all classes (small multiples)", "value": ALL_CLASSES}]
    return opts + [{"label": f"class {n}", "value": str(c)} for c, n in enumerate(class_names)]


def resolve_sample(entry: RunEntry, query_id: str | None, current: dict | None) -> dict:
    """The sample store for this page: the URL's id, else the last one, else the worst sample."""
    if query_id:
        query_id = checked_sample_id(query_id)
        if entry.locate_extra(query_id) is None:  # extra datasets: see views.ood_sample
            entry.index_of(query_id)  # raises a DashboardInputError naming a bad id
        return {"run": entry.key, "id": str(query_id)}
    if isinstance(current, dict) and entry.same_run(current.get("run")) and current.get("id") \
            in entry.id_to_index:
        return {"run": entry.key, "id": current["id"]}  # this head's key: the views redraw
    worst = int(np.argmax(entry.table["loss"].to_numpy()))
    return {"run": entry.key, "id": str(entry.session.dataset.sample_ids[worst])}


# -- the sample's metadata, grouped ---------------------------------------------------------
# Columns the grouped view never shows: ids, class indices shown by name, and exact
# restatements of another column (uncertainty = 1 - confidence, neg_margin = -margin...).
RESTATED = {"label", "pred", "correct", "mc_correct", "uncertainty", "mc_uncertainty",
            "neg_margin", "mc_neg_margin"}
# Distances measured against the sample's own label: meaningless for a sample whose label
# comes from another label space (an out-of-distribution dataset).
LABEL_BASED = ("dist_label", "dist_other", "margin")
SPACES = (("embedding", "embedding space"), ("pixel", "pixel space"))
OOD_DISTANCE_NOTE = ("Distances to its own class are left out: its label ({label}) comes "
                     "from another dataset's classes, not the model's. Shown instead: the "
                     "nearest in-distribution class centroid and samples.")

MetadataRow = tuple[str, str, "str | None"]  # (plain label, value, unit or None)


def _number(value: object) -> str:
    v = float(value)
    return f"{v:.4g}" if np.isfinite(v) else "n/a"


def _percent(value: object) -> str:
    v = float(value)
    return f"{v:.1%}" if np.isfinite(v) else "n/a"


def _points(value: object) -> str:
    """A probability difference in percentage points."""
    v = float(value)
    return f"{100 * v:.1f}" if np.isfinite(v) else "n/a"


def metadata_groups(row: pd.Series, class_names: Sequence[str], k: int,
                    in_distribution: bool = True) -> tuple[list[tuple[str, list]], list[str]]:
    """The sample's per-sample columns as titled groups of plain-word rows.

    Parameters
    ----------
    row : Series, one row of the per-sample table (``RunEntry.table``)
    class_names : the model's (head's) class names
    k : int, the neighbour count behind ``knn_distance``
    in_distribution : bool
        False for an extra (out-of-distribution) dataset's sample: no loss or
        correctness, and no distance measured against its own (foreign) label.

    Returns
    -------
    groups : list of ``(title, [(label, value, unit or None), ...])``, empty groups left out;
        every column of ``row`` appears at most once (see :data:`RESTATED`)
    notes : list of str, what was left out and why
    """
    used = set(ID_COLUMNS) | RESTATED
    present = [c for c in row.index if c not in used]

    def take(col: str) -> object | None:
        if col not in row.index or col in used:
            return None
        used.add(col)
        return row[col]

    def cls(value: object) -> str:
        i = int(value)
        return str(class_names[i]) if 0 <= i < len(class_names) else str(i)

    notes: list[str] = []
    prediction: list[MetadataRow] = []
    label = take("label_name")
    if in_distribution:
        prediction.append((column_words("label_name"), str(label), None))
        verdict = "correct" if bool(row.get("correct")) else "wrong"
        prediction.append((column_words("pred_name"), f"{take('pred_name')} ({verdict})", None))
    else:
        prediction.append(("its own label", f"{label} (not a class of this model)", None))
        prediction.append((column_words("pred_name"), str(take("pred_name")), None))
    if (v := take("confidence")) is not None:
        prediction.append((column_words("confidence"), _percent(v), "of the predicted class"))
    loss = take("loss")
    if in_distribution and loss is not None:
        prediction.append((column_words("loss"), _number(loss), column_unit("loss")))
    if (v := take("margin")) is not None:
        prediction.append((column_words("margin"), _points(v), "percentage points"))
    if (v := take("entropy")) is not None:
        prediction.append((column_words("entropy"), _number(v), column_unit("entropy")))

    mc: list[MetadataRow] = []
    if (v := take("mc_pred")) is not None:
        verdict = (" (correct)" if bool(row.get("mc_correct")) else " (wrong)") \
            if in_distribution else ""
        mc.append((column_words("mc_pred"), cls(v) + verdict, None))
    for col, fmt, unit in (("mc_confidence", _percent, "of its predicted class"),
                           ("mc_margin", _points, "percentage points"),
                           ("mc_entropy", _number, column_unit("mc_entropy")),
                           ("mc_mutual_info", _number, "nats; higher: the passes disagree"),
                           ("mc_top_var", _number, "across the passes")):
        if (v := take(col)) is not None:
            mc.append((column_words(col), fmt(v), unit))

    distances: list[MetadataRow] = []
    knn_words = f"to the {k}th nearest {'' if in_distribution else 'in-distribution '}sample"
    pred = int(row["pred"]) if "pred" in row.index else -1
    for space, words in SPACES:
        if f"{space}_dist_pred" not in row.index:
            continue
        rows: list[MetadataRow] = []
        nearest = take(f"{space}_nearest_class")
        if in_distribution:
            wrong = not bool(row.get("correct"))
            # Wrong and nearest another class: that class is usually the predicted one.
            same = wrong and row[f"{space}_dist_pred"] == row[f"{space}_dist_other"]
            for part in ("dist_label", "dist_pred", "dist_other", "margin"):
                value = take(f"{space}_{part}")
                if part == "dist_pred" and not wrong:
                    continue  # the true class's centroid, shown above
                if part == "dist_other" and same:
                    continue  # the predicted class's, shown above
                said = column_words(f"{space}_{part}")
                if part == "dist_pred" and same:
                    said += " (the nearest other)"
                if value is not None:
                    rows.append((said, _number(value), column_unit(f"{space}_{part}")))
            if nearest is not None:
                rows.append((column_words(f"{space}_nearest_class"), cls(nearest), None))
        else:
            # The nearest centroid over all classes is the smaller of "own" and "other".
            own = [take(f"{space}_{part}") for part in LABEL_BASED]
            closest = np.nanmin([float(own[0]), float(own[1])])
            if space == "embedding":
                take("centroid_distance")  # the same number
            if nearest is not None:
                rows.append(("nearest class centroid", f"{cls(nearest)} at {_number(closest)}",
                             column_unit(f"{space}_dist_pred")))
            d_pred = take(f"{space}_dist_pred")
            if nearest is None or int(nearest) != pred:
                rows.append((column_words(f"{space}_dist_pred"), _number(d_pred),
                             column_unit(f"{space}_dist_pred")))
        distances += [(f"{words}: {text}", value, unit) for text, value, unit in rows]
        if space == "embedding" and (v := take("knn_distance")) is not None:
            distances.append((f"{words}: {knn_words}", _number(v), column_unit("knn_distance")))
    for prefix, words in (("", "embedding space"), ("mc_", "MC-averaged embedding")):
        if (v := take(f"{prefix}knn_distance")) is not None:
            distances.append((f"{words}: {knn_words}", _number(v), column_unit("knn_distance")))
        v = take(f"{prefix}centroid_distance")
        if v is not None and prefix:
            # The plain one restates the nearest of the embedding centroid distances.
            distances.append((f"{words}: {column_words('centroid_distance')}", _number(v),
                              column_unit("centroid_distance")))
    if not in_distribution:
        notes.append(OOD_DISTANCE_NOTE.format(label=label))

    position: list[MetadataRow] = []
    for col in present:
        # map coordinates only (ink_offset_x/_y are image measurements, in "Other")
        if col.endswith("_x") and f"{col[:-2]}_y" in row.index and col not in used \
                and col.split("_")[0] in ("umap", "tsne", "joint", "mc"):
            name = col[:-2]
            x, y = take(col), take(f"{name}_y")
            words = name.replace("mc_", "MC-averaged ").replace("joint_", "joint ") \
                .replace("umap", "UMAP").replace("tsne", "t-SNE")
            position.append((words, f"({_number(x)}, {_number(y)})", column_unit(col)))
        elif col.endswith("_in_dist_nn") and col not in used:
            position.append((f"{col[:-len('_in_dist_nn')].replace('_', ' ')}: in-distribution "
                             "share of its map neighbours", _percent(take(col)), None))

    other: list[MetadataRow] = []
    for col in present:
        if col in used:
            continue
        value = take(col)
        if isinstance(value, bool | np.bool_):
            text = "yes" if value else "no"
        elif isinstance(value, float | np.floating):
            text = _number(value)
        else:
            text = str(value)
        other.append((column_words(col), text, column_unit(col)))
    groups = [("Prediction", prediction), ("Uncertainty (MC dropout)", mc),
              ("Distances", distances), ("Map position", position), ("Other metadata", other)]
    return [(title, rows) for title, rows in groups if rows], notes


def metadata_view(groups: list[tuple[str, list]], notes: Sequence[str] = ()) -> html.Div:
    """The grouped metadata as small titled tables (units muted after the value)."""
    blocks = []
    for title, rows in groups:
        body = [html.Tr([html.Td(label),
                         html.Td([value, html.Span(f" {unit}", className="text-muted")
                                  if unit else None])]) for label, value, unit in rows]
        blocks += [html.Div(title, className="loupe-meta-group small fw-semibold mt-2"),
                   html.Table(html.Tbody(body), className="loupe-meta")]
    blocks += [html.Div(n, className="small text-muted mt-1 loupe-meta-note") for n in notes]
    return html.Div(blocks)


def raw_metadata_table(row: pd.Series, skip: Sequence[str] = ()) -> html.Table:
    """Every per-sample column of ``row`` under its internal name, formatted."""
    cells = []
    for col, value in row.items():
        if col in ID_COLUMNS or col in skip:
            continue
        text = f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)
        cells.append(html.Tr([html.Td(col), html.Td(text)]))
    return html.Table(html.Tbody(cells), className="loupe-meta")


def metadata_table(entry: RunEntry, index: int) -> html.Div:
    """The sample's metadata grouped with plain words (see :func:`metadata_groups`)."""
    row = entry.table.iloc[index]
    return metadata_view(*metadata_groups(row, entry.class_names, entry.session.k))


def sample_index(entry: RunEntry, store: dict | None) -> int:
    if not isinstance(store, dict) or not entry.same_run(store.get("run")):
        raise DashboardInputError("No sample chosen for this run: click one on any page.")
    return entry.index_of(checked_sample_id(store.get("id")))


BUSY_TEXT = ("The server is busy computing other heatmaps; try again in a few seconds "
             "(change the sample, method or target, or pick this one again).")


def heatmap_busy(*_callback_args) -> tuple:
    """What the heatmap callback answers when the job queue is full (see
    :func:`dashboard.jobs.pooled`): an empty figure and a "busy, try again" alert."""
    from dashboard.components.messages import info_alert

    return figures.empty_figure(), info_alert(BUSY_TEXT)


def gradcam_layer_options(entry: RunEntry) -> tuple[list[dict], str | None]:
    """The GradCAM layer dropdown's options (forward order) and its default (the last)."""
    try:
        layers = entry.session.gradcam_layers()
    except LoupeError:  # no feature map at all: GradCAM itself will say so
        return [], None
    return [{"label": name, "value": name} for name in layers], (layers[-1] if layers else None)


def checked_layer(entry: RunEntry, method: str, layer: object) -> str | None:
    """``layer`` when GradCAM is asked for and it is one of the run's layers, else None."""
    if method != "gradcam" or layer in (None, ""):
        return None
    options, _ = gradcam_layer_options(entry)
    if not isinstance(layer, str) or layer not in {o["value"] for o in options}:
        shown = str(layer)[:40] if isinstance(layer, str) else type(layer).__name__
        raise DashboardInputError(f"Unknown GradCAM layer '{shown}' for this run.")
    return layer


class NotCached(Exception):
    """A heatmap asked for with ``cached_only`` has not been computed yet."""


def heatmap_view(entry: RunEntry, index: int, method: str, target: str,
                 layer: str | None = None, cached_only: bool = False):
    """The heatmap figure: one target over the image, or all classes as small multiples.

    ``layer`` is GradCAM's layer (default: the model's last convolutional block).
    With ``cached_only`` nothing is computed: :class:`NotCached` when a heatmap is
    missing (the page then asks a background job for it).
    """

    def attribution(target_class):
        heat = session.attribute(index, method, target_class, head=entry.head, layer=layer,
                                 cached_only=cached_only)
        if heat is None:
            raise NotCached
        return heat

    spec = METHODS.get(method) if isinstance(method, str) else None
    if spec is None:
        shown = method if isinstance(method, str) and len(method) <= 40 else type(method).__name__
        raise DashboardInputError(f"Unknown heatmap method '{shown}'; valid: "
                                  f"{', '.join(METHODS)}.")
    session = entry.session
    image = session.dataset.images[index]
    names = entry.class_names
    if target == ALL_CLASSES:
        with single_torch_thread():
            heats = np.stack([attribution(c) for c in range(len(names))])
        heats = normalize_heatmap(heats, spec.signed)  # one scale so panels compare
        probs = session.probabilities_of(entry.head)[index]
        titles = [f"{n} ({probs[c]:.0%})" for c, n in enumerate(names)]
        return figures.heatmap_grid_figure(image, list(heats), spec.signed, titles)
    if target not in ("pred", "label"):
        text = str(target)[:40]
        # isascii: "²".isdigit() is true, int("²") raises
        if not (text.isascii() and text.isdigit()) or not 0 <= int(text) < len(names):
            raise DashboardInputError(f"Unknown heatmap target '{text}'.")
        target = int(target)
    with single_torch_thread():
        heat = normalize_heatmap(attribution(target), spec.signed)
    row = entry.table.iloc[index]
    cls = {"pred": row["pred_name"], "label": row["label_name"]}.get(target) \
        if isinstance(target, str) else names[target]
    return figures.heatmap_figure(image, heat, spec.signed,
                                  f"{spec.label} for class {cls} (red: for, blue: against)"
                                  if spec.signed else f"{spec.label} for class {cls}")
