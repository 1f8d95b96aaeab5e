"""One sweep point, start to finish: servers, samplers, workload, results.

Runs inside the point's own subprocess (`python -m kvexp.point DIR`). Whatever
happens (a server dies, a request fails, Ctrl-C), every server it started is
stopped and everything measured so far is written. Rows and samples are journaled as
they come (kvexp/results/journal.py): if the process is killed outright, the sweep
folds what it measured until then (kvexp/results/fold.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kvexp import engines, safety
from kvexp.clock import Clock
from kvexp.config import Config, ResolvedInstance, resolve_instances
from kvexp.engines import launch
from kvexp.engines.base import LaunchSpec
from kvexp.engines.servers import AttachedServer, Server, ServerError, error_text
from kvexp.kvcached_segment import KvcachedNotActive, set_limit, wait_for_segments
from kvexp.results import journal, point_record
from kvexp.results.fold import write_point
from kvexp.results.records import InstanceHandle, RequestRow, Sample
from kvexp.signals import ignore_interrupts

GIB = 2**30


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, turned into an exception so that clean-up runs."""


def _on_signal(signum: int, frame: Any) -> None:
    """The first Ctrl-C or SIGTERM interrupts the point; later ones must not cut clean-up."""
    ignore_interrupts()
    raise Interrupted(f"signal {signum}")


ENV_PREFIXES = engines.env_prefixes()  # each engine's own (kvexp/engines/<kind>/)


SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
REDACTED = "<redacted>"
KVCACHED_PROOF_S = 15.0  # how long a kvcached server may take to show its segment after ready


def redact(env: dict[str, str]) -> dict[str, str]:
    """`env` with the value of every credential-like name (TOKEN, KEY, SECRET, ...) hidden."""
    return {k: REDACTED if any(w in k.upper() for w in SECRET_WORDS) else v
            for k, v in env.items()}


def inherited_env() -> dict[str, str]:
    """The variables a server inherits that can change its behaviour (recorded with `env`),
    credentials redacted."""
    return redact({k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)})


def server_record(spec: LaunchSpec, shared: bool) -> dict[str, Any]:
    """What point.json says of a server: how it was started, and whether it is shared."""
    return {"name": spec.name, "argv": spec.argv, "env": redact(spec.env),
            "inherited_env": inherited_env(), "port": spec.port, "ipc_name": spec.ipc_name,
            "served_model": spec.served_model, "shared": shared}


def _device_source(cfg: Config, device_path: Path | None, gpu: int | None = None
                   ) -> tuple[Any, str]:
    if not (cfg.sampler.device or cfg.sampler.processes):
        return None, ""
    return engines.get(cfg.engine.kind).device_source(cfg, device_path, gpu)


def _prove_kvcached(insts: list[ResolvedInstance], specs: list[LaunchSpec]) -> None:
    """Every kvcached instance shows its segment with a limit > 0, or the point fails: vLLM
    builds its static pool silently when kvcached cannot be imported."""
    for inst, spec in zip(insts, specs, strict=True):
        if inst.allocator.kind != "kvcached" or spec.ipc_name is None:
            continue
        try:
            wait_for_segments(spec.ipc_name, KVCACHED_PROOF_S)
        except KvcachedNotActive as e:
            raise ServerError(f"{inst.name}: {e}") from None


def _apply_kv_limits(insts: list[ResolvedInstance], specs: list[LaunchSpec]) -> None:
    """Per-instance KV limits from config, written as `kvctl limit` does (after
    `_prove_kvcached`: every kvcached instance's segment exists)."""
    for inst, spec in zip(insts, specs, strict=True):
        if inst.allocator.kv_limit_gb is not None and spec.ipc_name is not None:
            set_limit(spec.ipc_name, int(inst.allocator.kv_limit_gb * GIB))


def _check_alive(servers: list[Any]) -> None:
    for s in servers:
        if s.exit_code() is not None:
            raise s.died_error()


