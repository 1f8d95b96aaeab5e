"""The sweep side of one point: validate, choose the engine, run the point in its own
process, and record a failure without stopping the sweep."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kvexp.config import Config, ConfigError, config_hash, resolve_instances, to_config
from kvexp.engines.choice import choose_engine
from kvexp.engines.servers import die_with_parent, error_text
from kvexp.results import point_record, write_json
from kvexp.results.jsonfile import write_text_atomic
from kvexp.results.point_record import label_of, mark_failed
from kvexp.signals import ignore_interrupts
from kvexp.sweep.gpu_slots import GpuSlotError, gpu_env, point_gpus
from kvexp.sweep.server_pool import POOL, server_key
from kvexp.sweep.state import INTERRUPTED


def choices(cfg: Config, meta: dict[str, Any], groups: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """The point's config choices: the columns that label it in summaries and reports."""
    insts = resolve_instances(cfg)
    return {
        "point": meta["point"],
        "label": meta["label"],
        "name": cfg.name,
        "engine": cfg.engine.kind,
        "allocator": cfg.allocator.kind,
        "models": "+".join(i.model.name for i in insts),
        "instances": "+".join(i.name for i in insts),
        "n_instances": len(insts),
        # the option chosen (e.g. random_tokens), else the schedule kind
        "workload": (groups or {}).get("workload") or cfg.workload.kind,
        "burst_size": cfg.workload.burst_size,
        "repeat": cfg.repeat,
        "overrides": " ".join(meta["overrides"]),
    }


def _kill_servers(point_dir: Path) -> None:
    """Last resort after a point process had to be killed: its servers' process groups."""
    for record in (point_record.read_dict(point_dir) or {}).get("servers") or []:
        if record.get("pgid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record["pgid"], signal.SIGKILL)


def _earlier_run(point_dir: Path, overrides: list[str], digest: str) -> dict[str, Any] | None:
    """point.json of this very point if an earlier run of the sweep finished it, else None.

    An unfinished earlier attempt (failed, interrupted) is moved to `previous/<n>/`: kept,
    but out of the way of the new one."""
    meta = point_record.read_dict(point_dir)
    if meta is None:
        return None
    if meta.get("status") == "ok" and meta.get("overrides") == overrides \
            and meta.get("config_hash") == digest:
        return meta
    n = 0
    while (point_dir / "previous" / str(n)).exists():
        n += 1
    dest = point_dir / "previous" / str(n)
    dest.mkdir(parents=True)
    for f in list(point_dir.iterdir()):
        if f.name not in ("previous", ".hydra"):
            shutil.move(str(f), dest / f.name)
    return None


def _run_point_process(conf: Config, point_dir: Path, env: dict[str, str] | None) -> int:
    """`python -m kvexp.point DIR` to its end; Ctrl-C is forwarded once and waited for."""
    proc = subprocess.Popen([sys.executable, "-m", "kvexp.point", str(point_dir)], env=env,
                            start_new_session=True,  # Ctrl-C reaches it through us, once
                            preexec_fn=die_with_parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        ignore_interrupts()  # a second Ctrl-C must not cut clean-up
        proc.send_signal(signal.SIGINT)
        n = len(resolve_instances(conf))
        try:  # each server: SIGTERM, stop_timeout_s, SIGKILL; then samplers and Parquet
            proc.wait(timeout=(conf.engine.stop_timeout_s + 15) * n + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _kill_servers(point_dir)
        raise


def run_job(cfg: DictConfig, point_dir: Path, overrides: list[str],
            groups: dict[str, Any] | None = None, shared: bool = False) -> dict[str, Any]:
    """Run one point in a subprocess; returns its point.json. Re-raises Ctrl-C.

    `shared`: the sweep may share servers between points (kvexp/sweep/server_pool.py)."""
    point_dir.mkdir(parents=True, exist_ok=True)
    label = label_of(overrides)
    meta: dict[str, Any] = {"status": "pending", "error": "", "point": point_dir.name,
                            "label": label, "overrides": overrides, "job_start": time.time()}
    try:
        conf = to_config(cfg)
    except ConfigError as exc:
        print(f"[kvexp] point {point_dir.name} ({label}): {exc}", file=sys.stderr)
        return mark_failed(point_dir, meta, str(exc))
    digest = config_hash(conf)
    done = _earlier_run(point_dir, overrides, digest)
    if done is not None:
        print(f"[kvexp] point {point_dir.name} ({label}): finished in an earlier run, kept",
              flush=True)
        return done
    if (point_dir.parent / INTERRUPTED).exists():
        return mark_failed(point_dir, meta, "not run: the sweep was interrupted")
    kind, reason = choose_engine(conf)
    key = server_key(conf) if shared else None
    conf.engine.kind = kind
    print(f"[kvexp] point {point_dir.name} ({label}): engine={kind}: {reason}", flush=True)
    meta.update(engine=kind, engine_reason=reason, config_hash=digest)
    meta["choices"] = choices(conf, meta, groups)
    write_text_atomic(point_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(asdict(conf))))
    point_record.write(meta, point_dir)
    if key is None:
        POOL.close()  # servers of earlier points are not this point's
        try:
            with point_gpus(conf.engine, owner=str(point_dir)) as gpus:
                if gpus is not None:
                    print(f"[kvexp] point {point_dir.name}: GPUs {gpus}", flush=True)
                    meta["gpus"] = gpus
                    point_record.write(meta, point_dir)
                rc = _run_point_process(conf, point_dir, gpu_env(gpus))
        except GpuSlotError as exc:
            return mark_failed(point_dir, meta, str(exc))
    else:
        try:
            attach = POOL.attach(conf, key, point_dir.parent, owner=str(point_dir.parent))
        except Exception as exc:  # noqa: BLE001 - the point fails, the sweep goes on
            return mark_failed(point_dir, meta, error_text(exc))
        write_json(attach, point_dir / "attach.json")
        rc = _run_point_process(conf, point_dir, None)
    meta = point_record.read_dict(point_dir) or meta
    meta["job_end"] = time.time()  # with job_start: the point's whole wall time, sweep side
    point_record.write(meta, point_dir)
    if rc != 0 and meta.get("status") not in ("failed",):  # killed: fold its journals
        from kvexp.results.fold import salvage

        meta = salvage(conf, point_dir, meta, rc)
    if key is not None:
        POOL.after_point(point_dir, meta)
    return meta
