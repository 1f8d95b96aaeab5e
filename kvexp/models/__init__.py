"""Model folders for the engine: offline folders of a real model's shape, or local ones.

An offline folder holds a Hugging Face `config.json` with the model's real figures
(layers, heads, widths, vocabulary size), so the engine sizes weights and KV cache
exactly as for the real model, served with `--load-format dummy` (random weights).
Its tokenizer (`tokenizer.py`) is built from a fixed word list padded with made-up words
to exactly `vocab_size` entries: every id decodes, but generated text is meaningless.
`kvexp-model.json` in the folder says so. `folders.py` writes and checks the folders;
`python -m kvexp.models NAME` writes one.

Sources (`ModelConfig.source`):
- offline: the folder is written under `models_dir/<name>` (or `model.path`), once.
- local: an existing folder (`model.path`) with real weights; checked, not written.
- hub: `model.hub_id` is passed to the engine as is (needs a reachable hub or a
  populated Hugging Face cache); no folder here.
"""

from kvexp.models.folders import (
    MARKER,
    ModelFolderError,
    ensure_model_folder,
    hf_config,
    model_ref,
    offline_folder,
)
from kvexp.models.tokenizer import (
    CHAT_TEMPLATE,
    COMMON_WORDS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN2_SPLIT_REGEX,
    SPECIAL_TOKENS,
    build_tokenizer,
    build_vocab,
    tokenizer_config,
)

__all__ = [
    "CHAT_TEMPLATE",
    "COMMON_WORDS",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "MARKER",
    "QWEN2_SPLIT_REGEX",
    "SPECIAL_TOKENS",
    "ModelFolderError",
    "build_tokenizer",
    "build_vocab",
    "ensure_model_folder",
    "hf_config",
    "model_ref",
    "offline_folder",
    "tokenizer_config",
]
