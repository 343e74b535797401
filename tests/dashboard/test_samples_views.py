"""The sample table's server side: ag-grid filter and sort models against hand-written pandas.

The small frames here are generated in the test (numbers with NaN, class indices, yes/no and
text columns); the entry-level tests use the tiny run analysed on real digits (conftest).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.state import DashboardInputError, RunRegistry
from dashboard.views.samples import (
    GridColumn,
    TableQuery,
    clicked_sample,
    column_defs,
    count_text,
    filter_mask,
    rows_response,
    search_mask,
    selection_from_table,
    selection_switch,
    sort_order,
    table_columns,
)

NAMES = ["zero", "one", "two", "three", "four"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """40 generated rows: a float column with NaN, ties in an integer column, classes,
    booleans and free text."""
    rng = np.random.default_rng(0)
    n = 40
    loss = rng.exponential(1.0, n).astype(np.float32)
    loss[[3, 17]] = np.nan
    return pd.DataFrame({
        "sample_id": [f"toy:test:{i}" for i in range(n)],
        "label": rng.integers(0, 5, n), "pred": rng.integers(0, 5, n),
        "correct": rng.random(n) < 0.7,
        "loss": loss, "count": rng.integers(0, 4, n),
        "note": rng.choice(["Blurry", "thin stroke", "rotated"], n),
    })


@pytest.fixture(scope="module")
def columns(frame) -> list[GridColumn]:
    return table_columns(frame)


def rows_of(frame, columns, model) -> list[int]:
    return np.flatnonzero(filter_mask(frame, columns, model, NAMES)).tolist()


def hand(frame, expr) -> list[int]:
    return np.flatnonzero(expr.to_numpy()).tolist()


def test_columns_have_kinds_and_titles(frame, columns):
    kinds = {c.field: c.kind for c in columns}
    assert kinds == {"sample_id": "id", "label": "class", "pred": "class", "correct": "bool",
                     "loss": "number", "count": "integer", "note": "text"}
    titles = {c.field: c.title for c in columns}
    assert titles["loss"] == "loss (cross-entropy, nats)"  # the unit the inference step declares
    defs = {d["field"]: d for d in column_defs(columns, NAMES)}
    assert defs["loss"]["filter"] == "agNumberColumnFilter"
    assert "d3.format" in defs["loss"]["valueFormatter"]["function"]
    assert "valueFormatter" not in defs["count"]  # integers are shown whole
    keys = [o["displayKey"] for o in defs["correct"]["filterParams"]["filterOptions"][1:]]
    assert keys == ["correct", "wrong"]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"type": "equals", "filter": 2}, lambda f: f["count"] == 2),
    ({"type": "notEqual", "filter": 2}, lambda f: f["count"] != 2),
    ({"type": "lessThan", "filter": 2}, lambda f: f["count"] < 2),
    ({"type": "lessThanOrEqual", "filter": 2}, lambda f: f["count"] <= 2),
    ({"type": "greaterThan", "filter": 1}, lambda f: f["count"] > 1),
    ({"type": "greaterThanOrEqual", "filter": 1}, lambda f: f["count"] >= 1),
    ({"type": "inRange", "filter": 1, "filterTo": 2},
     lambda f: (f["count"] >= 1) & (f["count"] <= 2)),
    ({"type": "inRange", "filter": 2, "filterTo": 1},  # bounds given the wrong way round
     lambda f: (f["count"] >= 1) & (f["count"] <= 2)),
])
def test_number_filters_match_pandas(frame, columns, condition, expected):
    model = {"count": {"filterType": "number", **condition}}
    assert rows_of(frame, columns, model) == hand(frame, expected(frame))


def test_missing_numbers_pass_no_condition(frame, columns):
    loss = frame["loss"]
    for kind, expr in [("greaterThan", loss > 0.5), ("lessThan", loss < 0.5),
                       ("notEqual", loss.notna() & (loss != 0.5))]:
        got = rows_of(frame, columns, {"loss": {"filterType": "number", "type": kind,
                                                "filter": 0.5}})
        assert got == hand(frame, expr.fillna(False))
        assert 3 not in got and 17 not in got


@pytest.mark.parametrize(("kind", "text", "expected"), [
    ("contains", "STROKE", lambda s: s.str.lower().str.contains("stroke")),
    ("notContains", "r", lambda s: ~s.str.lower().str.contains("r")),
    ("equals", "blurry", lambda s: s.str.lower() == "blurry"),
    ("notEqual", "blurry", lambda s: s.str.lower() != "blurry"),
    ("startsWith", "ro", lambda s: s.str.lower().str.startswith("ro")),
    ("endsWith", "ke", lambda s: s.str.lower().str.endswith("ke")),
])
def test_text_filters_match_pandas(frame, columns, kind, text, expected):
    model = {"note": {"filterType": "text", "type": kind, "filter": text}}
    assert rows_of(frame, columns, model) == hand(frame, expected(frame["note"]))


def test_class_filters_match_class_names(frame, columns):
    equals = {"label": {"filterType": "text", "type": "equals", "filter": "Three"}}
    assert rows_of(frame, columns, equals) == hand(frame, frame["label"] == 3)
    # "o" is in zero, one, two, four: every class but three
    contains = {"pred": {"filterType": "text", "type": "contains", "filter": "o"}}
    assert rows_of(frame, columns, contains) == hand(frame, frame["pred"] != 3)
    not_equal = {"pred": {"filterType": "text", "type": "notEqual", "filter": "one"}}
    assert rows_of(frame, columns, not_equal) == hand(frame, frame["pred"] != 1)


def test_bool_filter_and_joined_conditions(frame, columns):
    wrong = {"correct": {"filterType": "text", "type": "wrong"}}
    assert rows_of(frame, columns, wrong) == hand(frame, ~frame["correct"])
    either = {"count": {"filterType": "number", "operator": "OR", "conditions": [
        {"filterType": "number", "type": "equals", "filter": 0},
        {"filterType": "number", "type": "equals", "filter": 3}]}}
    assert rows_of(frame, columns, either) == hand(frame, frame["count"].isin([0, 3]))
    both = {**wrong, "loss": {"filterType": "number", "operator": "AND", "conditions": [
        {"filterType": "number", "type": "greaterThan", "filter": 0.2},
        {"filterType": "number", "type": "lessThan", "filter": 1.5}]}}
    expr = ~frame["correct"] & (frame["loss"] > 0.2) & (frame["loss"] < 1.5)
    assert rows_of(frame, columns, both) == hand(frame, expr.fillna(False))


@pytest.mark.parametrize("model", [
    {"no_such_column": {"filterType": "number", "type": "equals", "filter": 1}},
    {"loss": {"filterType": "number", "type": "regex", "filter": 1}},
    {"loss": {"filterType": "text", "type": "contains", "filter": "1"}},
    {"loss": {"filterType": "number", "type": "equals", "filter": "1; drop"}},
    {"loss": {"filterType": "number", "type": "equals", "filter": True}},
    {"note": {"filterType": "text", "type": "contains", "filter": "x" * 500}},
    {"correct": {"filterType": "text", "type": "maybe"}},
    {"count": {"operator": "XOR", "conditions": []}},
    {"count": {"operator": "OR", "conditions": [{"filterType": "number", "type": "equals",
                                                 "filter": 1}] * 3}},
    {"count": "equals 1"},
    ["not", "a", "dict"],
])
def test_bad_filter_models_raise_input_errors(frame, columns, model):
    with pytest.raises(DashboardInputError):
        filter_mask(frame, columns, model, NAMES)


def test_sort_matches_pandas_stable_sort(frame, columns):
    rows = np.arange(len(frame))
    got = sort_order(frame, columns, [{"colId": "count", "sort": "desc"},
                                      {"colId": "loss", "sort": "asc"}], rows)
    want = frame.sort_values(["count", "loss"], ascending=[False, True], kind="stable",
                             na_position="last").index.to_numpy()
    assert got.tolist() == want.tolist()
    # A class column sorts by class index, the id by dataset order (…:10 after …:9).
    by_label = sort_order(frame, columns, [{"colId": "label", "sort": "asc"}], rows)
    assert by_label.tolist() == frame.sort_values("label", kind="stable").index.tolist()
    by_id = sort_order(frame, columns, [{"colId": "sample_id", "sort": "desc"}], rows)
    assert by_id.tolist() == rows[::-1].tolist()
    with pytest.raises(DashboardInputError):
        sort_order(frame, columns, [{"colId": "nope", "sort": "asc"}], rows)
    with pytest.raises(DashboardInputError):
        sort_order(frame, columns, [{"colId": "loss", "sort": "sideways"}], rows)


def test_search_exact_id_or_substring():
    ids = np.array(["mnist:test:1", "mnist:test:17", "mnist:test:170", "mnist:train:17"])
    assert search_mask(ids, "mnist:test:17").tolist() == [False, True, False, False]
    assert search_mask(ids, "TRAIN").tolist() == [False, False, False, True]
    assert search_mask(ids, ":17").tolist() == [False, True, True, True]
    assert search_mask(ids, "  ").all() and search_mask(ids, None).all()
    with pytest.raises(DashboardInputError):
        search_mask(ids, {"$regex": ".*"})


# -- entry level: the tiny run analysed on real digits --------------------------------------
@pytest.fixture(scope="module")
def run_entry(analysed_session):
    reg = RunRegistry()
    reg.add(analysed_session, "tiny_cnn")
    return reg.get(None)


def expected_ids(entry, wrong_only: bool, loss_above: float, descending: bool) -> list[str]:
    """The grid's rows written by hand with pandas."""
    t = entry.table
    keep = t[(t["loss"] > loss_above) & (~t["correct"] if wrong_only else True)]
    keep = keep.sort_values("loss", ascending=not descending, kind="stable", na_position="last")
    return keep["sample_id"].tolist()


