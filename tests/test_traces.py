"""Trace replay plans: loading, windows, time scaling, length policies, prompt token ids."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from kvexp.workloads.trace_prompts import TracePrompts, trace_request_specs
from kvexp.workloads.trace_schedule import build_trace_schedule
from kvexp.workloads.traces import TraceOptions, plan_trace, split_by_model
from kvexp.workloads.traces_load import (
    TraceColumns,
    TraceError,
    read_trace,
    resolve_trace_path,
)

MOONCAKE = "excerpt:mooncake_conversation.jsonl"
VOCAB = 151_936


def mooncake_rows(name: str = MOONCAKE) -> list[dict]:
    with resolve_trace_path(name).open() as f:
        return [json.loads(line) for line in f]


def test_excerpts_shipped_small_with_attribution() -> None:
    folder = resolve_trace_path("excerpt:README.md").parent
    names = ["azure2023_code.csv", "azure2023_conv.csv", "mooncake_conversation.jsonl",
             "mooncake_synthetic.jsonl"]
    for n in names:
        p = folder / n
        assert p.stat().st_size < 100_000
        assert len(read_trace(p)) == 300
    readme = (folder / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "Apache-2.0" in readme and "Splitwise" in readme
    with pytest.raises(TraceError, match="no such trace excerpt"):
        resolve_trace_path("excerpt:nope.csv")


def test_mooncake_send_times_follow_the_trace_scaled() -> None:
    rows = mooncake_rows()
    plan = plan_trace(MOONCAKE, TraceOptions(time_scale=10.0))
    assert len(plan.requests) == len(rows) == plan.stats.kept == plan.stats.rows_read
    for r in plan.requests:
        raw = rows[r.row - 1]
        assert r.at_s == pytest.approx((raw["timestamp"] - rows[0]["timestamp"]) / 1000 / 10)
        assert (r.input_tokens, r.output_tokens) == (raw["input_length"], raw["output_length"])
        assert r.hash_ids == tuple(raw["hash_ids"])
    span = (rows[-1]["timestamp"] - rows[0]["timestamp"]) / 1000 / 10
    assert plan.stats.span_s == pytest.approx(span)
    assert plan.stats.mean_rate_req_s == pytest.approx((len(rows) - 1) / span)
    assert [r.at_s for r in plan.requests] == sorted(r.at_s for r in plan.requests)


@pytest.mark.parametrize("policy", ["clip", "scale", "skip"])
def test_length_policy_counts_match_a_direct_count(policy: str) -> None:
    limit = 2048
    rows = mooncake_rows()
    over = [r for r in rows if r["input_length"] + r["output_length"] > limit]
    assert 0 < len(over) < len(rows)
    plan = plan_trace(MOONCAKE, TraceOptions(max_model_len=limit, length_policy=policy))
    s = plan.stats
    assert (s.clipped_rows, s.scaled_rows, s.skipped_rows) == (
        len(over) * (policy == "clip"), len(over) * (policy == "scale"),
        len(over) * (policy == "skip"))
    assert s.kept == len(rows) - s.skipped_rows
    for r in plan.requests:
        raw = rows[r.row - 1]
        i, o = raw["input_length"], raw["output_length"]
        assert 1 <= r.input_tokens and 1 <= r.output_tokens
        assert r.input_tokens + r.output_tokens <= limit
        if i + o <= limit:
            assert (r.input_tokens, r.output_tokens) == (i, o)
        elif policy == "clip":
            assert r.output_tokens == min(o, limit - 1)
            assert r.input_tokens == limit - r.output_tokens
        elif policy == "scale":
            f = limit / (i + o)
            assert r.output_tokens == max(int(o * f), 1)
            assert r.input_tokens + r.output_tokens >= limit - 2
    if policy == "skip":
        assert {r.row for r in plan.requests}.isdisjoint(
            k + 1 for k, r in enumerate(rows) if r in over)


def test_equal_hash_prefixes_give_equal_token_prefixes() -> None:
    plan = plan_trace(MOONCAKE, TraceOptions(max_model_len=4096, length_policy="clip"))
    tp = TracePrompts(VOCAB, seed=3, block_size=512, low=100)
    reqs = plan.requests
    ids = {r.row: tp.token_ids(r) for r in reqs}
    pairs = 0
    for a in reqs[:60]:
        for b in reqs[:60]:
            if a.row >= b.row or not a.hash_ids or not b.hash_ids:
                continue
            shared = 0
            while (shared < min(len(a.hash_ids), len(b.hash_ids))
                   and a.hash_ids[shared] == b.hash_ids[shared]):
                shared += 1
            n = min(shared * 512, a.input_tokens, b.input_tokens)
            assert ids[a.row][:n] == ids[b.row][:n]
            if shared < min(len(a.hash_ids), len(b.hash_ids)) and n == shared * 512:
                m = min(a.input_tokens, b.input_tokens, n + 512)
                assert m > n and ids[a.row][n:m] != ids[b.row][n:m]
            pairs += shared > 0
    assert pairs > 10
    for r in reqs:
        assert len(ids[r.row]) == r.input_tokens
    flat = np.concatenate([np.array(v) for v in ids.values()])
    assert flat.min() >= 100 and flat.max() < VOCAB
    assert TracePrompts(VOCAB, seed=3).token_ids(reqs[5]) == ids[reqs[5].row]
    assert TracePrompts(VOCAB, seed=4).token_ids(reqs[5]) != ids[reqs[5].row]


def test_partial_last_block_and_requests_without_hash_ids() -> None:
    tp = TracePrompts(1000, seed=0, block_size=4, low=10)
    from kvexp.workloads.traces import TraceRequest
    a = TraceRequest(row=1, at_s=0.0, input_tokens=10, output_tokens=1, hash_ids=(7, 8, 9))
    b = TraceRequest(row=2, at_s=0.0, input_tokens=6, output_tokens=1, hash_ids=(7, 8))
    c = TraceRequest(row=3, at_s=0.0, input_tokens=9, output_tokens=1, hash_ids=(7,))
    ta, tb, tc = tp.token_ids(a), tp.token_ids(b), tp.token_ids(c)
    assert (len(ta), len(tb), len(tc)) == (10, 6, 9)
    assert ta[:6] == tb and ta[8:10] == tp.block(9)[:2].tolist()
    assert tc[:4] == ta[:4] and tc[4:] != ta[4:9]
    u1 = tp.token_ids(TraceRequest(row=4, at_s=0.0, input_tokens=50, output_tokens=1))
    u2 = tp.token_ids(TraceRequest(row=5, at_s=0.0, input_tokens=50, output_tokens=1))
    assert len(u1) == len(u2) == 50 and u1 != u2
    with pytest.raises(ValueError, match="vocab_size"):
        TracePrompts(50, low=100)


def test_azure_csv_parse_and_request_specs() -> None:
    raw = pd.read_csv(resolve_trace_path("excerpt:azure2023_code.csv"))
    plan = plan_trace("excerpt:azure2023_code.csv", TraceOptions(time_scale=2.0))
    t = pd.to_datetime(raw["TIMESTAMP"])
    want = ((t - t.iloc[0]).dt.total_seconds() / 2.0).to_numpy()
    assert np.allclose([r.at_s for r in plan.requests], want, atol=1e-6)
    assert [r.input_tokens for r in plan.requests] == raw["ContextTokens"].tolist()
    assert [r.output_tokens for r in plan.requests] == raw["GeneratedTokens"].tolist()
    assert all(r.hash_ids is None and r.model is None for r in plan.requests)
    specs = trace_request_specs(plan.requests[:5], "small", TracePrompts(VOCAB), first_id=7)
    assert [s.request_id for s in specs] == list(range(7, 12))
    for s, r in zip(specs, plan.requests[:5], strict=True):
        assert s.api == "completions" and s.ignore_eos and s.instance == "small"
        assert s.max_tokens == r.output_tokens and s.at_s == r.at_s
        assert s.prompt_token_ids is not None and len(s.prompt_token_ids) == r.input_tokens


def generic_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "t_ms": [3000, 0, 1000, 2000, 4000, 5000],  # unsorted on purpose
        "prompt": [30, 10, 20, 25, 40, 50],
        "gen": [3, 1, 2, 2, 4, 5],
        "model": ["b", "a", "b", "a", "a", "b"],
        "blocks": ["[1, 2]", "[1]", "[3]", "[1, 2]", "[]", "[4]"],
    })


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_generic_named_columns(tmp_path: Path, ext: str) -> None:
    df = generic_frame()
    p = tmp_path / f"t.{ext}"
    if ext == "csv":
        df.to_csv(p, index=False)
    elif ext == "jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_parquet(p)
    cols = TraceColumns(time="t_ms", time_unit="ms", input="prompt", output="gen",
                        model="model", hash_ids="blocks")
    plan = plan_trace(p, columns=cols)
    assert [r.at_s for r in plan.requests] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r.input_tokens for r in plan.requests] == [10, 20, 25, 30, 40, 50]
    assert [r.row for r in plan.requests] == [2, 3, 4, 1, 5, 6]
    assert plan.requests[0].hash_ids == (1,) and plan.requests[4].hash_ids == ()
    split = split_by_model(plan)
    assert {m: [r.at_s for r in rs] for m, rs in split.items()} == {
        "a": [0.0, 2.0, 4.0], "b": [1.0, 3.0, 5.0]}
    only_b = plan_trace(p, TraceOptions(model="b"), columns=cols)
    assert [r.at_s for r in only_b.requests] == [1.0, 3.0, 5.0]
    with pytest.raises(TraceError, match="match neither"):
        plan_trace(p)


BAD_ROWS = [
    ("missing field", '{"timestamp": 5, "output_length": 3}', "input_length", "missing"),
    ("negative length", '{"timestamp": 5, "input_length": -4, "output_length": 3}',
     "input_length", ">= 1"),
    ("non-numeric", '{"timestamp": 5, "input_length": 4, "output_length": "lots"}',
     "output_length", "not a finite number"),
    ("bad timestamp", '{"timestamp": "soon", "input_length": 4, "output_length": 3}',
     "timestamp", "not a finite number"),
    ("bad hash ids", '{"timestamp": 5, "input_length": 4, "output_length": 3, '
     '"hash_ids": [1, "x"]}', "hash_ids", "block ids"),
]


@pytest.mark.parametrize(("what", "line", "column", "why"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_malformed_row_names_file_row_and_column(tmp_path: Path, what: str, line: str,
                                                 column: str, why: str) -> None:
    good = '{"timestamp": %d, "input_length": 4, "output_length": 3, "hash_ids": [1]}'
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([good % 9, good % 2, line, good % 7]) + "\n")
    with pytest.raises(TraceError) as e:
        read_trace(p, fmt="mooncake")
    msg = str(e.value)
    assert str(p) in msg and "row 3," in msg and repr(column) in msg and why in msg


def test_malformed_csv_and_json_lines(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:17:03.9799600,10,2\n2023-11-16 18:17:04.1,11,3\n"
                 "not-a-time,12,3\n")
    with pytest.raises(TraceError, match=r"bad\.csv: row 3, column 'TIMESTAMP': .*date-time"):
        read_trace(p)
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,2.5\n")
    with pytest.raises(TraceError, match=r"row 1, column 'GeneratedTokens'"):
        read_trace(p)
    j = tmp_path / "bad.jsonl"
    j.write_text('{"timestamp": 1, "input_length": 4, "output_length": 3}\n{oops\n')
    with pytest.raises(TraceError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_trace(j)
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "absent.jsonl")


def test_window_and_max_requests() -> None:
    rows = mooncake_rows()
    ts = np.array([r["timestamp"] for r in rows]) / 1000.0
    opts = TraceOptions(start_s=20.0, duration_s=30.0, time_scale=2.0)
    plan = plan_trace(MOONCAKE, opts)
    inside = np.flatnonzero((ts >= 20.0) & (ts < 50.0))
    assert [r.row for r in plan.requests] == (inside + 1).tolist()
    assert plan.stats.rows_in_window == len(inside)
    assert [r.at_s for r in plan.requests] == pytest.approx(((ts[inside] - 20.0) / 2).tolist())
    capped = plan_trace(MOONCAKE, TraceOptions(start_s=20.0, max_requests=7,
                                               max_model_len=2048, length_policy="skip"))
    assert capped.stats.kept == 7
    fits = [k for k in range(len(rows)) if ts[k] >= 20.0
            and rows[k]["input_length"] + rows[k]["output_length"] <= 2048][:7]
    assert [r.row for r in capped.requests] == [k + 1 for k in fits]
    examined = [k for k in range(len(rows)) if 20.0 <= ts[k] and k <= fits[-1]]
    assert capped.stats.skipped_rows == len(examined) - 7


def test_target_rate_sets_the_mean_rate() -> None:
    plan = plan_trace("excerpt:azure2023_conv.csv", TraceOptions(target_rate=50.0))
    assert plan.stats.mean_rate_req_s == pytest.approx(50.0)
    native = plan_trace("excerpt:azure2023_conv.csv").stats
    assert plan.stats.time_scale == pytest.approx(50.0 / native.mean_rate_req_s)
    assert plan.stats.span_s == pytest.approx(native.span_s / plan.stats.time_scale)
    with pytest.raises(TraceError, match="not both"):
        plan_trace(MOONCAKE, TraceOptions(target_rate=5.0, time_scale=2.0))
    with pytest.raises(TraceError, match="length_policy 'trim' is unknown"):
        plan_trace(MOONCAKE, TraceOptions(length_policy="trim"))
    with pytest.raises(TraceError, match="no request left"):
        plan_trace(MOONCAKE, TraceOptions(start_s=1e6))


def test_shared_origin_keeps_two_traces_on_one_clock() -> None:
    code = read_trace("excerpt:azure2023_code.csv")["arrival_s"].iloc[0]
    conv = read_trace("excerpt:azure2023_conv.csv")["arrival_s"].iloc[0]
    origin = min(code, conv)
    plan = plan_trace("excerpt:azure2023_code.csv", origin_s=origin)
    assert plan.requests[0].at_s == pytest.approx(code - conv, abs=1e-6)
    assert plan.requests[0].at_s > 60


def trace_yaml(**kw: object) -> SimpleNamespace:
    """conf/workload/trace.yaml's keys (so the test follows the file), with overrides."""
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf/workload/trace.yaml").read_text())
    conf.pop("defaults")
    conf["seed"] = 0
    return SimpleNamespace(**{**conf, **kw})


