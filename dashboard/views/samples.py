"""The sample table (``/samples``): ag-grid's infinite row model answered with pandas.

The browser never holds the table: the grid asks for blocks of rows
(``getRowsRequest``: ``startRow``, ``endRow``, ``sortModel``, ``filterModel``)
and :func:`rows_response` filters and sorts the run's table on the server and
returns the block. The filter and sort semantics are those of the ag-grid
filters the columns declare (:func:`column_defs`), implemented here as plain
functions (:func:`filter_mask`, :func:`sort_order`) so they are tested against
hand-written pandas. Everything the browser sends is checked; bad input raises
:class:`~dashboard.state.DashboardInputError`, which the page shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cache import stable_hash
from dashboard.columns import ID_COLUMNS, bool_columns, class_columns, column_title, numeric_columns
from dashboard.state import DashboardInputError, LRUCache, RunEntry
from dashboard.views.guard import MAX_ID_LENGTH, selection_indices, selection_store

ID = "sample_id"
# The most rows one block may ask for (the grid asks for CACHE_BLOCK_SIZE).
CACHE_BLOCK_SIZE = 100
MAX_BLOCK = 1000
# ag-grid's filters hold at most this many conditions per column (maxNumConditions).
MAX_CONDITIONS = 2
MAX_FILTER_TEXT = MAX_ID_LENGTH
# Row orders (filter + sort + search + selection) kept per run: a 70,000-row order is 560 kB.
ORDER_CACHE_SIZE = 8

NUMBER_OPTIONS = ("greaterThanOrEqual", "lessThanOrEqual", "inRange", "greaterThan", "lessThan",
                  "equals", "notEqual")
TEXT_OPTIONS = ("contains", "notContains", "equals", "notEqual", "startsWith", "endsWith")
CLASS_OPTIONS = ("equals", "notEqual", "contains")
# Shown first, in this order; the other columns follow in table order.
FIRST_COLUMNS = (ID, "label", "pred", "correct", "loss", "confidence")


@dataclass(frozen=True)
class GridColumn:
    """One column of the grid.

    Attributes
    ----------
    field : the table column
    kind : ``"id"`` (the sample id), ``"class"`` (a class index shown as its name),
        ``"bool"``, ``"number"``, ``"integer"`` or ``"text"``
    title : the header: the column and its unit (:func:`dashboard.columns.column_title`)
    """

    field: str
    kind: str
    title: str


def bool_words(field: str) -> tuple[str, str]:
    """What a yes/no column shows for true and false: ``correct``/``wrong`` for the
    ``*correct`` columns, ``yes``/``no`` otherwise (also the filter's option keys)."""
    return ("correct", "wrong") if field.endswith("correct") else ("yes", "no")


def table_columns(table: pd.DataFrame) -> list[GridColumn]:
    """The grid's columns: :data:`FIRST_COLUMNS`, then class columns, yes/no columns,
    numbers and other text.

    The id columns other than ``sample_id`` (dataset, split, index) are parts of the
    id; ``label_name``/``pred_name`` are what the class columns show.
    """
    out = [GridColumn(ID, "id", "sample id")]
    classes = class_columns(table)
    out += [GridColumn(c, "class", c) for c in classes]
    out += [GridColumn(c, "bool", c) for c in bool_columns(table)]
    for c in numeric_columns(table):
        if c not in classes:
            kind = "integer" if pd.api.types.is_integer_dtype(table[c]) else "number"
            out.append(GridColumn(c, kind, column_title(c)))
    taken = {g.field for g in out} | set(ID_COLUMNS) | {f"{c}_name" for c in classes}
    out += [GridColumn(c, "text", c) for c in table.columns if c not in taken]
    first = {field: n for n, field in enumerate(FIRST_COLUMNS)}
    return sorted(out, key=lambda g: first.get(g.field, len(first)))  # stable: rest kept


def column_defs(columns: Sequence[GridColumn], class_names: Sequence[str]) -> list[dict]:
    """ag-grid ``columnDefs`` of ``columns``: header, filter and formatting per kind.

    Numbers show 3 significant digits; the id looks like a link (a click on any cell
    opens the sample). The filter options offered are exactly those
    :func:`filter_mask` implements.
    """
    defs = []
    for col in columns:
        d = {"field": col.field, "headerName": col.title, "headerTooltip": col.title}
        if col.kind == "id":
            d.update(pinned="left", minWidth=170, filter="agTextColumnFilter",
                     filterParams={"filterOptions": list(TEXT_OPTIONS),
                                   "maxNumConditions": MAX_CONDITIONS},
                     cellStyle={"color": "#0d6efd", "textDecoration": "underline",
                                "cursor": "pointer"})
        elif col.kind == "class":
            names = ", ".join(class_names[:12]) + (" …" if len(class_names) > 12 else "")
            d.update(filter="agTextColumnFilter", minWidth=100,
                     headerTooltip=f"{col.title} (classes: {names})",
                     filterParams={"filterOptions": list(CLASS_OPTIONS),
                                   "maxNumConditions": MAX_CONDITIONS})
        elif col.kind == "bool":
            # ag-grid's own yes/no filter: a choice of two options taking no value. Their
            # predicate (required) never runs: the infinite row model filters on the server.
            options = [{"displayKey": word, "displayName": word, "numberOfInputs": 0,
                        "predicate": {"function": "false"}} for word in bool_words(col.field)]
            d.update(filter="agTextColumnFilter", minWidth=100, filterParams={
                "maxNumConditions": 1, "filterOptions": ["empty", *options]})
        elif col.kind in ("number", "integer"):
            d.update(filter="agNumberColumnFilter", minWidth=120, type="rightAligned",
                     filterParams={"filterOptions": list(NUMBER_OPTIONS),
                                   "inRangeInclusive": True,
                                   "maxNumConditions": MAX_CONDITIONS})
            if col.kind == "number":
                d["valueFormatter"] = {
                    "function": "params.value == null ? '' : d3.format('.3~r')(params.value)"}
        else:
            d.update(filter="agTextColumnFilter",
                     filterParams={"filterOptions": list(TEXT_OPTIONS),
                                   "maxNumConditions": MAX_CONDITIONS})
        defs.append(d)
    return defs


# -- filters ------------------------------------------------------------------------------
def _lookup(columns: Sequence[GridColumn], field: object, what: str) -> GridColumn:
    for col in columns:
        if col.field == field:
            return col
    shown = field if isinstance(field, str) and len(field) <= 40 else type(field).__name__
    raise DashboardInputError(f"Unknown column '{shown}' in the table's {what}; it has "
                              f"{', '.join(c.field for c in columns[:8])}….")


def _number(value: object, col: GridColumn) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DashboardInputError(f"The filter of '{col.field}' needs a number, "
                                  f"not {type(value).__name__}.")
    return float(value)


def _text(value: object, col: GridColumn) -> str:
    if not isinstance(value, str) or len(value) > MAX_FILTER_TEXT:
        raise DashboardInputError(f"The filter of '{col.field}' needs text of at most "
                                  f"{MAX_FILTER_TEXT} characters.")
    return value.lower()


def _text_match(values: pd.Series, kind: str, text: str) -> np.ndarray:
    """Case-insensitive text condition ``kind`` on ``values`` (missing values never match)."""
    low = values.astype("string").str.lower()
    if kind == "contains":
        hit = low.str.contains(text, regex=False)
    elif kind == "notContains":
        hit = ~low.str.contains(text, regex=False)
    elif kind == "equals":
        hit = low == text
    elif kind == "notEqual":
        hit = low != text
    elif kind == "startsWith":
        hit = low.str.startswith(text)
    else:  # endsWith
        hit = low.str.endswith(text)
    return hit.fillna(False).to_numpy(dtype=bool)


def condition_mask(table: pd.DataFrame, col: GridColumn, condition: Mapping,
                   class_names: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool: the rows of ``table`` that pass one filter condition of ``col``.

    Number conditions (``filterType`` ``number``): ``equals``, ``notEqual``,
    ``lessThan``, ``lessThanOrEqual``, ``greaterThan``, ``greaterThanOrEqual``, and
    ``inRange`` (both bounds included, as the grid is told with
    ``inRangeInclusive``). Text conditions (``text``, case-insensitive):
    ``contains``, ``notContains``, ``equals``, ``notEqual``, ``startsWith``,
    ``endsWith``; a class column matches its class names. A yes/no column's
    condition is its word for true or false (:func:`bool_words`). Missing values
    (NaN) pass no condition.
    """
    kind = condition.get("type")
    values = table[col.field]
    if col.kind in ("number", "integer"):
        if condition.get("filterType") != "number" or kind not in NUMBER_OPTIONS:
            raise DashboardInputError(f"Unknown number filter '{str(kind)[:40]}' on "
                                      f"'{col.field}'; valid: {', '.join(NUMBER_OPTIONS)}.")
        v = values.to_numpy(dtype=np.float64)
        x = _number(condition.get("filter"), col)
        with np.errstate(invalid="ignore"):
            if kind == "inRange":
                hi = _number(condition.get("filterTo"), col)
                return (v >= min(x, hi)) & (v <= max(x, hi))
            ops = {"equals": np.equal, "notEqual": np.not_equal, "lessThan": np.less,
                   "lessThanOrEqual": np.less_equal, "greaterThan": np.greater,
                   "greaterThanOrEqual": np.greater_equal}
            return ops[kind](v, x) & ~np.isnan(v)
    if condition.get("filterType") != "text":
        raise DashboardInputError(f"The filter of '{col.field}' must be a text filter.")
    if col.kind == "bool":
        yes, no = bool_words(col.field)
        if kind not in (yes, no):
            raise DashboardInputError(f"Unknown filter '{str(kind)[:40]}' on '{col.field}'; "
                                      f"valid: {yes}, {no}.")
        truth = values.fillna(False).to_numpy(dtype=bool)
        return truth if kind == yes else ~truth & values.notna().to_numpy()
    valid = CLASS_OPTIONS if col.kind == "class" else TEXT_OPTIONS
    if kind not in valid:
        raise DashboardInputError(f"Unknown text filter '{str(kind)[:40]}' on '{col.field}'; "
                                  f"valid: {', '.join(valid)}.")
    text = _text(condition.get("filter"), col)
    if col.kind == "class":
        names = pd.Series(list(class_names), dtype="string")
        matching = np.flatnonzero(_text_match(names, kind, text))
        return values.isin(matching).to_numpy()
    return _text_match(values, kind, text)


def column_mask(table: pd.DataFrame, col: GridColumn, model: object,
                class_names: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool of one column's filter model: a single condition, or
    ``{"operator": "AND"|"OR", "conditions": [...]}`` of at most
    :data:`MAX_CONDITIONS`."""
    if not isinstance(model, Mapping):
        raise DashboardInputError(f"The filter of '{col.field}' is not a filter model.")
    if "conditions" not in model:
        return condition_mask(table, col, model, class_names)
    conditions, operator = model.get("conditions"), model.get("operator")
    if not isinstance(conditions, list) or not 1 <= len(conditions) <= MAX_CONDITIONS \
            or operator not in ("AND", "OR") \
            or not all(isinstance(c, Mapping) for c in conditions):
        raise DashboardInputError(f"The filter of '{col.field}' joins 1 to {MAX_CONDITIONS} "
                                  "conditions with AND or OR.")
    masks = [condition_mask(table, col, c, class_names) for c in conditions]
    return np.logical_and.reduce(masks) if operator == "AND" else np.logical_or.reduce(masks)


def filter_mask(table: pd.DataFrame, columns: Sequence[GridColumn], filter_model: object,
                class_names: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool: the rows passing every column filter of ag-grid's ``filterModel``
    (``{field: model}``, see :func:`column_mask`); unknown columns raise."""
    mask = np.ones(len(table), dtype=bool)
    if filter_model in (None, {}):
        return mask
    if not isinstance(filter_model, Mapping) or len(filter_model) > len(columns):
        raise DashboardInputError("The table's filter is not a filter model.")
    for field, model in filter_model.items():
        mask &= column_mask(table, _lookup(columns, field, "filter"), model, class_names)
    return mask


# -- sorting ------------------------------------------------------------------------------
def sort_key(table: pd.DataFrame, col: GridColumn) -> np.ndarray | pd.Series:
    """What a column sorts by: its values; a class column by class index, the sample id
    by dataset order (``…:10`` after ``…:9``)."""
    if col.kind == "id":
        return np.arange(len(table))
    return table[col.field].to_numpy() if col.kind != "text" else table[col.field]


def sort_order(table: pd.DataFrame, columns: Sequence[GridColumn], sort_model: object,
               rows: np.ndarray) -> np.ndarray:
    """``rows`` (``(M,)`` row positions) in the order of ag-grid's ``sortModel``
    (``[{"colId", "sort": "asc"|"desc"}]``, first entry first); ties keep table order
    and missing values come last either way."""
    if sort_model in (None, []):
        return rows
    if not isinstance(sort_model, list) or len(sort_model) > len(columns):
        raise DashboardInputError("The table's sort is not a sort model.")
    keys, ascending = {}, []
    for n, item in enumerate(sort_model):
        if not isinstance(item, Mapping) or item.get("sort") not in ("asc", "desc"):
            raise DashboardInputError("A sort of the table is 'asc' or 'desc' on a column.")
        col = _lookup(columns, item.get("colId"), "sort")
        keys[f"k{n}"] = np.asarray(sort_key(table, col))[rows]
        ascending.append(item["sort"] == "asc")
    frame = pd.DataFrame(keys)
    order = frame.sort_values(list(keys), ascending=ascending, kind="stable",
                              na_position="last").index.to_numpy()
    return rows[order]


# -- the entry-level query ----------------------------------------------------------------
def search_mask(sample_ids: np.ndarray, text: object) -> np.ndarray:
    """``(N,)`` bool of the id search box: the one sample of an exact id, else the ids
    containing ``text`` (case-insensitive); everything for an empty box."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return np.ones(len(sample_ids), dtype=bool)
    if not isinstance(text, str) or len(text) > MAX_ID_LENGTH:
        raise DashboardInputError("The id search takes text like mnist:test:17.")
    text = text.strip()
    ids = pd.Series(sample_ids, dtype="string")
    exact = (ids == text).to_numpy()
    if exact.any():
        return exact
    return ids.str.lower().str.contains(text.lower(), regex=False).to_numpy(dtype=bool)


@dataclass(frozen=True)
class TableQuery:
    """What the grid shows now, as the browser describes it (all of it checked when used)."""

    request: object = None
    search: object = None
    only_selected: object = False
    selection: object = None


def checked_block(request: object) -> tuple[int, int]:
    """``(startRow, endRow)`` of a ``getRowsRequest``: ints, ``0 <= start <= end`` and at
    most :data:`MAX_BLOCK` rows."""
    if not isinstance(request, Mapping):
        raise DashboardInputError("The table asked for rows without saying which.")
    start, end = request.get("startRow"), request.get("endRow")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)) \
            or not 0 <= start <= end or end - start > MAX_BLOCK:
        raise DashboardInputError(f"The table asks for blocks of at most {MAX_BLOCK} rows.")
    return start, end


@dataclass
class TableCache:
    """Per run entry (one slot of its memo): the grid's columns and the row orders of
    the last :data:`ORDER_CACHE_SIZE` queries, so scrolling through one filter and sort
    filters and sorts once."""

    columns: list[GridColumn]
    orders: LRUCache


def table_cache(entry: RunEntry) -> TableCache:
    return entry.memo("sample-table", lambda: TableCache(table_columns(entry.table),
                                                         LRUCache(ORDER_CACHE_SIZE)))


def matching_rows(entry: RunEntry, query: TableQuery) -> np.ndarray:
    """``(M,)`` row positions of the run's table that the grid shows, in its order:
    filtered (column filters, id search, and the shared selection when "only
    selected" is on) and sorted. Never modify the result (it is cached)."""
    table = entry.table
    cache = table_cache(entry)
    request = query.request if isinstance(query.request, Mapping) else {}
    only = query.only_selected is True
    selected = selection_indices(entry, query.selection)[0] if only else None

    def compute() -> np.ndarray:
        mask = filter_mask(table, cache.columns, request.get("filterModel"), entry.class_names)
        mask &= search_mask(table[ID].to_numpy(), query.search)
        if selected is not None:
            keep = np.zeros(len(table), dtype=bool)
            keep[selected] = True
            mask &= keep
        return sort_order(table, cache.columns, request.get("sortModel"), np.flatnonzero(mask))

    key = stable_hash("sample-table-rows", request.get("filterModel"), request.get("sortModel"),
                      query.search, None if selected is None else selected.tolist())
    return cache.orders.get_or_compute(key, compute)


def _cell_lists(frame: pd.DataFrame, columns: Sequence[GridColumn], class_names: Sequence[str]
                ) -> dict[str, list]:
    """Per column of the grid, the JSON values of ``frame``'s rows."""
    out = {}
    for col in columns:
        values = frame[col.field].to_numpy()
        if col.kind == "class":
            out[col.field] = [class_names[v] if 0 <= v < len(class_names) else str(v)
                              for v in values.tolist()]
        elif col.kind == "bool":
            yes, no = bool_words(col.field)
            out[col.field] = [None if pd.isna(v) else yes if v else no for v in values.tolist()]
        elif col.kind == "number":
            # 6 significant digits: the grid shows 3, the payload stays small.
            out[col.field] = [None if v != v else float(f"{v:.6g}")
                              for v in values.astype(np.float64).tolist()]
        else:
            out[col.field] = [None if pd.isna(v) else v for v in values.tolist()]
    return out


def block_records(entry: RunEntry, rows: np.ndarray) -> list[dict]:
    """The grid's row data of table rows ``rows``: class names for class columns, words
    for yes/no columns, numbers to 6 significant digits, ``None`` when missing."""
    cells = _cell_lists(entry.table.iloc[rows], table_cache(entry).columns, entry.class_names)
    return [dict(zip(cells, values, strict=True)) for values in zip(*cells.values(), strict=True)]


def count_text(shown: int, total: int) -> str:
    return f"{shown:,} of {total:,} samples"


def rows_response(entry: RunEntry, query: TableQuery) -> tuple[dict, str]:
    """The answer to a ``getRowsRequest``: ``({"rowData", "rowCount"}, "N of M samples")``."""
    start, end = checked_block(query.request)
    rows = matching_rows(entry, query)
    return ({"rowData": block_records(entry, rows[start:end]), "rowCount": int(len(rows))},
            count_text(len(rows), len(entry.table)))


def selection_from_table(entry: RunEntry, query: TableQuery) -> dict:
    """The shared selection store holding the rows the grid shows (in its order; at
    most :func:`~dashboard.views.guard.selection_limit`, the store's ``note`` says so)."""
    return selection_store(entry, matching_rows(entry, query), "sample table", "the table")


def clicked_sample(entry: RunEntry, cell: object) -> str:
    """The sample id of a clicked cell (``cellClicked``; its ``rowId`` is the id)."""
    from dashboard.views.guard import checked_sample_id

    if not isinstance(cell, Mapping):
        raise DashboardInputError("No cell was clicked.")
    sample_id = checked_sample_id(cell.get("rowId"))
    entry.index_of(sample_id)  # raises for an unknown id
    return sample_id


def selection_switch(entry: RunEntry, selection: object) -> tuple[bool, str]:
    """``(disabled, label)`` of the "show only selected" switch."""
    n = len(selection_indices(entry, selection)[0])
    if n == 0:
        return True, "Show only selected (no selection yet)"
    return False, f"Show only the {n:,} selected"
