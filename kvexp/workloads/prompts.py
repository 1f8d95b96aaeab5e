"""Prompt material for schedules: cycled text prompts and random-token prompts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_TOKEN_ID = 100  # random prompts avoid the low ids, where special tokens usually live


def cycled(prompts: Sequence[str], k: int) -> str:
    """The prompt of request `k`: the prompts list, cycled."""
    if not prompts:
        raise ValueError("workload.prompts is empty")
    return prompts[k % len(prompts)]


def random_token_ids(rng: np.random.Generator, length: int, vocab_size: int) -> list[int]:
    """`length` token ids drawn uniformly from [MIN_TOKEN_ID, vocab_size)."""
    if vocab_size <= MIN_TOKEN_ID:
        raise ValueError(f"vocab_size {vocab_size} must be > {MIN_TOKEN_ID} for random prompts")
    return rng.integers(MIN_TOKEN_ID, vocab_size, size=length).tolist()
