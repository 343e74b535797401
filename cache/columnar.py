"""Per-sample arrays of a large artifact as one Arrow IPC file, read memory-mapped.

An artifact whose arrays are large (:func:`default_columnar_min_mb`) keeps
its per-sample arrays, those whose first dimension is the artifact's row
count ``N``, in an uncompressed Arrow IPC file: a 1-D array is a primitive
column, an ``(N, d1, d2...)`` array a ``FixedSizeList<d1*d2*...>`` column
whose full shape is in the schema metadata; booleans are stored as
``uint8`` (Arrow packs its booleans into bits, which cannot be viewed
zero-copy). Reading maps the file and hands out read-only numpy views: only
the pages of the columns someone touches are read.

Only what Loupe writes is accepted on read: one record batch, no nulls, the
primitive numeric types and fixed-size lists of them, matching the manifest
recorded in the artifact's small entry. pyarrow >= 14.0.1 is required
(CVE-2023-47248: older versions could unpickle an extension type while
opening a file); nothing in a cached file makes Loupe import or run code.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from cache.errors import env_number

DEFAULT_COLUMNAR_MIN_MB = 8.0
METADATA_KEY = b"loupe.columns"
# The dtypes a column may have (bool is stored as uint8 and viewed back as bool).
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")
CHUNK = 1 << 20


def default_columnar_min_mb() -> float:
    """``$LOUPE_COLUMNAR_MIN_MB`` or 8: artifacts whose arrays total more go columnar.

    ``0`` stores every artifact that has per-sample arrays columnar (the
    test suites run both ways).
    """
    return env_number("LOUPE_COLUMNAR_MIN_MB", DEFAULT_COLUMNAR_MIN_MB, positive=False,
                      unit="MB", example="8")


def row_count(arrays: Mapping[str, np.ndarray]) -> int | None:
    """The artifact's row count: the most common first dimension of its columnable
    arrays (ties: the larger); ``None`` when it has none."""
    dims = Counter(a.shape[0] for a in arrays.values() if _columnable(a))
    if not dims:
        return None
    return max(dims, key=lambda n: (dims[n], n))


def _columnable(arr: np.ndarray) -> bool:
    return (arr.ndim >= 1 and arr.shape[0] > 0 and arr.dtype.name in DTYPES
            and int(np.prod(arr.shape[1:], dtype=np.int64)) > 0)


def split(arrays: Mapping[str, np.ndarray], rows: int
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(columns, rest)``: the per-sample arrays of ``rows`` rows, and the others."""
    cols = {k: a for k, a in arrays.items() if _columnable(a) and a.shape[0] == rows}
    return cols, {k: a for k, a in arrays.items() if k not in cols}


def _storage(dtype: str) -> pa.DataType:
    return pa.uint8() if dtype == "bool" else pa.from_numpy_dtype(np.dtype(dtype))


def _arrow_type(dtype: str, shape: list[int]) -> pa.DataType:
    if len(shape) == 1:
        return _storage(dtype)
    return pa.list_(_storage(dtype), int(np.prod(shape[1:], dtype=np.int64)))


