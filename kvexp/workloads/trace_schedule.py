"""A `kind: trace` workload (conf/workload/trace.yaml keys) as a sorted RequestSpec list.

Duck-typed on the workload config: any object with the trace.yaml attributes works, so
WorkloadConfig only needs those fields. Each instance plans its own trace (its own `path`
or `model` through per-instance overrides); with `shared_clock`, every trace counts from
the earliest first arrival of all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kvexp.results.records import RequestSpec
from kvexp.workloads.trace_prompts import TracePrompts, trace_request_specs
from kvexp.workloads.traces import TraceOptions, TraceStats, plan_table
from kvexp.workloads.traces_load import TraceColumns, read_trace


def trace_options(w: Any, max_model_len: int | None = None) -> TraceOptions:
    """TraceOptions from a workload config; its max_model_len, else the given one."""
    return TraceOptions(
        start_s=w.start_s, duration_s=w.window_s, max_requests=w.num_requests,
        time_scale=w.time_scale, target_rate=w.target_rate,
        max_model_len=w.max_model_len if w.max_model_len is not None else max_model_len,
        length_policy=w.length_policy, model=w.model,
    )


def trace_columns(w: Any) -> TraceColumns | None:
    """The generic trace's column names, or None when the config names none."""
    names = (w.time_column, w.input_column, w.output_column)
    if all(n is None for n in names + (w.model_column, w.hash_ids_column)):
        return None
    if any(n is None for n in names):
        raise ValueError("workload: a generic trace needs time_column, input_column and "
                         f"output_column (got {names})")
    return TraceColumns(time=w.time_column, time_unit=w.time_unit, input=w.input_column,
                        output=w.output_column, model=w.model_column,
                        hash_ids=w.hash_ids_column)


def build_trace_schedule(
    w: Any,
    instances: Sequence[str],
    vocab_sizes: dict[str, int],
    per_instance: dict[str, Any] | None = None,
    max_model_lens: dict[str, int] | None = None,
) -> tuple[list[RequestSpec], dict[str, TraceStats]]:
    """Every instance's trace requests, sorted by at_s with request_id 0..n-1, and stats."""
    own = {name: (per_instance or {}).get(name, w) for name in instances}
    tables = {}
    for wi in own.values():
        key = (str(wi.path), wi.format, trace_columns(wi))
        if key not in tables:
            tables[key] = read_trace(*key)
    origin = min(float(t["arrival_s"].iloc[0]) for t in tables.values())
    specs: list[RequestSpec] = []
    stats: dict[str, TraceStats] = {}
    for name, wi in own.items():
        table = tables[(str(wi.path), wi.format, trace_columns(wi))]
        opts = trace_options(wi, (max_model_lens or {}).get(name))
        plan = plan_table(table, opts, source=str(wi.path),
                          origin_s=origin if w.shared_clock else None)
        prompts = TracePrompts(vocab_sizes[name], seed=wi.seed, block_size=wi.block_size,
                               low=wi.min_token_id)
        specs += trace_request_specs(plan.requests, name, prompts, wi.temperature)
        stats[name] = plan.stats
    specs.sort(key=lambda s: (s.at_s, instances.index(s.instance), s.request_id))
    out = [replace(s, request_id=k) for k, s in enumerate(specs)]
    return out, stats
