"""kvexp's sweeper: Hydra's basic sweep (cartesian product), checked before anything starts.

Before the first point runs, every point of the sweep is composed and validated, so a
bad value anywhere is refused with every problem listed and nothing started. Re-running
a sweep into a folder that holds one (`hydra.sweep.dir=DIR`, or `python -m kvexp resume
DIR`) must be the same sweep: points that finished are kept, the others run again. Where
servers can be shared (kvexp/server_pool.py), points that share them are put next to
each other, the repeats staying interleaved.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf, open_dict

from kvexp import results
from kvexp.config import ConfigError, config_hash, to_config

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class SweepRefused(Exception):
    """The sweep cannot start; the message lists why, point by point."""


@dataclass
class PlannedPoint:
    overrides: list[str]
    config_hash: str
    server_key: str | None  # None: this point's servers are never shared


def label_of(overrides: Sequence[str]) -> str:
    return " ".join(o for o in overrides if not o.startswith("repeat=")) or "defaults"


def task_config(cfg: DictConfig) -> DictConfig:
    """A composed sweep config without its `hydra` node: what the task function receives."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def plan(jobs: list[list[str]], configs: list[DictConfig], reuse: bool) -> list[PlannedPoint]:
    """Validate every point; with `reuse`, order points so that shared servers stay up.

    Raises SweepRefused listing every invalid point."""
    from kvexp.server_pool import server_key

    problems, points = [], []
    varying = {o.split("=", 1)[0] for j in jobs for o in j} if len(jobs) > 1 else set()
    varying = {k for k in varying if len({o for j in jobs for o in j
                                          if o.split("=", 1)[0] == k}) > 1} - {"repeat"}
    for overrides, cfg in zip(jobs, configs, strict=True):
        try:
            conf = to_config(task_config(cfg))
        except ConfigError as exc:
            name = " ".join(o for o in overrides if o.split("=", 1)[0] in varying)
            problems.append(f"point {name or label_of(overrides)!r}: {exc}")
            continue
        key = server_key(conf) if reuse else None
        points.append(PlannedPoint(list(overrides), config_hash(conf), key))
    if problems:
        raise SweepRefused("\n".join(problems))
    if reuse:  # stable: first appearance of each server key keeps its place
        first: dict[str | None, int] = {}
        for i, p in enumerate(points):
            first.setdefault(p.server_key, i)
        points.sort(key=lambda p: first[p.server_key])
    return points


def check_resume(sweep_dir: Path, points: list[PlannedPoint]) -> list[str]:
    """Problems that forbid running `points` into `sweep_dir` (empty: go ahead).

    A folder `sweep_dir/<i>` that exists must hold point i of this very sweep."""
    problems = []
    wanted = {str(i): p for i, p in enumerate(points)}
    for point_json in sorted(sweep_dir.glob("*/point.json")):
        name = point_json.parent.name
        try:
            meta = json.loads(point_json.read_text())
        except (OSError, ValueError):
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
        reuse = launcher == BASIC_LAUNCHER and bool(self.config.get("reuse_servers", True))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            points = plan(jobs, configs, reuse)
            problems = check_resume(sweep_dir, points) if sweep_dir.is_dir() else []
            if problems:
                raise SweepRefused(
                    f"{sweep_dir} holds another sweep; resume needs the same sweep "
                    "(or use a new hydra.sweep.dir):\n  - " + "\n  - ".join(problems))
        except SweepRefused as exc:
            print(f"[kvexp] sweep refused, nothing was started:\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self.overrides = [[p.overrides for p in points]]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        results.write_json({"planned": [p.__dict__ for p in points], "time": time.time()},
                           sweep_dir / "sweep.json")
        returns: list[Sequence[JobReturn]] = []
        while not self.is_done():
            batch = self.get_job_batch()
            rets = self.launcher.launch(batch, initial_job_idx=0)
            for r in rets:
                _ = r.return_value  # re-raises a job's exception
            returns.append(rets)
        return returns
