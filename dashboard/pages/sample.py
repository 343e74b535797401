"""Sample analysis (``/sample?id=mnist:test:17``): image, probabilities, heatmaps, similars."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from analysis.attribution import METHODS
from core.errors import LoupeError
from dashboard import figures, ids
from dashboard.components.gallery import sample_gallery
from dashboard.components.messages import card, error_alert
from dashboard.jobs import pooled
from dashboard.state import DashboardInputError, get_entry
from dashboard.views.ood_sample import extra_heatmap_view, extra_sample_of, extra_sample_view
from dashboard.views.population import context_map_figure
from dashboard.views.sample import (
    SIMILARS_K,
    NotCached,
    checked_layer,
    gradcam_layer_options,
    heatmap_busy,
    heatmap_view,
    metadata_table,
    raw_metadata_table,
    resolve_sample,
    sample_index,
    target_options,
)

dash.register_page(__name__, path="/sample", name="Sample", order=3)

QUERY_STORE = "sample-query"


def layout(id: str | None = None, **_ignored) -> html.Div:
    heat_controls = dbc.Row([
        dbc.Col(dcc.Dropdown(id=ids.HEATMAP_METHOD, clearable=False,
                             value="integrated_gradients",
                             options=[{"label": m.label, "value": k} for k, m in METHODS.items()]),
                md=6),
        dbc.Col(dcc.Dropdown(id=ids.HEATMAP_TARGET, clearable=False, value="pred",
                             options=target_options([])), md=6),
        dbc.Col(html.Div([html.Span("GradCAM layer", className="small text-muted me-2"),
                          dcc.Dropdown(id=ids.HEATMAP_LAYER, clearable=False,
                                       className="flex-grow-1")],
                         className="d-flex align-items-center"),
                id=ids.HEATMAP_LAYER_ROW, md=12, style={"display": "none"}),
    ], className="g-2 mb-2")
    return html.Div([
        dcc.Store(id=QUERY_STORE, data={"id": id}),
        dcc.Store(id=ids.HEATMAP_REQUEST),
        html.Div(id=ids.SAMPLE_MESSAGE),
        html.Div(id=ids.SAMPLE_BODY, children=[dbc.Row([
            dbc.Col(card("Sample", html.Div(id=ids.SAMPLE_TITLE, className="mb-2"),
                         html.Img(id=ids.SAMPLE_IMAGE, className="loupe-sample-image mb-2"),
                         dbc.Switch(id=ids.SAMPLE_RAW_TOGGLE, value=False,
                                    label="raw columns (internal names)",
                                    className="small text-muted mb-1"),
                         html.Div(id=ids.SAMPLE_METADATA),
                         html.Div(id=ids.SAMPLE_METADATA_RAW, style={"display": "none"})),
                    lg=3),
            dbc.Col(card("Probabilities", dcc.Graph(id=ids.SAMPLE_PROBABILITIES,
                                                    config={"displayModeBar": False})), lg=4),
            dbc.Col(card("Heatmap", heat_controls,
                         html.Div(id=ids.HEATMAP_STATUS, className="small text-muted mb-1"),
                         html.Div(id=ids.HEATMAP_ERROR),
                         dcc.Graph(id=ids.SAMPLE_HEATMAP, config={"displayModeBar": False},
                                   figure=figures.empty_figure())), lg=5),
        ], className="g-3"),
        dbc.Row([
            dbc.Col(card(f"Similar samples: the {SIMILARS_K} nearest in embedding space",
                         html.Div(id=ids.SIMILARS_GALLERY)), lg=7),
            dbc.Col(card("The sample (star) and its similars (rings) on the map",
                         dcc.Graph(id=ids.SIMILARS_MAP, style={"height": "380px"},
                                   config={"displaylogo": False})), lg=5),
        ], className="g-3")]),
    ])


# -- callbacks -------------------------------------------------------------------------------
@dash.callback(Output(ids.SAMPLE_STORE, "data"), Output(ids.SAMPLE_MESSAGE, "children"),
               Output(ids.SAMPLE_BODY, "style"),
               Input(QUERY_STORE, "data"), State(ids.RUN_STORE, "data"),
               State(ids.SAMPLE_STORE, "data"))
def choose_sample(query, run_store, current):
    """The URL's ``?id=`` becomes the app-level clicked sample (validated first); a bad
    id shows its message alone (no empty cards under it)."""
    try:
        entry = get_entry(run_store)
        return resolve_sample(entry, (query or {}).get("id"), current), None, {}
    except DashboardInputError as exc:
        return dash.no_update, error_alert(exc), {"display": "none"}


@dash.callback(Output(ids.SAMPLE_METADATA, "style"), Output(ids.SAMPLE_METADATA_RAW, "style"),
               Input(ids.SAMPLE_RAW_TOGGLE, "value"))
def toggle_raw(raw):
    """The grouped metadata, or every column under its internal name."""
    hidden = {"display": "none"}
    return (hidden, {}) if raw else ({}, hidden)


@dash.callback(Output(ids.SAMPLE_TITLE, "children"), Output(ids.SAMPLE_IMAGE, "src"),
               Output(ids.SAMPLE_METADATA, "children"),
               Output(ids.SAMPLE_METADATA_RAW, "children"),
               Output(ids.SAMPLE_PROBABILITIES, "figure"),
               Output(ids.HEATMAP_TARGET, "options"), Output(ids.SIMILARS_GALLERY, "children"),
               Output(ids.SIMILARS_MAP, "figure"),
               Output(ids.SAMPLE_MESSAGE, "children", allow_duplicate=True),
               Output(ids.SAMPLE_BODY, "style", allow_duplicate=True),
               Input(ids.SAMPLE_STORE, "data"), State(ids.RUN_STORE, "data"),
               prevent_initial_call=True)
def show_sample(store, run_store):
    """Everything about the sample except the heatmap (which runs in the background)."""
    try:
        entry = get_entry(run_store)
        extra = extra_sample_of(entry, store)
        if extra is not None:  # an extra (out-of-distribution) dataset's sample
            return (*extra_sample_view(entry, *extra), None, {})
        i = sample_index(entry, store)
    except DashboardInputError as exc:
        return (*[dash.no_update] * 8, error_alert(exc), {"display": "none"})
    row = entry.table.iloc[i]
    head = f"head {entry.head}: " if len(entry.heads) > 1 else ""
    side = [f" · {i.name} {row[i.name]}" for i in entry.session.task.inputs
            if i.kind != "image" and i.name in row]
    verdict = "correctly classified" if row["correct"] else "misclassified"
    title = html.Div([html.B(str(row["sample_id"])), *side, html.Br(), f"{head}{verdict}"],
                     className="text-danger" if not row["correct"] else "")
    probs = figures.probability_figure(entry.session.probabilities_of(entry.head)[i],
                                       entry.class_names,
                                       int(row["label"]), int(row["pred"]))
    sim, dist = entry.session.similars(i, SIMILARS_K)
    names = entry.table[["label_name", "pred_name"]].to_numpy()
    captions = [f"true {names[j, 0]}, pred {names[j, 1]}\ndistance {d:.2f}"
                for j, d in zip(sim, dist, strict=True)]
    mini = context_map_figure(entry, store)
    return (title, entry.thumbnail(i, 6), metadata_table(entry, i), raw_metadata_table(row),
            probs, target_options(entry.class_names), sample_gallery(entry, sim, captions), mini,
            None, {})


@dash.callback(Output(ids.HEATMAP_LAYER, "options"), Output(ids.HEATMAP_LAYER, "value"),
               Input(ids.RUN_STORE, "data"))
def fill_layers(run_store):
    """The run's GradCAM layers; the default is the last convolutional block."""
    try:
        return gradcam_layer_options(get_entry(run_store))
    except DashboardInputError:
        return [], None


