"""`python -m kvexp resume DIR [overrides]`: run a sweep again into its own folder.

The sweep's overrides come from `DIR/multirun.yaml` (Hydra writes it); points that
finished are kept, failed or interrupted ones run again (their earlier attempt is
moved to `<point>/previous/`). Extra overrides are appended: Hydra's own (e.g. a longer
`hydra.launcher.timeout_min`) change nothing of the points; others make them another
sweep, which is refused before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf


def resume_argv(sweep_dir: Path, extra: list[str]) -> list[str]:
    """The `python -m kvexp` arguments that re-run the sweep in `sweep_dir`."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        raise SystemExit(f"kvexp resume: {saved} not found: not a multirun folder "
                         "(a single run is resumed with hydra.run.dir=<its folder>)")
    task = list(OmegaConf.load(saved).hydra.overrides.task)
    task = [o for o in task if not o.startswith(("hydra.sweep.dir=", "hydra/sweeper"))]
    return ["-m", *task, *extra, f"hydra.sweep.dir={sweep_dir.resolve()}"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kvexp resume", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="the sweep folder (outputs/<name>/<time>-<id>)")
    parser.add_argument("overrides", nargs="*", help="more overrides, appended")
    args = parser.parse_args()
    argv = [sys.executable, "-m", "kvexp", *resume_argv(args.dir, args.overrides)]
    print("[kvexp] resume:", " ".join(argv[3:]), flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached
