"""The capacity search as a Hydra sweeper (`experiment=capacity` selects it).

For each allocator: bisection over N (search.py) on the planning engine (`capacity.
plan_engine`, the sim), then, where the run's engine is another (the real vLLM), only the
frontier points N* and N* + 1 again on it, `confirm_repeats` times each; if the real engine
disagrees, the search walks down (or up) from there on the real engine until the boundary
is found. An N that cannot fit in memory (room.py) is "no room": recorded, never started.
Points are ordinary kvexp points (folders 0, 1, ... of the sweep, each in its own process);
capacity.json holds the answer and the points it rests on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from kvexp.capacity import answer as answers
from kvexp.capacity.answer import Answer, Probe
from kvexp.capacity.attainment import of_points, send_lag_p99_ms
from kvexp.capacity.room import no_room
from kvexp.capacity.search import grid, search
from kvexp.config import SLO_KEYS, Config, ConfigError, resolve_instances, to_config
from kvexp.results import point_record, write_json
from kvexp.sweep import folder_lock
from kvexp.sweep.state import SWEEP

SET_BY_SEARCH = ("allocator", "mix.n", "engine.kind", "repeat")


def refuse(message: str) -> None:
    print(f"[kvexp] capacity search refused, nothing was started:\n{message}", file=sys.stderr)
    raise SystemExit(2)


def slo_words(cfg: Config) -> str:
    units = {"ttft_ms": "ms", "tpot_ms": "ms", "itl_ms": "ms", "e2e_s": "s"}
    parts = [f"{k.rsplit('_', 1)[0].upper()} <= {getattr(cfg.slo, k):g} {units[k]}"
             for k in SLO_KEYS if getattr(cfg.slo, k) is not None]
    return " and ".join(parts) or "no SLO"


class CapacitySweeper(BasicSweeper):
    """Searches N per allocator instead of running a fixed list of points."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        lists = [o.input_line for o in parsed if o.is_sweep_override()]
        fixed = [o.input_line for o in parsed if o.get_key_element() in SET_BY_SEARCH]
        if lists or fixed:
            refuse("the search sets allocator, mix.n, engine.kind and repeat itself, and runs "
                   "no lists; got " + ", ".join(lists + fixed))
        base = [o.input_line for o in parsed]

        def compose(extra: list[str]) -> Config:
            cfg = loader.load_sweep_config(master_config=self.config,
                                           sweep_overrides=[*base, *extra])
            plain = OmegaConf.to_container(cfg, resolve=False)
            plain.pop("hydra", None)  # type: ignore[union-attr]
            return to_config(OmegaConf.create(plain))

        try:
            first = compose([])
        except ConfigError as exc:
            refuse(str(exc))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        run = CapacityRun(first, sweep_dir, compose,
                          lambda extra, idx: self._launch([*base, *extra], idx))
        problems = run.check()
        if problems:
            refuse("\n".join(f"  - {p}" for p in problems))
        try:
            folder_lock.hold(sweep_dir)
        except folder_lock.FolderRefused as exc:
            refuse(str(exc))
        SWEEP["dir"] = sweep_dir
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            run.run()
        finally:
            path = run.write()
            print(f"[kvexp] capacity: {path}")
            for line in run.sentences():
                print(f"[kvexp]   {line}")
        return []

    def _launch(self, overrides: list[str], idx: int) -> None:
        assert self.launcher is not None
        self.launcher.launch([overrides], initial_job_idx=idx)


