"""SLO attainment against the swept parameter: a line per allocator, a panel per instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvexp.report.figures.base import DPI, Figure, grid, palette, plt
from kvexp.report.figures.params import is_number, swept_parameters
from kvexp.results import Results
from kvexp.results.slo import slo_counts

ALL = "all instances"


def attainment_table(cat: pd.DataFrame, results: Results) -> tuple[pd.DataFrame, str]:
    """Attainment per (swept value, allocator, instance) with its 95% Wilson interval.

    Requests of repeats (and of other swept parameters) at one x are pooled. `instance` is
    ALL for the whole point; each instance gets its own rows when a point has several.
    Returns the table and the x column's name ("" when nothing is swept).
    """
    params = swept_parameters(cat)
    req = results.requests
    if not params or req.empty or "slo_ok" not in req:
        return pd.DataFrame(), params[0] if params else ""
    x = params[0]
    ok = cat[cat["status"] == "ok"]
    xs = {r["point"]: r["params"].get(x) for _, r in ok.iterrows()}
    allocs = dict(zip(ok["point"], ok["allocator"], strict=True))
    req = req[req["point"].isin(xs)]
    if req.empty:
        return pd.DataFrame(), x
    req = req.assign(x=req["point"].map(xs).astype(str), allocator=req["point"].map(allocs))
    parts = [slo_counts(req.assign(instance=ALL), ["x", "allocator", "instance"])]
    if req.groupby("point")["instance"].nunique().max() > 1:
        parts.append(slo_counts(req, ["x", "allocator", "instance"]))
    table = pd.concat(parts, ignore_index=True)
    if all(is_number(v) for v in table["x"]):
        table["x"] = table["x"].astype(float)
    return table.sort_values(["instance", "allocator", "x"]), x


def slo_attainment_vs_param(cat: pd.DataFrame, results: Results, out_dir: Path) -> Figure:
    """(7) SLO attainment (%) against the first swept parameter, 95% Wilson interval bars."""
    key, title = "slo_attainment_vs_param", "SLO attainment"
    data, x = attainment_table(cat, results)
    if not x:
        return Figure(key, title, None, "No swept parameter (all points share one setting).")
    if data.empty:
        return Figure(key, title, None, "No request rows with slo_ok in the ok points.")
    panels = list(dict.fromkeys([ALL, *sorted(set(data["instance"]) - {ALL})]))
    colours = palette(list(data["allocator"]))
    fig, axes = grid(len(panels), width=5.0, height=3.4)
    numeric = data["x"].map(lambda v: isinstance(v, float)).all()
    labels = sorted(set(data["x"]), key=lambda v: (not isinstance(v, float), v))
    pos = {v: (v if numeric else float(i)) for i, v in enumerate(labels)}
    for ax, inst in zip(axes, panels, strict=True):
        panel = data[data["instance"] == inst]
        for alloc in [a for a in colours if a in set(panel["allocator"])]:
            d = panel[panel["allocator"] == alloc]
            xs = np.array([pos[v] for v in d["x"]])
            y = d["slo_attainment"].to_numpy() * 100
            err = np.vstack([y - d["slo_low"].to_numpy() * 100, d["slo_high"].to_numpy() * 100 - y])
            ax.errorbar(xs, y, yerr=err, color=colours[alloc], marker="o", capsize=3, lw=1.4,
                        label=alloc)
        ax.set_title(inst if inst != ALL else "all instances (per point)", fontsize=9)
        ax.set_xlabel(x)
        ax.set_ylabel("SLO attainment (%)")
        ax.set_ylim(-3, 103)
        if not numeric or len(labels) <= 12:
            ax.set_xticks([pos[v] for v in labels], [f"{v:g}" if numeric else str(v)
                                                     for v in labels])
        ax.legend(fontsize=8)
    fig.suptitle("SLO attainment (requests pooled over repeats, 95% Wilson interval)",
                 fontsize=11)
    path = out_dir / f"{key}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    n = data[data["instance"] == ALL]["n"]
    note = (f"x axis: {x}. Share of requests meeting every SLO (failed requests count as "
            f"missing it); {int(n.min())}-{int(n.max())} requests per marker.")
    return Figure(key, title, path, note)
