"""The capacity search: bisection against the grid, its error rate under sampling noise, the
mix's instances, the memory check that refuses an N before any server starts, and the walk
on the real engine from the planned frontier."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hydra import compose

import kvexp.__main__  # noqa: F401 - registers the schemas
from kvexp.capacity.answer import Answer, Probe
from kvexp.capacity.attainment import attainment
from kvexp.capacity.room import no_room
from kvexp.capacity.search import grid, search
from kvexp.capacity.sweeper import CapacityRun
from kvexp.config import ConfigError, resolve_instances, to_config
from kvexp.config.instances import shares

CONF = Path(__file__).resolve().parents[1] / "conf"


pytestmark = pytest.mark.usefixtures("hydra_conf")  # tests/conftest.py


def cfg_for(*overrides: str):
    return to_config(compose("config", overrides=["experiment=capacity", *overrides]))


@pytest.mark.parametrize("n_min, n_max", [(1, 1), (1, 8), (1, 12), (2, 17)])
def test_bisection_finds_the_grids_answer_in_log2_points(n_min: int, n_max: int) -> None:
    for true_n in range(n_min - 1, n_max + 1):
        calls: list[int] = []

        def meets(n: int, t: int = true_n, calls: list[int] = calls) -> bool:
            calls.append(n)
            return n <= t

        found = search(meets, n_min, n_max)
        assert found.max_n == grid(lambda n, t=true_n: n <= t, n_min, n_max).max_n == true_n
        assert len(calls) == len(set(calls)) <= math.ceil(math.log2(n_max - n_min + 2)) + 1
        # both sides of the boundary were measured, where they are in range
        assert found.frontier == [n for n in (true_n, true_n + 1) if n_min <= n <= n_max]


def _answer(curve: dict[int, float], requests: int, rng: random.Random, target: float
            ) -> tuple[int, bool]:
    """The search on binomial draws of `curve`: (its N*, flagged uncertain)."""
    probes: list[Probe] = []

    def meets(n: int) -> bool:
        good = sum(rng.random() < curve[n] for _ in range(requests))
        a = attainment(good, requests, 0.95)
        probes.append(Probe("plan", "x", n, "sim", met=a.share >= target, attainment=a.share,
                            interval=[a.low, a.high], requests=requests))
        return probes[-1].met

    s = search(meets, min(curve), max(curve))
    answer = Answer("x", "sim", s.max_n, s.max_n, probes)
    return s.max_n, answer.uncertain(target)


@pytest.mark.parametrize("gap", [0.004, 0.01, 0.03])
def test_a_wrong_answer_is_flagged_uncertain_at_least_95_percent_of_the_time(gap: float
                                                                             ) -> None:
    """Seeded simulation: attainment 0.99 + gap up to N=5, 0.99 - gap after, 400 requests a
    point. However close the boundary, an unflagged wrong N* stays under 5% of searches,
    and with a clear gap (3 points) the answer is right almost always."""
    rng, target = random.Random(7), 0.99
    curve = {n: (target + gap if n <= 5 else target - gap) for n in range(1, 13)}
    runs, wrong, unflagged_wrong = 400, 0, 0
    for _ in range(runs):
        n, uncertain = _answer(curve, 400, rng, target)
        wrong += n != 5
        unflagged_wrong += n != 5 and not uncertain
    assert unflagged_wrong / runs <= 0.05
    if gap >= 0.03:
        assert wrong / runs <= 0.02


def test_a_mix_makes_n_instances_with_power_law_rates() -> None:
    cfg = cfg_for("mix.n=4", "allocator=static", "engine=sim")
    insts = resolve_instances(cfg)
    assert [i.name for i in insts] == ["m0", "m1", "m2", "m3"]
    rates = [i.workload.rate for i in insts]
    assert sum(rates) == pytest.approx(4 * cfg.mix.rate)  # the mean rate per model is kept
    assert rates == pytest.approx([4 * cfg.mix.rate * p for p in shares(4, 1.0)])
    assert rates[0] / rates[1] == pytest.approx(2.0)  # popularity 1: ~1/(i+1)
    assert [i.workload.burstiness for i in insts] == pytest.approx([1 / cfg.mix.cv**2] * 4)
    assert [i.allocator.gpu_memory_utilization for i in insts] == pytest.approx([0.9 / 4] * 4)
    kv = resolve_instances(cfg_for("mix.n=4", "allocator=kvcached", "engine=sim"))
    assert {i.allocator.gpu_memory_utilization for i in kv} == {0.55}  # shared, not split


def test_a_mix_of_shapes_cycles_them() -> None:
    cfg = cfg_for("mix.n=3", "mix.models=[qwen2.5-0.5b-instruct,qwen2.5-1.5b-instruct]",
                  "engine=sim")
    assert [i.model.name for i in resolve_instances(cfg)] == [
        "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-0.5b-instruct"]


@pytest.mark.parametrize("overrides, message", [
    (["mix.n=2", "mix.models=[nope]"], "mix.models: no model 'nope' in conf/model"),
    (["mix.n=2", "workload=poisson"], "mix.cv sets gamma inter-arrivals: use workload=gamma"),
    (["mix.n=2", "mix.cv=null", "workload=bursty"], "mix.rate needs a workload with a rate"),
    (["mix.n=-1"], "mix.n must be >= 0"),
    (["mix.static_share=1.5"], "mix.static_share must be in (0, 1]"),
    (["capacity.n_min=5", "capacity.n_max=2"], "need 1 <= n_min (5) <= n_max (2)"),
    (["capacity.allocators=[kvcached,elastic]"], "capacity.allocators must list some of"),
    (["capacity.method=random"], "capacity.method must be bisect or grid"),
])
def test_bad_mix_and_capacity_values_name_their_key(overrides: list[str], message: str
                                                     ) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        resolve_instances(cfg_for("engine=sim", *overrides))


def test_a_static_split_without_room_is_an_answer_before_any_server_starts() -> None:
    fits = cfg_for("mix.n=3", "allocator=static", "engine=sim")
    assert no_room(fits, resolve_instances(fits)) is None
    full = cfg_for("mix.n=4", "allocator=static", "engine=sim")
    why = no_room(full, resolve_instances(full))
    assert why and why.startswith("static: no room for 4 instances: at gpu_memory_utilization "
                                  "0.225 each")
    kv = cfg_for("mix.n=5", "allocator=kvcached", "engine=sim")
    assert "kvcached: no room for 5 instances" in no_room(kv, resolve_instances(kv))


class FakeRun(CapacityRun):
    """The search's bookkeeping with points answered by a table instead of servers."""

    def __init__(self, truth: dict[str, int], cfg) -> None:  # engine -> its true N*
        super().__init__(cfg, Path("/nonexistent"), lambda extra: cfg, lambda o, i: None)
        self.real, self.truth = "vllm", truth

    def evaluate(self, phase: str, allocator: str, n: int, engine: str, repeats: int) -> bool:
        met = n <= self.truth[engine]
        self.probes.append(Probe(phase, allocator, n, engine, met=met))
        return met

    def write(self) -> Path:
        return Path("/nonexistent")


