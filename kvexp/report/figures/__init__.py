"""The report's figures, one function per figure; FIGURES is their catalog, in report order.

Each function takes the point catalog (`catalog.catalog`) and the sweep's `Results`, writes
one PNG into `out_dir` and returns a `Figure`; with no data to draw it writes nothing and
returns a `Figure` whose `note` says why. Modules: base (shared parts), memory (one device),
models (several models on one device), latency, slo, params (against the swept parameter).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import seaborn as sns

from kvexp.report.figures.base import Figure, plt
from kvexp.report.figures.latency import latency_distributions, latency_vs_param
from kvexp.report.figures.memory import (
    host_rss_series,
    kv_held_vs_used,
    memory_over_time,
    memory_vs_param,
)
from kvexp.report.figures.models import memory_per_model
from kvexp.report.figures.params import swept_parameters
from kvexp.report.figures.slo import slo_attainment_vs_param
from kvexp.results import Results

__all__ = ["FIGURES", "Figure", "host_rss_series", "render_figures", "swept_parameters"]

FigureFn = Callable[[pd.DataFrame, Results, Path], Figure]

FIGURES: list[tuple[str, str, FigureFn]] = [
    ("memory_over_time", "GPU memory over time", memory_over_time),
    ("latency_distributions", "Request latency distributions", latency_distributions),
    ("latency_vs_param", "TTFT and ITL percentiles", latency_vs_param),
    ("memory_vs_param", "Idle and peak memory", memory_vs_param),
    ("slo_attainment_vs_param", "SLO attainment", slo_attainment_vs_param),
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
