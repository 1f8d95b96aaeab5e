"""Latency figures: distributions per setting, percentiles against the swept parameter."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import seaborn as sns

from kvexp.report.figures.base import (
    MAX_PANELS,
    Figure,
    limit_note,
    palette,
    panel_title,
    plt,
    save,
    settings_of,
)
from kvexp.report.figures.params import against_param
from kvexp.results import Results


def latency_distributions(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(2) E2E (s) and TTFT (ms) of ok requests per setting, boxes coloured by allocator."""
    key, title = "latency_distributions", "Request latency distributions"
    req = results.requests
    if req.empty or not req["ok"].astype(bool).any():
        return Figure(key, title, None, "No successful requests.")
    ok = req[req["ok"].astype(bool)].merge(cat[["point", "allocator", "setting"]], on="point")
    settings = settings_of(ok)
    shown = settings[:MAX_PANELS]
    ok = ok[ok["setting"].isin(shown)].copy()
    ok["setting"] = ok["setting"].map(panel_title)
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
    return Figure(key, title, save(fig, out_dir, key),
                  limit_note(len(shown), len(settings), "settings"))


def latency_vs_param(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(3) TTFT and ITL p50/p99 (ms) against the first swept parameter, a line per allocator."""
    metrics = [("TTFT p50", "ttft_p50_s", 1e3), ("TTFT p99", "ttft_p99_s", 1e3),
               ("ITL p50", "itl_p50_s", 1e3), ("ITL p99", "itl_p99_s", 1e3)]
    return against_param(cat, metrics, "latency (ms)", "latency_vs_param",
                          "TTFT and ITL percentiles", out_dir)
