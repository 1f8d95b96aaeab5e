"""`render_report(root)`: a sweep's (or one point's) results as `<root>/report/`.

Writes summary.md (tables, figure links, definitions), report.html (the same, self-contained,
figures embedded), one PNG per figure, and points.csv / comparison.csv for further analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from kvexp.report.figures import Figure, render_figures, swept_parameters
from kvexp.report.html import HEADLINE_TITLE, NO_PAIR, Page, Section, is_group_line, render_html
from kvexp.report.stats import MIN_PAIRS
from kvexp.report.tables import (
    add_savings,
    catalog,
    common_params,
    comparison_table,
    elasticity_display,
    failed_table,
    headline_lines,
    per_model_table,
    point_table,
    print_summary,
    to_markdown,
    tutorial_lines,
)
from kvexp.results import Results, load
from kvexp.results.jsonfile import write_text_atomic
from kvexp.results.summary import MIN_P99_N

__all__ = ["DEFINITIONS", "print_summary", "render_report"]

DEFINITIONS: list[tuple[str, str]] = [
    ("Windows", "idle = [server ready, workload start); load = [workload start, workload end]; "
     "after = the second half of [workload end, end]. Memory is GiB (2^30 bytes)."),
    ("idle VRAM / peak VRAM", "Device memory used (NVML, or the simulated device): the median "
     "over the idle window / the maximum from ready to the end."),
    ("VRAM flex", "peak VRAM - idle VRAM."),
    ("saved idle / saved mean", "For a kvcached point: the static baseline's idle VRAM (mean VRAM "
     "under load) minus the point's. The baseline is the ok static point with the same other "
     "settings and repeat, else the median of those with the same other settings."),
    ("E2E, TTFT, ITL", "As vLLM's benchmark client: TTFT: request sent -> the first chunk with "
     "choices; ITL: every gap between such chunks; E2E: sent -> the last one (README, "
     "'Latency definitions'). Percentiles over successful requests, "
     "with their n ('lat n': requests; 'ITL n': gaps); a p99 over fewer than "
     f"{MIN_P99_N} requests is withheld ('n<{MIN_P99_N}'). Failed requests are counted in "
     "'failed req'."),
    ("busy s / out tok/s", "busy s: first send to last completion of the point's requests "
     "(no lead-in, tail or idle server time). out tok/s: completion tokens of successful "
     "requests / busy s."),
    ("SLO attainment / goodput", "A request meets the SLO (slo_ok) when it succeeded and its "
     "TTFT, TPOT, every ITL gap and E2E are within the limits given (slo group; null = none). "
     "Attainment = share of requests meeting it, with its 95% Wilson interval; goodput = those "
     "requests / busy s (vLLM's --goodput, whose duration is its run's first send to last "
     "reply)."),
    ("Wave", "The requests of one wave index: first sent_time to last end_time. A point without "
     "wave indices counts as one wave over its load window."),
    ("grow s", "Time from a wave's start to the first sample where the signal (device memory, or "
     "kvcached's held KV) exceeds the pre-wave level by more than the threshold; pre-wave level "
     "= median of the samples in the second before the wave; threshold = max(2 MiB page, 1% of "
     "the pre-wave level). Median over the waves that grew; '-' if none did."),
    ("release s", "Time from a wave's end to the first sample back within the threshold of the "
     "pre-wave level, before the next wave starts. Median over released waves; '-' if memory "
     "was never released (kvcached keeps a reserve of prealloc pages, so this is common)."),
    ("idle footprint", "Median of device memory over the idle window."),
    ("GiB·s/s load / run", "Device memory integrated over time (trapezoid between samples) "
     "over the load window / the whole sampled run, divided by that window's seconds ('load "
     "s', 'run s'): GiB·s per second, so points whose windows differ in length compare."),
    ("KV efficiency", "Mean over the load window of kv_used / kv_held (kvcached); for a static "
     "pool, the engine's kv_cache_usage: the used share of a pool held in full."),
    ("Repeats and verdicts", "Points with the same settings but a different repeat form a group; "
     "kvcached and static runs of the same setting, engine and repeat form a pair. Latency: "
     "95% paired t-interval of the mean log ratio, shown as kvcached/static - 1; memory: of "
     "the mean GiB difference. Runs without a partner: Welch t over all runs. A verdict needs "
     f"{MIN_PAIRS} pairs (or runs per arm); below that the figures are shown with 'no verdict'. "
     "'no difference detectable': the interval contains 0. Sim and real points are never "
     "pooled; failed requests and points are counted per arm."),
]


def _facts(root: Path, cat: pd.DataFrame) -> list[str]:
    if cat.empty:
        return [f"Results: {root}", "No points found."]
    n_ok = int((cat["status"] == "ok").sum())
    facts = [f"Results: {root}",
             f"{len(cat)} points: {n_ok} ok, {len(cat) - n_ok} failed or incomplete."]
    engines = sorted({str(e) for e in cat.get("engine", pd.Series(dtype=str)).dropna()})
    if engines:
        facts.append("Engine: " + ", ".join(engines) + ".")
    if cat["simulated"].any():
        facts.append("Some points ran on the simulated engine: their device memory is simulated, "
                     "not measured on a GPU.")
    common = common_params(cat)
    if common:
        facts.append("Common to every point: " + " ".join(f"{k}={v}" for k, v in common.items()))
    params = swept_parameters(cat) if n_ok else []
    if params:
        facts.append("Swept: " + ", ".join(params) + ".")
    return facts


def _figure_md(fig: Figure, out: Path) -> str:
    if fig.path is None:
        return f"### {fig.title}\n\nSkipped: {fig.note}\n"
    note = f"\n\n{fig.note}" if fig.note else ""
    return f"### {fig.title}\n\n![{fig.title}]({fig.path.relative_to(out)}){note}\n"


def _markdown(title: str, page: Page, out: Path) -> str:
    md = [f"# {title}", "", f"## {HEADLINE_TITLE}", ""]
    for x in page.headline:
        md += [f"**{x}**", ""] if is_group_line(x) else [f"- {x}"]
    md += [] if page.headline else [NO_PAIR]
    md += ["", *[f"- {f}" for f in page.facts], ""]
    if page.lines:
        md += ["## Per allocator (single-model points)", "", *[f"- {line}" for line in
                                                             page.lines], ""]
    md += ["## Failed points", ""]
    md.append(to_markdown(page.failed) if not page.failed.empty
              else "None: every point completed.\n")
    for s in page.sections:
        md += [f"## {s.heading}", ""]
        if s.intro:
            md += [s.intro, ""]
        md.append(to_markdown(s.table))
    md += ["## Figures", ""]
    md += [_figure_md(f, out) for f in page.figures]
    md += ["## Definitions", ""]
    md += [f"- **{k}**: {v}" for k, v in page.definitions]
    return "\n".join(md) + "\n"


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)  # no half-written or temp file left on a full disk


def points_section(cat: pd.DataFrame, results: Results | None) -> Section:
    """Summary per point."""
    return Section("Summary per point", point_table(cat),
                   "VRAM is device memory used (GiB); savings are against the static baseline "
                   "with the same other settings ('-' where there is none, and for static "
                   f"points). Percentiles are over n successful requests; p99 is withheld "
                   f"('n<{MIN_P99_N}') under {MIN_P99_N} requests.", key="points")


def comparison_section(cat: pd.DataFrame, results: Results | None) -> Section:
    """kvcached vs static, paired over repeats."""
    return Section("kvcached vs static (paired over repeats)", comparison_table(cat),
                   "Per setting and engine: medians over ok runs, the kvcached - static "
                   "estimate with its 95% interval, pairs, method and verdict (see "
                   "Definitions), requests used/failed and failed points per arm.",
                   key="comparison")


def elasticity_section(cat: pd.DataFrame, results: Results | None) -> Section:
    """Elasticity per point."""
    return Section("Elasticity per point", elasticity_display(cat),
                   "See Definitions. '-' for grow: memory did not grow; for release: it "
                   "was not released before the next wave or the end.", key="elasticity")


def per_model_section(cat: pd.DataFrame, results: Results | None) -> Section | None:
    """Per model, for points with several instances; None when there is none."""
    models = per_model_table(cat, results) if results is not None else pd.DataFrame()
    if models.empty:
        return None
    return Section("Per model (points with several instances)", models,
                   "GPU memory of each instance's process tree from ready to the end (GiB); "
                   "KV held: its kvcached segment's maximum; latency of its own requests.",
                   key="per_model")


SectionFn = Callable[[pd.DataFrame, "Results | None"], "Section | None"]

# The report's table sections, in page order: append a builder to add one (None = skip).
SECTIONS: list[SectionFn] = [points_section, comparison_section, elasticity_section,
                             per_model_section]


def report_catalog(results: Results) -> pd.DataFrame:
    """The per-point table every part of the report reads (figures, savings, elasticity)."""
    return add_savings(catalog(results))


def render_report(root: Path, results: Results | None = None,
                  cat: pd.DataFrame | None = None) -> Path:
    """Render `<root>/report/` from the Parquet results under `root`; returns that folder.
    `results` and `cat` (its report_catalog) skip loading and computing them again."""
    root = Path(root)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    if results is None:
        try:
            results = load(root)
        except FileNotFoundError:
            results = None
    if cat is None:
        cat = report_catalog(results) if results is not None else pd.DataFrame()
    figures = render_figures(cat, results, out) if results is not None and not cat.empty else []
    sections = [s for build in SECTIONS
                if not cat.empty and (s := build(cat, results)) is not None]
    from kvexp.report import capacity

    cap_lines, cap_sections, cap_figures = capacity.parts(root, results, out)
    page = Page(
        title=f"kvexp report: {root.resolve().name}",
        headline=cap_lines + (headline_lines(cat) if not cat.empty else []),
        facts=_facts(root, cat),
        lines=tutorial_lines(cat) if not cat.empty else [],
        failed=failed_table(cat),
        sections=cap_sections + sections,
        figures=cap_figures + figures,
        definitions=DEFINITIONS,
    )
    _write(out / "summary.md", _markdown(page.title, page, out))
    _write(out / "report.html", render_html(page))
    if not cat.empty:
        cat.drop(columns=["params"]).to_csv(out / "points.csv", index=False)
        comparison = next(s for s in sections if s.key == "comparison")
        comparison.table.to_csv(out / "comparison.csv", index=False)
    return out
