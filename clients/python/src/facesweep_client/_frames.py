"""Exports as tables: pyarrow and pandas are imported only when asked for."""

from __future__ import annotations

from typing import Iterable

from .types import Result

# Rows converted at a time: memory holds one batch of rows plus the table built so far.
BATCH = 8192


def _missing(what: str, extra: str) -> ImportError:
    return ImportError(f"{what} is not installed: pip install 'facesweep-client[{extra}]'")


def _schema(pa):
    face = pa.struct([
        ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32()),
        ("score", pa.float32()), ("landmarks", pa.list_(pa.float32())),
    ])
    return pa.schema([
        ("url_id", pa.int64()), ("url", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("http_status", pa.uint32()), ("width", pa.uint32()), ("height", pa.uint32()),
        ("model_id", pa.string()), ("faces", pa.list_(face)),
    ])


def _row(r: Result) -> dict:
    faces = [
        {"x1": f.box[0], "y1": f.box[1], "x2": f.box[2], "y2": f.box[3], "score": f.score,
         "landmarks": list(f.landmarks)}
        for f in r.faces
    ]
    return {"url_id": r.url_id, "url": r.url, "status": r.status, "reason": r.reason,
            "http_status": r.http_status, "width": r.width, "height": r.height,
            "model_id": r.model_id, "faces": faces}


def to_arrow(results: Iterable[Result]):
    try:
        import pyarrow as pa
    except ImportError:
        raise _missing("pyarrow", "arrow") from None
    schema, batches, rows = _schema(pa), [], []
    for r in results:
        rows.append(_row(r))
        if len(rows) == BATCH:
            batches.append(pa.RecordBatch.from_pylist(rows, schema=schema))
            rows = []
    if rows:
        batches.append(pa.RecordBatch.from_pylist(rows, schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


def to_pandas(results: Iterable[Result]):
    try:
        import pandas as pd
    except ImportError:
        raise _missing("pandas", "pandas") from None
    columns = list(_row(Result(url_id=0, url="", status="")).keys())
    data = {c: [] for c in columns}
    for r in results:
        for c, v in _row(r).items():
            data[c].append(v)
    return pd.DataFrame(data, columns=columns)