def request(start, end, wrong_only=False, loss_above=-1.0, descending=True) -> dict:
    model = {"loss": {"filterType": "number", "type": "greaterThan", "filter": loss_above}}
    if wrong_only:
        model["correct"] = {"filterType": "text", "type": "wrong"}
    return {"startRow": start, "endRow": end, "filterModel": model,
            "sortModel": [{"colId": "loss", "sort": "desc" if descending else "asc"}]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 700), size=st.integers(0, 150), wrong_only=st.booleans(),
       loss_above=st.floats(0.0, 2.0), descending=st.booleans())
def test_a_block_is_a_slice_of_the_sorted_filtered_table(run_entry, start, size, wrong_only,
                                                         loss_above, descending):
    response, count = rows_response(run_entry, TableQuery(
        request(start, start + size, wrong_only, loss_above, descending)))
    want = expected_ids(run_entry, wrong_only, loss_above, descending)
    assert [r["sample_id"] for r in response["rowData"]] == want[start:start + size]
    assert response["rowCount"] == len(want)
    assert count == count_text(len(want), len(run_entry.table))


def test_rows_show_class_names_words_and_plain_numbers(run_entry):
    response, count = rows_response(run_entry, TableQuery(request(0, 5, wrong_only=True)))
    t = run_entry.table.set_index("sample_id")
    assert count.endswith(f"of {len(run_entry.table):,} samples")
    for row in response["rowData"]:
        truth = t.loc[row["sample_id"]]
        assert row["label"] == truth["label_name"] and row["pred"] == truth["pred_name"]
        assert row["correct"] == "wrong"
        # 6 significant digits are sent (the grid shows 3)
        assert isinstance(row["loss"], float)
        assert row["loss"] == pytest.approx(truth["loss"], rel=1e-5)
        assert "label_name" not in row and "dataset" not in row


