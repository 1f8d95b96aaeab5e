"""The offline folder's tokenizer: byte-level BPE with Qwen2's pipeline, of exactly
`vocab_size` tokens, grown from a fixed word list padded with made-up words (every id
decodes; generated text is meaningless)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from kvexp.config import ModelConfig

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

