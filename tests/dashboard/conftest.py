"""Dashboard fixtures: headless Chromium options, a small analysed run, a fresh app per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"
ANALYSED_SAMPLES = 600
def pytest_setup_options():
    """Chrome options for dash's ``dash_duo`` (we run as root in a container).

    ``--headless`` itself comes from pytest's ``--headless`` flag (pyproject addopts).
    """
    from dashboard.browser import chrome_options

    return chrome_options("--window-size=1280,800", headless=False)


@pytest.fixture(autouse=True)
def reset_dash_registry():
    """Each test gets a clean page registry and no callbacks left by an earlier app."""
    import dash
    from dash import _callback
    from dash._get_app import app_context

    def clear():
        dash.page_registry.clear()
        _callback.GLOBAL_CALLBACK_LIST.clear()
        _callback.GLOBAL_CALLBACK_MAP.clear()
        _callback.GLOBAL_INLINE_SCRIPTS.clear()
        # Dash's layout and dependency views set this context variable and never reset it:
        # a test-client request would make dash.get_app() name an old app in later tests.
        app_context.set(None)

    clear()
    yield
    clear()


@pytest.fixture(scope="session")
def analysed_session(tiny_run, digits, data_root, tmp_path_factory):
    """The tiny run analysed on the first 600 test digits (every step, cached)."""
    from analysis.session import AnalysisSession

    session = AnalysisSession.open(tiny_run, digits, "test", data_root=data_root,
                                   cache_dir=tmp_path_factory.mktemp("dashboard-cache"),
                                   device="cpu", limit=ANALYSED_SAMPLES,
                                   progress=False)
    session.run()
    return session


@pytest.fixture
def registry(analysed_session):
    """A fresh registry holding the analysed run (cheap: the session is shared)."""
    from dashboard.state import RunRegistry

    reg = RunRegistry()
    reg.add(analysed_session, "tiny_cnn")
    return reg


@pytest.fixture
def entry(registry):
    return registry.get(None)


@pytest.fixture
def dash_config(tmp_path):
    from dashboard.config import DashboardConfig

    # runs_dir: no runs to discover (not the repository's runs/, which differs per machine)
    return DashboardConfig(checkpoints=[], cache_dir=str(tmp_path / "cache"), progress=False,
                           runs_dir=str(tmp_path / "no-runs"))


@pytest.fixture
def app(dash_config, registry):
    from dashboard.app import create_app

    return create_app(dash_config, registry)


@pytest.fixture
def deleted_cache_registry(analysed_session, tmp_path):
    """A run whose cache folder is copied, opened, then deleted (as a user might)."""
    from analysis.session import AnalysisSession
    from dashboard.state import RunRegistry

    copy = tmp_path / "doomed-cache"
    shutil.copytree(analysed_session.store.directory, copy)
    session = AnalysisSession(analysed_session.model, analysed_session.dataset,
                              type(analysed_session.store)(copy), "cpu", progress=False)
    session.run()
    reg = RunRegistry()
    reg.add(session, "doomed")
    session.store.close()
    shutil.rmtree(copy)
    return reg


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """Helpers around ``dash_duo`` for the dashboard's browser tests."""

    def __init__(self, dash_duo):
        self.duo = dash_duo

    def set_viewport(self, width: int = 1280, height: int = 800) -> None:
        """Make the page's viewport (not the window) ``width`` x ``height``."""
        driver = self.duo.driver
        driver.set_window_size(width, height)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])

    def open(self, app, path: str = "/") -> None:
        """Serve ``app`` (first call), size the viewport to 1280x800 and open ``path``."""
        if not getattr(self, "_started", False):
            # A free port, not Dash's fixed 8050: two test runs (or a dashboard left
            # open) on one machine must not answer each other's requests.
            self.duo.start_server(app, port=free_port())
            self.set_viewport()
            self._started = True
        self.duo.wait_for_page(url=self.duo.server_url + path)

    def nav(self, path: str) -> None:
        """Follow the navbar's link to ``path`` (client-side navigation, stores kept)."""
        link = self.duo.find_element(f".navbar a[href='{path}']")
        self.duo.driver.execute_script("arguments[0].click();", link)

    def screenshot(self, name: str) -> Path:
        """Save the window to ``tests/_artifacts/<name>.png`` (git-ignored)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.duo.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def browser(dash_duo) -> Browser:
    return Browser(dash_duo)
