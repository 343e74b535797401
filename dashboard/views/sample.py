"""Sample analysis helpers: choosing the sample, its metadata, the heatmap figures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from dash import html

from analysis.attribution import METHODS, normalize_heatmap
from analysis.errors import LoupeError
from dashboard import figures
from dashboard.state import ID_COLUMNS, DashboardInputError, RunEntry
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


def metadata_table(entry: RunEntry, index: int) -> html.Table:
    """Every per-sample column of the row, formatted."""
    row = entry.table.iloc[index]
    cells = []
    for col, value in row.items():
        if col in ID_COLUMNS:
            continue
        text = f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)
        cells.append(html.Tr([html.Td(col), html.Td(text)]))
    return html.Table(html.Tbody(cells), className="loupe-meta")


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
