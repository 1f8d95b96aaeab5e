"""The HTTP request of one spec: endpoint path and streaming JSON body."""

from __future__ import annotations

from typing import Any

from kvexp.results.records import InstanceHandle, RequestSpec

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def request_body(
    spec: RequestSpec, instance: InstanceHandle, *, continuous_usage_stats: bool = False
) -> dict[str, Any]:
    """The JSON body of a spec's streaming request.

    `include_usage` asks for the final usage chunk (the completion token count TPOT needs),
    as vLLM's benchmark client does; `continuous_usage_stats` (workload key of that name)
    also puts usage on every chunk, which gives `tokens_per_event` but costs the server time.
    """
    options: dict[str, bool] = {"include_usage": True}
    if continuous_usage_stats:
        options["continuous_usage_stats"] = True
    body: dict[str, Any] = {
        "model": instance.served_model,
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        "stream": True,
        "stream_options": options,
    }
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.api == "chat":
        if spec.prompt is None:
            raise ValueError(f"request {spec.request_id}: the chat API needs a text prompt")
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    elif spec.api == "completions":
        prompt = spec.prompt_token_ids if spec.prompt_token_ids is not None else spec.prompt
        if prompt is None:
            raise ValueError(f"request {spec.request_id}: no prompt")
        body["prompt"] = prompt
    else:
        raise ValueError(f"request {spec.request_id}: unknown api {spec.api!r}")
    return body
