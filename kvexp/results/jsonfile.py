"""JSON files of a sweep, written atomically and as strict JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _no_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_no_nan(v) for v in obj]
    return obj


def write_json(obj: Any, path: Path) -> None:
    """Write `obj` as JSON atomically (a reader sees the old file or the new one); NaN and
    infinities become null, so the file is strict JSON."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_no_nan(obj), indent=2, default=str, allow_nan=False))
    os.replace(tmp, path)
