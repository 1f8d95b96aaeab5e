"""What the process running a sweep knows of it, shared by the sweeper and `python -m kvexp`.

Kept apart from kvexp/sweep/sweeper.py, which subclasses Hydra's BasicSweeper and so must not
be imported before Hydra has loaded its plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INTERRUPTED = ".interrupted"  # a file in the sweep folder: no new point may start
# The running sweep: its folder ("dir") and the signal that interrupted it ("signal").
SWEEP: dict[str, Any] = {}


def servers_home(sweep_dir: Path, key: str) -> Path:
    """The folder of the servers a sweep shares between points of one server key (their
    logs/, and the sim's device file); attach.json of each point names the key."""
    return Path(sweep_dir) / ".servers" / key
