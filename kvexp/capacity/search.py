"""The search over N: the largest N in [n_min, n_max] whose attainment meets the target.

Attainment falls as N grows (more models share one device), so the boundary is found by
bisection (`bisect` of the standard library over the range, its key evaluated lazily):
about log2(n_max - n_min + 2) points instead of the grid's n_max - n_min + 1. Both sides of
the boundary are always evaluated (N* and N* + 1, where in range), so the answer comes with
its evidence. A general optimiser (e.g. Optuna's TPE) needs many more trials and does not
use the monotone shape; `grid` is the brute force the search is tested against.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Search:
    """The answer and the points it took: `max_n` is n_min - 1 when even n_min fails."""

    max_n: int
    evaluated: dict[int, bool] = field(default_factory=dict)  # n -> met the target

    @property
    def frontier(self) -> list[int]:
        """N* and N* + 1, those of them that were evaluated."""
        return [n for n in (self.max_n, self.max_n + 1) if n in self.evaluated]


def search(meets: Callable[[int], bool], n_min: int, n_max: int) -> Search:
    """Bisection for the last N that meets; `meets(n)` is called once per n probed."""
    seen: dict[int, bool] = {}

    def fails(n: int) -> bool:
        if n not in seen:
            seen[n] = bool(meets(n))
        return not seen[n]

    first_fail = bisect.bisect_left(range(n_min, n_max + 1), True, key=fails) + n_min
    return Search(first_fail - 1, seen)


def grid(meets: Callable[[int], bool], n_min: int, n_max: int) -> Search:
    """Every N: the answer is the last N before the first that fails."""
    seen = {n: bool(meets(n)) for n in range(n_min, n_max + 1)}
    first_fail = next((n for n in range(n_min, n_max + 1) if not seen[n]), n_max + 1)
    return Search(first_fail - 1, seen)
