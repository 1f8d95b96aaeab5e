"""A validated `Config` from a composed or saved one, and the digests that name a config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from kvexp.config.checks import check
from kvexp.config.schema import Config, ConfigError


def digest(data: Any) -> str:
    """A short, stable digest of plain data (dicts, lists, scalars)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """A point's whole config, digested: a resumed sweep reruns nothing that matches."""
    return digest(asdict(cfg))


def _missing_text(key: str) -> str:
    """`key` has no value: for a group's `kind`, the group's schema was chosen as an option
    (`allocator=allocator_schema`), so name the group's options."""
    group, _, field_name = key.rpartition(".")
    if field_name != "kind" or not group:
        return f"{key} is not set"
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    names = [n for n in gh.config_loader().get_group_options(group)
             if not n.endswith("_schema")] if gh.is_initialized() else []
    choose = f"choose one of: {', '.join(names)}" if names else f"see conf/{group}/"
    return (f"{key} is not set: `{group}={group}_schema` is the schema that the options of "
            f"`{group}` build on, not an option; {choose}")


def to_config(cfg: DictConfig | dict) -> Config:
    """A validated `Config` from a composed (or saved) config; ConfigError lists every problem."""
    from kvexp.config_keys import unknown_keys

    plain = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=False)
    unknown = unknown_keys({k: v for k, v in plain.items() if k != "hydra"}, Config)
    if unknown:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(unknown))
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    try:
        obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except MissingMandatoryValue as e:
        raise ConfigError(f"invalid config:\n  - {_missing_text(str(e.full_key))}") from None
    errs = check(obj)
    if errs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errs))
    return obj