def test_only_selected_and_search_restrict_rows(run_entry):
    ids = run_entry.session.dataset.sample_ids
    selection = {"run": run_entry.key, "ids": [ids[5], ids[2], ids[9], "nope:1"]}
    query = TableQuery({"startRow": 0, "endRow": 100, "sortModel": [], "filterModel": {}},
                       search=None, only_selected=True, selection=selection)
    response, count = rows_response(run_entry, query)
    assert [r["sample_id"] for r in response["rowData"]] == [ids[2], ids[5], ids[9]]
    assert count == f"3 of {len(run_entry.table):,} samples"
    # Another run's selection restricts to nothing; the switch is then disabled.
    other = TableQuery(query.request, None, True, {"run": "elsewhere", "ids": [ids[5]]})
    assert rows_response(run_entry, other)[0]["rowCount"] == 0
    assert selection_switch(run_entry, other.selection)[0] is True
    assert selection_switch(run_entry, selection) == (False, "Show only the 3 selected")
    found = rows_response(run_entry, TableQuery(query.request, search=ids[7]))[0]
    assert [r["sample_id"] for r in found["rowData"]] == [ids[7]]


def test_filter_becomes_the_selection(run_entry):
    query = TableQuery(request(0, 100, wrong_only=True))
    store = selection_from_table(run_entry, query)
    assert store["run"] == run_entry.key and store["note"] == ""
    assert store["ids"] == expected_ids(run_entry, True, -1.0, True)  # the table's order
    assert 0 < len(store["ids"]) < len(run_entry.table)


@pytest.mark.parametrize("bad", [
    None, "rows please", {"startRow": -1, "endRow": 10}, {"startRow": 0, "endRow": 10**9},
    {"startRow": 10, "endRow": 5}, {"startRow": "0", "endRow": 100},
    {"startRow": 0, "endRow": 100, "filterModel": {"__class__": {"filterType": "text"}}},
    {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "label_name", "sort": "asc"}]},
])
def test_hostile_requests_raise_input_errors(run_entry, bad):
    with pytest.raises(DashboardInputError):
        rows_response(run_entry, TableQuery(bad))


def test_clicked_cell_names_a_known_sample(run_entry):
    sid = run_entry.session.dataset.sample_ids[3]
    assert clicked_sample(run_entry, {"rowId": sid, "colId": "loss"}) == sid
    for bad in (None, {"rowId": "mnist:test:999999"}, {"rowId": ["x"]}, {"rowId": "x" * 999}):
        with pytest.raises(DashboardInputError):
            clicked_sample(run_entry, bad)
