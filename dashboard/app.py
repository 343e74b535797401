"""The app factory: ``create_app(config) -> Dash``.

Layout only: the navbar, the page container and the app-level stores that
hold keys (the selected run, selected sample ids, the clicked sample), never
data. Page logic lives in :mod:`dashboard.pages`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard import ids
from dashboard.components import navbar as navbar_component
from dashboard.config import DashboardConfig, open_runs, open_session
from dashboard.jobs import background_manager
from dashboard.state import RunRegistry, attach_registry
from dashboard.views.experiments_catalog import RunCatalog, attach_catalog

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The largest request body a browser sends: a selection of 100,000 map points is ~10 MB.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


def allowed_hosts(bind_host: str) -> frozenset[str]:
    """Host names the dashboard answers to: loopback and the ``--host`` it was given.

    For a wildcard bind (``0.0.0.0``, ``::``) the machine's own name and
    addresses are allowed too, since that is what a browser elsewhere uses.
    """
    hosts = set(LOOPBACK_HOSTS) | {bind_host.strip("[]").lower()}
    if bind_host in ("0.0.0.0", "::", ""):
        import psutil

        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        hosts |= {a.address.split("%")[0].lower() for addrs in psutil.net_if_addrs().values()
                  for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)}
    return frozenset(h for h in hosts if h)


def host_of(header: str | None) -> str:
    """The host part of a ``Host`` header: ``[::1]:8050`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    header = (header or "").strip().lower()
    if header.startswith("["):  # an IPv6 literal
        return header[1:header.find("]")] if "]" in header else ""
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def guard_host(server, bind_host: str) -> None:
    """Refuse requests whose ``Host`` header is not an allowed host (HTTP 400).

    A DNS-rebinding page (``evil.example`` resolved to 127.0.0.1) reaches the
    server with its own name in ``Host``; answering it would let that page
    read the dashboard.
    """
    from flask import request

    allowed = allowed_hosts(bind_host)

    @server.before_request
    def _check_host():
        if host_of(request.headers.get("Host")) not in allowed:
            log.warning("refused a request for host %r", request.headers.get("Host", "")[:100])
            return "Bad Host header: this dashboard answers only to its own address.\n", 400, \
                {"Content-Type": "text/plain; charset=utf-8"}
        return None


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
    guard_host(app.server, config.host)
    app.server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    if config.runs_dir and registry.session_opener is None:
        # Every run under --runs-dir is offered; one is analysed on its first selection.
        registry.discover(config.runs_dir)
        registry.session_opener = functools.partial(open_discovered_session, config)
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
        dcc.Interval(id=ids.RUN_POLL, interval=1000, disabled=True),
        dbc.Container([html.Div(id=ids.RUN_STATUS), html.Div(id=ids.APP_MESSAGE),
                       dash.page_container], fluid=True,
                      className="pb-4"),
    ])
    return app


def open_discovered_session(config: DashboardConfig, folder: str):
    """A run folder found under ``--runs-dir`` opened on the dashboard's data (a run
    folder says its own model: the bring-your-own-model flags are not applied to it).
    The opener of :meth:`RunRegistry.open_discovered`."""
    plain = dataclasses.replace(config, model_spec=None, weights=None, embedding_layer=None,
                                task=None, progress=False)
    return open_session(plain, folder)
