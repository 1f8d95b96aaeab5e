"""A sweep point's own process: `python -m kvexp.point POINT_DIR`.

Reads the resolved `config.yaml` and `point.json` that the sweep wrote there, runs
the point and exits 0 (ok), 1 (failed) or 130 (interrupted).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from kvexp.config import to_config
from kvexp.point.runner import run_point
from kvexp.results import point_record


def main(argv: list[str]) -> int:
    point_dir = Path(argv[0])
    cfg = to_config(OmegaConf.load(point_dir / "config.yaml"))
    meta = point_record.read_dict(point_dir)
    if meta is None:
        print(f"point {point_dir}: no readable point.json", file=sys.stderr)
        return 1
    try:
        meta = run_point(cfg, point_dir, meta)
    except KeyboardInterrupt:
        return 130
    if meta["status"] != "ok":
        print(f"point {point_dir} failed: {meta['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