@pytest.mark.parametrize("real_n", [4, 6, 2, 0])
def test_the_real_engine_runs_the_frontier_and_walks_to_its_own_boundary(real_n: int) -> None:
    cfg = cfg_for("engine=sim", "capacity.allocators=[kvcached]", "capacity.n_max=12")
    run = FakeRun({"sim": 4, "vllm": real_n}, cfg)
    run.run()
    (ans,) = run.answers
    assert (ans.max_n, ans.planned_max_n, ans.engine) == (real_n, 4, "vllm")
    real = [p.n for p in run.probes if p.engine == "vllm"]
    # N* and N* + 1 first, then one step at a time towards the real engine's boundary
    assert real == (list(range(4, real_n + 2)) if real_n >= 4
                    else list(range(4, max(real_n, 1) - 1, -1)))
    grid_points = 12  # a grid over N on the real engine, once each
    if real_n == 4:
        assert len(real) <= grid_points / 3


def test_an_earlier_plan_is_confirmed_without_planning_again(tmp_path: Path) -> None:
    cfg = cfg_for("engine=sim", "capacity.allocators=[kvcached]")
    first = FakeRun({"sim": 3, "vllm": 3}, cfg)
    first.real = "sim"  # plan only, as on a machine without a GPU
    first.run()
    plan = tmp_path / "capacity.json"
    plan.write_text(json.dumps({"_meta": first.meta(), "kvcached":
                                first.answers[0].as_dict(cfg.capacity.target)}))
    again = cfg_for("engine=sim", "capacity.allocators=[kvcached]", f"capacity.plan={plan}")
    run = FakeRun({"sim": 3, "vllm": 3}, again)
    assert run.plan_problems() == []
    run.run()
    assert [(p.phase, p.engine, p.n) for p in run.probes if p.phase == "confirm"] == [
        ("confirm", "vllm", 3), ("confirm", "vllm", 4)]
    assert run.answers[0].max_n == 3
    other = cfg_for("engine=sim", "capacity.allocators=[kvcached]", f"capacity.plan={plan}",
                    "slo.ttft_ms=500", "mix.popularity=0")
    assert FakeRun({}, other).plan_problems() == [
        f"capacity.plan: {plan} was planned with other settings: mix, slo differ"]


def test_a_trace_mix_replays_one_trace_from_staggered_starts_at_each_models_rate() -> None:
    cfg = cfg_for("mix.n=3", "engine=sim", "workload=trace", "mix.cv=null",
                  "workload.path=excerpt:azure2023_conv.csv", "mix.trace_offset_s=20",
                  "mix.rate=0.5")
    insts = resolve_instances(cfg)
    assert [i.workload.start_s for i in insts] == [0.0, 20.0, 40.0]
    assert [i.workload.target_rate for i in insts] == pytest.approx(
        [3 * 0.5 * p for p in shares(3, cfg.mix.popularity)])
