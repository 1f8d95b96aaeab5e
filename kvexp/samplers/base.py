"""The sampler interface and the group that runs samplers on background threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from kvexp.clock import Clock
from kvexp.results.records import Sample

log = logging.getLogger(__name__)


@runtime_checkable
class Sampler(Protocol):
    """Something that reads a few figures when asked, at its own interval."""

    source: str
    interval_s: float

    def sample(self, now: float) -> list[Sample]:
        """The figures as of `now` (Clock.now() taken just before reading)."""
        ...

    def close(self) -> None:
        """Release what the sampler holds (connections, NVML)."""
        ...


class SamplerGroup:
    """Runs each sampler on its own thread at its own interval, on one clock.

    Ticks follow a fixed grid (start + k * interval), so they do not drift; a tick that
    overruns skips the grid points it missed. A sampler that raises is logged once as a
    warning (later errors are counted, at debug level) and keeps being called.

    `sink`, if given, gets each tick's samples as they come (the point's journal), so they
    outlive a process that is killed; a sink that raises is logged once, like a sampler.
    """

    def __init__(self, samplers: Iterable[Sampler], clock: Clock,
                 sink: Callable[[list[Sample]], None] | None = None) -> None:
        self.samplers: list[Sampler] = list(samplers)
        self.clock = clock
        self.sink = sink
        self._sink_failed = False
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._errors: dict[int, int] = {}
        self._ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one thread per sampler; the first tick is immediate."""
        if self._threads:
            raise RuntimeError("SamplerGroup already started")
        self._stop.clear()
        t0 = self.clock.now()
        for i, sampler in enumerate(self.samplers):
            thread = threading.Thread(
                target=self._run,
                args=(i, sampler, t0),
                name=f"kvexp-sampler-{sampler.source}-{i}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every thread, wait for them, then close the samplers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("sampler thread %s did not stop within %.1fs", thread.name, timeout_s)
        self._threads = []
        for sampler in self.samplers:
            try:
                sampler.close()
            except Exception as e:
                log.warning("closing sampler %s failed: %r", sampler.source, e)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def samples(self) -> list[Sample]:
        """A copy of everything collected so far."""
        with self._lock:
            return list(self._samples)

    def drain(self) -> list[Sample]:
        """Everything collected so far, removed from the group."""
        with self._lock:
            out, self._samples = self._samples, []
        return out

    def errors(self) -> dict[str, int]:
        """How many ticks raised, per sampler source (only those that did)."""
        out: dict[str, int] = {}
        for i, n in self._errors.items():
            key = self.samplers[i].source
            out[key] = out.get(key, 0) + n
        return out

    def ticks(self) -> dict[str, int]:
        """How many ticks ran, per sampler source."""
        out: dict[str, int] = {}
        for i, n in self._ticks.items():
            key = self.samplers[i].source
            out[key] = out.get(key, 0) + n
        return out

    def __enter__(self) -> SamplerGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, index: int, sampler: Sampler, t0: float) -> None:
        interval = max(float(sampler.interval_s), 1e-3)
        k = 0
        while not self._stop.is_set():
            self._tick(index, sampler)
            now = self.clock.now()
            k = max(k + 1, int((now - t0) / interval) + 1)
            if self._stop.wait(max(0.0, t0 + k * interval - now)):
                break

    def _tick(self, index: int, sampler: Sampler) -> None:
        self._ticks[index] = self._ticks.get(index, 0) + 1
        try:
            got = sampler.sample(self.clock.now())
        except Exception as e:
            n = self._errors.get(index, 0)
            self._errors[index] = n + 1
            if n == 0:
                log.warning(
                    "sampler %s raised %r; it keeps running (further errors at debug level)",
                    sampler.source,
                    e,
                )
            else:
                log.debug("sampler %s raised %r", sampler.source, e)
            return
        if got:
            with self._lock:
                self._samples.extend(got)
            if self.sink is not None:
                try:
                    self.sink(got)
                except Exception as e:
                    if not self._sink_failed:
                        log.warning("sample sink raised %r; samples stay in memory", e)
                    self._sink_failed = True