def write(columns: Mapping[str, np.ndarray], sink: str | os.PathLike) -> dict[str, Any]:
    """Write ``columns`` (each ``(N, ...)``) to the Arrow IPC file ``sink``.

    Contiguous native-endian arrays are handed to Arrow without a copy.

    Returns
    -------
    dict
        The manifest: ``{"rows": N, "columns": {name: {"dtype", "shape"}}}``.
    """
    rows = {a.shape[0] for a in columns.values()}
    if len(rows) != 1:
        raise ValueError(f"columns of different lengths {sorted(rows)}")
    meta: dict[str, Any] = {"rows": rows.pop(), "columns": {}}
    fields, arrays = [], []
    for name, arr in columns.items():
        dtype = arr.dtype.name
        flat = np.ascontiguousarray(arr).reshape(-1)
        if not flat.dtype.isnative:
            flat = flat.astype(flat.dtype.newbyteorder("="))
        if dtype == "bool":
            flat = flat.view(np.uint8)
        values = pa.array(flat, type=_storage(dtype))
        if arr.ndim > 1:
            values = pa.FixedSizeListArray.from_arrays(values, int(np.prod(arr.shape[1:])))
        meta["columns"][name] = {"dtype": dtype, "shape": list(arr.shape)}
        fields.append(pa.field(name, values.type, nullable=False))
        arrays.append(values)
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta)})
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    options = ipc.IpcWriteOptions(compression=None)
    try:
        with (pa.OSFile(os.fspath(sink), "wb") as out,
              ipc.new_file(out, schema, options=options) as writer):
            writer.write_batch(batch)
    except OSError as exc:  # Arrow's own errors name the errno only in their text
        code = re.search(r"\[errno (\d+)\]", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from exc
    return meta


def sha256_of(fh: BinaryIO) -> str:
    """The hex sha256 of an open file, read in 1 MB chunks from its start (no mapping,
    so the reading process's memory does not grow by the file's size)."""
    h = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def read(fh: BinaryIO, manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Map the Arrow file ``fh`` and return its columns as read-only numpy views.

    Parameters
    ----------
    fh : binary file
        The Arrow file, opened for reading; its sha256 is checked against
        ``manifest["sha256"]`` first (chunked reads).
    manifest : dict
        ``{"sha256", "rows", "columns": {name: {"dtype", "shape"}}}`` as
        recorded in the artifact's small entry.

    Raises
    ------
    ValueError
        The file is damaged, or is not exactly what the manifest says Loupe wrote.
    """
    if sha256_of(fh) != manifest.get("sha256"):
        raise ValueError("columns file checksum mismatch")
    expected = _check_manifest(manifest)
    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        reader = ipc.open_file(pa.BufferReader(pa.py_buffer(mapped)))
        _check_schema(reader.schema, manifest, expected)
        if reader.num_record_batches != 1:
            raise ValueError(f"{reader.num_record_batches} record batches, expected one")
        batch = reader.get_batch(0)
    except pa.ArrowException as exc:
        raise ValueError(f"columns file unreadable ({exc})") from None
    if batch.num_rows != manifest["rows"]:
        raise ValueError(f"{batch.num_rows} rows, expected {manifest['rows']}")
    out = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        spec = manifest["columns"][name]
        values = col.values if isinstance(col, pa.FixedSizeListArray) else col
        if col.null_count or values.null_count or col.offset or values.offset:
            raise ValueError(f"column {name!r} has nulls or offsets Loupe never writes")
        arr = values.to_numpy(zero_copy_only=True)
        if spec["dtype"] == "bool":
            arr = arr.view(np.bool_)
        arr = arr.reshape(spec["shape"])
        arr.flags.writeable = False
        out[name] = arr
    return out


def _check_manifest(manifest: Mapping[str, Any]) -> dict[str, pa.DataType]:
    rows, columns = manifest.get("rows"), manifest.get("columns")
    if not isinstance(rows, int) or rows <= 0 or not isinstance(columns, dict) or not columns:
        raise ValueError("columns manifest malformed")
    expected = {}
    for name, spec in columns.items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (spec.get("dtype") not in DTYPES or not isinstance(shape, list) or not shape
                or shape[0] != rows or not all(isinstance(d, int) and d > 0 for d in shape)):
            raise ValueError(f"columns manifest entry {name!r} malformed")
        expected[name] = _arrow_type(spec["dtype"], shape)
    return expected


def _check_schema(schema: pa.Schema, manifest: Mapping[str, Any],
                  expected: Mapping[str, pa.DataType]) -> None:
    """Refuse any schema but the one :func:`write` makes for ``manifest``."""
    if schema.names != list(expected):
        raise ValueError(f"columns {schema.names} differ from the manifest's {list(expected)}")
    for field in schema:
        if field.type != expected[field.name] or isinstance(field.type, pa.ExtensionType):
            raise ValueError(f"column {field.name!r} has type {field.type}, expected "
                             f"{expected[field.name]} (only Loupe's column types are read)")
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if meta != {"rows": manifest["rows"], "columns": manifest["columns"]}:
        raise ValueError("columns file metadata differ from the manifest")
