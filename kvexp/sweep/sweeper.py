"""kvexp's sweeper: Hydra's basic sweep (cartesian product), checked before anything starts.

Before the first point runs, every point of the sweep is composed and validated, so a
bad value anywhere is refused with every problem listed and nothing started. Re-running
a sweep into a folder that holds one (`hydra.sweep.dir=DIR`, or `python -m kvexp resume
DIR`) must be the same sweep: points that finished are kept, the others run again. Where
servers can be shared (kvexp/sweep/server_pool.py), points that share them are put next to
each other, the repeats staying interleaved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from kvexp.config import Config, ConfigError, config_hash, resolve_instances, to_config
from kvexp.results import point_record, write_json
from kvexp.results.jsonfile import write_text_atomic
from kvexp.results.point_record import label_of
from kvexp.signals import ignore_interrupts
from kvexp.sweep import folder_lock
from kvexp.sweep.state import INTERRUPTED, SWEEP

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class SweepRefused(Exception):
    """The sweep cannot start; the message lists why, point by point."""


@dataclass
class PlannedPoint:
    overrides: list[str]
    config_hash: str
    server_key: str | None  # None: this point's servers are never shared


def task_config(cfg: DictConfig) -> DictConfig:
    """A composed sweep config without its `hydra` node: what the task function receives."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def unread_keys(jobs: list[list[str]], confs: list[Config], varying: set[str]) -> list[str]:
    """A top-level key swept over values that change no point (every other key equal, the
    configs equal but for that key), e.g. `burst_size` with a workload that sets its own."""
    top = {f.name for f in dataclasses.fields(Config)}
    problems = []
    for k in sorted(varying & top):
        groups: dict[tuple[str, ...], dict[str, str]] = {}
        for overrides, conf in zip(jobs, confs, strict=True):
            rest = tuple(sorted(o for o in overrides if o.partition("=")[0] != k))
            value = next(o.partition("=")[2] for o in overrides if o.partition("=")[0] == k)
            body = {n: v for n, v in dataclasses.asdict(conf).items() if n not in (k, "repeat")}
            body["resolved"] = [dataclasses.asdict(i) for i in resolve_instances(conf)]
            groups.setdefault(rest, {})[value] = json.dumps(body, sort_keys=True, default=str)
        for same in groups.values():
            if len(same) > 1 and len(set(same.values())) == 1:
                problems.append(f"{k} is swept over {', '.join(sorted(same))} but no point "
                                f"reads it: those points would run identically (the "
                                f"workload or instances set their own); sweep the key "
                                f"they read instead")
                break
    return problems


def plan(jobs: list[list[str]], configs: list[DictConfig], reuse: bool,
         parallel: bool = False) -> list[PlannedPoint]:
    """Validate every point; with `reuse`, order points so that shared servers stay up.
    `parallel`: points may run at the same time (fixed ports would collide).

    Raises SweepRefused listing every invalid point."""
    from kvexp.sweep.server_pool import server_key

    problems, points = [], []
    confs: list[Config] = []
    values: dict[str, set[str]] = {}
    for o in (o for j in jobs for o in j):
        key, _, value = o.partition("=")
        values.setdefault(key, set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1} - {"repeat"}
    for overrides, cfg in zip(jobs, configs, strict=True):
        try:
            conf = to_config(task_config(cfg))
        except ConfigError as exc:
            name = " ".join(o for o in overrides if o.split("=", 1)[0] in varying)
            problems.append(f"point {name or label_of(overrides)!r}: {exc}")
            continue
        if parallel and (conf.engine.port is not None
                         or any(i.port is not None for i in conf.instances.values())):
            problems.append(f"point {label_of(overrides)!r}: engine.port / instances.<name>.port"
                            " is fixed, but this launcher runs points at the same time: leave "
                            "ports null (picked free per instance)")
            continue
        confs.append(conf)
        key = server_key(conf) if reuse else None
        points.append(PlannedPoint(list(overrides), config_hash(conf), key))
    if not problems:
        problems += unread_keys(jobs, confs, varying)
    if problems:
        raise SweepRefused("\n".join(problems))
    if reuse:
        points = counterbalanced(points, [c.repeat for c in confs])
    return points


def counterbalanced(points: list[PlannedPoint], repeats: list[int]) -> list[PlannedPoint]:
    """Shared-server order, A B B A: within each repeat, the i-th point of every server key
    (keys in order of first appearance) forms round i, and odd rounds run the keys in
    reverse. Allocators (any server keys) then alternate in time instead of all-A-then-all-B,
    and the last point of a round shares its servers with the first of the next. Points that
    never share (key None) follow their repeat's shared ones, in their own order."""
    out: list[PlannedPoint] = []
    for rep in dict.fromkeys(repeats):
        mine = [p for p, r in zip(points, repeats, strict=True) if r == rep]
        by_key: dict[str, list[PlannedPoint]] = {}
        for p in mine:
            if p.server_key is not None:
                by_key.setdefault(p.server_key, []).append(p)
        keys = list(by_key)
        for i in range(max((len(v) for v in by_key.values()), default=0)):
            for k in keys if i % 2 == 0 else keys[::-1]:
                if i < len(by_key[k]):
                    out.append(by_key[k][i])
        out += [p for p in mine if p.server_key is None]
    return out


