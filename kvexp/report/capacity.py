"""The report's capacity part, from a capacity search's capacity.json (kvexp/capacity/):
the answer first, a table per allocator, the points it rests on, attainment against N with
intervals, and memory per model over time at N*."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kvexp.capacity.answer import FILE
from kvexp.report.figures.base import Figure, palette, plt, save
from kvexp.report.figures.models import per_instance, stack_panel
from kvexp.report.html import Section
from kvexp.results import Results

HEADING = "Capacity: models per GPU"


def load(root: Path) -> dict[str, Any] | None:
    """capacity.json of a sweep folder, or None (not a capacity search)."""
    path = Path(root) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _answers(cap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cap.items() if not k.startswith("_")}


def _share(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _interval(iv: list[float] | None) -> str:
    return "-" if not iv else f"[{iv[0]:.3f}, {iv[1]:.3f}]"


def headline(cap: dict[str, Any]) -> list[str]:
    meta = cap["_meta"]
    lines = list(meta.get("answers", []))
    if meta.get("status") != "done":
        lines.append(f"The search did not finish ({meta.get('status')}): partial answer.")
    if meta.get("simulated_engines") and meta.get("engine") == "sim":
        lines.append("Planned on the simulated engine only: a sim answer, not measured on a GPU.")
    return lines


def answer_table(cap: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for alloc, a in _answers(cap).items():
        real = [p for p in a["points"] if p["engine"] == a["engine"] and p["points"]]
        rows.append({"allocator": alloc, "models per GPU": a["max_n"], "engine": a["engine"],
                     "planned (sim)": a["planned_max_n"],
                     "attainment at N*": _share(a["attainment"]),
                     "interval": _interval(a["interval"]),
                     "uncertain": "yes" if a.get("uncertain") else "no",
                     f"points on {a['engine']}": sum(len(p["points"]) for p in real),
                     "N*+1": a["limit"] or "-"})
    return pd.DataFrame(rows)


def points_table(cap: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for p in cap["_meta"]["probes"]:
        rows.append({"phase": p["phase"], "allocator": p["allocator"], "N": p["n"],
                     "engine": p["engine"], "points": " ".join(p["points"]) or "-",
                     "attainment": _share(p["attainment"]), "interval": _interval(p["interval"]),
                     "requests": p["requests"], "met": "yes" if p["met"] else "no",
                     "start-up s": " ".join(f"{s:.0f}" for s in p["startup_s"]) or "-",
                     "why not": p["no_room"] or p["error"] or "-"})
    return pd.DataFrame(rows)


def sections(cap: dict[str, Any]) -> list[Section]:
    meta = cap["_meta"]
    return [
        Section(HEADING, answer_table(cap),
                f"Per allocator: the largest N whose SLO attainment (requests meeting "
                f"{meta['slo_words']}) is at least {meta['target']:.0%}, with its "
                f"{meta['confidence']:.0%} Wilson interval. 'uncertain': an interval at N* or "
                f"N*+1 holds the target. N*+1 says why one more does not fit or meet it."),
        Section("Capacity: points of the search", points_table(cap),
                "In the order they ran: 'plan' on the planning engine (bisection over N), "
                "'confirm' on the run's engine (N* and N*+1, then a step at a time while it "
                "disagrees). No room: refused from the memory model before any server "
                "started. Start-up: launch to all servers ready, per point."),
    ]


def attainment_vs_n(cap: dict[str, Any], out: Path) -> Figure:
    key, title = "capacity_attainment", "Capacity: SLO attainment against N"
    probes = [p for p in cap["_meta"]["probes"] if p["attainment"] is not None]
    if not probes:
        return Figure(key, title, None, "No N was measured.")
    target = cap["_meta"]["target"]
    colours = palette(sorted({p["allocator"] for p in probes}))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for (alloc, engine), group in pd.DataFrame(probes).groupby(["allocator", "engine"]):
        group = group.sort_values("n")
        lo = group["attainment"] - group["interval"].str[0]
        hi = group["interval"].str[1] - group["attainment"]
        ax.errorbar(group["n"], group["attainment"], yerr=[lo, hi], capsize=3,
                    marker="o" if engine != "sim" else "s", ls="-" if engine != "sim" else ":",
                    color=colours[alloc], label=f"{alloc} ({engine})")
    ax.axhline(target, color="k", lw=1, ls="--", label=f"target {target:.0%}")
    for p in cap["_meta"]["probes"]:
        if p["no_room"]:
            ax.axvline(p["n"], color=colours.get(p["allocator"], "0.5"), lw=0.8, alpha=0.4)
    ax.set_xlabel("models on the GPU (N)")
    ax.set_ylabel("SLO attainment")
    ax.legend(fontsize=8, loc="lower left")
    return Figure(key, title, save(fig, out, key),
                  "Bars: Wilson intervals. Faint vertical lines: an N with no room in memory "
                  "(not run). Dotted: the simulated engine (simulated, not measured).")


def memory_at_max_n(cap: dict[str, Any], results: Results | None, out: Path) -> Figure:
    key, title = "capacity_memory", "Capacity: memory per model over time at N*"
    if results is None:
        return Figure(key, title, None, "No results.")
    shown = []
    for alloc, a in _answers(cap).items():
        at = [p for p in a["points"] if p["n"] == a["max_n"] and p["engine"] == a["engine"]
              and p["points"]]
        if at:
            shown.append((alloc, a, at[-1]["points"][0]))
    if not shown:
        return Figure(key, title, None, "No allocator has a measured N*.")
    fig, axes = plt.subplots(1, len(shown), figsize=(6.0 * len(shown), 3.8), squeeze=False)
    for ax, (alloc, a, point) in zip(axes[0], shown, strict=True):
        m = results.memory[results.memory["point"] == point]
        stack, what = per_instance(m) if not m.empty else (pd.DataFrame(), "")
        sim = " (simulated)" if a["engine"] == "sim" else ""
        ax.set_title(f"{alloc}: N*={a['max_n']}, point {point}{sim}", fontsize=9)
        if stack.empty:
            continue
        row = results.points[results.points["point"] == point]
        t0 = float(row["workload_start"].iloc[0]) if "workload_start" in row and len(row) \
            else float(stack.index.min())
        stack_panel(ax, m, stack, t0, what, None)
        ax.legend(fontsize=7, loc="upper right")
    return Figure(key, title, save(fig, out, key), "Stacked per model (m0 is the most popular).")


def parts(root: Path, results: Results | None, out: Path
          ) -> tuple[list[str], list[Section], list[Figure]]:
    """(headline lines, sections, figures) of a capacity search under `root`; empty if none."""
    cap = load(root)
    if cap is None:
        return [], [], []
    return (headline(cap), sections(cap),
            [attainment_vs_n(cap, out), memory_at_max_n(cap, results, out)])
