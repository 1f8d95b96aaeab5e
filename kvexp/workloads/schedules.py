"""Arrival schedules: a WorkloadConfig and instance names in, a sorted list of RequestSpec out.

Pure and seeded: the same config gives the same schedule. Kinds:

- bursty: `waves` waves; in each, every instance gets `burst_size` requests at once.
  Wave k is due at k * idle_s (start to start).
- alternating: `waves` rounds; round i sends `burst_size` requests to instance i mod N only,
  at i * idle_s.
- poisson / gamma: one independent stream per instance at `rate` req/s, for `duration_s`
  and/or until `num_requests` per instance; gamma inter-arrivals have shape `burstiness`
  and mean 1 / rate (as vLLM bench's --burstiness; 1.0 is Poisson, < 1 is burstier).
- onoff: instance i is on during [i * stagger_s + m * period_s, ... + on_s) for every m,
  with Poisson arrivals at `rate` while on; `wave` is the phase's ordinal for that instance.

With `wait_for_wave` (see `chains_waves`), bursty/alternating waves are chained by the
driver: wave k > 0 starts `idle_s` after every request of wave k - 1 finished, and the
nominal k * idle_s only orders the waves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from kvexp.results.records import RequestSpec
from kvexp.workloads.prompts import cycled, random_token_ids

KINDS = ("bursty", "alternating", "poisson", "gamma", "onoff", "trace")
WAVE_KINDS = ("bursty", "alternating")
STREAM_KINDS = ("poisson", "gamma", "onoff")
APIS = ("chat", "completions")


def check_workload(w: Any) -> list[str]:
    """Every problem with a workload config, as readable messages; [] if it is valid."""
    errors: list[str] = []
    if w.kind not in KINDS:
        errors.append(f"workload.kind {w.kind!r} is unknown; expected one of {', '.join(KINDS)}")
    if w.api not in APIS:
        errors.append(f"workload.api {w.api!r} is unknown; expected one of {', '.join(APIS)}")
    if w.max_tokens < 1:
        errors.append(f"workload.max_tokens must be >= 1, got {w.max_tokens}")
    if w.temperature < 0:
        errors.append(f"workload.temperature must be >= 0, got {w.temperature}")
    if w.seed < 0:
        errors.append(f"workload.seed must be >= 0, got {w.seed}")
    if w.request_timeout_s <= 0:
        errors.append(f"workload.request_timeout_s must be > 0, got {w.request_timeout_s}")
    if w.lead_in_s < 0 or w.tail_s < 0:
        errors.append("workload.lead_in_s and workload.tail_s must be >= 0")
    if w.random_input_len is None:
        if not w.prompts:
            errors.append("workload.prompts is empty (give prompts or set random_input_len)")
    else:
        if w.random_input_len < 1:
            errors.append(f"workload.random_input_len must be >= 1, got {w.random_input_len}")
        if w.api != "completions":
            errors.append(
                "workload.random_input_len sends token ids, which only the completions API "
                f"accepts: set workload.api=completions (got {w.api!r})"
            )
    if w.kind in WAVE_KINDS:
        if w.waves < 1:
            errors.append(f"workload.waves must be >= 1, got {w.waves}")
        if w.burst_size < 1:
            errors.append(f"workload.burst_size must be >= 1, got {w.burst_size}")
        if w.idle_s < 0:
            errors.append(f"workload.idle_s must be >= 0, got {w.idle_s}")
    if w.kind in STREAM_KINDS:
        if w.rate <= 0:
            errors.append(f"workload.rate must be > 0 (req/s per instance), got {w.rate}")
        if w.duration_s is None and w.num_requests is None:
            errors.append(f"workload kind {w.kind} needs duration_s or num_requests (both None)")
        if w.duration_s is not None and w.duration_s <= 0:
            errors.append(f"workload.duration_s must be > 0, got {w.duration_s}")
        if w.num_requests is not None and w.num_requests < 1:
            errors.append(f"workload.num_requests must be >= 1, got {w.num_requests}")
    if w.kind == "trace":
        errors += _check_trace(w)
    if w.kind == "gamma" and w.burstiness <= 0:
        errors.append(f"workload.burstiness (gamma shape) must be > 0, got {w.burstiness}")
    if w.kind == "onoff":
        if w.period_s <= 0:
            errors.append(f"workload.period_s must be > 0, got {w.period_s}")
        if w.on_s <= 0 or w.on_s > w.period_s:
            errors.append(
                f"workload.on_s must be in (0, period_s={w.period_s}], got {w.on_s}"
            )
        if w.stagger_s < 0:
            errors.append(f"workload.stagger_s must be >= 0, got {w.stagger_s}")
    return errors


def _check_trace(w: Any) -> list[str]:
    """The trace keys' problems (kind=trace)."""
    from kvexp.workloads.traces import TraceOptions
    from kvexp.workloads.traces_load import FORMATS, TIME_UNITS

    errors = []
    if not w.path:
        errors.append("workload.path is empty: kind=trace needs a trace file (or excerpt:NAME)")
    if w.format not in FORMATS:
        errors.append(f"workload.format {w.format!r} is unknown; expected one of "
                      f"{', '.join(FORMATS)}")
    if w.time_unit not in TIME_UNITS:
        errors.append(f"workload.time_unit {w.time_unit!r} is unknown; expected one of "
                      f"{', '.join(TIME_UNITS)}")
    if w.api != "completions":
        errors.append("workload.api: trace prompts are token ids, which only the completions "
                      f"API accepts: set workload.api=completions (got {w.api!r})")
    if w.block_size < 1:
        errors.append(f"workload.block_size must be >= 1, got {w.block_size}")
    if w.min_token_id < 0:
        errors.append(f"workload.min_token_id must be >= 0, got {w.min_token_id}")
    opts = TraceOptions(start_s=w.start_s, duration_s=w.window_s, max_requests=w.num_requests,
                        time_scale=w.time_scale, target_rate=w.target_rate,
                        max_model_len=w.max_model_len, length_policy=w.length_policy)
    names = {"duration_s": "window_s", "max_requests": "num_requests"}
    known = {f.name for f in fields(TraceOptions)}
    for e in opts.problems():
        key = e.split(" ", 1)[0]
        errors.append(f"workload.{names.get(key, key)}{e[len(key):]}" if key in known
                      else f"workload: {e}")
    return errors


