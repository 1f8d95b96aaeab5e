"""The report's figures (seaborn on matplotlib's Agg backend), one function per figure.

Each function takes the point catalog (`tables.catalog`) and the sweep's `Results`, writes one
PNG into `out_dir` and returns a `Figure`; with no data to draw it writes nothing and returns
a `Figure` whose `note` says why. Time axes are seconds since the point's workload start.
Runs are grouped into panels by their setting (config choices without allocator and repeat),
coloured by allocator, so legends stay short from one point to dozens.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from kvexp.report.elasticity import waves_of  # noqa: E402
from kvexp.report.tables import ALLOCATOR_KEYS, REPEAT_KEYS  # noqa: E402
from kvexp.results import Results  # noqa: E402
from kvexp.results.summary import DEVICE_SOURCES, GIB, as_series_frame, device_series, per_tick  # noqa: E402

MAX_PANELS = 24
MAX_POINT_PANELS = 12
DPI = 110
ALLOCATOR_ORDER = ("kvcached", "static")


@dataclass(frozen=True)
class Figure:
    """A figure of the report: where its PNG is (None if skipped) and a note for the reader."""

    key: str
    title: str
    path: Path | None
    note: str = ""


def palette(allocators: list[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per allocator: kvcached and static first, others after."""
    names = list(ALLOCATOR_ORDER) + sorted(set(allocators) - set(ALLOCATOR_ORDER))
    colours = sns.color_palette("deep", len(names))
    return dict(zip(names, colours, strict=True))


