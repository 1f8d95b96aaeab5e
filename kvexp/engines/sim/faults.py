"""Faults injected into a sim server on purpose (`engine.sim.fault`), to test kvexp itself.

A fault starts `fault_after_s` (simulated seconds) after the server's first request:
  exit     the server exits with code 3 (a crash mid-run)
  kill     the server SIGKILLs itself (what the kernel's OOM killer does)
  hang     streams stop mid-way and new requests never answer (health stays OK)
  garbage  streams send a malformed SSE event, then go on
  engine_error  the engine's step loop raises (as on EMFILE): /health turns 503 and the
           server exits 1 after releasing its memory
  no_kvcached  from the start: a kvcached instance builds vLLM's static pool and writes no
           segment, as vLLM does when kvcached cannot be imported (allocator still "kvcached")
Every fault is logged as "FAULT INJECTED", so a log never passes one off as a real failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

log = logging.getLogger("kvexp.sim")
FAULTS = ("none", "exit", "kill", "hang", "garbage", "engine_error", "no_kvcached")
GARBAGE = "data: {this is not json\n\n"


class Fault:
    """One server's fault: armed by the first request, active `after_s` later."""

    def __init__(self, kind: str, after_s: float) -> None:
        if kind not in FAULTS:
            raise ValueError(f"engine.sim.fault must be one of {FAULTS}, got {kind!r}")
        self.kind, self.after_s = kind, after_s
        self._first: float | None = None

    def on_request(self) -> None:
        if self.kind == "none" or self._first is not None:
            return
        self._first = time.monotonic()
        if self.kind in ("exit", "kill"):
            asyncio.get_running_loop().call_later(self.after_s, self._crash)

    @property
    def active(self) -> bool:
        return self._first is not None and time.monotonic() - self._first >= self.after_s

    @property
    def hangs(self) -> bool:
        return self.kind == "hang" and self.active

    @property
    def garbles(self) -> bool:
        return self.kind == "garbage" and self.active

    def check_engine(self) -> None:
        """The engine's step hook: raises once an engine_error fault is active."""
        if self.kind == "engine_error" and self.active:
            log.error("kvexp sim engine (simulated): FAULT INJECTED: engine_error")
            raise OSError("FAULT INJECTED: engine_error (simulated engine loop failure)")

    def _crash(self) -> None:
        log.error("kvexp sim engine (simulated): FAULT INJECTED: %s", self.kind)
        logging.shutdown()
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)

    async def hang_forever(self) -> None:
        log.error("kvexp sim engine (simulated): FAULT INJECTED: hang")
        await asyncio.Event().wait()
