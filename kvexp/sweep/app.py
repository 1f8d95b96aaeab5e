"""The sweep process's entry, `python -m kvexp [overrides]`: run the configured experiment
(Hydra; `-m` for sweeps).

Subcommands: `python -m kvexp report DIR` (render a report), `python -m kvexp resume DIR`
(re-run a sweep into its folder: finished points are kept, the others run again),
`python -m kvexp top` (live view of kvcached instances; `top limit NAME SIZE` sets a limit).

Exit codes: 0 all points ok, 1 a point failed or the report could not be rendered, 2
refused before anything started (bad config, an unwritable output folder), 130 interrupted
by Ctrl-C, 143 by SIGTERM.
"""

from __future__ import annotations

import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kvexp import safety
from kvexp.config import register_configs
from kvexp.signals import ignore_interrupts

SUBCOMMANDS = {"report": "kvexp.report.__main__", "top": "kvexp.top",
               "resume": "kvexp.sweep.resume", "calibrate": "kvexp.engines.sim.calibrate"}
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # absolute: console script too
_UID = secrets.token_hex(3)
_STATE: dict[str, Path] = {}  # the point being run, for the message after Ctrl-C

OmegaConf.register_new_resolver("kvexp_uid", lambda: _UID, replace=True)
# outputs/<name>/: a name that would leave outputs/ fails before Hydra makes the folder
OmegaConf.register_new_resolver("kvexp_name", safety.check_name, replace=True)
register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    from kvexp.config import ConfigError, to_config
    from kvexp.sweep.job import run_job
    from kvexp.sweep.sweeper import BASIC_LAUNCHER

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if not multirun:  # a single run is refused before anything starts, as a sweep is
        try:
            to_config(cfg)
        except ConfigError as exc:
            print(f"[kvexp] refused, nothing was started:\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
    _STATE["point_dir"] = Path(hc.runtime.output_dir)
    groups = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    shared = multirun and hc.launcher.get("_target_") == BASIC_LAUNCHER
    return run_job(cfg, _STATE["point_dir"], list(hc.overrides.task), groups, shared=shared)


def entry() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        name = sys.argv.pop(1)
        sys.argv[0] = f"kvexp {name}"
        sys.exit(importlib.import_module(SUBCOMMANDS[name]).main())
    from kvexp.sweep.server_pool import POOL
    from kvexp.sweep.state import SWEEP

    def on_sigterm(signum: int, frame: Any) -> None:
        SWEEP["signal"] = signum  # the exit code: 128 + it
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C stops the sweep even when it was started with SIGINT ignored (a `cmd &` of a
    # script without job control), which Python would otherwise keep
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except KeyboardInterrupt:
        ignore_interrupts()  # clean-up must not be interrupted
        POOL.close()
        code = 128 + SWEEP.get("signal", signal.SIGINT)
        point = _STATE.get("point_dir")
        sweep = point.parent if point is not None else SWEEP.get("dir")
        if sweep is None or not sweep.is_dir():
            sys.exit(code)
        from kvexp.sweep.callbacks import finish

        where = f" during point {point.name}" if point is not None else ""
        print(f"\n[kvexp] interrupted{where}; what was measured is kept", file=sys.stderr)
        finish(sweep, render=True)
        sys.exit(code)
    finally:
        POOL.close()


if __name__ == "__main__":
    entry()
