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


def test_run_card_speaks_plain_words_and_explains_a_fallback():
    import json as _json

    from dashboard.views.training import run_fact_rows

    # run.json as `python -m dashboard` writes it without LOUPE_DATA (fields copied from one)
    meta = {"arch": "mnist_cnn", "dataset": "mnist-5k", "train_samples": 4000,
            "hyperparameters": {"arch": "mnist_cnn", "dataset": "mnist", "epochs": 3,
                                "batch_size": 128, "optimizer": "adam", "lr": 0.003,
                                "momentum": 0.9, "limit": None, "augment": False, "seed": 0,
                                "model_spec": None, "task": None},
            "parameters": 232650, "seed": 0, "device": "cpu", "wall_time_s": 4.52,
            "best_test_acc": 0.949, "best_train_acc": 0.919}
    rows = dict(run_fact_rows(meta))
    assert not [label for label in rows if "_" in label or label.startswith("hp.")]
    assert rows["trained on"] == "mnist (not found: fell back to the embedded mnist-5k)"
    assert "mnist-5k" not in _json.dumps({k: v for k, v in rows.items() if k != "trained on"})
    assert rows["best test accuracy"] == "94.9%" and rows["parameters"] == "232,650"
    assert rows["learning rate"] == "0.003" and rows["samples used"] == "all"
    assert rows["augmentation"] == "no" and "momentum (SGD)" not in rows  # adam ignores it
    assert list(rows).count("seed") == 1


def test_run_card_of_the_tiny_run(entry):
    from dashboard.views.training import run_fact_rows

    rows = dict(run_fact_rows(entry.session.model.meta))
    assert rows["architecture"] == "mnist_cnn" and "(not found" not in rows["trained on"]
    assert rows["epochs"] == "1"