def test_trace_schedule_two_instances_on_one_clock() -> None:
    w = trace_yaml(path="excerpt:azure2023_conv.csv", num_requests=20, time_scale=4.0)
    code = trace_yaml(path="excerpt:azure2023_code.csv", num_requests=10, time_scale=4.0)
    specs, stats = build_trace_schedule(w, ["big", "small"], {"big": 1000, "small": 2000},
                                        per_instance={"big": code},
                                        max_model_lens={"big": 1024, "small": 2048})
    assert [s.request_id for s in specs] == list(range(30))
    assert [s.at_s for s in specs] == sorted(s.at_s for s in specs)
    big = [s for s in specs if s.instance == "big"]
    assert len(big) == 10 and stats["big"].kept == 10 and stats["small"].kept == 20
    assert all(len(s.prompt_token_ids) + s.max_tokens <= 1024 for s in big)
    assert all(max(s.prompt_token_ids) < 1000 for s in big)
    assert stats["big"].clipped_rows > 0
    assert big[0].at_s == pytest.approx(77.2993 / 4.0, abs=1e-3)  # code starts 77 s later
    alone, _ = build_trace_schedule(trace_yaml(path="excerpt:azure2023_code.csv"), ["big"],
                                    {"big": 1000})
    assert alone[0].at_s == 0.0
    with pytest.raises(ValueError, match="needs time_column"):
        build_trace_schedule(trace_yaml(time_column="t"), ["big"], {"big": 1000})