def _sleep(seconds: float, servers: list[Any]) -> None:
    """Sleep, but fail at once if a server dies meanwhile."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        _check_alive(servers)
        time.sleep(min(0.2, left))


def read_attach(point_dir: Path) -> dict[str, Any] | None:
    """The shared servers this point attaches to (`attach.json`), or None: it starts its own."""
    path = point_dir / "attach.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_point(cfg: Config, point_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Run one point; returns its point.json content (status "ok" or "failed")."""
    from kvexp.samplers import SamplerGroup, build_samplers
    from kvexp.workloads.driver import run_workload
    from kvexp.workloads.schedules import build_schedule, chains_waves

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    clock = Clock()
    meta.update(status="running", error="", clock_start=clock.start, engine=cfg.engine.kind)
    lacking = engines.get(cfg.engine.kind).lacking(cfg)
    if lacking:  # signals this engine cannot give, and why
        meta["lacking_signals"] = lacking
        print("[kvexp] not measured: " + "; ".join(f"{k} ({v})" for k, v in lacking.items()),
              flush=True)
    insts = resolve_instances(cfg)
    servers: list[Any] = []  # Server (started here) or AttachedServer (the sweep's)
    handles: list[InstanceHandle] = []
    rows: list[RequestRow] = []
    samples: list[Sample] = []
    group = None
    attach = read_attach(point_dir)
    jour = journal.Journal(point_dir)

    def on_row(row: RequestRow) -> None:
        rows.append(row)
        jour.row(row)

    try:
        if attach is None:
            device_path = launch.device_path(cfg, point_dir)
            meta["servers"] = []
        else:  # the sweep's shared servers (kvexp/sweep/server_pool.py)
            servers = [AttachedServer(r) for r in attach["servers"]]
            device_path = Path(attach["device_path"]) if attach.get("device_path") else None
            meta["server_reused"] = bool(attach["reused"])
            meta["server_launch_time"] = attach["launch_time"]
            meta["server_ready_time"] = attach["ready_time"]
            meta["start_kv_held_bytes"] = attach.get("start_kv_held_bytes")
            meta["gpus"] = attach.get("gpus")
            meta["servers"] = [server_record(s.spec, shared=True) for s in servers]
            handles.extend(s.handle() for s in servers)
        point_record.write(meta, point_dir)
        gpus = (attach or {}).get("gpus") or meta.get("gpus")
        source, source_name = _device_source(cfg, device_path, gpus[0] if gpus else None)
        group = SamplerGroup(build_samplers(cfg.sampler, handles, source, source_name), clock,
                             sink=jour.samples)
        group.start()
        if attach is None:
            meta["launch_time"] = clock.now()

            def started(server: Server) -> None:
                record = server_record(server.spec, shared=False)
                record["pgid"] = server.proc.pid if server.proc else None  # last-resort kill
                meta["servers"].append(record)
                handles.append(server.handle())
                point_record.write(meta, point_dir)

            launch.start_servers(cfg, insts, point_dir, servers, started)
            for record, server in zip(meta["servers"], servers, strict=True):
                record.update(start_time=server.start_time, ready_time=server.ready_time)
        _check_alive(servers)
        _prove_kvcached(insts, [s.spec for s in servers])
        _apply_kv_limits(insts, [s.spec for s in servers])
        meta["ready_time"] = clock.now()
        point_record.write(meta, point_dir)
        w = cfg.workload
        _sleep(w.lead_in_s, servers)
        vocab = {i.name: i.model.vocab_size for i in insts}
        own = {i.name: i.workload for i in insts if i.workload is not None}
        lens = {i.name: i.model.max_model_len for i in insts}
        stats: dict[str, Any] = {}
        schedule = build_schedule(w, [i.name for i in insts], vocab, own, lens, stats)
        if stats:
            meta["trace"] = {name: asdict(st) for name, st in stats.items()}
        meta["workload_start"] = clock.now()
        point_record.write(meta, point_dir)  # progress, for whoever watches
        run_workload(
            schedule, {h.name: h for h in handles}, clock,
            wait_for_wave=chains_waves(w), wave_gap_s=w.idle_s,
            timeout_s=w.request_timeout_s, on_row=on_row,
            continuous_usage_stats=w.continuous_usage_stats,
        )
        meta["workload_end"] = clock.now()
        _check_alive(servers)
        _sleep(w.tail_s, servers)
        _check_alive(servers)
        failed = sum(not r.ok for r in rows)
        why = safety.too_many_failed(len(rows), failed, cfg.max_failed_share)
        meta["status"] = "ok" if why is None else "failed"
        if why is not None:
            meta["error"] = why
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised for Ctrl-C
        meta["status"] = "failed"
        if isinstance(exc, KeyboardInterrupt):
            meta["error"] = "interrupted (Ctrl-C or SIGTERM)"
        else:
            meta["error"] = error_text(exc)
            if not isinstance(exc, ServerError):
                meta["traceback"] = traceback.format_exc()
        if isinstance(exc, KeyboardInterrupt):
            raise
    finally:
        ignore_interrupts()  # a second Ctrl-C must not stop clean-up
        meta["end_time"] = clock.now()
        if meta.get("workload_start") and not meta.get("workload_end"):
            meta["workload_end"] = meta["end_time"]
        if group is not None:
            group.stop()
            samples = group.samples()
        if attach is None:  # shared servers are the sweep's to stop
            launch.stop_servers(servers, cfg.engine.stop_timeout_s)
        jour.close()
        write_point(point_dir, rows, samples, meta, clock.start,
                    {i.name: i.slo for i in insts})
        jour.remove()  # folded into the Parquet files
    return meta
