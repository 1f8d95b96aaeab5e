"""capacity.json: per allocator, the largest N meeting the target, with its evidence.

`{allocator: {"max_n", "attainment", "interval", "engine", "planned_max_n", "limit",
"points": [...]}, "_meta": {...}}`; `attainment` and `interval` are those at `max_n`
(null when no N met the target). Each point: phase (plan | confirm), n, engine, point
folders, attainment, requests, interval, met, and `no_room` / `error` when it did not run
or failed. A sim answer says so in `_meta.simulated_engines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvexp.results import write_json

FILE = "capacity.json"


@dataclass
class Probe:
    """One N evaluated in one phase: the points run (none if there was no room)."""

    phase: str
    allocator: str
    n: int
    engine: str
    points: list[str] = field(default_factory=list)
    met: bool = False
    attainment: float | None = None
    good: int = 0
    requests: int = 0
    interval: list[float] | None = None
    no_room: str | None = None
    error: str | None = None
    startup_s: list[float] = field(default_factory=list)  # per point: launch -> all ready
    send_lag_p99_ms: float = 0.0  # the load generator's own lag behind its schedule

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Answer:
    allocator: str
    engine: str
    max_n: int
    planned_max_n: int | None
    probes: list[Probe]

    def at(self, n: int) -> Probe | None:
        """The last evaluation of N on the answer's engine."""
        found = [p for p in self.probes if p.n == n and p.engine == self.engine]
        return found[-1] if found else None

    def limit(self) -> str | None:
        """Why N* + 1 is not the answer: no room, or its attainment."""
        nxt = self.at(self.max_n + 1)
        if nxt is None:
            return None
        if nxt.no_room:
            return nxt.no_room
        if nxt.error:
            return f"N={nxt.n} failed: {nxt.error}"
        if nxt.met:  # the search stopped at n_max
            return None
        if nxt.attainment is None:
            return f"N={nxt.n}: not met"
        return f"N={nxt.n}: attainment {nxt.attainment:.3f} below the target"

    def uncertain(self, target: float) -> bool:
        """The measurements cannot tell: the interval at N* or at N* + 1 holds the target."""
        best, nxt = self.at(self.max_n), self.at(self.max_n + 1)
        return bool((best and best.interval and best.interval[0] < target)
                    or (nxt and nxt.interval and nxt.interval[1] >= target))

    def as_dict(self, target: float) -> dict[str, Any]:
        best = self.at(self.max_n)
        return {
            "max_n": self.max_n,
            "engine": self.engine,
            "planned_max_n": self.planned_max_n,
            "attainment": best.attainment if best else None,
            "interval": best.interval if best else None,
            "limit": self.limit(),
            "uncertain": self.uncertain(target),
            "points": [p.as_dict() for p in self.probes],
        }


def write(sweep_dir: Path, answers: list[Answer], meta: dict[str, Any]) -> Path:
    path = sweep_dir / FILE
    target = meta["target"]
    write_json({"_meta": meta, **{a.allocator: a.as_dict(target) for a in answers}}, path)
    return path


def sentence(a: Answer, target: float, slo: str) -> str:
    """The answer in words, e.g. 'kvcached: 6 models (attainment 0.995 [0.98, 1.00]) ...'."""
    best = a.at(a.max_n)
    head = f"{a.allocator}: {a.max_n} model{'s' if a.max_n != 1 else ''} per GPU"
    if best is not None and best.attainment is not None and best.interval:
        lo, hi = best.interval
        head += f" (attainment {best.attainment:.3f} [{lo:.3f}, {hi:.3f}], {best.requests} req)"
    head += f" meet {target:.0%} of requests within {slo} on {a.engine}"
    why = a.limit()
    if a.uncertain(target):
        head += " [uncertain: an interval at N* or N*+1 holds the target; run longer]"
    return head + (f"; {why}" if why else "")