def chains_waves(w: Any) -> bool:
    """Whether the driver should chain waves (drive(..., wait_for_wave=True, wave_gap_s=idle_s))."""
    return bool(w.wait_for_wave) and w.kind in WAVE_KINDS


def build_schedule(
    w: Any,
    instances: Sequence[str],
    vocab_sizes: dict[str, int] | None = None,
    per_instance: dict[str, Any] | None = None,
    max_model_lens: dict[str, int] | None = None,
    trace_stats: dict[str, Any] | None = None,
) -> list[RequestSpec]:
    """The workload's requests, sorted by at_s, with request_id 0..n-1.

    `per_instance` gives some instances a workload of their own (same kind as `w`): its
    rate, duration, burst size, prompts and request shape apply to that instance's
    requests; rounds and waves (their number and spacing) stay `w`'s. kind=trace goes to
    `build_trace_schedule` (lengths fitted to `max_model_lens`); its per-instance
    TraceStats are put in `trace_stats` when given.
    """
    own = [(per_instance or {}).get(name, w) for name in instances]
    errors = check_workload(w)
    for name, wi in zip(instances, own, strict=True):
        if wi is not w:
            errors += [f"{name}: {e}" for e in check_workload(wi)]
            if wi.kind != w.kind:
                errors.append(f"{name}: workload kind {wi.kind!r} differs from {w.kind!r}")
    if not instances:
        errors.append("no instances to send requests to")
    if any(wi.random_input_len is not None for wi in own):
        missing = [i for i in instances if not vocab_sizes or i not in vocab_sizes]
        if missing:
            errors.append(f"random_input_len needs vocab_sizes for instances {missing}")
    if w.kind == "trace":
        missing = [i for i in instances if not vocab_sizes or i not in vocab_sizes]
        if missing:
            errors.append(f"kind=trace needs vocab_sizes for instances {missing}")
    if errors:
        raise ValueError("invalid workload: " + "; ".join(errors))
    if w.kind == "trace":
        from kvexp.workloads.trace_schedule import build_trace_schedule

        assert vocab_sizes is not None
        specs, stats = build_trace_schedule(w, instances, vocab_sizes, per_instance,
                                            max_model_lens)
        if trace_stats is not None:
            trace_stats.update(stats)
        return specs

    # (at_s, wave, seq within instance, instance index)
    raw: list[tuple[float, int, int, int]] = []
    n = len(instances)
    if w.kind == "bursty":
        for k in range(w.waves):
            raw += [(k * w.idle_s, k, j, i) for i in range(n) for j in range(own[i].burst_size)]
    elif w.kind == "alternating":
        for k in range(w.waves):
            raw += [(k * w.idle_s, k, j, k % n) for j in range(own[k % n].burst_size)]
    else:
        for i in range(n):
            rng = np.random.default_rng([own[i].seed, 0, i])
            arrivals = _onoff(rng, own[i], i) if w.kind == "onoff" else _stream(rng, own[i])
            raw += [(t, wave, j, i) for j, (t, wave) in enumerate(arrivals)]
    raw.sort()

    token_rng = np.random.default_rng([w.seed, 1])
    specs = []
    for rid, (at_s, wave, _, i) in enumerate(raw):
        name, wi = instances[i], own[i]
        ids = None
        if wi.random_input_len is not None:
            assert vocab_sizes is not None
            ids = random_token_ids(token_rng, wi.random_input_len, vocab_sizes[name])
        specs.append(
            RequestSpec(
                request_id=rid,
                instance=name,
                at_s=float(at_s),
                max_tokens=wi.max_tokens,
                temperature=wi.temperature,
                ignore_eos=wi.ignore_eos,
                api=wi.api,
                prompt=None if ids is not None else cycled(list(wi.prompts), rid),
                prompt_token_ids=ids,
                wave=wave,
            )
        )
    return specs


