"""The sample table's columns as the dashboard offers them: which are numbers, classes or
yes/no, and their titles and units, all read from the steps' declarations
(:func:`analysis.registry.column_info`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dashboard.errors import DashboardInputError

ID_COLUMNS = ("sample_id", "dataset", "split", "index")


def _declared_kind(name: str) -> str | None:
    """The kind a step declares for column ``name`` (``"class"``, ``"bool"``...), if any."""
    from analysis.registry import column_info

    declared = column_info(name)
    return None if declared is None else declared.kind


def numeric_columns(table: pd.DataFrame) -> list[str]:
    """Per-sample numeric columns one can colour, size or bin by."""
    types = pd.api.types
    return [c for c in table.columns
            if c not in ID_COLUMNS and _declared_kind(c) != "bool"
            and types.is_numeric_dtype(table[c]) and not types.is_bool_dtype(table[c])]


def is_bool_column(name: str, table: pd.DataFrame | None = None) -> bool:
    """Whether ``name`` is a yes/no column: declared so (``correct``, which holds NaN where
    the dataset has no ground truth), or of boolean dtype in ``table``."""
    if _declared_kind(name) == "bool":
        return True
    return table is not None and name in table and pd.api.types.is_bool_dtype(table[name])


def bool_columns(table: pd.DataFrame) -> list[str]:
    """``correct``, ``mc_correct`` and every other yes/no column (``sum_correct``...)."""
    return [c for c in table.columns if is_bool_column(c, table)]


def is_class_column(name: str) -> bool:
    """Whether column ``name`` holds a class index (shown as class names, coloured with
    the class palette): a step declares it so (``pred``, ``suggested_label``...)."""
    return _declared_kind(name) == "class"


def class_columns(table: pd.DataFrame) -> list[str]:
    """The table's class-index columns (see :func:`is_class_column`)."""
    return [c for c in table.columns if is_class_column(c)]


def color_columns(table: pd.DataFrame) -> list[str]:
    """Columns the map can be coloured by: class columns, booleans and numbers."""
    out = class_columns(table)
    out += bool_columns(table)
    out += [c for c in numeric_columns(table) if c not in out]
    return out


def check_column(name: str | None, valid: Sequence[str], default: str, what: str) -> str:
    """``name`` when valid, ``default`` when empty; else a :class:`DashboardInputError`."""
    if name in (None, ""):
        return default
    if name not in valid:
        raise DashboardInputError(f"Unknown {what} column '{name}'. Valid: {', '.join(valid)}.")
    return name


def column_unit(name: str) -> str | None:
    """The unit (or scale) of a per-sample column as its step declares it, ``None`` when
    it has none."""
    from analysis.registry import column_info

    declared = column_info(name)
    return declared.unit if declared is not None and declared.unit else None


def column_words(name: str) -> str:
    """Plain words for column ``name`` (without its unit), as its step declares them."""
    from analysis.registry import column_info

    declared = column_info(name)
    return declared.label if declared is not None else name.replace("_", " ")


def column_title(name: str) -> str:
    """``name (unit)`` for axis and colour-bar titles."""
    unit = column_unit(name)
    return f"{name} ({unit})" if unit else name
