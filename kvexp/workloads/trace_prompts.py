"""Prompt token ids of exactly a traced request's input length, with its prefix reuse.

Block k of a request (tokens [k * block_size, (k + 1) * block_size)) with hash id h is
drawn from numpy's Generator seeded by (seed, 0, h, block_size), so requests sharing
leading hash_ids share those leading blocks. The last block is partial when input_tokens
is not a multiple of block_size: it is the head of that hash id's full block. Tokens past
the hash_ids (or all of them, for requests without hash_ids) are unique to the request:
seeded by (seed, 1, row). Ids lie in [low, vocab_size), away from the low special ids.

vLLM's completions API takes the ids as they are, so the prompt is exactly input_tokens
long; with ignore_eos and max_tokens = output_tokens, the output is exactly traced too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from kvexp.results.records import RequestSpec
from kvexp.workloads.prompts import MIN_TOKEN_ID
from kvexp.workloads.traces import TraceRequest

MOONCAKE_BLOCK = 512


class TracePrompts:
    """Token ids for trace requests; keeps the most recent blocks cached."""

    def __init__(self, vocab_size: int, seed: int = 0, block_size: int = MOONCAKE_BLOCK,
                 low: int = MIN_TOKEN_ID, cache_blocks: int = 4096) -> None:
        if low < 0 or vocab_size <= low:
            raise ValueError(f"vocab_size {vocab_size} must be > low {low} >= 0")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.vocab_size, self.seed, self.block_size, self.low = vocab_size, seed, block_size, low
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_blocks = cache_blocks

    def block(self, hash_id: int) -> np.ndarray:
        """The full block_size ids of one hash id."""
        got = self._cache.get(hash_id)
        if got is not None:
            self._cache.move_to_end(hash_id)
            return got
        rng = np.random.default_rng([self.seed, 0, hash_id, self.block_size])
        ids = rng.integers(self.low, self.vocab_size, size=self.block_size, dtype=np.int64)
        self._cache[hash_id] = ids
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return ids

    def token_ids(self, req: TraceRequest) -> list[int]:
        """Exactly req.input_tokens ids: hash blocks first, then ids unique to the request."""
        n, bs = req.input_tokens, self.block_size
        hashes = list(req.hash_ids or ())[: -(-n // bs)]
        parts = [self.block(h) for h in hashes]
        covered = min(len(hashes) * bs, n)
        if covered < n:
            rng = np.random.default_rng([self.seed, 1, req.row])
            parts.append(rng.integers(self.low, self.vocab_size, size=n - covered,
                                      dtype=np.int64))
        ids = np.concatenate(parts)[:n] if parts else np.zeros(0, dtype=np.int64)
        return ids.tolist()


def trace_request_specs(requests: Sequence[TraceRequest], instance: str,
                        prompts: TracePrompts, temperature: float = 0.0,
                        first_id: int = 0) -> list[RequestSpec]:
    """RequestSpecs for one instance: token-id prompts, exactly the traced output length."""
    return [
        RequestSpec(request_id=first_id + k, instance=instance, at_s=r.at_s,
                    max_tokens=r.output_tokens, temperature=temperature, ignore_eos=True,
                    api="completions", prompt_token_ids=prompts.token_ids(r))
        for k, r in enumerate(requests)
    ]
