"""The navbar (page links, run selector) and the app-level callbacks that go with it."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import ids

PAGES = (("Population", "/"), ("Sample", "/sample"), ("Errors", "/errors"),
         ("Uncertainty & OOD", "/uncertainty"), ("Loss vs metadata", "/metadata"),
         ("Training", "/training"), ("Experiments", "/experiments"),
         ("Export", "/export"))


def navbar(run_options: list[dict], default_run: str | None) -> dbc.Navbar:
    """Brand, one link per page, and the run selector (labels only, no paths)."""
    links = [dbc.NavItem(dbc.NavLink(name, href=href, active="exact")) for name, href in PAGES]
    selector = dcc.Dropdown(id=ids.RUN_SELECT, options=run_options, value=default_run,
                            clearable=False, style={"minWidth": "240px", "fontSize": "14px"})
    return dbc.Navbar(dbc.Container([
        dbc.NavbarBrand("Loupe", href="/", className="fw-bold"),
        dbc.Nav(links, navbar=True, className="me-auto"),
        html.Div([html.Span("run", className="text-light small me-2"), selector],
                 className="d-flex align-items-center"),
    ], fluid=True), color="dark", dark=True, className="mb-3 py-1")


def register_callbacks() -> None:
    """App-level callbacks: the run selector drives the run store.

    Registered by :func:`dashboard.app.create_app` for each app (``dash.callback``
    entries are consumed by the first app that starts).
    """

    @dash.callback(Output(ids.RUN_STORE, "data"), Output(ids.SELECTION_STORE, "data"),
                   Input(ids.RUN_SELECT, "value"), State(ids.RUN_STORE, "data"),
                   prevent_initial_call=True)
    def select_run(run_key, current):
        """A new run clears the selection (its ids belong to the old run)."""
        return select_run_store(run_key, current)


def select_run_store(run_key: str | None, current: dict | None):
    """Pure part of the run selector callback: ``(run store, selection store)``."""
    if current and current.get("run") == run_key:
        raise dash.exceptions.PreventUpdate
    return {"run": run_key}, {"run": run_key, "ids": [], "source": ""}
