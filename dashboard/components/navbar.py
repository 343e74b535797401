"""The navbar (page links, run selector) and the app-level callbacks that go with it."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import ids
from dashboard.state import run_of


def pages() -> list[tuple[str, str]]:
    """``(name, path)`` of every registered page (``dash.register_page`` in
    :mod:`dashboard.pages`), in their declared ``order``: a new page module is a new link."""
    entries = sorted(dash.page_registry.values(), key=lambda p: p.get("order") or 0)
    return [(p["name"], p["path"]) for p in entries]


def navbar(run_options: list[dict], default_run: str | None,
           head_options: list[dict] | None = None) -> dbc.Navbar:
    """Brand, one link per page, the run selector (labels only, no paths) and, for a
    model with several heads, the head selector."""
    links = [dbc.NavItem(dbc.NavLink(name, href=href, active="exact")) for name, href in pages()]
    selector = dcc.Dropdown(id=ids.RUN_SELECT, options=run_options, value=default_run,
                            clearable=False, style={"width": "260px", "fontSize": "14px"})
    head_options = head_options or []
    heads = html.Div(
        [html.Span("head", className="text-light small me-2"),
         dcc.Dropdown(id=ids.HEAD_SELECT, options=head_options, value=default_run,
                      clearable=False, style={"width": "120px", "fontSize": "14px"})],
        id=ids.HEAD_SELECT_BOX, className="align-items-center ms-3",
        style=head_box_style(head_options))
    return dbc.Navbar(dbc.Container([
        dbc.NavbarBrand("Loupe", href="/", className="fw-bold"),
        dbc.Nav(links, navbar=True, className="me-auto"),
        # Run and head together: when they do not fit beside the links they wrap as one.
        html.Div([html.Span("run", className="text-light small me-2"), selector, heads],
                 className="d-flex align-items-center ms-auto"),
    ], fluid=True), color="dark", dark=True, className="mb-3 py-1")


def head_box_style(head_options: list[dict]) -> dict:
    """The head selector shows only for a run with several heads."""
    return {"display": "flex" if len(head_options) > 1 else "none"}


def register_callbacks() -> None:
    """App-level callbacks: the run selector fills the head selector, which drives the
    run store (the store holds the key of a (run, head) entry).

    Registered by :func:`dashboard.app.create_app` for each app (``dash.callback``
    entries are consumed by the first app that starts).
    """

    @dash.callback(Output(ids.HEAD_SELECT, "options"), Output(ids.HEAD_SELECT, "value"),
                   Output(ids.HEAD_SELECT_BOX, "style"),
                   Input(ids.RUN_SELECT, "value"), State(ids.HEAD_SELECT, "value"),
                   prevent_initial_call=True)
    def select_run(run_key, head_key):
        """A new run offers its heads and starts on its first (a run not analysed yet:
        :func:`watch_opening` does, once it is)."""
        from dashboard.state import get_registry

        registry = get_registry()
        if registry.is_waiting(run_key):
            raise dash.exceptions.PreventUpdate
        return head_choices(registry, run_key, head_key)

    @dash.callback(Output(ids.RUN_STATUS, "children"), Output(ids.RUN_POLL, "disabled"),
                   Output(ids.HEAD_SELECT, "options", allow_duplicate=True),
                   Output(ids.HEAD_SELECT, "value", allow_duplicate=True),
                   Output(ids.HEAD_SELECT_BOX, "style", allow_duplicate=True),
                   Output(ids.RUN_SELECT, "options"),
                   Input(ids.RUN_SELECT, "value"), Input(ids.RUN_POLL, "n_intervals"),
                   prevent_initial_call=True)
    def watch_opening(run_key, _ticks):
        """A run not analysed yet is opened in the background; its progress shows under
        the menu each second, and when it is done its heads are offered (the head
        selector's callback then sets the run store)."""
        from dashboard.state import get_registry

        return opening_view(get_registry(), run_key)

    @dash.callback(Output(ids.RUN_STORE, "data"), Output(ids.SELECTION_STORE, "data"),
                   Output(ids.SAMPLE_STORE, "data", allow_duplicate=True),
                   Input(ids.HEAD_SELECT, "value"), State(ids.RUN_STORE, "data"),
                   State(ids.SELECTION_STORE, "data"), State(ids.SAMPLE_STORE, "data"),
                   prevent_initial_call=True)
    def select_head(entry_key, current, selection, sample):
        return (*select_run_store(entry_key, current, selection),
                follow_sample(entry_key, sample))


def opening_view(registry, run_key: str | None):
    """Pure part of :func:`watch_opening`: ``(status, poll disabled, head options, head
    value, head box style, run options)``."""
    from dashboard.components.messages import error_alert

    keep = dash.no_update
    if not isinstance(run_key, str) or registry.resolve(run_key) == run_key \
            and not registry.is_waiting(run_key):
        return (None, True, *[keep] * 4)  # an open run: select_run has it
    if registry.is_waiting(run_key):
        registry.start_opening(run_key)
        text, failed = registry.opening_status(run_key)
        if failed:
            return (error_alert(text), True, *[keep] * 4)
        if registry.is_waiting(run_key):
            status = dbc.Alert([dbc.Spinner(size="sm", spinner_class_name="me-2"),
                                text or "Opening the run…"], color="info", className="py-2 mb-2")
            return (status, False, *[keep] * 4)
    # Opened: offer its heads (starting on the first) and relabel it in the selector.
    options, value, style = head_choices(registry, run_key, None)
    return None, True, options, value, style, registry.options()


def head_choices(registry, run_key: str | None, head_key: str | None):
    """Pure part of the run selector: ``(head options, head value, head box style)``."""
    options = registry.head_options(run_key)
    keys = [o["value"] for o in options]
    value = head_key if head_key in keys else (keys[0] if keys else run_key)
    return options, value, head_box_style(options)


def follow_sample(entry_key: str | None, sample: dict | None):
    """The open sample, re-keyed to another head of its run (its views then redraw)."""
    old = sample.get("run") if isinstance(sample, dict) else None
    if isinstance(old, str) and run_of(old) == run_of(entry_key) \
            and old != entry_key:
        return {**sample, "run": entry_key}
    return dash.no_update


def select_run_store(entry_key: str | None, current: dict | None,
                     selection: dict | None = None):
    """Pure part of the head selector callback: ``(run store, selection store)``.

    Another run clears the selection (its ids belong to the old run); another
    head of the same run keeps it.
    """
    if current and current.get("run") == entry_key:
        raise dash.exceptions.PreventUpdate
    base = run_of(entry_key)
    old = selection.get("run") if isinstance(selection, dict) else None
    if isinstance(old, str) and run_of(old) == base:
        return {"run": entry_key}, dash.no_update
    return {"run": entry_key}, {"run": entry_key, "ids": [], "source": ""}
