"""Model folders for the engine: an offline folder of a real model's shape (written once),
a local folder (checked), or a hub id (passed as is)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kvexp.config import ModelConfig
from kvexp.models.tokenizer import (
    ENDOFTEXT,
    IM_END,
    SPECIAL_TOKENS,
    build_tokenizer,
    tokenizer_config,
)

MARKER = "kvexp-model.json"


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or not what the config describes."""


def hf_config(model: ModelConfig) -> dict[str, Any]:
    """The Hugging Face `config.json` of the model's shape (Qwen2/Llama-style decoder)."""
    return {
        "architectures": [model.architecture],
        "model_type": model.model_type,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_kv_heads,
        "head_dim": model.head_dim,
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_position_embeddings,
        "max_window_layers": model.num_layers,
        "sliding_window": model.max_position_embeddings,
        "use_sliding_window": False,
        "rope_theta": model.rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": model.rms_norm_eps,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": model.tie_word_embeddings,
        "torch_dtype": model.dtype,
        "use_cache": True,
        "bos_token_id": SPECIAL_TOKENS.index(ENDOFTEXT),
        "eos_token_id": SPECIAL_TOKENS.index(IM_END),
        "pad_token_id": SPECIAL_TOKENS.index(ENDOFTEXT),
        "transformers_version": "4.43.1",
    }


def _check_shape(model: ModelConfig) -> None:
    if model.vocab_size < 512:
        raise ModelFolderError(f"model {model.name}: vocab_size {model.vocab_size} < 512")
    if model.model_type == "qwen2" and model.head_dim * model.num_attention_heads != (
        model.hidden_size
    ):
        # vLLM's Qwen2 derives head_dim from hidden_size / heads and ignores config's head_dim.
        raise ModelFolderError(
            f"model {model.name}: qwen2 needs head_dim x num_attention_heads == hidden_size "
            f"({model.head_dim} x {model.num_attention_heads} != {model.hidden_size})"
        )



def _marker(model: ModelConfig) -> dict[str, Any]:
    return {
        "kind": "shape-only",
        "name": model.name,
        "hub_id": model.hub_id,
        "note": (
            "Config of the real model's shape; no weights (serve with --load-format dummy: "
            "random weights). The tokenizer is a made-up word list of exactly vocab_size "
            "tokens: generated text is meaningless. Good for memory and timing, not quality."
        ),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(folder: Path, config: dict[str, Any]) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", MARKER)
    return _read_json(folder / "config.json") == config and all(
        (folder / n).is_file() for n in names
    )


def _write_folder(folder: Path, model: ModelConfig, config: dict[str, Any]) -> None:
    def dump(name: str, data: Any) -> None:
        (folder / name).write_text(json.dumps(data, indent=2) + "\n")

    dump("config.json", config)
    dump(
        "generation_config.json",
        {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
        },
    )
    build_tokenizer(model.vocab_size).save(str(folder / "tokenizer.json"))
    dump("tokenizer_config.json", tokenizer_config(model))
    dump(MARKER, _marker(model))


def offline_folder(model: ModelConfig, models_dir: Path) -> Path:
    """Where an offline model's folder lives: `model.path`, else `models_dir/<name>`."""
    if model.path:
        return Path(model.path).expanduser()
    return Path(models_dir).expanduser() / model.name


def ensure_model_folder(model: ModelConfig, models_dir: Path) -> Path | None:
    """The model's folder, written first for source=offline; None for source=hub."""
    if model.source == "hub":
        return None
    if model.source == "local":
        if not model.path:
            raise ModelFolderError(f"model {model.name}: source=local needs model.path")
        folder = Path(model.path).expanduser()
        if not folder.is_dir():
            raise ModelFolderError(f"model folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise ModelFolderError(f"model folder {folder} has no config.json")
        return folder
    if model.source != "offline":
        raise ModelFolderError(
            f"model {model.name}: source must be offline, local or hub, not {model.source!r}"
        )
    _check_shape(model)
    folder = offline_folder(model, models_dir)
    config = hf_config(model)
    if _is_complete(folder, config):
        return folder
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise ModelFolderError(
            f"model folder {folder} exists and was not written by kvexp; "
            "remove it or use source=local"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        _write_folder(tmp, model, config)
        if folder.exists():
            if _is_complete(folder, config):  # written meanwhile by another process
                return folder
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _is_complete(folder, config):  # lost a race to a writer of the same folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def model_ref(model: ModelConfig, models_dir: Path) -> tuple[str, bool]:
    """What to pass as the engine's --model, and whether weights must be dummy."""
    if model.source == "hub":
        if not model.hub_id:
            raise ModelFolderError(f"model {model.name}: source=hub needs model.hub_id")
        return model.hub_id, False
    folder = ensure_model_folder(model, models_dir)
    assert folder is not None
    return str(folder), model.source == "offline"


