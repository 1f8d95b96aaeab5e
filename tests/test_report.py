"""The report stage on synthetic sweeps: files, embedded figures, and numbers that match Parquet."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kvexp.report import print_summary, render_report
from kvexp.report.__main__ import main
from kvexp.report.figures.slo import ALL, attainment_table
from kvexp.report.render import report_catalog
from kvexp.results import load, write_json, write_memory, write_requests, write_summary
from kvexp.results.records import RequestRow, Sample
from kvexp.results.slo import wilson_interval
from kvexp.results.summary import summarize

GIB = 2**30
START = 1000.0
DT = 0.1
FAILED_ERROR = "server exited before ready: CUDA out of memory (synthetic)"


def _requests(instances: list[str], burst: int, waves: list[float], allocator: str,
              repeat: int) -> list[RequestRow]:
    """`burst` requests per instance and wave; E2E depends on the repeat only, TTFT also on
    the allocator (static 20 ms faster)."""
    rng = np.random.default_rng(100 + repeat)
    rows, rid = [], 0
    for w, w0 in enumerate(waves):
        for inst in instances:
            for j in range(burst):
                sent = w0 + 0.01 * j
                e2e = 1.5 + 0.1 * burst + float(rng.uniform(0, 0.5))
                ttft = 0.08 + float(rng.uniform(0, 0.02)) - (0.02 if allocator == "static" else 0)
                itl = list(rng.uniform(0.02, 0.04, size=9))
                rows.append(RequestRow(
                    request_id=rid, instance=inst, wave=w, api="chat", scheduled_time=sent,
                    sent_time=sent, send_lag_s=0.001, first_token_time=sent + ttft,
                    end_time=sent + e2e, ttft_s=ttft, e2e_s=e2e, tpot_s=(e2e - ttft) / 49,
                    itl_s=itl, tokens_per_event=[1] * 10, prompt_tokens=20,
                    completion_tokens=50, max_tokens=50, status=200, ok=True))
                rid += 1
    rows[-1].ok, rows[-1].status, rows[-1].error = False, 500, "synthetic failure"
    return rows


def _memory(instances: list[str], burst: int, allocator: str, waves: list[tuple[float, float]],
            end: float, sim: bool) -> list[Sample]:
    """kvcached: small idle footprint, grows 0.3 s into each wave, releases 0.8 s after it.
    static: the whole pool held from the start."""
    src = "sim_device" if sim else "nvml"
    out: list[Sample] = []
    for t in np.arange(START, end + DT / 2, DT):
        t = float(round(t, 3))
        active = any(w0 + 0.3 <= t < w1 + 0.8 for w0, w1 in waves)
        in_wave = any(w0 <= t < w1 for w0, w1 in waves)
        device = 0.5 * GIB
        for inst in instances:
            if allocator == "kvcached":
                held = (0.1 + (0.02 * burst if active else 0.0)) * GIB
                used = 0.6 * held if active else 0.0
                proc = 1.5 * GIB + held
                out += [Sample(t, "kvcached", inst, "kv_held_bytes", held),
                        Sample(t, "kvcached", inst, "kv_used_bytes", used),
                        Sample(t, "kvcached", inst, "kv_prealloc_bytes", held - used),
                        Sample(t, "kvcached", inst, "kv_limit_bytes", 70 * GIB)]
            else:
                proc = 75.0 * GIB / len(instances)
            device += proc
            out += [Sample(t, src, inst, "process_gpu_bytes", proc),
                    Sample(t, "engine", inst, "kv_cache_usage", 0.3 if in_wave else 0.0)]
        out += [Sample(t, src, "", "device_used_bytes", device),
                Sample(t, src, "", "device_total_bytes", 141 * GIB)]
    return out


def make_point(d: Path, *, allocator: str, burst: int, repeat: int,
               models: tuple[str, ...] = ("a",), sim: bool = False) -> None:
    """A complete ok point: requests, memory, point.json and summary (via kvexp.results.summary)."""
    d.mkdir(parents=True)
    ready, w_start = START + 2.0, START + 5.0
    wave_starts = [w_start + 6.0 * k for k in range(3)]
    instances = [f"{m}-{i}" for i, m in enumerate(models)]
    reqs = _requests(instances, burst, wave_starts, allocator, repeat)
    waves = [(w0, max(r.end_time for r in reqs if r.wave == k))
             for k, w0 in enumerate(wave_starts)]
    w_end = max(w1 for _, w1 in waves)
    end = w_end + 6.0
    overrides = [f"allocator={allocator}", f"burst_size={burst}", f"repeat={repeat}"]
    if len(models) > 1:
        overrides.append(f"models={'+'.join(models)}")
    label = " ".join(o for o in overrides if not o.startswith("repeat="))
    meta = {"status": "ok", "error": "", "engine": "sim" if sim else "vllm",
            "engine_reason": "synthetic", "label": label, "overrides": overrides,
            "clock_start": START, "ready_time": ready, "workload_start": w_start,
            "workload_end": w_end, "end_time": end, "servers": []}
    write_requests(reqs, d, engine=meta["engine"])
    write_memory(_memory(instances, burst, allocator, waves, end, sim), START, d, meta["engine"])
    write_json(meta, d / "point.json")
    res = load(d)
    choices = {"point": d.name, "label": label, "engine": meta["engine"],
               "allocator": allocator, "models": "+".join(models), "workload": "bursty",
               "burst_size": burst, "repeat": repeat, "n_instances": len(models),
               "overrides": " ".join(overrides)}
    write_summary(summarize(res.requests, res.memory, meta, choices), d)


def make_failed(d: Path, *, burst: int, repeat: int) -> None:
    d.mkdir(parents=True)
    write_json({"status": "failed", "error": FAILED_ERROR, "engine": "vllm",
                "engine_reason": "synthetic", "label": f"allocator=static burst_size={burst}",
                "overrides": ["allocator=static", f"burst_size={burst}", f"repeat={repeat}"],
                "clock_start": START, "servers": []}, d / "point.json")


def make_sweep(root: Path) -> Path:
    """Two repeats of kvcached/static at burst 4, one of each at burst 8, a two-model kvcached
    point on the simulated device, and a failed point (point.json only)."""
    specs = [("kvcached", 4, 0), ("static", 4, 0), ("kvcached", 4, 1), ("static", 4, 1),
             ("kvcached", 8, 0), ("static", 8, 0)]
    for i, (alloc, burst, rep) in enumerate(specs):
        make_point(root / str(i), allocator=alloc, burst=burst, repeat=rep)
    make_point(root / "6", allocator="kvcached", burst=4, repeat=0, models=("a", "b"), sim=True)
    make_failed(root / "7", burst=8, repeat=1)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_sweep(tmp_path_factory.mktemp("sweep"))
    render_report(root)
    return root


FIGURES = ("memory_over_time", "latency_distributions", "latency_vs_param", "memory_vs_param",
           "slo_attainment_vs_param", "kv_held_vs_used", "memory_per_model")


def test_report_files(sweep: Path) -> None:
    out = sweep / "report"
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.exists() and png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert FAILED_ERROR in html
    md = (out / "summary.md").read_text()
    assert FAILED_ERROR in md and "Skipped" not in md
    assert "## Definitions" in md and "grow s" in md
    assert (out / "points.csv").exists() and (out / "comparison.csv").exists()


def md_table(md: str, heading: str) -> pd.DataFrame:
    """The Markdown table under `## heading`, as strings."""
    section = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


def test_summary_numbers_match_parquet(sweep: Path) -> None:
    md = (sweep / "report" / "summary.md").read_text()
    table = md_table(md, "Summary per point").set_index("point")
    res = load(sweep)
    assert table.loc["7", "status"] == "failed"
    for point in map(str, range(7)):
        meta = res.points.set_index("point").loc[point]
        mem = res.memory[(res.memory["point"] == point) & (res.memory["instance"] == "")
                         & (res.memory["metric"] == "device_used_bytes")]
        idle = mem[(mem["time"] >= meta["ready_time"]) & (mem["time"] < meta["workload_start"])]
        peak = mem[mem["time"] >= meta["ready_time"]]["value"].max() / GIB
        req = res.requests[res.requests["point"] == point]
        ok = req[req["ok"]]
        row = table.loc[point]
        assert row["idle VRAM GiB"] == f"{idle['value'].median() / GIB:.2f}"
        assert row["peak VRAM GiB"] == f"{peak:.2f}"
        assert row["E2E p50 s"] == f"{ok['e2e_s'].median():.3f}"
        assert row["TTFT p50 ms"] == f"{ok['ttft_s'].median() * 1e3:.1f}"
        assert row["failed req"] == f"{(~req['ok']).sum()}/{len(req)}"
    # kvcached at burst 4, repeat 0 against static at burst 4, repeat 0
    assert table.loc["0", "saved idle GiB"] == f"{75.5 - (0.5 + 1.6):.2f}"
    assert table.loc["1", "saved idle GiB"] == "-"


def test_comparison_wording(sweep: Path) -> None:
    md = (sweep / "report" / "summary.md").read_text()
    cmp = md_table(md, "kvcached vs static (paired over repeats)")
    b4 = cmp[cmp["setting"] == "burst_size=4"].set_index("metric")
    assert b4.loc["idle VRAM GiB", "verdict"] == "no verdict: 2 pairs, a verdict needs 5"
    assert b4.loc["idle VRAM GiB", "n pairs"] == "2"
    assert b4.loc["idle VRAM GiB", "method"] == "paired t"
    assert b4.loc["idle VRAM GiB", "kvcached - static"].startswith("-73.")
    assert "n=2" in b4.loc["idle VRAM GiB", "static median"]
    # each synthetic point has one failed request (2 points per arm); latency verdicts say so
    assert b4.loc["E2E p50 s", "verdict"].endswith(
        "(kvcached: 2 failed requests; static: 2 failed requests)")
    assert b4.loc["E2E p50 s", "kvcached req used/failed"].endswith("/2")
    b8 = cmp[cmp["setting"] == "burst_size=8"].set_index("metric")
    assert b8.loc["idle VRAM GiB", "static failed points"] == "1"
    assert b8.loc["idle VRAM GiB", "kvcached failed points"] == "0"
    assert set(cmp["engine"]) == {"vllm"}


def test_elasticity_in_report(sweep: Path) -> None:
    md = (sweep / "report" / "summary.md").read_text()
    el = md_table(md, "Elasticity per point").set_index("point")
    grow = float(el.loc["0", "grow s (device)"])
    release = float(el.loc["0", "release s (device)"])
    assert grow == pytest.approx(0.3, abs=DT + 1e-9)
    assert release == pytest.approx(0.8, abs=DT + 1e-9)
    assert el.loc["1", "grow s (device)"] == "-"  # static: flat
    assert el.loc["1", "KV efficiency from"] == "engine kv_cache_usage"


def test_attainment_figure_pools_repeats_with_a_wilson_interval(sweep: Path) -> None:
    # 12 requests a point, the last failed (not meeting any SLO); burst 4 kvcached: repeats
    # 0 and 1 plus the two-model point (24 requests, 2 failed) pooled at x = 4
    res = load(sweep)
    data, x = attainment_table(report_catalog(res), res)
    assert x == "burst_size"
    whole = data[data["instance"] == ALL].set_index(["x", "allocator"])
    assert whole.loc[(4.0, "kvcached"), ["good", "n"]].tolist() == [45, 48]
    assert whole.loc[(8.0, "static"), ["good", "n"]].tolist() == [23, 24]
    low, high = wilson_interval(23, 24)
    assert whole.loc[(8.0, "static"), ["slo_low", "slo_high"]].tolist() == [low, high]
    assert {"a-0", "b-1"} <= set(data["instance"])  # panels per instance: a point has two
    md = (sweep / "report" / "summary.md").read_text()
    assert "### SLO attainment" in md and "x axis: burst_size" in md


def test_percentiles_carry_n_and_p99_is_withheld_under_100_requests(sweep: Path) -> None:
    res = load(sweep)
    s = res.summary.set_index("point")
    assert s.loc["0", "e2e_n"] == 11 and s.loc["0", "itl_n"] == 11 * 9
    assert math.isnan(s.loc["0", "e2e_p99_s"]) and math.isnan(s.loc["0", "itl_p99_s"])
    assert not math.isnan(s.loc["0", "e2e_p90_s"])
    table = md_table((sweep / "report" / "summary.md").read_text(), "Summary per point")
    row = table.set_index("point").loc["0"]
    assert row["lat n"] == "11" and row["E2E p99 s"] == "n<100" and row["ITL n"] == "99"


def test_throughput_is_over_busy_time(sweep: Path) -> None:
    res = load(sweep)
    req = res.requests[res.requests["point"] == "0"]
    busy = req["end_time"].max() - req["sent_time"].min()
    s = res.summary.set_index("point").loc["0"]
    assert s["busy_s"] == pytest.approx(busy)
    assert s["output_tok_per_s"] == pytest.approx(50 * 11 / busy)
    assert s["goodput_req_per_s"] == pytest.approx(11 / busy)


def test_the_per_allocator_line_counts_runs_not_points(sweep: Path) -> None:
    md = (sweep / "report" / "summary.md").read_text()
    # static: bursts 4 (repeats 0, 1) and 8 (repeat 0) are 3 points of 2 settings
    assert "static: idle VRAM" in md and "(median over 3 points: 2 settings, 1-2 runs each)" in md


def test_memory_integrals_are_per_second_of_their_window(sweep: Path) -> None:
    cat = report_catalog(load(sweep)).set_index("point")
    for p in ("0", "1"):
        r = cat.loc[p]
        assert r["device_load_gib_per_s"] == pytest.approx(r["device_load_gib_s"]
                                                          / r["device_load_s"])
    assert cat.loc["1", "device_load_gib_per_s"] == pytest.approx(75.5, abs=1e-6)  # flat
    el = md_table((sweep / "report" / "summary.md").read_text(), "Elasticity per point")
    assert el.set_index("point").loc["1", "GiB·s/s load"] == "75.50"


def test_single_point_report_skips_what_it_cannot_draw(tmp_path: Path) -> None:
    make_point(tmp_path / "p", allocator="static", burst=4, repeat=0)
    out = render_report(tmp_path / "p")
    md = (out / "summary.md").read_text()
    assert "Skipped: No swept parameter" in md
    assert "Skipped: No kvcached segment samples" in md
    assert "Skipped: No point with several models" in md
    assert (out / "memory_over_time.png").stat().st_size > 1000
    assert "static: idle VRAM 75.50 GiB" in md


def test_all_failed_and_empty(tmp_path: Path) -> None:
    make_failed(tmp_path / "s" / "0", burst=4, repeat=0)
    out = render_report(tmp_path / "s")
    assert FAILED_ERROR in (out / "report.html").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No points found" in (render_report(empty) / "summary.md").read_text()


def test_cli_and_print_summary(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep), "--quiet"]) == 0
    assert "report.html" in capsys.readouterr().out
    from rich.console import Console

    buf = io.StringIO()
    print_summary(load(sweep), console=Console(file=buf, width=200))
    text = buf.getvalue()
    assert "kvexp points" in text and "failed" in text and "75.50" in text


def test_many_points_stay_readable(tmp_path: Path) -> None:
    root = tmp_path / "big"
    i = 0
    for burst in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13):
        for alloc in ("kvcached", "static"):
            make_point(root / str(i), allocator=alloc, burst=burst, repeat=0)
            i += 1
    out = render_report(root)
    md = (out / "summary.md").read_text()
    assert "Showing the first 24 of 26 settings" not in md  # 13 settings fit
    assert not math.isnan(float(md_table(md, "Summary per point").iloc[0]["idle VRAM GiB"]))
    for name in FIGURES[:6]:
        assert (out / f"{name}.png").stat().st_size > 1000


SIM_FAST = [
    "engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.time_scale=0.2",
    "workload.waves=2", "workload.idle_s=0.3", "workload.max_tokens=16",
    "workload.lead_in_s=0.5", "workload.tail_s=0.6", "sampler.interval_s=0.05",
]


@pytest.mark.slow
def test_report_of_a_real_sim_sweep(tmp_path: Path) -> None:
    """`python -m kvexp -m engine=sim ...`, then the report of what the runner wrote."""
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "kvexp", "-m", *SIM_FAST, "allocator=kvcached,static",
         "burst_size=1,3", f"hydra.sweep.dir={sweep}", "report=false"],
        cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = load(sweep)
    out = render_report(sweep)
    md = (out / "summary.md").read_text()
    table = md_table(md, "Summary per point").set_index("point")
    assert set(table.index) == set(res.summary["point"])
    assert set(table["status"]) == {"ok"}
    assert "simulated" in md
    assert "Swept: burst_size." in md
    cmp = md_table(md, "kvcached vs static (paired over repeats)")
    assert set(cmp["setting"]) == {"burst_size=1", "burst_size=3"}
    for name in ("memory_over_time", "latency_distributions", "latency_vs_param",
                 "memory_vs_param", "slo_attainment_vs_param", "kv_held_vs_used"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert "Skipped: No point with several models" in md


def test_every_table_carries_the_engine(sweep: Path) -> None:
    """requests/memory/summary Parquet and comparison.csv name the engine of every row."""
    import pyarrow.parquet as pq

    for name in ("requests", "memory", "summary"):
        assert set(pq.read_table(sweep / "6" / f"{name}.parquet").column("engine").to_pylist()
                   ) == {"sim"}, name
        assert set(pq.read_table(sweep / "0" / f"{name}.parquet").column("engine").to_pylist()
                   ) == {"vllm"}, name
    res = load(sweep)
    assert set(res.requests["engine"]) == set(res.memory["engine"]) == {"sim", "vllm"}
    cmp = pd.read_csv(sweep / "report" / "comparison.csv")
    assert set(cmp["engine"]) == {"vllm"}


def test_engine_per_point_in_report_and_terminal(sweep: Path) -> None:
    from rich.console import Console

    md = (sweep / "report" / "summary.md").read_text()
    table = md_table(md, "Summary per point").set_index("point")
    assert table.loc["6", "engine"] == "sim" and table.loc["0", "engine"] == "vllm"
    buf = io.StringIO()
    print_summary(load(sweep), console=Console(file=buf, width=200))
    assert "engine" in buf.getvalue() and " sim " in buf.getvalue()


def test_headline_opens_the_report(sweep: Path) -> None:
    """The answer comes first: the headline block precedes the facts and every table."""
    page = (sweep / "report" / "report.html").read_text()
    head = page.index("<section id='headline'>")
    assert head < page.index("<ul>") and head < page.index("<table>")
    assert head < page.index("Summary per point") < page.index("kvcached vs static (paired")
    block = page[head:page.index("</section>", head)]
    assert "burst_size=4, engine vllm (measured): 2 pairs" in block
    assert "a verdict needs 5 pairs" in block
    assert re.search(r"idle 73\.\d\d GiB \[", block)  # memory saved, with its interval
    assert re.search(r"E2E p50 [+-]\d+\.\d% \[.*\] n=2 \(no verdict\)", block)
    assert "E2E p99" not in block  # 12 requests a point: p99 withheld
    assert re.search(r"GiB·s/s under load 73\.\d\d GiB·s/s \[", block)  # per second
    assert "(kvcached: 2 failed requests; static: 2 failed requests)" in block
    md = (sweep / "report" / "summary.md").read_text()
    assert md.index("## Answer: kvcached vs static") < md.index("- Results:") < md.index(
        "## Summary per point")


@pytest.mark.slow
def test_readme_sim_sweep_verdicts(tmp_path: Path) -> None:
    """`python -m kvexp -m experiment=tutorial_single repeats=5 engine=sim` (a shortened
    workload): paired verdicts with intervals; its first 3 repeats alone: no verdict, and the
    report says a verdict needs 5 pairs."""
    import os
    import shutil
    import subprocess
    import sys

    sweep = tmp_path / "r5"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "kvexp", "-m", "experiment=tutorial_single", "repeats=5",
         *SIM_FAST, f"hydra.sweep.dir={sweep}", "report=false"],
        cwd=tmp_path, env=env, text=True, capture_output=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (render_report(sweep) / "summary.md").read_text()
    cmp = md_table(md, "kvcached vs static (paired over repeats)").set_index("metric")
    assert set(cmp["engine"]) == {"sim"} and set(cmp["n pairs"]) == {"5"}
    assert set(cmp["method"]) == {"paired t"}
    assert cmp.loc["idle VRAM GiB", "verdict"].startswith("kvcached lower by ")
    assert "ITL p99 ms" not in cmp.index  # under 100 requests a point: p99 withheld
    for metric in ("TTFT p50 ms", "ITL p50 ms", "E2E p50 s"):
        assert re.fullmatch(r"\[[+-][\d.]+%, [+-][\d.]+%\]", cmp.loc[metric, "95% CI"]), metric
        assert not cmp.loc[metric, "verdict"].startswith("no verdict"), metric
    assert "engine sim (simulated): 5 pairs" in md.split("## Summary per point")[0]

    r3 = tmp_path / "r3"
    res = load(sweep)
    for point, rep in zip(res.summary["point"], res.summary["repeat"], strict=True):
        if int(rep) < 3:
            shutil.copytree(sweep / point, r3 / point)
    md3 = (render_report(r3) / "summary.md").read_text()
    cmp3 = md_table(md3, "kvcached vs static (paired over repeats)")
    assert set(cmp3["verdict"]) == {"no verdict: 3 pairs, a verdict needs 5"}
    assert "3 pairs" in md3 and "no verdict: a verdict needs 5 pairs" in md3


def test_terminal_labels_are_text_not_markup(sweep: Path) -> None:
    from rich.console import Console

    from kvexp.report.catalog import catalog
    from kvexp.report.tables import add_savings

    cat = add_savings(catalog(load(sweep)))
    cat["label"] = "prompts=[hello,world] name=[bold]x[/bold]"
    buf = io.StringIO()
    print_summary(cat, console=Console(file=buf, width=300))
    assert "prompts=[hello,world] name=[bold]x[/bold]" in buf.getvalue()