def _gap(rng: np.random.Generator, w: Any) -> float:
    if w.kind == "gamma":
        return float(rng.gamma(shape=w.burstiness, scale=1.0 / (w.rate * w.burstiness)))
    return float(rng.exponential(1.0 / w.rate))


def _stream(rng: np.random.Generator, w: Any) -> Iterator[tuple[float, int]]:
    """Poisson/gamma arrivals in [0, duration_s), at most num_requests; wave -1."""
    t, count = 0.0, 0
    while w.num_requests is None or count < w.num_requests:
        t += _gap(rng, w)
        if w.duration_s is not None and t >= w.duration_s:
            return
        count += 1
        yield t, -1


def _onoff(rng: np.random.Generator, w: Any, i: int) -> Iterator[tuple[float, int]]:
    """Poisson arrivals during instance i's on phases; wave = the phase's ordinal."""
    shift = i * w.stagger_s
    m = -math.ceil(shift / w.period_s) - 1
    phase, count = 0, 0
    while True:
        start = shift + m * w.period_s
        m += 1
        if w.duration_s is not None and start >= w.duration_s:
            return
        lo, hi = max(start, 0.0), start + w.on_s
        if w.duration_s is not None:
            hi = min(hi, w.duration_s)
        if hi <= lo:
            continue
        t = lo
        while True:
            t += float(rng.exponential(1.0 / w.rate))
            if t >= hi:
                break
            if w.num_requests is not None and count >= w.num_requests:
                return
            count += 1
            yield t, phase
        phase += 1
