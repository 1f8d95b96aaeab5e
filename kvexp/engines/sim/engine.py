"""Continuous batching in simulated time, on a KV pool.

Each step prefills the sequences admitted in it and decodes one token for every
other running sequence. Its duration, times `time_scale`, is a CPU part,
`step_overhead_ms + step_per_seq_ms x running sequences`, then a GPU part, the
roofline max(bytes read / bandwidth, FLOPs / bf16 FLOP/s) / `roofline_efficiency`.
Bytes read are the weights plus the KV of every running sequence; FLOPs are
2 x parameters x tokens in the step (prefill tokens included). With a `StepBoard`
(sharing.py), the GPU part queues behind the other instances' on the device.

Prompts are counted by tokens.py. Output is pseudo-words (tokens.WORDS), one token each.
Unless `ignore_eos`, a sequence stops early with probability EOS_PROB a token, drawn
from a generator seeded by (engine seed, request number): runs are repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kvexp.config import ModelConfig, SimEngineConfig
from kvexp.engines.sim.gpus import GpuSpec
from kvexp.engines.sim.memory import KvPool
from kvexp.engines.sim.sharing import StepBoard
from kvexp.engines.sim.tokens import WORDS

EOS_PROB = 1 / 256
MAX_BATCHED_TOKENS = 8192  # prefill tokens admitted in one step (the first is always admitted)


class PromptTooLong(ValueError):
    """The request does not fit in max_model_len (HTTP 400 in vLLM)."""


class EngineDead(RuntimeError):
    """The engine's step loop has died; no request can be served."""


@dataclass(eq=False)
class Sequence:
    """One request in the engine; `events` yields each token's text, then None."""

    seq_id: int
    prompt_tokens: int
    max_tokens: int
    target_tokens: int  # where it stops: max_tokens, or earlier at a drawn EOS
    rng: random.Random
    output_tokens: int = 0
    blocks: int = 0
    preemptions: int = 0
    finish_reason: str | None = None  # length | stop | abort
    events: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    @property
    def context_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_usage: float
    preemptions: int
    num_gpu_blocks: int
    block_size: int
    prompt_tokens_total: int
    generation_tokens_total: int


