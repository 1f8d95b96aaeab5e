"""Reading request traces into one checked table.

Formats: Mooncake JSONL (`timestamp` ms, `input_length`, `output_length`, `hash_ids`), the
Azure LLM inference CSV (`TIMESTAMP` wall time, `ContextTokens`, `GeneratedTokens`), and a
generic CSV / JSONL / Parquet whose columns `TraceColumns` names. `read_trace` returns a
DataFrame sorted by arrival with the columns of `TABLE_COLUMNS`; a bad row raises
`TraceError` naming the file, the row (1-based, data rows only) and the column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("auto", "mooncake", "azure", "csv", "jsonl", "parquet")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "datetime": None}
TABLE_COLUMNS = ("row", "arrival_s", "input_tokens", "output_tokens", "model", "hash_ids")
EXCERPT_PREFIX = "excerpt:"
_SUFFIX_KIND = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
                ".pq": "parquet"}


class TraceError(ValueError):
    """A trace file that cannot be replayed: names the file, and the row and column if any."""


@dataclass(frozen=True)
class TraceColumns:
    """Which columns of a generic trace hold what; time_unit is s | ms | us | datetime."""

    time: str = "timestamp"
    time_unit: str = "s"
    input: str = "input_tokens"
    output: str = "output_tokens"
    model: str | None = None
    hash_ids: str | None = None


MOONCAKE = TraceColumns("timestamp", "ms", "input_length", "output_length", None, "hash_ids")
AZURE = TraceColumns("TIMESTAMP", "datetime", "ContextTokens", "GeneratedTokens")


def resolve_trace_path(path: str | Path) -> Path:
    """A file path, or `excerpt:NAME` for an excerpt shipped in kvexp/workloads/trace_data."""
    text = str(path)
    if text.startswith(EXCERPT_PREFIX):
        name = text[len(EXCERPT_PREFIX):]
        res = resources.files("kvexp.workloads").joinpath("trace_data", name)
        if not res.is_file():
            raise TraceError(f"{text}: no such trace excerpt in kvexp/workloads/trace_data")
        return Path(str(res))
    return Path(text).expanduser()


def read_trace(path: str | Path, fmt: str = "auto",
               columns: TraceColumns | None = None) -> pd.DataFrame:
    """The trace's rows, checked and sorted by arrival (stable), with TABLE_COLUMNS.

    `fmt` auto: the file type from the extension, the columns Mooncake's or Azure's when
    `columns` is None and the file has them. `arrival_s` is in seconds (absolute for
    datetime traces, else as recorded); `row` is the 1-based data row in the file.
    """
    p = resolve_trace_path(path)
    if fmt not in FORMATS:
        raise TraceError(f"{p}: trace format {fmt!r} is unknown; expected one of {FORMATS}")
    if not p.is_file():
        raise TraceError(f"{p}: trace file not found")
    kind = {"mooncake": "jsonl", "azure": "csv"}.get(fmt, fmt)
    if kind == "auto" or fmt in ("mooncake", "azure"):
        kind = _SUFFIX_KIND.get(p.suffix.lower(), kind)
    if kind == "auto":
        raise TraceError(f"{p}: cannot tell the trace format from the extension "
                         f"{p.suffix!r}; give the format (one of {FORMATS[1:]})")
    raw = _read_raw(p, kind)
    cols = columns or {"mooncake": MOONCAKE, "azure": AZURE}.get(fmt) or _detect(p, raw)
    return _check(p, raw, cols)


def _read_raw(p: Path, kind: str) -> pd.DataFrame:
    try:
        if kind == "csv":
            return pd.read_csv(p, dtype=str, skipinitialspace=True)
        if kind == "parquet":
            return pd.read_parquet(p)
    except Exception as e:  # pandas / pyarrow parser errors carry the line
        raise TraceError(f"{p}: cannot read as {kind}: {e}") from e
    records = []
    with p.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(f"{p}: line {line_no} is not valid JSON: {e}") from e
            if not isinstance(rec, dict):
                raise TraceError(f"{p}: line {line_no} is not a JSON object")
            records.append(rec)
    return pd.DataFrame.from_records(records)


def _detect(p: Path, raw: pd.DataFrame) -> TraceColumns:
    have = set(raw.columns)
    for cols in (MOONCAKE, AZURE, TraceColumns()):
        if {cols.time, cols.input, cols.output} <= have:
            return cols
    raise TraceError(f"{p}: columns {sorted(map(str, have))} match neither Mooncake's "
                     f"({MOONCAKE.time}, {MOONCAKE.input}, {MOONCAKE.output}) nor Azure's "
                     f"({AZURE.time}, {AZURE.input}, {AZURE.output}); name the columns")


def _bad(p: Path, i: int, col: str, why: str) -> TraceError:
    return TraceError(f"{p}: row {i + 1}, column {col!r}: {why}")


def _missing(s: pd.Series) -> np.ndarray:
    return s.isna().to_numpy() | (s.astype(str).str.strip() == "").to_numpy()


def _numbers(p: Path, raw: pd.DataFrame, col: str) -> np.ndarray:
    s = raw[col]
    miss = _missing(s)
    if miss.any():
        raise _bad(p, int(np.argmax(miss)), col, "missing value")
    num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(num)
    if bad.any():
        i = int(np.argmax(bad))
        raise _bad(p, i, col, f"{s.iloc[i]!r} is not a finite number")
    return num


def _lengths(p: Path, raw: pd.DataFrame, col: str) -> np.ndarray:
    num = _numbers(p, raw, col)
    bad = (num < 1) | (num != np.floor(num))
    if bad.any():
        i = int(np.argmax(bad))
        raise _bad(p, i, col, f"{raw[col].iloc[i]!r} is not a whole token count >= 1")
    return num.astype(np.int64)


def _times(p: Path, raw: pd.DataFrame, cols: TraceColumns) -> np.ndarray:
    if cols.time_unit not in TIME_UNITS:
        raise TraceError(f"{p}: time unit {cols.time_unit!r} is unknown; expected one of "
                         f"{tuple(TIME_UNITS)}")
    scale = TIME_UNITS[cols.time_unit]
    if scale is not None:
        return _numbers(p, raw, cols.time) * scale
    s = raw[cols.time]
    miss = _missing(s)
    if miss.any():
        raise _bad(p, int(np.argmax(miss)), cols.time, "missing value")
    t = pd.to_datetime(s, errors="coerce", format="ISO8601")
    bad = t.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _bad(p, i, cols.time, f"{s.iloc[i]!r} is not a date-time (ISO 8601)")
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return (t - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=float)


def _hash_list(p: Path, i: int, col: str, v: Any) -> tuple[int, ...] | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else None
        except json.JSONDecodeError as e:
            raise _bad(p, i, col, f"{v!r} is not a JSON list of block ids") from e
        if v is None:
            return None
    try:
        ids = tuple(int(x) for x in v)
        ok = all(x >= 0 and x == y for x, y in zip(ids, v, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _bad(p, i, col, f"{v!r} is not a list of whole block ids >= 0")
    return ids


def _check(p: Path, raw: pd.DataFrame, cols: TraceColumns) -> pd.DataFrame:
    needed = [c for c in (cols.time, cols.input, cols.output, cols.model, cols.hash_ids) if c]
    absent = [c for c in needed if c not in raw.columns]
    if absent:
        raise TraceError(f"{p}: no column {', '.join(map(repr, absent))} "
                         f"(the file has {', '.join(map(str, raw.columns))})")
    if raw.empty:
        raise TraceError(f"{p}: the trace has no rows")
    out = pd.DataFrame({
        "row": np.arange(1, len(raw) + 1),
        "arrival_s": _times(p, raw, cols),
        "input_tokens": _lengths(p, raw, cols.input),
        "output_tokens": _lengths(p, raw, cols.output),
    })
    if cols.model:
        miss = _missing(raw[cols.model])
        if miss.any():
            raise _bad(p, int(np.argmax(miss)), cols.model, "missing value")
        out["model"] = raw[cols.model].astype(str).str.strip().to_numpy()
    else:
        out["model"] = None
    if cols.hash_ids:
        hc = cols.hash_ids
        out["hash_ids"] = [_hash_list(p, i, hc, v) for i, v in enumerate(raw[hc].tolist())]
    else:
        out["hash_ids"] = None
    return out.sort_values("arrival_s", kind="stable").reset_index(drop=True)