@dash.callback(Output(ids.HEATMAP_LAYER_ROW, "style"), Input(ids.HEATMAP_METHOD, "value"))
def show_layer_choice(method):
    return {} if method == "gradcam" else {"display": "none"}


@dash.callback(Output(ids.SAMPLE_HEATMAP, "figure", allow_duplicate=True),
               Output(ids.HEATMAP_ERROR, "children", allow_duplicate=True),
               Output(ids.HEATMAP_REQUEST, "data"),
               Input(ids.SAMPLE_STORE, "data"), Input(ids.HEATMAP_METHOD, "value"),
               Input(ids.HEATMAP_TARGET, "value"), Input(ids.HEATMAP_LAYER, "value"),
               State(ids.RUN_STORE, "data"), prevent_initial_call=True)
def request_heatmap(store, method, target, layer, run_store):
    """A heatmap already computed is drawn at once; anything else goes to a background job.

    The request is stored either way, so a job still running for an earlier
    request is superseded and never draws over this one.
    """
    request = {"sample": store, "method": method, "target": target or "pred", "layer": layer}
    try:
        entry = get_entry(run_store)
        checked = checked_layer(entry, method, layer)
        if extra_sample_of(entry, store) is None:
            figure = heatmap_view(entry, sample_index(entry, store), method, target or "pred",
                                  checked, cached_only=True)
            return figure, None, {**request, "done": True}
    except NotCached:
        pass
    except LoupeError as exc:
        return figures.empty_figure(), error_alert(exc), {**request, "done": True}
    return dash.no_update, dash.no_update, request


@dash.callback(Output(ids.SAMPLE_HEATMAP, "figure"), Output(ids.HEATMAP_ERROR, "children"),
               Input(ids.HEATMAP_REQUEST, "data"), State(ids.RUN_STORE, "data"),
               background=True, interval=150, prevent_initial_call=True,
               running=[(Output(ids.HEATMAP_STATUS, "children"),
                         [dbc.Spinner(size="sm", spinner_class_name="me-2"),
                          "computing the heatmap…"], ""),
                        (Output(ids.SAMPLE_HEATMAP, "style"), {"opacity": 0.35},
                         {"opacity": 1})])
@pooled(busy=heatmap_busy)  # a full job queue answers "busy, try again"
def show_heatmap(request, run_store):
    """Captum heatmap(s) not yet computed, in a background job (see request_heatmap)."""
    if not isinstance(request, dict) or request.get("done"):
        raise dash.exceptions.PreventUpdate
    store, method, target = request.get("sample"), request.get("method"), request.get("target")
    try:
        entry = get_entry(run_store)
        layer = checked_layer(entry, method, request.get("layer"))
        extra = extra_sample_of(entry, store)
        if extra is not None:
            return extra_heatmap_view(entry, *extra, method, target or "pred", layer), None
        return heatmap_view(entry, sample_index(entry, store), method, target or "pred",
                            layer), None
    except LoupeError as exc:
        return figures.empty_figure(), error_alert(exc)
