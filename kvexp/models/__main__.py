"""`python -m kvexp.models NAME [--out DIR]`: write an offline (shape-only) model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvexp.config import Config, ModelConfig
from kvexp.models.folders import ensure_model_folder

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"


def _load_model_config(name_or_yaml: str) -> ModelConfig:
    from omegaconf import OmegaConf

    path = Path(name_or_yaml)
    if not path.is_file():
        path = CONF_MODEL / f"{name_or_yaml}.yaml"
    if not path.is_file():
        raise SystemExit(f"no model {name_or_yaml!r} (not a file, not in conf/model)")
    data = OmegaConf.load(path)
    data.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write an offline (shape-only) model folder.")
    parser.add_argument("model", help="conf/model name or a model YAML file")
    parser.add_argument("--out", default=Config.models_dir, help="models directory")
    args = parser.parse_args(argv)
    print(ensure_model_folder(_load_model_config(args.model), Path(args.out)))


if __name__ == "__main__":
    main()