def _grid(n: int, width: float = 5.4, height: float = 3.4, ncols_max: int = 3):
    ncols = max(1, min(ncols_max, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig: plt.Figure, out_dir: Path, key: str) -> Path:
    path = out_dir / f"{key}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _settings(cat: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(cat["setting"].fillna("")))


def _title(setting: str) -> str:
    """A panel title: the setting's overrides, wrapped to stay inside a panel."""
    return textwrap.fill(setting, 60, max_lines=3, placeholder=" ...") or "(defaults)"


def _limit_note(shown: int, total: int, what: str) -> str:
    return f" Showing the first {shown} of {total} {what}." if total > shown else ""


def _point_memory(results: Results, point: str) -> pd.DataFrame:
    m = results.memory
    return m[m["point"] == point] if not m.empty else m


def _t0(row: pd.Series, fallback: float) -> float:
    w0 = row.get("workload_start")
    try:
        w0 = float(w0)
    except (TypeError, ValueError):
        w0 = math.nan
    return fallback if math.isnan(w0) else w0


def _sim_suffix(rows: pd.DataFrame) -> str:
    return " (simulated device)" if rows.get("simulated", pd.Series(False)).any() else ""


def _shade_waves(ax: plt.Axes, results: Results, row: pd.Series, t0: float) -> bool:
    req = results.requests
    req = req[req["point"] == row["point"]] if not req.empty else req
    waves = [w for w in waves_of(req, row.to_dict()) if w.index >= 0]
    for w in waves:
        ax.axvspan(w.start - t0, w.end - t0, color="0.85", alpha=0.6, lw=0, zorder=0)
    return bool(waves)


def host_rss_series(memory: pd.DataFrame) -> pd.DataFrame:
    """Host memory (RSS) of every server's process tree, summed per tick: the memory
    signal of runs without a GPU device signal (vLLM on the CPU)."""
    return as_series_frame(per_tick(memory, "process", "rss_bytes"))


def _memory_panel(ax: plt.Axes, panel: pd.DataFrame, results: Results,
                  colours: dict[str, tuple[float, float, float]], host: bool = False) -> bool:
    """Each run's device memory (or, with `host`, its servers' host RSS) and idle level on
    one axis; waves of its first run shaded."""
    shaded, first = False, True
    series = host_rss_series if host else device_series
    for _, r in panel.sort_values("allocator").iterrows():
        s = series(_point_memory(results, r["point"]))
        t0 = _t0(r, float(s["time"].min()))
        if first:
            shaded = _shade_waves(ax, results, r, t0)
            first = False
        c = colours.get(r["allocator"], "0.3")
        ax.plot(s["time"] - t0, s["value"] / GIB, color=c, lw=1.4, alpha=0.85)
        idle = r.get("idle_device_gib")
        if idle is not None and not pd.isna(idle) and not host:
            ax.axhline(float(idle), color=c, ls="--", lw=1, alpha=0.9)
    ax.set_xlabel("time since workload start (s)")
    ax.set_ylabel("servers' host memory, RSS (GiB)" if host else "device memory used (GiB)")
    return shaded


def memory_over_time(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(1) Device memory (GiB) over time per setting, a line per run coloured by allocator.

    Where a static pool shares a panel with an elastic one, a zoomed panel below shows the
    elastic runs on their own scale (a static pool's tens of GiB flatten them otherwise).
    """
    key, title = "memory_over_time", "GPU memory over time"
    have = [p for p in cat["point"] if not device_series(_point_memory(results, p)).empty]
    host = not have  # no GPU signal at all (vLLM on the CPU): show the servers' host memory
    if host:
        have = [p for p in cat["point"]
                if not host_rss_series(_point_memory(results, p)).empty]
        title = "Server memory over time (host RSS: no GPU device signal)"
    rows = cat[cat["point"].isin(have)]
    if rows.empty:
        return Figure(key, title, None, "No device memory samples.")
    settings = _settings(rows)
    shown = settings[:MAX_PANELS]
    colours = palette(list(rows["allocator"]))
    is_static = rows["allocator"] == "static"
    zoom = bool(is_static.any() and (~is_static).any())
    per = 2 if zoom else 1
    ncols = min(3, len(shown))
    blocks = math.ceil(len(shown) / ncols)
    height = (3.4 + 2.2 * zoom) * blocks + 0.6
    fig, grid = plt.subplots(
        per * blocks, ncols, squeeze=False, figsize=(5.4 * ncols, height),
        gridspec_kw={"height_ratios": [2.0, 1.3] * blocks} if zoom else None,
    )
    for ax in grid.flat:
        ax.set_visible(False)
    shaded = False
    for i, setting in enumerate(shown):
        panel = rows[rows["setting"].fillna("") == setting]
        ax = grid[per * (i // ncols), i % ncols]
        ax.set_visible(True)
        shaded |= _memory_panel(ax, panel, results, colours, host)
        ax.set_title(_title(setting) + _sim_suffix(panel), fontsize=9)
        elastic = panel[panel["allocator"] != "static"]
        if zoom and not elastic.empty and len(elastic) < len(panel):
            zax = grid[per * (i // ncols) + 1, i % ncols]
            zax.set_visible(True)
            _memory_panel(zax, elastic, results, colours, host)
            zax.set_title("zoom: without static", fontsize=8)
    handles = [Line2D([], [], color=colours[a], lw=2, label=a)
               for a in colours if a in set(rows["allocator"])]
    if not host:
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1, label="idle level"))
    if shaded:
        handles.append(Patch(color="0.85", label="workload wave"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    path = out_dir / f"{key}.png"
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Figure(key, title, path, _limit_note(len(shown), len(settings), "settings"))


def latency_distributions(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(2) E2E (s) and TTFT (ms) of ok requests per setting, boxes coloured by allocator."""
    key, title = "latency_distributions", "Request latency distributions"
    req = results.requests
    if req.empty or not req["ok"].astype(bool).any():
        return Figure(key, title, None, "No successful requests.")
    ok = req[req["ok"].astype(bool)].merge(cat[["point", "allocator", "setting"]], on="point")
    settings = _settings(ok)
    shown = settings[:MAX_PANELS]
    ok = ok[ok["setting"].isin(shown)].copy()
    ok["setting"] = ok["setting"].map(_title)
    ok["ttft_ms"] = ok["ttft_s"] * 1e3
    colours = palette(list(ok["allocator"]))
    order = [a for a in colours if a in set(ok["allocator"])]
    height = max(2.6, 0.45 * len(shown) * max(1, len(order)) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    for ax, col, label in ((axes[0], "e2e_s", "E2E latency (s)"),
                           (axes[1], "ttft_ms", "TTFT (ms)")):
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
            warnings.simplefilter("ignore", DeprecationWarning)
            sns.boxplot(data=ok, x=col, y="setting", hue="allocator", hue_order=order,
                        palette=colours, ax=ax, fliersize=2, linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("setting" if ax is axes[0] else "")
        if ax is not axes[0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle("Request latency per setting (successful requests)", fontsize=11)
    return Figure(key, title, _save(fig, out_dir, key),
                  _limit_note(len(shown), len(settings), "settings"))


def swept_parameters(cat: pd.DataFrame) -> list[str]:
    """Override keys that vary across the ok points, allocator and repeat excepted."""
    ok = cat[cat["status"] == "ok"]
    keys: dict[str, set[str]] = {}
    for params in ok["params"]:
        for k, v in params.items():
            if k not in ALLOCATOR_KEYS + REPEAT_KEYS:
                keys.setdefault(k, set()).add(v)
    varying = [k for k, vals in keys.items() if len(vals) > 1]
    varying += [k for k in keys if k not in varying and any(k not in p for p in ok["params"])]
    numeric = [k for k in varying if all(_is_number(p.get(k)) for p in ok["params"])]
    return numeric + [k for k in varying if k not in numeric]


def _is_number(v: str | None) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _against_param(cat: pd.DataFrame, metrics: list[tuple[str, str, float]], unit: str,
                   key: str, title: str, out_dir: Path) -> Figure:
    params = swept_parameters(cat)
    if not params:
        return Figure(key, title, None, "No swept parameter (all points share one setting).")
    x = params[0]
    style_name = ", ".join(params[1:]) or "other"
    ok = cat[cat["status"] == "ok"]
    rows = []
    for _, r in ok.iterrows():
        xv = r["params"].get(x)
        xv = float(xv) if _is_number(xv) else str(xv)
        other = " ".join(f"{k}={r['params'].get(k, '-')}" for k in params[1:])
        other = other or "all"
        for name, col, scale in metrics:
            v = r.get(col)
            if v is not None and not pd.isna(v):
                rows.append({x: xv, "value": float(v) * scale, "metric": name,
                             "allocator": r["allocator"], style_name: other})
    data = pd.DataFrame(rows)
    if data.empty:
        return Figure(key, title, None, "No values for these metrics in the ok points.")
    colours = palette(list(data["allocator"]))
    order = [a for a in colours if a in set(data["allocator"])]
    styles = data[style_name].nunique()
    g = sns.relplot(
        data=data, x=x, y="value", hue="allocator", hue_order=order, palette=colours,
        style=style_name if 1 < styles <= 6 else None, col="metric",
        col_order=[m[0] for m in metrics if m[0] in set(data["metric"])],
        col_wrap=min(2, data["metric"].nunique()), kind="line", marker="o",
        estimator="median", errorbar=("ci", 95), err_style="bars", seed=0, height=3.2,
        aspect=1.4,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels(x, unit)
    xs = data[x].unique()
    if len(xs) <= 12 and all(isinstance(v, float) for v in xs):
        for ax in g.axes.flat:
            ax.set_xticks(sorted(xs))
    g.set_titles("{col_name}")
    g.figure.suptitle(f"{title} (median over repeats, 95% CI)", y=1.02, fontsize=11)
    path = out_dir / f"{key}.png"
    g.figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(g.figure)
    note = f"x axis: {x}."
    if styles > 6:
        note += f" Other swept parameters ({', '.join(params[1:])}) are pooled."
    return Figure(key, title, path, note)


def latency_vs_param(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(3) TTFT and ITL p50/p99 (ms) against the first swept parameter, a line per allocator."""
    metrics = [("TTFT p50", "ttft_p50_s", 1e3), ("TTFT p99", "ttft_p99_s", 1e3),
               ("ITL p50", "itl_p50_s", 1e3), ("ITL p99", "itl_p99_s", 1e3)]
    return _against_param(cat, metrics, "latency (ms)", "latency_vs_param",
                          "TTFT and ITL percentiles", out_dir)


def memory_vs_param(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(4) Idle and peak device memory (GiB) against the first swept parameter."""
    metrics = [("idle VRAM", "idle_device_gib", 1.0), ("peak VRAM", "peak_device_gib", 1.0)]
    return _against_param(cat, metrics, "device memory (GiB)", "memory_vs_param",
                          "Idle and peak memory", out_dir)


def kv_held_vs_used(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(5) kvcached's held and used KV memory (GiB, summed over instances) over time."""
    key, title = "kv_held_vs_used", "KV memory held vs used (kvcached)"
    mem = results.memory
    kv_points = set(mem.loc[mem["source"] == "kvcached", "point"]) if not mem.empty else set()
    rows = cat[cat["point"].isin(kv_points)]
    if rows.empty:
        return Figure(key, title, None, "No kvcached segment samples (no kvcached point).")
    rows = rows.drop_duplicates("group")  # one run per group: repeats look alike
    shown = rows.iloc[:MAX_POINT_PANELS]
    fig, axes = _grid(len(shown))
    for ax, (_, r) in zip(axes, shown.iterrows(), strict=True):
        m = _point_memory(results, r["point"])
        held = per_tick(m, "kvcached", "kv_held_bytes")
        used = per_tick(m, "kvcached", "kv_used_bytes")
        t0 = _t0(r, float(held.index.min()))
        _shade_waves(ax, results, r, t0)
        ax.plot(held.index - t0, held / GIB, label="held (used + prealloc)", lw=1.4)
        ax.plot(used.index - t0, used / GIB, label="used", lw=1.4)
        both = pd.concat([held.rename("h"), used.rename("u")], axis=1).interpolate().dropna()
        ax.fill_between(both.index - t0, both["u"] / GIB, both["h"] / GIB, alpha=0.2,
                        label="prealloc reserve")
        ax.set_title(f"{r['point']}: {r.get('label', '')}", fontsize=9)
        ax.set_xlabel("time since workload start (s)")
        ax.set_ylabel("KV memory (GiB)")
    axes[0].legend(fontsize=8, loc="upper left")
    return Figure(key, title, _save(fig, out_dir, key),
                  "One run per setting (its first repeat)."
                  + _limit_note(len(shown), len(rows), "kvcached settings"))


def _per_instance(m: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per-instance GPU bytes on a common time grid: process figures, else kv_held."""
    proc = m[m["source"].isin(DEVICE_SOURCES) & (m["metric"] == "process_gpu_bytes")
             & (m["instance"] != "")]
    what = "process GPU memory"
    if proc.empty:
        proc = m[(m["source"] == "kvcached") & (m["metric"] == "kv_held_bytes")]
        what = "kvcached held KV memory"
    if proc.empty:
        return pd.DataFrame(), ""
    grid = np.unique(proc["time"].to_numpy(float))
    cols = {}
    for inst, s in proc.groupby("instance"):
        s = s.sort_values("time")
        cols[inst] = np.interp(grid, s["time"].to_numpy(float), s["value"].to_numpy(float),
                               left=np.nan, right=np.nan)
    return pd.DataFrame(cols, index=grid).fillna(0.0), what


def _stack_panel(ax: plt.Axes, m: pd.DataFrame, stack: pd.DataFrame, t0: float, what: str,
                 total_gib: float | None) -> None:
    ax.stackplot(stack.index - t0, *(stack[c] / GIB for c in stack.columns),
                 labels=list(stack.columns), alpha=0.8)
    if total_gib is not None:
        ax.axhline(total_gib, color="k", lw=1.2, label="device total")
    used = device_series(m)
    if not used.empty:
        ax.plot(used["time"] - t0, used["value"] / GIB, color="0.2", ls=":", lw=1,
                label="device used")
    ax.set_xlabel("time since workload start (s)")
    ax.set_ylabel(f"{what} (GiB)")


def memory_per_model(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(6) Several models on one device: memory per instance stacked, the device total on top.

    One row per multi-model point; when the models use under a quarter of the device, a
    zoomed panel (without the total line) sits beside the full-scale one.
    """
    key, title = "memory_per_model", "Memory per model (stacked)"
    multi = cat[pd.to_numeric(cat["n_instances"], errors="coerce").fillna(1) > 1]
    if multi.empty:
        return Figure(key, title, None, "No point with several models (n_instances > 1).")
    shown = multi.iloc[:6]
    fig, grid = plt.subplots(len(shown), 2, figsize=(12.0, 3.6 * len(shown) + 0.4),
                             squeeze=False)
    drawn, whats = 0, set()
    for (ax, zax), (_, r) in zip(grid, shown.iterrows(), strict=True):
        m = _point_memory(results, r["point"])
        stack, what = _per_instance(m) if not m.empty else (pd.DataFrame(), "")
        sim = _sim_suffix(cat[cat["point"] == r["point"]])
        ax.set_title(f"{r['point']}: {r.get('label', '')}{sim}", fontsize=9)
        if stack.empty:
            ax.set_title(f"{r['point']}: no per-instance samples", fontsize=9)
            zax.set_visible(False)
            continue
        drawn += 1
        whats.add(what)
        t0 = _t0(r, float(stack.index.min()))
        total = m[m["source"].isin(DEVICE_SOURCES) & (m["metric"] == "device_total_bytes")]
        total_gib = float(total["value"].max()) / GIB if not total.empty else None
        _stack_panel(ax, m, stack, t0, what, total_gib)
        ax.legend(fontsize=7, loc="center right")
        top = float(stack.sum(axis=1).max()) / GIB
        if total_gib is not None and top < total_gib / 4:
            _stack_panel(zax, m, stack, t0, what, None)
            zax.set_title(f"zoom (device total {total_gib:.0f} GiB not shown)", fontsize=8)
        else:
            zax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return Figure(key, title, None, "Multi-model points have no per-instance samples.")
    return Figure(key, title, _save(fig, out_dir, key),
                  f"Stacked: {', '.join(sorted(whats))}."
                  + _limit_note(len(shown), len(multi), "multi-model points"))


FigureFn = Callable[[pd.DataFrame, Results, Path], Figure]

FIGURES: list[tuple[str, str, FigureFn]] = [
    ("memory_over_time", "GPU memory over time", memory_over_time),
    ("latency_distributions", "Request latency distributions", latency_distributions),
    ("latency_vs_param", "TTFT and ITL percentiles", latency_vs_param),
    ("memory_vs_param", "Idle and peak memory", memory_vs_param),
    ("kv_held_vs_used", "KV memory held vs used (kvcached)", kv_held_vs_used),
    ("memory_per_model", "Memory per model (stacked)", memory_per_model),
]


def render_figures(cat: pd.DataFrame, results: Results, out_dir: Path) -> list[Figure]:
    """Every figure; one that fails is reported as skipped with its error, not raised."""
    sns.set_theme(style="whitegrid", context="paper")
    out: list[Figure] = []
    for key, title, fn in FIGURES:
        try:
            out.append(fn(cat, results, out_dir))
        except Exception as e:  # a broken figure must not lose the rest of the report
            plt.close("all")
            out.append(Figure(key, title, None, f"Could not be drawn: {type(e).__name__}: {e}"))
    return out
