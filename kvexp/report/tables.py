"""The report's tables: per-point figures, elasticity, per model, failures, and the terminal.

Every table is a DataFrame of display strings (the precision the reader sees), rendered as
Markdown here and as HTML in `html.py`; `print_summary` prints a short one to the terminal.
The catalog is `catalog.py`, the kvcached/static comparison `verdicts.py`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kvexp.report.catalog import (  # noqa: F401 (re-exported)
    ALLOCATOR_KEYS,
    GIB,
    REPEAT_KEYS,
    _isna,
    _num,
    catalog,
    common_params,
    parse_overrides,
)
from kvexp.report.verdicts import comparison_table, headline_lines  # noqa: F401 (re-export)
from kvexp.results import Results
from kvexp.results.summary import MIN_P99_N


@dataclass(frozen=True)
class Col:
    """A display column: header, source column (or a function of the row), scale, digits."""

    header: str
    source: str | Callable[[pd.Series], float]
    scale: float = 1.0
    digits: int = 2
    n_source: str | None = None  # a p99's request count: under MIN_P99_N it is withheld

    def value(self, row: pd.Series) -> float:
        v = self.source(row) if callable(self.source) else row.get(self.source, math.nan)
        return _num(v)

    def text(self, row: pd.Series) -> str:
        v = self.value(row)
        if self.n_source is not None and _num(row.get(self.n_source)) < MIN_P99_N:
            return f"n<{MIN_P99_N}"
        return "-" if math.isnan(v) else f"{v * self.scale:.{self.digits}f}"


def _count(col: str) -> Callable[[pd.Series], float]:
    return lambda row: _num(row.get(col))


def _flex(row: pd.Series) -> float:
    return _num(row.get("peak_device_gib")) - _num(row.get("idle_device_gib"))


POINT_COLS = [
    Col("idle VRAM GiB", "idle_device_gib"),
    Col("peak VRAM GiB", "peak_device_gib"),
    Col("VRAM flex GiB", _flex),
    Col("saved idle GiB", "saved_idle_gib"),
    Col("saved mean GiB", "saved_mean_gib"),
    Col("lat n", _count("e2e_n"), 1.0, 0),
    Col("E2E p50 s", "e2e_p50_s", 1.0, 3),
    Col("E2E p99 s", "e2e_p99_s", 1.0, 3, "e2e_n"),
    Col("TTFT p50 ms", "ttft_p50_s", 1e3, 1),
    Col("TTFT p99 ms", "ttft_p99_s", 1e3, 1, "ttft_n"),
    Col("ITL n", _count("itl_n"), 1.0, 0),
    Col("ITL p50 ms", "itl_p50_s", 1e3, 1),
    Col("ITL p99 ms", "itl_p99_s", 1e3, 1, "itl_requests"),
    Col("busy s", "busy_s", 1.0, 1),
    Col("out tok/s", "output_tok_per_s", 1.0, 1),
    Col("SLO attainment %", "slo_attainment", 100.0, 1),
    Col("goodput req/s", "goodput_req_per_s", 1.0, 2),
]

ELASTICITY_COLS = [
    Col("grow s (device)", "device_grow_s", 1.0, 2),
    Col("release s (device)", "device_release_s", 1.0, 2),
    Col("grow s (kv held)", "kv_held_grow_s", 1.0, 2),
    Col("release s (kv held)", "kv_held_release_s", 1.0, 2),
    Col("idle footprint GiB", "device_idle_gib"),
    Col("GiB·s/s load", "device_load_gib_per_s", 1.0, 2),
    Col("load s", "device_load_s", 1.0, 1),
    Col("GiB·s/s run", "device_run_gib_per_s", 1.0, 2),
    Col("run s", "device_run_s", 1.0, 1),
    Col("KV efficiency %", "kv_efficiency", 100.0, 1),
]

def ok_points(cat: pd.DataFrame) -> pd.DataFrame:
    return cat[cat["status"] == "ok"] if not cat.empty else cat


def add_savings(cat: pd.DataFrame) -> pd.DataFrame:
    """`saved_idle_gib` / `saved_mean_gib` of each kvcached point against its static baseline.

    The baseline is the ok static point of the same setting and repeat, else the median of
    the ok static points of the same setting; NaN where there is none.
    """
    cat = cat.copy()
    cat["saved_idle_gib"] = math.nan
    cat["saved_mean_gib"] = math.nan
    ok = ok_points(cat)
    static = ok[ok["allocator"] == "static"]
    for i, row in ok[ok["allocator"] == "kvcached"].iterrows():
        base = static[static["setting"] == row["setting"]]
        same = base[base["repeat"] == row["repeat"]]
        base = same if not same.empty else base
        if base.empty:
            continue
        for col, out in (("idle_device_gib", "saved_idle_gib"), ("mean_device_gib",
                                                                  "saved_mean_gib")):
            if col in base and col in row:
                cat.loc[i, out] = float(np.nanmedian(base[col].astype(float))) - _num(row[col])
    return cat


def _failed_text(row: pd.Series) -> str:
    n, f = _num(row.get("requests")), _num(row.get("failed"))
    return "-" if math.isnan(n) else f"{int(f) if not math.isnan(f) else 0}/{int(n)}"


def _engine(row: pd.Series) -> str:
    e = row.get("engine")
    return "-" if _isna(e) or not e else str(e)


def point_table(cat: pd.DataFrame) -> pd.DataFrame:
    """Per point: status, VRAM, savings vs static, latency percentiles, throughput, failures."""
    rows = []
    for _, r in cat.iterrows():
        d = {"point": str(r["point"]), "label": str(r.get("label", "")),
             "status": str(r["status"]), "engine": _engine(r)}
        d.update({c.header: c.text(r) for c in POINT_COLS})
        d["failed req"] = _failed_text(r)
        rows.append(d)
    return pd.DataFrame(rows)


def _released_text(row: pd.Series) -> str:
    n = _num(row.get("waves"))
    if math.isnan(n) or n == 0:
        return "-"
    g, r = _num(row.get("device_waves_grew")), _num(row.get("device_waves_released"))
    return f"{int(g)}/{int(n)} grew, {int(r)} released"


def elasticity_display(cat: pd.DataFrame) -> pd.DataFrame:
    """Per ok point: elasticity metrics (see Definitions)."""
    rows = []
    for _, r in ok_points(cat).iterrows():
        d = {"point": str(r["point"]), "label": str(r.get("label", ""))}
        d["waves (device)"] = _released_text(r)
        d.update({c.header: c.text(r) for c in ELASTICITY_COLS})
        d["KV efficiency from"] = str(r.get("kv_efficiency_basis") or "-")
        rows.append(d)
    return pd.DataFrame(rows)


def tutorial_lines(cat: pd.DataFrame) -> list[str]:
    """Per allocator, over its ok single-model points: idle, peak, median latency, flex."""
    ok = ok_points(cat)
    if ok.empty:
        return []
    single = ok[ok["n_instances"].fillna(1).astype(float) <= 1]
    lines = []
    for alloc, grp in single.groupby("allocator", sort=True):
        def med(values: pd.Series) -> float:
            arr = values.astype(float).to_numpy()
            return float(np.nanmedian(arr)) if np.isfinite(arr).any() else math.nan

        idle, peak = med(grp.get("idle_device_gib", pd.Series(dtype=float))), med(
            grp.get("peak_device_gib", pd.Series(dtype=float)))
        e2e = med(grp.get("e2e_p50_s", pd.Series(dtype=float)))
        flex = med(grp.apply(_flex, axis=1)) if len(grp) else math.nan
        runs = f" ({_median_over(grp)})" if len(grp) > 1 else ""
        lines.append(
            f"{alloc or 'unknown'}: idle VRAM {_f(idle)} GiB, peak VRAM {_f(peak)} GiB, "
            f"median latency {_f(e2e, 3)} s, VRAM flex {_f(flex)} GiB{runs}"
        )
    return lines


def _median_over(points: pd.DataFrame) -> str:
    """What a median over these points pools: settings, and runs (repeats) of each."""
    runs = points.groupby(points["setting"].fillna(""), sort=False).size()
    each = (f"{runs.iloc[0]} run{'s' if runs.iloc[0] > 1 else ''} each" if runs.nunique() == 1
            else f"{runs.min()}-{runs.max()} runs each")
    n = len(runs)
    return f"median over {len(points)} points: {n} setting{'s' if n > 1 else ''}, {each}"


def per_model_table(cat: pd.DataFrame, results: Results) -> pd.DataFrame:
    """Points with several instances: what each model held and how its requests fared.

    GPU memory is the instance's process tree (NVML, or the simulated device) from the
    moment all servers were ready to the end; KV held is its kvcached segment's maximum.
    """
    rows = []
    multi = cat[pd.to_numeric(cat.get("n_instances"), errors="coerce").fillna(1) > 1]
    mem, req = results.memory, results.requests
    for _, r in multi.iterrows():
        ready = _num(r.get("ready_time"))
        m = mem[(mem["point"] == r["point"])] if not mem.empty else mem
        if not math.isnan(ready):
            m = m[m["time"] >= ready]
        q = req[req["point"] == r["point"]] if not req.empty else req
        for inst in sorted(set(q.get("instance", [])) | set(m["instance"]) - {""}):
            gpu = m[(m["instance"] == inst) & (m["metric"] == "process_gpu_bytes")]["value"]
            kv = m[(m["instance"] == inst) & (m["metric"] == "kv_held_bytes")]["value"]
            qi = q[q["instance"] == inst]
            ok = qi[qi["ok"]] if not qi.empty else qi
            rows.append({
                "point": str(r["point"]), "label": str(r.get("label", "")), "instance": inst,
                "GPU held median GiB": _f(gpu.median() / GIB if len(gpu) else math.nan),
                "GPU held max GiB": _f(gpu.max() / GIB if len(gpu) else math.nan),
                "KV held max GiB": _f(kv.max() / GIB if len(kv) else math.nan),
                "E2E p50 s": _f(ok["e2e_s"].median() if len(ok) else math.nan, 3),
                "TTFT p50 ms": _f(ok["ttft_s"].median() * 1e3 if len(ok) else math.nan, 1),
                "failed req": f"{len(qi) - len(ok)}/{len(qi)}",
            })
    return pd.DataFrame(rows)


def _f(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def failed_table(cat: pd.DataFrame) -> pd.DataFrame:
    """Points whose status is not ok, with their error."""
    if cat.empty:
        return pd.DataFrame(columns=["point", "label", "status", "error"])
    bad = cat[cat["status"] != "ok"]
    return pd.DataFrame({
        "point": bad["point"].astype(str),
        "label": bad.get("label", pd.Series("", index=bad.index)).fillna("").astype(str),
        "status": bad["status"].astype(str),
        "error": bad["error"].fillna("").astype(str),
    })


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame of strings."""
    if df.empty:
        return "_(none)_\n"

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def print_summary(results: Results | pd.DataFrame, console: Any = None) -> None:
    """A short rich table of the points (idle/peak VRAM, latency, failures) on the terminal."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cat = results if isinstance(results, pd.DataFrame) else add_savings(catalog(results))
    table = Table(title="kvexp points")
    cols = ["point", "label", "status", "engine", "idle VRAM GiB", "peak VRAM GiB",
            "saved idle GiB", "E2E p50 s", "TTFT p50 ms", "ITL p50 ms", "SLO attainment %",
            "goodput req/s", "failed req"]
    short = {"idle VRAM GiB": "idle GiB", "peak VRAM GiB": "peak GiB", "saved idle GiB":
             "saved GiB", "E2E p50 s": "E2E s", "TTFT p50 ms": "TTFT ms", "ITL p50 ms": "ITL ms",
             "SLO attainment %": "SLO %", "goodput req/s": "good/s",
             "failed req": "failed"}  # p50s; narrow enough for an 80-column terminal
    for c in cols:
        if c == "label":
            table.add_column(c, min_width=20, overflow="fold")
        else:
            table.add_column(short.get(c, c), justify="left" if c in ("point", "status", "engine")
                             else "right")
    disp = point_table(cat) if not cat.empty else pd.DataFrame(columns=cols)
    for _, r in disp.iterrows():
        style = None if r["status"] == "ok" else "red"
        table.add_row(*[Text(str(r[c])) for c in cols], style=style)  # no markup in labels
    # Not a terminal (a log file, CI): do not crop the table to the 80-column default.
    (console or Console(width=None if sys.stdout.isatty() else 160)).print(table)
