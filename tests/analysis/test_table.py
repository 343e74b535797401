"""analysis/table.py: ``columns=`` gives the full table's subset and reads only what it needs."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.session import AnalysisSession
from core.errors import ConfigError


@pytest.mark.parametrize("wanted", [
    ["loss", "sample_id"],
    ["correct", "label_name"],  # derived from the inference step's pred and the labels
    ["pred_name", "mc_correct", "uncertainty"],
    ["index"],
])
def test_columns_give_the_full_tables_subset(tiny_session, wanted):
    full = tiny_session.table()
    part = tiny_session.table(columns=wanted)
    expected = full[[c for c in full.columns if c in wanted]]
    pd.testing.assert_frame_equal(part, expected)


def test_columns_read_only_the_steps_they_need(tiny_session, monkeypatch):
    tiny_session.table()  # every step computed (cached in the shared store)
    fresh = AnalysisSession(tiny_session.model, tiny_session.dataset, tiny_session.store, "cpu",
                            mc_samples=5, projections=(), progress=False)
    read = []
    real = fresh.engine.get
    monkeypatch.setattr(fresh.engine, "get", lambda name: read.append(name) or real(name))
    part = fresh.table(columns=["sample_id", "loss", "correct"])
    assert list(part.columns) == ["sample_id", "correct", "loss"]
    assert set(read) == {"inference"}
    assert len(set(tiny_session.steps)) > 3  # so the others really were left unread


def test_an_unknown_column_is_a_config_error(tiny_session):
    with pytest.raises(ConfigError, match=r"table columns \['nope'\] do not exist"):
        tiny_session.table(columns=["loss", "nope"])
