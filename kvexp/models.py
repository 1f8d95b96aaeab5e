"""Model folders for the engine: offline folders of a real model's shape, or local ones.

An offline folder holds a Hugging Face `config.json` with the model's real figures
(layers, heads, widths, vocabulary size), so the engine sizes weights and KV cache
exactly as for the real model, served with `--load-format dummy` (random weights).
Its tokenizer is built here from a fixed word list padded with made-up words to
exactly `vocab_size` entries: every id decodes, but generated text is meaningless.
`kvexp-model.json` in the folder says so.

Sources (`ModelConfig.source`):
- offline: the folder is written under `models_dir/<name>` (or `model.path`), once.
- local: an existing folder (`model.path`) with real weights; checked, not written.
- hub: `model.hub_id` is passed to the engine as is (needs a reachable hub or a
  populated Hugging Face cache); no folder here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvexp.config import ModelConfig

MARKER = "kvexp-model.json"
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # ids 0, 1, 2
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

COMMON_WORDS = """
the of and to a in is it you that he was for on are with as I his they be at one have
this from or had by not word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write
would like so these her long make thing see him two has look more day could go come did
number sound no most people my over know water than call first who may down side been
now find any new work part take get place made live where after back little only round
man year came show every good me give our under name very through just form sentence
great think say help low line differ turn cause much mean before move right boy old too
same tell does set three want air well also play small end put home read hand port large
spell add even land here must big high such follow act why ask men change went light kind
off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book
carry took science eat room friend began idea fish mountain stop once base hear horse cut
sure watch color face wood main enough plain girl usual young ready above ever red list
though feel talk bird soon body dog family direct pose leave song measure door product
black short numeral class wind question happen complete ship area half rock order fire
south problem piece told knew pass since top whole king space heard best hour better true
during hundred five remember step early hold west ground interest reach fast verb sing
listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold
notice voice unit power town fine certain fly fall lead cry dark machine note wait plan
figure star box noun field rest correct able pound done beauty drive stood contain front
teach week final gave green quick develop ocean warm free minute strong special mind
behind clear tail produce fact street inch multiply nothing course stay wheel full force
blue object decide surface deep moon island foot system busy test record boat common gold
possible plane stead dry wonder laugh thousand ago ran check game shape equate hot miss
brought heat snow tire bring yes distant fill east paint language among explain cache
speeds transformer inference short poem memory sharing difference paging segmentation
operating systems summarize plot heist movie sentences tips writing readable code
describe continuous batching server large models need so translate elastic french german
model models token tokens request requests batch queue latency throughput engine hello
KV GPU GPUs CPU LLM LLMs AI API OK
"""


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


def _filler_words() -> Iterator[str]:
    """Made-up words (ba, be, ..., baba, ...): consonant-vowel syllables, shortest first."""
    syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
    for n in itertools.count(1):
        for combo in itertools.product(syllables, repeat=n):
            yield "".join(combo)


def _byte_chars() -> list[str]:
    """GPT-2/Qwen byte-level alphabet: one printable character per byte, in byte order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def build_vocab(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary of exactly `vocab_size` tokens, and its merges.

    Ids: special tokens, the 256 bytes, then words grown one character at a time
    (each prefix a token, each merge `prefix + next character`), so every token is
    reachable and decodes. Words after a space come first in the merge order, so
    a known word after a space is one token; unknown words split into known
    prefixes and single characters.
    """
    space = _byte_chars()[ord(" ")]
    tokens: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in _byte_chars():
        tokens.setdefault(ch, len(tokens))
    spaced: list[tuple[str, str]] = []
    plain: list[tuple[str, str]] = []

    def add(word: str) -> None:
        for end in range(2, len(word) + 1):
            if len(tokens) >= vocab_size:
                return
            prefix = word[:end]
            if prefix not in tokens:
                tokens[prefix] = len(tokens)
                (spaced if word[0] == space else plain).append((word[: end - 1], word[end - 1]))

    common = list(dict.fromkeys(COMMON_WORDS.split()))
    for word in common:
        add(space + word)
        add(space + word.capitalize())
    for word in common:
        add(word)
        add(word.capitalize())
    filler = _filler_words()
    while len(tokens) < vocab_size:
        add(space + next(filler))
    return tokens, spaced + plain


def build_tokenizer(vocab_size: int) -> Any:
    """A `tokenizers.Tokenizer` with Qwen2's pipeline (NFC, its split regex, byte-level BPE)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pt

    vocab, merges = build_vocab(vocab_size)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pt.Sequence(
        [
            pt.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pt.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def tokenizer_config(model: ModelConfig) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "model_max_length": model.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }


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


def _load_model_config(name_or_yaml: str) -> ModelConfig:
    from omegaconf import OmegaConf

    path = Path(name_or_yaml)
    if not path.is_file():
        path = Path(__file__).resolve().parent.parent / "conf" / "model" / f"{name_or_yaml}.yaml"
    if not path.is_file():
        raise SystemExit(f"no model {name_or_yaml!r} (not a file, not in conf/model)")
    data = OmegaConf.load(path)
    data.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write an offline (shape-only) model folder.")
    parser.add_argument("model", help="conf/model name or a model YAML file")
    parser.add_argument("--out", default="~/.cache/kvexp/models", help="models directory")
    args = parser.parse_args(argv)
    print(ensure_model_folder(_load_model_config(args.model), Path(args.out)))


if __name__ == "__main__":
    main()
