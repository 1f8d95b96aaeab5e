"""One home per default: conf/*.yaml holds each key's default and its comment; the schema
dataclasses of kvexp/config/ must agree with it, key by key."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING

from kvexp import config as C

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_OPTIONS = [  # the option each group composes by default, against its schema
    ("config.yaml", C.Config),
    ("sampler/default.yaml", C.SamplerConfig),
    ("allocator/kvcached.yaml", C.AllocatorConfig),
    ("engine/auto.yaml", C.EngineConfig),
    ("slo/default.yaml", C.SloConfig),
    ("mix/default.yaml", C.MixConfig),
    ("capacity/default.yaml", C.CapacityConfig),
]
SKIP = {"defaults", "hydra", "kind", "instances"}


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def mismatches(node: dict, schema: type, where: str = "") -> list[str]:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key, value in node.items():
        if key in SKIP or key not in fields:
            continue
        default = _default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[key]):
            out += mismatches(value, hints[key], f"{where}{key}.")
        elif isinstance(value, (dict, list)) or (isinstance(value, str) and "${" in value):
            continue  # a collection the option fills, or an interpolation
        elif dataclasses.is_dataclass(default):
            continue
        elif default is not MISSING and default != value:
            out.append(f"{where}{key}: yaml {value!r}, dataclass {default!r}")
    return out


@pytest.mark.parametrize("path, schema", DEFAULT_OPTIONS, ids=[p for p, _ in DEFAULT_OPTIONS])
def test_dataclass_defaults_equal_the_yaml(path: str, schema: type) -> None:
    node = yaml.safe_load((CONF / path).read_text())
    assert mismatches(node, schema) == []


def test_every_yaml_key_has_its_comment() -> None:
    """Group options (not the experiment presets, nor Hydra's own settings)."""
    bare = []
    for f in sorted(p for p in CONF.rglob("*.yaml") if p.parent.name != "experiment"):
        text = f.read_text().split("\nhydra:")[0]
        for n, line in enumerate(text.splitlines(), 1):
            if re.match(r"^\s*[A-Za-z_][\w.@/-]*:\s*\S", line) and "#" not in line \
                    and not line.lstrip().startswith("-"):
                bare.append(f"{f.relative_to(CONF)}:{n}: {line.strip()}")
    assert bare == []
