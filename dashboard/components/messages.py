"""User-facing messages: bad input becomes an alert, never a stack trace."""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import html


def error_alert(exc: BaseException | str) -> dbc.Alert:
    """A red alert with the error's message (the message of a ``LoupeError``), server
    paths and torch's loading hints removed (:func:`dashboard.views.guard.safe_message`)."""
    from dashboard.views.guard import safe_message

    return dbc.Alert(safe_message(exc), color="danger", className="loupe-error my-2",
                     dismissable=False)


def info_alert(text: str) -> dbc.Alert:
    from dashboard.views.guard import safe_message

    return dbc.Alert(safe_message(text), color="info", className="my-2")


def card(title: str, *children, **kwargs) -> html.Div:
    """A titled white panel."""
    return html.Div([html.H6(title), *children], className="loupe-card", **kwargs)
