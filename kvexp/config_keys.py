"""Keys a config holds that its schema does not know (a typo added with `+`, say)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


def _dataclass_of(t: Any) -> type | None:
    if dataclasses.is_dataclass(t):
        return t  # type: ignore[return-value]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(t) if dataclasses.is_dataclass(a)]
        return found[0] if found else None
    return None


def unknown_keys(node: dict[str, Any], schema: type, where: str = "") -> list[str]:
    """Every key of the plain dict `node` (nested) that `schema` (a dataclass) lacks, as a
    message naming the key and the closest known one."""
    hints = typing.get_type_hints(schema)
    out = []
    for key, value in node.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f"; did you mean {where}{close[0]}?" if close else ""
            out.append(f"{where}{key} is not a key of {schema.__name__}{hint}")
            continue
        t = hints[key]
        sub = _dataclass_of(t)
        if sub is not None and isinstance(value, dict):
            out += unknown_keys(value, sub, f"{where}{key}.")
        elif typing.get_origin(t) is dict and isinstance(value, dict):
            item = _dataclass_of(typing.get_args(t)[1])
            if item is not None:
                for name, v in value.items():
                    if isinstance(v, dict):
                        out += unknown_keys(v, item, f"{where}{key}.{name}.")
    return out
