"""What every figure module shares: the Figure record, colours, panel grids, time origins.

Figures use seaborn on matplotlib's Agg backend. Time axes are seconds since the point's
workload start. Runs are grouped into panels by their setting (config choices without
allocator and repeat), coloured by allocator, so legends stay short from one point to dozens.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from kvexp.report.elasticity import waves_of  # noqa: E402
from kvexp.results import Results  # noqa: E402

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


def grid(n: int, width: float = 5.4, height: float = 3.4, ncols_max: int = 3):
    ncols = max(1, min(ncols_max, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def save(fig: plt.Figure, out_dir: Path, key: str) -> Path:
    path = out_dir / f"{key}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def settings_of(cat: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(cat["setting"].fillna("")))


def panel_title(setting: str) -> str:
    """A panel title: the setting's overrides, wrapped to stay inside a panel."""
    return textwrap.fill(setting, 60, max_lines=3, placeholder=" ...") or "(defaults)"


def limit_note(shown: int, total: int, what: str) -> str:
    return f" Showing the first {shown} of {total} {what}." if total > shown else ""


def point_memory(results: Results, point: str) -> pd.DataFrame:
    m = results.memory
    return m[m["point"] == point] if not m.empty else m


def t0_of(row: pd.Series, fallback: float) -> float:
    w0 = row.get("workload_start")
    try:
        w0 = float(w0)
    except (TypeError, ValueError):
        w0 = math.nan
    return fallback if math.isnan(w0) else w0


def sim_suffix(rows: pd.DataFrame) -> str:
    return " (simulated device)" if rows.get("simulated", pd.Series(False)).any() else ""


def shade_waves(ax: plt.Axes, results: Results, row: pd.Series, t0: float) -> bool:
    req = results.requests
    req = req[req["point"] == row["point"]] if not req.empty else req
    waves = [w for w in waves_of(req, row.to_dict()) if w.index >= 0]
    for w in waves:
        ax.axvspan(w.start - t0, w.end - t0, color="0.85", alpha=0.6, lw=0, zorder=0)
    return bool(waves)
