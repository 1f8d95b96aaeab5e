"""`python -m kvexp [overrides]`: run the configured experiment (Hydra; `-m` for sweeps).

Subcommands: `python -m kvexp report DIR` (render a report), `python -m kvexp top`
(live view of kvcached instances; `top limit NAME SIZE` sets a KV limit).
"""

from __future__ import annotations

import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kvexp.config import register_configs

SUBCOMMANDS = {"report": "kvexp.report.__main__", "top": "kvexp.top"}
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # absolute: console script too
_UID = secrets.token_hex(3)
_STATE: dict[str, Path] = {}  # the point being run, for the message after Ctrl-C

OmegaConf.register_new_resolver("kvexp_uid", lambda: _UID, replace=True)
register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    from kvexp.job import run_job

    hc = HydraConfig.get()
    _STATE["point_dir"] = Path(hc.runtime.output_dir)
    groups = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    return run_job(cfg, _STATE["point_dir"], list(hc.overrides.task), groups)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def entry() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        name = sys.argv.pop(1)
        sys.argv[0] = f"kvexp {name}"
        sys.exit(importlib.import_module(SUBCOMMANDS[name]).main())
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        main()
    except KeyboardInterrupt:
        point = _STATE.get("point_dir")
        if point is None:
            sys.exit(130)
        from kvexp.callbacks import finish

        print(f"\n[kvexp] interrupted during point {point.name}; what was measured is kept",
              file=sys.stderr)
        finish(point.parent, render=True)
        sys.exit(130)


if __name__ == "__main__":
    entry()
