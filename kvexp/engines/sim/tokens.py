"""Token counts of prompts, an estimate (the sim has no tokenizer), and the output words.

A text prompt counts one token for each CJK character plus ceil(other words /
WORDS_PER_TOKEN) (at least 1); a chat adds CHAT_MESSAGE_TOKENS a message and
CHAT_PROMPT_TOKENS for the template; a token-id prompt counts its length.
"""

from __future__ import annotations

import math
import re

WORDS = (" sim", " token", " kv", " cache", " page", " block", " batch", " step", " gpu", " pool")
WORDS_PER_TOKEN = 0.75
CHAT_MESSAGE_TOKENS = 4
CHAT_PROMPT_TOKENS = 3

# Han, kana, hangul and their compatibility / full-width blocks: about a token a character
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def text_tokens(text: str) -> int:
    """Estimated tokens of `text`: one a CJK character, ceil(words / 0.75) for the rest."""
    rest, cjk = CJK.subn(" ", text)
    return max(1, cjk + math.ceil(len(rest.split()) / WORDS_PER_TOKEN))


def chat_tokens(messages: list[dict]) -> int:
    total = CHAT_PROMPT_TOKENS
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += CHAT_MESSAGE_TOKENS + text_tokens(str(content))
    return total
