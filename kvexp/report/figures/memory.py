"""Memory figures of one device: memory over time, idle/peak against the swept parameter,
kvcached's held vs used KV memory."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from kvexp.report.figures.base import (
    DPI,
    MAX_PANELS,
    MAX_POINT_PANELS,
    Figure,
    grid,
    limit_note,
    palette,
    panel_title,
    plt,
    point_memory,
    save,
    settings_of,
    shade_waves,
    sim_suffix,
    t0_of,
)
from kvexp.report.figures.params import against_param
from kvexp.results import Results
from kvexp.results.summary import GIB, as_series_frame, device_series, per_tick


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
        s = series(point_memory(results, r["point"]))
        t0 = t0_of(r, float(s["time"].min()))
        if first:
            shaded = shade_waves(ax, results, r, t0)
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
    have = [p for p in cat["point"] if not device_series(point_memory(results, p)).empty]
    host = not have  # no GPU signal at all (vLLM on the CPU): show the servers' host memory
    if host:
        have = [p for p in cat["point"]
                if not host_rss_series(point_memory(results, p)).empty]
        title = "Server memory over time (host RSS: no GPU device signal)"
    rows = cat[cat["point"].isin(have)]
    if rows.empty:
        return Figure(key, title, None, "No device memory samples.")
    settings = settings_of(rows)
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
        ax.set_title(panel_title(setting) + sim_suffix(panel), fontsize=9)
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
    return Figure(key, title, path, limit_note(len(shown), len(settings), "settings"))


def memory_vs_param(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(4) Idle and peak device memory (GiB) against the first swept parameter."""
    metrics = [("idle VRAM", "idle_device_gib", 1.0), ("peak VRAM", "peak_device_gib", 1.0)]
    return against_param(cat, metrics, "device memory (GiB)", "memory_vs_param",
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
    fig, axes = grid(len(shown))
    for ax, (_, r) in zip(axes, shown.iterrows(), strict=True):
        m = point_memory(results, r["point"])
        held = per_tick(m, "kvcached", "kv_held_bytes")
        used = per_tick(m, "kvcached", "kv_used_bytes")
        t0 = t0_of(r, float(held.index.min()))
        shade_waves(ax, results, r, t0)
        ax.plot(held.index - t0, held / GIB, label="held (used + prealloc)", lw=1.4)
        ax.plot(used.index - t0, used / GIB, label="used", lw=1.4)
        both = pd.concat([held.rename("h"), used.rename("u")], axis=1).interpolate().dropna()
        ax.fill_between(both.index - t0, both["u"] / GIB, both["h"] / GIB, alpha=0.2,
                        label="prealloc reserve")
        ax.set_title(f"{r['point']}: {r.get('label', '')}", fontsize=9)
        ax.set_xlabel("time since workload start (s)")
        ax.set_ylabel("KV memory (GiB)")
    axes[0].legend(fontsize=8, loc="upper left")
    return Figure(key, title, save(fig, out_dir, key),
                  "One run per setting (its first repeat)."
                  + limit_note(len(shown), len(rows), "kvcached settings"))