def check_resume(sweep_dir: Path, points: list[PlannedPoint]) -> list[str]:
    """Problems that forbid running `points` into `sweep_dir` (empty: go ahead).

    A folder `sweep_dir/<i>` that exists must hold point i of this very sweep."""
    problems = []
    wanted = {str(i): p for i, p in enumerate(points)}
    for point_json in sorted(sweep_dir.glob("*/point.json")):
        name = point_json.parent.name
        meta = point_record.read_dict(point_json.parent)
        if meta is None:
            continue  # unreadable: run again
        p = wanted.get(name)
        if p is None:
            problems.append(f"{point_json.parent} is not a point of this sweep "
                            f"(it ran {label_of(meta.get('overrides', []))!r})")
        elif meta.get("overrides") != p.overrides:
            problems.append(f"{point_json.parent} ran {label_of(meta.get('overrides', []))!r}, "
                            f"this sweep's point {name} is {label_of(p.overrides)!r}")
        elif meta.get("status") == "ok" and meta.get("config_hash") not in (None, p.config_hash):
            problems.append(f"{point_json.parent} finished with another config of "
                            f"{label_of(p.overrides)!r} (a config file changed since)")
    return problems


class ValidatingSweeper(BasicSweeper):
    """BasicSweeper that validates the whole sweep first and keeps finished points."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = [list(j) for j in self.split_arguments(overrides, None)[0]]
        # Composition errors (an unknown option: Hydra lists the choices) are raised here.
        configs = [loader.load_sweep_config(master_config=self.config, sweep_overrides=j)
                   for j in jobs]
        launcher = str(self.config.hydra.launcher.get("_target_", ""))
        basic = launcher == BASIC_LAUNCHER
        reuse = basic and bool(self.config.get("reuse_servers", True))
        parallel = not basic and self.config.hydra.launcher.get("n_jobs", 2) != 1
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            points = plan(jobs, configs, reuse, parallel)
            folder_lock.hold(sweep_dir)  # before reading what the folder holds
            problems = check_resume(sweep_dir, points) if sweep_dir.is_dir() else []
            if problems:
                raise SweepRefused(
                    f"{sweep_dir} holds another sweep; resume needs the same sweep "
                    "(or use a new hydra.sweep.dir):\n  - " + "\n  - ".join(problems))
        except (SweepRefused, folder_lock.FolderRefused) as exc:
            print(f"[kvexp] sweep refused, nothing was started:\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self.overrides = [[p.overrides for p in points]]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        write_json({"planned": [p.__dict__ for p in points], "time": time.time()},
                           sweep_dir / "sweep.json")
        SWEEP["dir"] = sweep_dir
        (sweep_dir / INTERRUPTED).unlink(missing_ok=True)  # from an earlier, interrupted run
        if not basic:  # the launcher's workers would be killed before their points wrote
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _stop_points_first)
        returns: list[Sequence[JobReturn]] = []
        while not self.is_done():
            batch = self.get_job_batch()
            rets = self.launcher.launch(batch, initial_job_idx=0)
            for i, r in enumerate(rets):
                if r.status == JobStatus.FAILED:  # e.g. a SLURM time limit: the point failed
                    _job_failed(sweep_dir / str(i), batch[i], r._return_value)
            returns.append(rets)
        return returns



def _job_failed(point_dir: Path, overrides: Sequence[str], exc: object) -> None:
    """A job that ended in an exception outside kvexp's own handling: record its point."""
    error = f"the launcher's job failed: {type(exc).__name__}: {exc}"
    print(f"[kvexp] point {point_dir.name} ({label_of(overrides)}): {error}", file=sys.stderr)
    meta = point_record.read_dict(point_dir) or {
        "point": point_dir.name, "label": label_of(overrides), "overrides": list(overrides)}
    if meta.get("status") in ("ok", "failed"):
        return  # kvexp recorded it already
    point_dir.mkdir(parents=True, exist_ok=True)
    point_record.mark_failed(point_dir, meta, error)


def _stop_points_first(signum: int, frame: Any) -> None:
    """Ctrl-C / SIGTERM under a parallel launcher: let every running point stop its servers
    and write what it measured, then interrupt the sweep (whose workers die with it)."""
    import psutil

    ignore_interrupts()
    print(f"\n[kvexp] {signal.Signals(signum).name}: stopping the running points",
          file=sys.stderr, flush=True)
    if "dir" in SWEEP:  # workers freed by their stopped points must not start new ones
        (SWEEP["dir"] / INTERRUPTED).touch()
    running = [p for p in psutil.Process().children(recursive=True)
               if "kvexp.point" in " ".join(_cmdline(p))]
    for p in running:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGINT)
    psutil.wait_procs(running, timeout=120)
    SWEEP["signal"] = signum
    raise KeyboardInterrupt(f"signal {signum}")


def _cmdline(p: Any) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return []
