"""The app factory: ``create_app(config) -> Dash``.

Layout only: the navbar, the page container and the app-level stores that
hold keys (the selected run, selected sample ids, the clicked sample), never
data. Page logic lives in :mod:`dashboard.pages`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard import ids
from dashboard.components import navbar as navbar_component
from dashboard.config import DashboardConfig, open_runs
from dashboard.jobs import background_manager
from dashboard.state import RunRegistry, attach_registry
from dashboard.views.experiments_catalog import RunCatalog, attach_catalog

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def create_app(config: DashboardConfig, registry: RunRegistry | None = None) -> dash.Dash:
    """Build the Dash app.

    Parameters
    ----------
    config : DashboardConfig
    registry : RunRegistry, optional
        Already opened runs; when omitted they are opened (and analysed) from ``config``.
    """
    if registry is None:
        registry = open_runs(config)
    navbar_component.register_callbacks()
    app = dash.Dash(
        __name__, use_pages=True, pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"), suppress_callback_exceptions=True,
        background_callback_manager=background_manager(config.jobs_dir),
        title="Loupe", update_title=None, serve_locally=True,
    )
    attach_registry(app.server, registry)
    attach_catalog(app.server, RunCatalog(config))  # the Experiments page's runs
    default = registry.default_key
    app.layout = html.Div([
        dcc.Location(id=ids.URL, refresh="callback-nav"),
        dcc.Store(id=ids.RUN_STORE, data={"run": default}),
        dcc.Store(id=ids.SELECTION_STORE, data={"run": default, "ids": [], "source": ""}),
        dcc.Store(id=ids.SAMPLE_STORE, data=None),
        navbar_component.navbar(registry.options(), default,
                                registry.head_options(default) if default else []),
        dbc.Container([html.Div(id=ids.APP_MESSAGE), dash.page_container], fluid=True,
                      className="pb-4"),
    ])
    return app
