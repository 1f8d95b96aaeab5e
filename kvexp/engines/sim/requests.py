"""Request bodies checked as vLLM checks them, with vLLM's 400 error shapes.

Schema errors (a wrong JSON type) read as vLLM's pydantic ones: type "Bad Request",
message "1 validation error: ...", param "body.<field>". Sampling-parameter errors read
as vLLM's SamplingParams ones: type "BadRequestError", param the field.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from kvexp.engines.sim.tokens import WORDS, chat_tokens, text_tokens

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's (and OpenAI's) default for /v1/completions
MAX_N = 16384  # vLLM's VLLM_MAX_N_SEQUENCES default


class RequestError(ValueError):
    """A bad request: HTTP `status` with vLLM's error body."""

    def __init__(self, message: str, kind: str, param: str | None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.kind, self.param, self.status = message, kind, param, status

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status,
            }
        }


def schema_error(field: str, kind: str, msg: str, value: object) -> RequestError:
    loc = f"body.{field}"
    err = {"type": kind, "loc": loc, "msg": msg, "input": repr(value)[:200]}
    return RequestError(f"1 validation error:\n  {err}", "Bad Request", loc)


def param_error(message: str, param: str | None, value: object = None) -> RequestError:
    """vLLM's VLLMValidationError: the parameter (and value) appended when it names one."""
    if param is not None:
        message += f" (parameter={param}" + ("" if value is None else f", value={value}") + ")"
    return RequestError(message, "BadRequestError", param)


TRUE = {"1", "on", "t", "true", "y", "yes"}  # pydantic's lax booleans
FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclass(frozen=True)
class Parsed:
    """What the sim needs from a request."""

    prompts: list[int]  # prompt tokens of each prompt (one for chat)
    max_tokens: int | None
    n: int
    logprobs: int | None  # top alternatives a token (0: the token's own only); None: off
    ignore_eos: bool
    stream: bool
    include_usage: bool
    continuous: bool


def _int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            raise schema_error(key, "int_parsing", msg, v) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise schema_error(key, "int_type", "Input should be a valid integer", v)
    if isinstance(v, float) and not v.is_integer():
        raise schema_error(
            key,
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
            v,
        )
    return int(v)


