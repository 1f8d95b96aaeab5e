"""One clock per sweep point: monotonic time, expressed in epoch seconds.

Every timestamp kvexp records (request events, memory samples, engine metrics)
comes from the same `Clock`, so rows from different sources line up exactly.
"""

from __future__ import annotations

import time


class Clock:
    """`perf_counter` (monotonic, ns resolution) anchored to the wall clock once."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._perf0 = time.perf_counter()

    def now(self) -> float:
        """Epoch seconds, monotonic within this process."""
        return self._wall0 + (time.perf_counter() - self._perf0)

    @property
    def start(self) -> float:
        """Epoch seconds at which this clock was created."""
        return self._wall0
