"""Checks that keep a run from harming its machine or its results: a results name that stays
under outputs/, servers that stay on loopback unless allowed, concurrency within the open-file
limit, and the share of failed requests a point may have and still count as ok."""

from __future__ import annotations

import ipaddress
import re
import resource
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FD_HEADROOM = 128  # files a point keeps open besides one socket per concurrent request
BURST_KINDS = ("bursty", "random_tokens", "alternating", "onoff")  # burst_size requests at once


def check_name(name: str) -> str:
    """`name` if it is one folder name (outputs/<name>/...), else ValueError saying why."""
    if not NAME.match(str(name)) or ".." in str(name):
        raise ValueError(f"name must be one folder name of letters, digits, '_', '.', '-' "
                         f"(1-64, no '..'), got {name!r}")
    return str(name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def max_concurrency(cfg: Any) -> int | None:
    """Requests a point may have open at once (None: not bounded by the schedule)."""
    if cfg.workload.kind not in BURST_KINDS:
        return None
    n = max(1, len(cfg.instances or {}))
    own = [getattr(i.workload, "burst_size", None) for i in (cfg.instances or {}).values()
           if getattr(i, "workload", None) is not None]
    per = max([cfg.burst_size, *[b for b in own if b]])
    return per * (n if cfg.workload.kind != "alternating" else 1)


def check(cfg: Any) -> list[str]:
    """Problems, each naming its key."""
    errs: list[str] = []
    try:
        check_name(cfg.name)
    except ValueError as e:
        errs.append(str(e))
    if not is_loopback(cfg.engine.host) and not cfg.engine.allow_remote:
        errs.append(f"engine.host={cfg.engine.host} listens beyond this machine, and the "
                    "servers take requests without authentication: set engine.allow_remote="
                    "true to mean it")
    if not 0.0 <= cfg.max_failed_share <= 1.0:
        errs.append(f"max_failed_share must be in [0, 1], got {cfg.max_failed_share}")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    conc = max_concurrency(cfg)
    if conc is not None and soft != resource.RLIM_INFINITY and conc + FD_HEADROOM > soft:
        errs.append(f"burst_size: {conc} requests at once need about {conc + FD_HEADROOM} "
                    f"open files, over this process's limit of {soft} (ulimit -n); raise "
                    "the limit or lower burst_size")
    return errs


def too_many_failed(requests: int, failed: int, max_share: float) -> str | None:
    """Why a point whose requests failed beyond `max_share` is failed (None: it is not)."""
    if requests == 0 or failed / requests <= max_share:
        return None
    return (f"{failed} of {requests} requests failed, more than max_failed_share="
            f"{max_share:g}; their rows are kept in requests.parquet")
