"""The comparison on fake sweep tables: engines never pooled, pairs counted, failures shown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kvexp.report.verdicts import comparison_table, headline_lines


def fake_catalog(repeats: int, engines: tuple[str, ...] = ("sim", "vllm"),
                 failed_requests: int = 0) -> pd.DataFrame:
    """kvcached/static points of one setting per engine; kvcached holds 70 GiB less idle,
    latency the same up to noise; the vllm kvcached arm may have failed requests."""
    rng = np.random.default_rng(1)
    rows = []
    for engine in engines:
        for rep in range(repeats):
            for alloc in ("kvcached", "static"):
                idle = (5.0 if alloc == "kvcached" else 75.0) + rng.normal(0, 0.1)
                failed = failed_requests if (engine == "vllm" and alloc == "kvcached") else 0
                rows.append({
                    "point": f"{engine}-{alloc}-{rep}", "setting": "burst_size=4",
                    "engine": engine, "allocator": alloc, "repeat": float(rep),
                    "status": "ok", "idle_device_gib": idle, "peak_device_gib": idle + 1,
                    "e2e_p50_s": 2.0 * float(np.exp(rng.normal(0, 0.2))),
                    "ttft_p50_s": 0.08 * float(np.exp(rng.normal(0, 0.2))),
                    "requests": 20, "failed": failed})
    return pd.DataFrame(rows)


def test_sim_and_real_of_one_setting_are_two_groups() -> None:
    table = comparison_table(fake_catalog(5))
    idle = table[table["metric"] == "idle VRAM GiB"]
    assert sorted(idle["engine"]) == ["sim", "vllm"]
    assert list(idle["n pairs"]) == ["5", "5"]  # 5 pairs each, not 10 pooled
    assert all(v.startswith("kvcached lower by ") for v in idle["verdict"])
    assert all(abs(float(e.split()[0]) + 70) < 0.5 for e in idle["kvcached - static"])
    heads = [h for h in headline_lines(fake_catalog(5)) if h.startswith("burst_size=4")]
    assert len(heads) == 2 and "engine sim (simulated)" in heads[0] + heads[1]


def test_below_five_pairs_no_verdict() -> None:
    table = comparison_table(fake_catalog(3, engines=("vllm",)))
    assert set(table["verdict"]) == {"no verdict: 3 pairs, a verdict needs 5"}
    assert (table["kvcached median"] != "-").all() and (table["95% CI"] != "-").all()
    assert any("a verdict needs 5 pairs" in h for h in headline_lines(
        fake_catalog(3, engines=("vllm",))))


def test_failed_requests_next_to_latency_verdict() -> None:
    table = comparison_table(fake_catalog(5, engines=("vllm",), failed_requests=3))
    t = table.set_index("metric")
    assert t.loc["E2E p50 s", "verdict"].endswith("(kvcached: 15 failed requests)")
    assert not t.loc["idle VRAM GiB", "verdict"].endswith("failed requests)")
    assert t.loc["E2E p50 s", "kvcached req used/failed"] == "85/15"
    assert t.loc["E2E p50 s", "static req used/failed"] == "100/0"


def test_failed_points_counted_per_arm() -> None:
    cat = fake_catalog(5, engines=("vllm",))
    cat.loc[cat["point"] == "vllm-static-4", "status"] = "failed"
    t = comparison_table(cat).set_index("metric")
    assert t.loc["idle VRAM GiB", "static failed points"] == "1"
    assert t.loc["idle VRAM GiB", "kvcached failed points"] == "0"
    # a run without its partner: Welch over all runs, 4 static runs < 5: no verdict
    assert t.loc["idle VRAM GiB", "method"] == "Welch t"
    assert t.loc["idle VRAM GiB", "verdict"].startswith("no verdict: 5 kvcached and 4 static")