class SimEngine:
    """FCFS continuous batching over `pool`, timed by `gpu` and `sim`."""

    def __init__(
        self,
        model: ModelConfig,
        sim: SimEngineConfig,
        gpu: GpuSpec,
        pool: KvPool,
        seed: int = 0,
        step_hook: Callable[[], None] | None = None,
        board: StepBoard | None = None,
    ) -> None:
        if not 0 < sim.roofline_efficiency <= 1:
            raise ValueError(f"engine.sim.roofline_efficiency must be in (0, 1], got "
                             f"{sim.roofline_efficiency}")
        for key in ("step_overhead_ms", "step_per_seq_ms"):
            if getattr(sim, key) < 0:
                raise ValueError(f"engine.sim.{key} must be >= 0, got {getattr(sim, key)}")
        self.model, self.sim, self.gpu, self.pool, self.seed = model, sim, gpu, pool, seed
        self.step_hook = step_hook  # called before each step (fault injection)
        self.board = board  # the device's step board: GPU time shared with its other instances
        self.steps = 0
        self.step_seconds_total = 0.0  # simulated seconds of every step (before time_scale)
        self.failure: BaseException | None = None  # what killed the step loop, if it died
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._count = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._poll_s = max(0.001, 0.01 * sim.time_scale)

    def submit(self, prompt_tokens: int, max_tokens: int | None, ignore_eos: bool) -> Sequence:
        """Queue a request; PromptTooLong if it cannot fit in max_model_len."""
        if self.failure is not None:
            raise EngineDead(f"the engine's step loop died: {self.failure!r}")
        limit = self.model.max_model_len
        if prompt_tokens >= limit:
            raise PromptTooLong(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"request has {prompt_tokens} input tokens. Please reduce the length of the input."
            )
        if max_tokens is None:
            max_tokens = limit - prompt_tokens
        if max_tokens < 1:
            raise PromptTooLong(f"max_tokens must be at least 1, got {max_tokens}.")
        if prompt_tokens + max_tokens > limit:
            raise PromptTooLong(
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
                f"model's maximum context length is {limit} tokens and your request has "
                f"{prompt_tokens} input tokens ({max_tokens} > {limit} - {prompt_tokens})."
            )
        rng = random.Random(f"{self.seed}:{self._count}")
        target = max_tokens
        if not ignore_eos:
            target = min(max_tokens, 1 + int(math.log(1.0 - rng.random()) / math.log1p(-EOS_PROB)))
        seq = Sequence(self._count, prompt_tokens, max_tokens, target, rng)
        self._count += 1
        self.prompt_tokens_total += prompt_tokens
        self.waiting.append(seq)
        self._wake.set()
        return seq

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence (client gone); its blocks go back to the pool."""
        if seq.finish_reason is None:
            self._finish(seq, "abort")

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.running),
            waiting=len(self.waiting),
            kv_usage=self.pool.usage,
            preemptions=self.preemptions,
            num_gpu_blocks=self.pool.capacity_blocks,
            block_size=self.pool.block_size,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
        )

    def step_parts(self, step_tokens: int, context_tokens: int, seqs: int) -> tuple[float, float]:
        """(CPU part, GPU part alone) of one step in simulated seconds (before time_scale)."""
        read = self.model.weight_bytes + context_tokens * self.model.kv_bytes_per_token
        flops = 2.0 * self.model.num_params * step_tokens
        roof = max(read / self.gpu.mem_bandwidth_bytes_s, flops / self.gpu.bf16_flops)
        cpu = (self.sim.step_overhead_ms + self.sim.step_per_seq_ms * seqs) / 1000.0
        return cpu, roof / self.sim.roofline_efficiency

    def step_seconds(self, step_tokens: int, context_tokens: int, seqs: int = 1) -> float:
        """Simulated duration of one step alone on its GPU (before time_scale)."""
        cpu, gpu = self.step_parts(step_tokens, context_tokens, seqs)
        return cpu + gpu

    def _step_wall_s(self, step_tokens: int, context_tokens: int, seqs: int) -> float:
        """Wall seconds of the step starting now, the GPU shared through the board."""
        cpu, gpu = self.step_parts(step_tokens, context_tokens, seqs)
        scale = self.sim.time_scale
        if self.board is None:
            wall = (cpu + gpu) * scale
        else:
            wall = self.board.step(time.time(), cpu * scale, gpu * scale)
        self.steps += 1
        self.step_seconds_total += wall / scale
        return wall

    def start(self, on_death: Callable[[BaseException], None] | None = None) -> None:
        """Run the step loop; if it dies, abort every request and call `on_death(error)`."""

        def done(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            self.failure = task.exception()
            for seq in [*self.running, *self.waiting]:
                self._finish(seq, "abort")
            if on_death is not None:
                on_death(self.failure)

        self._task = asyncio.get_running_loop().create_task(self._loop())
        self._task.add_done_callback(done)

    async def stop(self) -> None:
        """Stop stepping and abort every request; never raises the loop's own error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        for seq in [*self.running, *self.waiting]:
            self._finish(seq, "abort")

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.pool.block_size)

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq.blocks:
            blocks, seq.blocks = seq.blocks, 0
            with contextlib.suppress(OSError):  # a dying engine may have no file left to open
                self.pool.free(blocks)
        seq.events.put_nowait(None)

    def _preempt(self, seq: Sequence) -> None:
        """Recompute preemption: free its blocks, put it first in the queue."""
        self.running.remove(seq)
        self.pool.free(seq.blocks)
        seq.blocks = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def _grow_running(self) -> bool:
        """Give each running sequence the blocks its next token needs; True if any preempted."""
        preempted = False
        for seq in list(self.running):
            if seq not in self.running:
                continue
            need = self._blocks_for(seq.context_tokens) - seq.blocks
            while need > 0 and seq in self.running:
                if self.pool.allocate(need):
                    seq.blocks += need
                    break
                self._preempt(self.running[-1])
                preempted = True
        return preempted

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = MAX_BATCHED_TOKENS
        while self.waiting and len(self.running) < self.sim.max_batch:
            seq = self.waiting[0]
            if admitted and seq.context_tokens > budget:
                break
            need = self._blocks_for(seq.context_tokens)
            if not self.pool.allocate(need):
                break
            self.waiting.popleft()
            seq.blocks = need
            self.running.append(seq)
            admitted.append(seq)
            budget -= seq.context_tokens
        return admitted

    async def _loop(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.step_hook is not None:
                self.step_hook()
            preempted = self._grow_running()
            prefills = [] if preempted else self._admit()
            if not self.running:  # waiting for memory (another instance, a limit)
                await asyncio.sleep(self._poll_s)
                continue
            step_tokens = sum(s.context_tokens for s in prefills)
            step_tokens += len(self.running) - len(prefills)
            context = sum(s.context_tokens for s in self.running)
            await asyncio.sleep(self._step_wall_s(step_tokens, context, len(self.running)))
            for seq in list(self.running):
                if seq.finish_reason is not None:
                    continue
                seq.output_tokens += 1
                self.generation_tokens_total += 1
                seq.events.put_nowait(seq.rng.choice(WORDS))
                if seq.output_tokens >= seq.target_tokens:
                    self._finish(seq, "length" if seq.output_tokens >= seq.max_tokens else "stop")
