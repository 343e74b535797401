"""analysis/steps/attribution.py: heatmaps for a chosen subset."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.engine import Engine
from analysis.steps.attribution import select_subset
from core.errors import ConfigError


def test_select_subset():
    pred = np.array([0, 1, 2, 3, 4])
    labels = np.array([0, 9, 2, 9, 9])
    loss = np.array([0.1, 2.0, 0.3, 5.0, 1.0])
    assert select_subset("misclassified", pred, labels, loss, 10).tolist() == [1, 3, 4]
    assert select_subset("misclassified", pred, labels, loss, 2).tolist() == [1, 3]
    assert select_subset("highest_loss", pred, labels, loss, 2).tolist() == [1, 3]
    assert select_subset("all", pred, labels, loss, 3).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="Unknown attribution subset 'wrong'"):
        select_subset("wrong", pred, labels, loss, 3)


def test_step_explains_the_misclassified(tiny_session):
    engine = Engine(tiny_session.model, tiny_session.dataset, tiny_session.store,
                    tiny_session.device, {"attribution": {"method": "saliency", "limit": 5}},
                    progress=False)
    art = engine.get("attribution")
    inf = tiny_session.artifact("inference")
    labels = tiny_session.dataset.labels
    idx = art["indices"]
    assert 0 < len(idx) <= 5 and (inf["pred@class"][idx] != labels[idx]).all()
    np.testing.assert_array_equal(art["targets"], inf["pred@class"][idx])
    assert art["heatmaps"].shape == (len(idx), 28, 28) and np.isfinite(art["heatmaps"]).all()
    assert art.summary == {"count": len(idx), "head": "class"}