class CapacityRun:
    """One capacity search: its points, in the order they ran, and the answers."""

    def __init__(self, cfg: Config, sweep_dir: Path,
                 compose: Callable[[list[str]], Config],
                 launch: Callable[[list[str], int], None]) -> None:
        from kvexp.engines.choice import choose_engine

        self.cfg, self.cap, self.sweep_dir = cfg, cfg.capacity, sweep_dir
        self.compose, self.launch = compose, launch
        self.real = choose_engine(cfg)[0]
        self.plan_engine = self.cap.plan_engine
        self.probes: list[Probe] = []
        self.answers: list[Answer] = []
        self.next_point = 0
        self.status = "running"
        self.started = time.time()

    def overrides(self, allocator: str, n: int, engine: str, repeat: int) -> list[str]:
        return [f"allocator={allocator}", f"mix.n={n}", f"engine.kind={engine}",
                f"repeat={repeat}"]

    def check(self) -> list[str]:
        """Every problem of the points the search may run (their configs at n_min, n_max)."""
        problems = self.plan_problems() if self.cap.plan else []
        if self.cfg.mix.n:
            problems.append("mix.n is the searched value: leave it unset (0) in the config")
        engines = {self.plan_engine, self.real}
        for a in self.cap.allocators:
            for n in sorted({self.cap.n_min, self.cap.n_max}):
                for e in engines:
                    try:
                        self.compose(self.overrides(a, n, e, 0))
                    except ConfigError as exc:
                        problems.append(f"allocator={a} mix.n={n} engine.kind={e}: {exc}")
        return problems

    def evaluate(self, phase: str, allocator: str, n: int, engine: str, repeats: int) -> bool:
        """Run N (or find it has no room) and say whether it met the target."""
        probe = Probe(phase, allocator, n, engine)
        self.probes.append(probe)
        cfg = self.compose(self.overrides(allocator, n, engine, 0))
        probe.no_room = no_room(cfg, resolve_instances(cfg))
        if probe.no_room:
            print(f"[kvexp] capacity {phase} {allocator} N={n}: {probe.no_room}")
            return False
        dirs = []
        for r in range(repeats):
            idx, self.next_point = self.next_point, self.next_point + 1
            probe.points.append(str(idx))
            self.write()
            self.launch(self.overrides(allocator, n, engine, r), idx)
            dirs.append(self.sweep_dir / str(idx))
        errors = []
        for d in dirs:
            meta = point_record.read_dict(d) or {}
            if meta.get("status") != "ok":
                errors.append(f"point {d.name}: {meta.get('error') or 'no result'}")
            launch, ready = meta.get("launch_time"), meta.get("ready_time")
            if meta.get("server_launch_time") and not meta.get("server_reused"):
                launch, ready = meta["server_launch_time"], meta.get("server_ready_time")
            if launch and ready:  # the sweep's shared servers: started for this point
                probe.startup_s.append(round(ready - launch, 2))
        att = of_points(dirs, self.cap.confidence)
        probe.send_lag_p99_ms = send_lag_p99_ms(dirs)
        probe.good, probe.requests = att.good, att.requests
        probe.attainment = None if att.requests == 0 else att.share
        probe.interval = None if att.requests == 0 else [att.low, att.high]
        if errors:
            probe.error = "; ".join(e[:300] for e in errors)
        elif probe.send_lag_p99_ms > self.cap.max_send_lag_ms:
            probe.error = (f"the load generator fell behind: p99 send lag "
                           f"{probe.send_lag_p99_ms:.0f} ms > capacity.max_send_lag_ms "
                           f"({self.cap.max_send_lag_ms:g}); the host is overloaded, so this "
                           "attainment measures it, not the engine")
        elif att.requests < self.cap.min_requests:
            probe.error = (f"{att.requests} requests, fewer than capacity.min_requests "
                           f"({self.cap.min_requests}): lengthen workload.duration_s")
        probe.met = probe.error is None and att.share >= self.cap.target
        shown = f"{probe.attainment:.3f}" if probe.attainment is not None else "-"
        print(f"[kvexp] capacity {phase} {allocator} N={n} on {engine}: attainment {shown} "
              f"over {att.requests} requests -> {'meets' if probe.met else 'misses'} "
              f"{self.cap.target:.0%}" + (f" ({probe.error})" if probe.error else ""))
        return probe.met

    def run(self) -> None:
        c = self.cap
        planned: dict[str, int] = self.earlier_plan() if c.plan else {}
        try:
            for a in [a for a in c.allocators if a not in planned]:
                find = grid if c.method == "grid" else search
                s = find(lambda n, a=a: self.evaluate("plan", a, n, self.plan_engine,
                                                       c.plan_repeats), c.n_min, c.n_max)
                planned[a] = s.max_n
            for a in c.allocators:
                self.answers.append(self.confirm(a, planned[a]) if self.confirms else
                                    Answer(a, self.plan_engine, planned[a], planned[a],
                                           self.probes_of(a)))
            self.status = "done"
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except BaseException:
            self.status = "failed"
            raise

    def earlier_plan(self) -> dict[str, int]:
        """N* per allocator from `capacity.plan` (its probes kept as this run's plan)."""
        data = json.loads(Path(self.cap.plan).expanduser().read_text())  # type: ignore[arg-type]
        self.probes += [Probe(**p) for p in data["_meta"]["probes"] if p["phase"] == "plan"]
        return {a: data[a]["planned_max_n"] for a in self.cap.allocators if a in data}

    def plan_problems(self) -> list[str]:
        """Why `capacity.plan` cannot stand for this run's plan (empty: it can)."""
        path = Path(self.cap.plan).expanduser()  # type: ignore[arg-type]
        try:
            data = json.loads(path.read_text())
            meta = data["_meta"]
        except (OSError, ValueError, KeyError) as exc:
            return [f"capacity.plan: {path} is not a capacity.json ({exc})"]
        mine = self.meta()
        keys = ("model", "mix", "slo", "target", "plan_engine", "workload")
        differ = [k for k in keys if meta.get(k) != mine[k]]
        for k in ("n_min", "n_max", "method"):
            if meta["capacity"].get(k) != mine["capacity"][k]:
                differ.append(f"capacity.{k}")
        missing = [a for a in self.cap.allocators if a not in data]
        out = [f"capacity.plan: {path} was planned with other settings: "
               f"{', '.join(differ)} differ"] if differ else []
        if missing:
            out.append(f"capacity.plan: {path} has no plan for {', '.join(missing)}")
        return out

    @property
    def confirms(self) -> bool:
        return self.cap.confirm and self.real != self.plan_engine

    def probes_of(self, allocator: str) -> list[Probe]:
        return [p for p in self.probes if p.allocator == allocator]

    def confirm(self, allocator: str, planned: int) -> Answer:
        """N* and N* + 1 on the real engine; walk from there while it disagrees."""
        c = self.cap
        seen: dict[int, bool] = {}

        def real(n: int) -> bool:
            if n not in seen:
                seen[n] = self.evaluate("confirm", allocator, n, self.real, c.confirm_repeats)
            return seen[n]

        n = planned
        if n >= c.n_min and not real(n):
            while n >= c.n_min and not real(n):
                n -= 1
        elif n + 1 <= c.n_max:
            while n + 1 <= c.n_max and real(n + 1):
                n += 1
        return Answer(allocator, self.real, n, planned, self.probes_of(allocator))

    def sentences(self) -> list[str]:
        return [answers.sentence(a, self.cap.target, slo_words(self.cfg)) for a in self.answers]

    def meta(self) -> dict[str, Any]:
        """What the answer depends on and how the search went (capacity.json's _meta)."""
        meta = {"status": self.status, "started": self.started, "time": time.time(),
                "target": self.cap.target, "confidence": self.cap.confidence,
                "slo": asdict(self.cfg.slo), "slo_words": slo_words(self.cfg),
                "capacity": asdict(self.cap), "mix": asdict(self.cfg.mix),
                "model": self.cfg.model.name if self.cfg.model else None,
                "plan_engine": self.plan_engine, "engine": self.real,
                "simulated_engines": sorted({p.engine for p in self.probes
                                             if p.engine == "sim"}),
                "probes": [p.as_dict() for p in self.probes],
                "answers": self.sentences(),
                "workload": asdict(self.cfg.workload)}
        return json.loads(json.dumps(meta, default=str))

    def write(self) -> Path:
        meta = self.meta()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            write_json({"planned": [], "capacity": True, "time": time.time()},
                       self.sweep_dir / "sweep.json")
        return answers.write(self.sweep_dir, self.answers, meta)
