"""Several models on one device: each instance's memory stacked under the device total."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvexp.report.figures.base import Figure, limit_note, plt, point_memory, save, sim_suffix, t0_of
from kvexp.results import Results
from kvexp.results.summary import DEVICE_SOURCES, GIB, device_series


def per_instance(m: pd.DataFrame) -> tuple[pd.DataFrame, str]:
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


def stack_panel(ax: plt.Axes, m: pd.DataFrame, stack: pd.DataFrame, t0: float, what: str,
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
        m = point_memory(results, r["point"])
        stack, what = per_instance(m) if not m.empty else (pd.DataFrame(), "")
        sim = sim_suffix(cat[cat["point"] == r["point"]])
        ax.set_title(f"{r['point']}: {r.get('label', '')}{sim}", fontsize=9)
        if stack.empty:
            ax.set_title(f"{r['point']}: no per-instance samples", fontsize=9)
            zax.set_visible(False)
            continue
        drawn += 1
        whats.add(what)
        t0 = t0_of(r, float(stack.index.min()))
        total = m[m["source"].isin(DEVICE_SOURCES) & (m["metric"] == "device_total_bytes")]
        total_gib = float(total["value"].max()) / GIB if not total.empty else None
        stack_panel(ax, m, stack, t0, what, total_gib)
        ax.legend(fontsize=7, loc="center right")
        top = float(stack.sum(axis=1).max()) / GIB
        if total_gib is not None and top < total_gib / 4:
            stack_panel(zax, m, stack, t0, what, None)
            zax.set_title(f"zoom (device total {total_gib:.0f} GiB not shown)", fontsize=8)
        else:
            zax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return Figure(key, title, None, "Multi-model points have no per-instance samples.")
    return Figure(key, title, save(fig, out_dir, key),
                  f"Stacked: {', '.join(sorted(whats))}."
                  + limit_note(len(shown), len(multi), "multi-model points"))
