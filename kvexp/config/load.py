"""A validated `Config` from a composed or saved one, and the digests that name a config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kvexp.config.checks import check
from kvexp.config.schema import Config, ConfigError


def digest(data: Any) -> str:
    """A short, stable digest of plain data (dicts, lists, scalars)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """A point's whole config, digested: a resumed sweep reruns nothing that matches."""
    return digest(asdict(cfg))


def to_config(cfg: DictConfig | dict) -> Config:
    """A validated `Config` from a composed (or saved) config; ConfigError lists every problem."""
    from kvexp.config_keys import unknown_keys

    plain = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=False)
    unknown = unknown_keys({k: v for k, v in plain.items() if k != "hydra"}, Config)
    if unknown:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(unknown))
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    errs = check(obj)
    if errs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errs))
    return obj
