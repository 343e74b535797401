"""dashboard/app.py: the Host allow-list (no network: Flask's test client on app.server)."""

from __future__ import annotations

import pytest

from dashboard.app import allowed_hosts, host_of


@pytest.mark.parametrize("header, host", [
    ("127.0.0.1:8050", "127.0.0.1"), ("LOCALHOST", "localhost"), ("[::1]:8050", "::1"),
    ("example.org.", "example.org"), ("", ""), ("[::1", ""), ("a:b:c", "a:b:c")])
def test_host_of(header, host):
    assert host_of(header) == host


def test_allowed_hosts_are_loopback_and_the_bind_host():
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert "192.168.1.5" in allowed_hosts("192.168.1.5")
    assert "evil.example" not in allowed_hosts("0.0.0.0")


def test_a_foreign_host_header_is_refused(app):
    client = app.server.test_client()
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    bad = client.post("/_dash-update-component", json={}, headers={"Host": "evil.example:8050"})
    assert bad.status_code == 400 and b"Host" in bad.data
    for host in ("127.0.0.1:8050", "localhost:1234", "[::1]:8050", "127.0.0.1"):
        assert client.get("/_dash-layout", headers={"Host": host}).status_code == 200, host


def test_the_bind_host_is_allowed(dash_config, registry):
    from dashboard.app import create_app

    dash_config.host = "10.1.2.3"
    client = create_app(dash_config, registry).server.test_client()
    assert client.get("/_dash-layout", headers={"Host": "10.1.2.3:8050"}).status_code == 200
    assert client.get("/_dash-layout", headers={"Host": "10.1.2.4:8050"}).status_code == 400


def test_an_oversized_request_body_is_refused(app):
    from dashboard.app import MAX_REQUEST_BYTES

    client = app.server.test_client()
    body = b"x" * (MAX_REQUEST_BYTES + 1)
    response = client.post("/_dash-update-component", data=body,
                           headers={"Host": "127.0.0.1", "Content-Type": "application/json"})
    assert response.status_code == 413


def test_the_navbar_links_every_registered_page_in_order(app):
    # built from dash.page_registry: one link per page module, by its declared order
    import dash

    from dashboard.components.navbar import pages

    registered = sorted(dash.page_registry.values(), key=lambda p: p["order"])
    assert pages() == [(p["name"], p["path"]) for p in registered]
    assert [name for name, _ in pages()][:3] == ["Population", "Insights", "Samples"]
    orders = [p["order"] for p in registered]
    assert len(set(orders)) == len(orders)  # no two pages share a place
    links = [c.children.href for c in app.layout.children[4].children.children[1].children]
    assert links == [path for _, path in pages()]
