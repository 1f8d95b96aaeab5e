"""The latency definitions (vLLM's benchmark client's) against scripted streams, one line at a
known time each: TTFT, ITL, E2E, TPOT and token counts, with no server and no timing noise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvexp.results.records import RequestRow
from kvexp.workloads.stream import StreamError, StreamParser, finish

SENT = 100.0


class ScriptClock:
    """now() is whatever time the script has reached."""

    def __init__(self) -> None:
        self.t = SENT

    def now(self) -> float:
        return self.t


def chunk(text: str | None = "tok", usage: int | None = None, chat: bool = False) -> str:
    """A vLLM-style data event; `text=None` gives an event with no choices (usage only)."""
    obj: dict[str, Any] = {"id": "cmpl-1", "object": "text_completion", "choices": []}
    if text is not None:
        obj["choices"] = [{"index": 0, "delta": {"content": text}} if chat
                          else {"index": 0, "text": text}]
    if usage is not None:
        obj["usage"] = {"prompt_tokens": 7, "completion_tokens": usage, "total_tokens": 7 + usage}
    return "data: " + json.dumps(obj)


def run(script: list[tuple[float, str]], split: int | None = None) -> RequestRow:
    """Parse `script` ((time, SSE line) pairs) as one reply sent at SENT; the closed row.

    `split`: deliver each event's bytes in pieces of this size (line boundaries anywhere)."""
    row = RequestRow(request_id=0, instance="a", wave=-1, api="completions",
                     scheduled_time=SENT, sent_time=SENT, send_lag_s=0.0)
    clock = ScriptClock()
    parser = StreamParser(row, clock)  # type: ignore[arg-type]
    for t, line in script:
        clock.t = t
        data = (line + "\n\n").encode()
        pieces = [data] if split is None else [data[i:i + split]
                                               for i in range(0, len(data), split)]
        for piece in pieces:
            parser.feed(piece)
    clock.t += 1.0  # the body ends later still
    parser.close()
    row.ok = True
    finish(row, row.end_time)  # type: ignore[arg-type]
    return row


VLLM_COMPLETION = [  # 4 tokens; one chunk with empty text (a special token)
    (100.5, chunk("a")),
    (100.6, chunk("b")),
    (100.7, chunk("")),
    (100.9, chunk("d")),
    (101.5, chunk(None, usage=4)),  # the final usage chunk of include_usage
    (101.6, "data: [DONE]"),
]


@pytest.mark.parametrize("split", [None, 1, 7])
def test_definitions_on_a_vllm_completion_stream(split: int | None) -> None:
    r = run(VLLM_COMPLETION, split)
    assert r.ttft_s == pytest.approx(0.5)  # sent -> first chunk with choices
    assert r.first_token_time == pytest.approx(100.5)
    assert r.itl_s == pytest.approx([0.1, 0.1, 0.2])  # the empty-text chunk counts
    assert r.end_time == pytest.approx(100.9)  # the last chunk with choices, not [DONE]
    assert r.e2e_s == pytest.approx(0.9)
    assert r.completion_tokens == 4 and r.prompt_tokens == 7  # from the final usage
    assert r.tpot_s == pytest.approx((0.9 - 0.5) / (4 - 1))
    assert r.tokens_per_event == []  # the chunks carry no usage


def test_chat_role_chunk_is_the_first_token_chunk() -> None:
    script = [(100.30, chunk("", chat=True)), (100.31, chunk("hi", chat=True)),
              (100.40, chunk(" there", chat=True)), (100.45, chunk(None, usage=2)),
              (100.46, "data: [DONE]")]
    r = run(script)
    assert r.ttft_s == pytest.approx(0.30) and r.itl_s == pytest.approx([0.01, 0.09])
    assert r.e2e_s == pytest.approx(0.40) and r.tpot_s == pytest.approx(0.10)


def test_continuous_usage_gives_tokens_per_event() -> None:
    script = [(100.1, chunk("ab", usage=2)), (100.2, chunk("cd", usage=4)),
              (100.3, chunk("e", usage=5)), (100.4, chunk(None, usage=5)),
              (100.5, "data: [DONE]")]
    r = run(script)
    assert r.tokens_per_event == [2, 2, 1] and r.completion_tokens == 5
    assert r.tpot_s == pytest.approx((0.3 - 0.1) / 4)


def test_comments_and_other_fields_are_skipped() -> None:
    script = [(100.1, ": ping"), (100.2, "event: message"), *VLLM_COMPLETION]
    r = run(script)
    assert r.ttft_s == pytest.approx(0.5) and len(r.itl_s) == 3


def test_one_token_reply_has_no_tpot() -> None:
    r = run([(100.2, chunk("x")), (100.3, chunk(None, usage=1)), (100.3, "data: [DONE]")])
    assert r.ttft_s == pytest.approx(0.2) and r.e2e_s == pytest.approx(0.2)
    assert r.itl_s == [] and r.tpot_s is None


@pytest.mark.parametrize("script, message", [
    ([(100.1, chunk("a")), (100.2, chunk(None, usage=1))], r"before \[DONE\]"),
    ([(100.1, chunk(None, usage=0)), (100.2, "data: [DONE]")], "no chunk with choices"),
    ([(100.1, 'data: {"error": {"message": "boom", "code": 500}}')], r"boom \(500\)"),
    ([(100.1, "data: {not json")], "malformed SSE"),
    ([(100.1, "data: [1, 2]")], "not an object"),
])
def test_bad_streams_fail_with_a_reason(script: list[tuple[float, str]], message: str) -> None:
    with pytest.raises(StreamError, match=message):
        run(script)