def _float(body: dict[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise schema_error(key, "float_type", "Input should be a valid number", v)
    return float(v)


def _bool(d: dict[str, Any], key: str, where: str = "") -> bool:
    v = d.get(key)
    if v is None or isinstance(v, bool):
        return bool(v)
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in TRUE | FALSE:
        return v.lower() in TRUE
    raise schema_error(where + key, "bool_type", "Input should be a valid boolean", v)


def _token_ids(ids: list[Any], vocab_size: int, where: str) -> int:
    for j, t in enumerate(ids):
        if not isinstance(t, int) or isinstance(t, bool):
            raise schema_error(f"{where}.{j}", "int_type", "Input should be a valid integer", t)
        if t < 0:
            msg = "Input should be greater than or equal to 0"
            raise schema_error(f"{where}.{j}", "greater_than_equal", msg, t)
    if (top := max(ids)) >= vocab_size:
        raise param_error(f"Token id {top} is out of vocabulary", None)
    return len(ids)


def _prompts(body: dict[str, Any], chat: bool, vocab_size: int) -> list[int]:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise schema_error("messages", "list_type", "Input should be a valid list", messages)
        if not messages:
            msg = (
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
            raise param_error(msg, None)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                loc = f"messages.{i}.ChatCompletionDeveloperMessageParam"  # vLLM's first branch
                raise schema_error(loc, "dict_type", "Input should be a valid dictionary", m)
            content = m.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise schema_error(
                    f"messages.{i}.content",
                    "string_type",
                    "Input should be a valid string",
                    content,
                )
        return [chat_tokens(messages)]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [text_tokens(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):  # a batch of texts
            return [text_tokens(p) for p in prompt]
        if all(isinstance(p, list) and p for p in prompt):  # a batch of token-id lists
            return [_token_ids(p, vocab_size, f"prompt.{i}") for i, p in enumerate(prompt)]
        return [_token_ids(prompt, vocab_size, "prompt")]
    raise schema_error(
        "prompt",
        "union_type",
        "Input should be a string, a list of strings, a list of token "
        "ids or a list of token-id lists (non-empty)",
        prompt,
    )


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    if not chat:
        lp = _int(body, "logprobs")
        if lp is not None and lp < 0 and lp != -1:
            raise param_error("`logprobs` must be a positive value or -1.", "logprobs", lp)
        return None if lp is None else max(lp, 0)
    on = _bool(body, "logprobs")
    top = _int(body, "top_logprobs") or 0
    if top < 0 and top != -1:
        raise param_error("`top_logprobs` must be a positive value or -1.", "top_logprobs", top)
    if top != 0 and not on:
        raise param_error(
            "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
        )
    return max(top, 0) if on else None


def parse(body: Any, chat: bool, vocab_size: int) -> Parsed:
    """The request's figures; RequestError as vLLM would answer it."""
    if not isinstance(body, dict):
        raise RequestError(
            "invalid request body: the body must be a JSON object", "BadRequestError", None
        )
    prompts = _prompts(body, chat, vocab_size)
    max_tokens = _int(body, "max_tokens")
    if chat and max_tokens is None:
        max_tokens = _int(body, "max_completion_tokens")
    if not chat and max_tokens is None:
        max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    n = _int(body, "n")
    n = 1 if n is None else n
    if not 1 <= n <= MAX_N:
        msg = f"n must be at least 1, got {n}." if n < 1 else f"n must be at most {MAX_N}, got {n}."
        raise param_error(msg, None)
    temperature = _float(body, "temperature")
    if temperature is not None:
        if not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
            msg = f"temperature must be in [0, 2], got {temperature}."
            if temperature < 0.0:
                msg = f"temperature must be non-negative, got {temperature}."
            if not math.isfinite(temperature):
                msg = f"temperature must be a finite number, got {temperature}."
            raise param_error(msg, "temperature", temperature)
        if temperature == 0.0 and n > 1:
            raise param_error(f"n must be 1 when using greedy sampling, got {n}.", None)
    top_p = _float(body, "top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise param_error(f"top_p must be in (0, 1], got {top_p}.", "top_p", top_p)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise schema_error(
            "stream_options",
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            options,
        )
    options = options or {}
    include_usage = _bool(options, "include_usage", "stream_options.")
    continuous = _bool(options, "continuous_usage_stats", "stream_options.")
    return Parsed(
        prompts=prompts,
        max_tokens=max_tokens,
        n=n,
        logprobs=_logprobs(body, chat),
        ignore_eos=_bool(body, "ignore_eos"),
        stream=_bool(body, "stream"),
        include_usage=include_usage,
        continuous=include_usage and continuous,
    )


def fake_logprobs(rng: random.Random, text: str, top: int, words: tuple[str, ...]) -> dict:
    """A plausible, simulated logprob for `text` and `top` alternatives (marked as such)."""
    own = -rng.expovariate(4.0)
    others = sorted((own - rng.expovariate(1.0) for _ in range(top)), reverse=True)
    alts = [w for w in words if w != text][:top]
    return {
        "token": text,
        "logprob": own,
        "top": [(text, own), *zip(alts, others, strict=False)][:top],
    }


def logprobs_body(seed: str, chat: bool, top: int, texts: list[str], start: int = 0) -> dict:
    """A choice's `logprobs` for tokens `texts` (numbered from `start`), in vLLM's chat or
    completions shape; simulated (`kvexp_simulated`) and repeatable per (seed, token)."""
    entries = [
        fake_logprobs(random.Random(f"logprobs:{seed}:{start + k}"), t, top, WORDS)
        for k, t in enumerate(texts)
    ]
    if chat:
        content = [
            {
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": list(e["token"].encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in e["top"]
                ],
            }
            for e in entries
        ]
        return {"content": content, "kvexp_simulated": True}
    offsets = [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    return {
        "text_offset": offsets,
        "token_logprobs": [e["logprob"] for e in entries],
        "tokens": [e["token"] for e in entries],
        "top_logprobs": [dict(e["top"]) for e in entries],
        "kvexp_simulated": True,
    }
