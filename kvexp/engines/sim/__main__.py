"""`python -m kvexp.engines.sim --spec SPEC.json`: run one simulated engine server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from kvexp.engines.sim.device import InsufficientMemory
from kvexp.engines.sim.launch import load_spec
from kvexp.engines.sim.server import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvexp.engines.sim", description="kvexp's simulated engine server"
    )
    parser.add_argument("--spec", type=Path, required=True, help="JSON written by launch.py")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s kvexp-sim %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run(load_spec(args.spec)))
    except InsufficientMemory as e:
        logging.getLogger("kvexp.sim").error("kvexp sim engine (simulated): %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
