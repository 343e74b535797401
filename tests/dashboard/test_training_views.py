"""The Training page's input card: what the model is fed and the preprocessing check."""

from __future__ import annotations

import json

from dashboard.views.training import input_check_alert, input_facts


def texts(component) -> str:
    return json.dumps(component.to_plotly_json(), default=lambda o: o.to_plotly_json())


def test_input_card_names_the_shape_the_flags_and_each_normalisation(entry):
    card = texts(input_facts(entry))
    assert "1x28x28" in card and "--mean 0.1307 --std 0.3081" in card
    check = entry.session.preprocessing()
    for result in check["results"]:
        assert result["name"] in card and f"{result['accuracy']:.1%}" in card


def test_the_warning_shows_only_when_the_check_warns(entry, monkeypatch):
    assert entry.session.preprocessing()["warning"] == ""  # the run declares its own input
    assert input_check_alert(entry) is None
    warned = {**entry.session.preprocessing(), "warning": "pass --mean 0 --std 1"}
    monkeypatch.setattr(type(entry.session), "preprocessing", lambda self: warned)
    assert "--mean 0 --std 1" in texts(input_check_alert(entry))
