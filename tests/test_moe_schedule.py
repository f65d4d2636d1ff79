"""Routed-expert loads wait for their router, or are preloaded speculatively: the timeline's
and the checker's rule on hand-made schedules, the speculative graph's HBM bytes by hand,
and the pipeline's decision (never slower than waiting; planning.moe_preload=wait plans
the waiting graph)."""

from __future__ import annotations

import pytest

from elkopt.chip import Chip
from elkopt.graph import moe
from elkopt.graph.arch import Architecture
from elkopt.graph.builders import build_decode_graph
from elkopt.pipeline import PlanningOptions, compile_model, moe_preload_count
from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.checker import ScheduleError, check_schedule
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline

# ---------------------------------------------------------------- the wait, by hand

# 100 HBM bytes per cycle, 50 interconnect bytes per cycle, 1 GHz; every plan uses one core,
# so a load of 1000 B with 300 B cold lasts max(1000/100, 300/50) = 10 cycles
T = Chip(name="t", cores_per_chip=4, sram_bytes_per_core=1000, clock_hz=1e9, hbm_bytes_per_s=1e11,
         core_link_bytes_per_s=12.5e9)


def op(i, cycles, hbm=0, window=PROLOGUE, after=()):
    option = PlanOption(plan=Plan((1,), ((1,),)), cold_bytes=300 if hbm else 0, hot_bytes=200, exec_cycles=cycles,
                        exchange_cycles=0.0, distribution_cycles=0.0)
    return OpSchedule(op=i, option=option, preload_window=window, hbm_bytes=hbm, load_after=after)


def router_then_expert(after=(0,)):
    """op0 the router (100 cycles), op1 5 cycles, op2 an expert whose 10-cycle load is
    issued before everything (PROLOGUE), op3 an op whose 10-cycle load queues behind it."""
    return Schedule((op(0, 100), op(1, 5), op(2, 5, hbm=1000, after=after), op(3, 5, hbm=1000)), (2, 3))


def test_expert_load_waits_for_its_router():
    speculative = compute_timeline(router_then_expert(after=()), T)
    # no wait: loads [0, 10] and [10, 20]; ops [0, 100], [100, 105], [105, 110], [110, 115]
    assert list(speculative.load_start[2:]) == [0, 10]
    assert list(speculative.exec_end) == [100, 105, 110, 115]
    waiting = compute_timeline(router_then_expert(), T)
    # the expert load starts when the router ends (100) and ends at 110; op2 [110, 115]; the
    # load behind it in the queue waits too: [110, 120], op3 [120, 125]
    assert list(waiting.load_start[2:]) == [100, 110] and list(waiting.load_end[2:]) == [110, 120]
    assert list(waiting.exec_start) == [0, 100, 110, 120] and waiting.latency_cycles == 125


def test_checker_flags_an_expert_load_before_its_router():
    routers = {2: (0,)}
    deps = [[], [0], [1], [2]]
    early = router_then_expert(after=())
    problems = check_schedule(early, T, deps, routers=routers)
    assert problems == ["op 2: routed-expert load starts at cycle 0.0 before its router, op 0, ends at cycle "
                        "100.0 (preload speculatively instead)"]
    assert check_schedule(router_then_expert(), T, deps, routers=routers) == []
    assert check_schedule(early, T, deps) == []  # a graph without routers: no rule


def test_expert_load_queued_before_its_routers_own_load_deadlocks():
    # the router has a load too, queued behind the expert's: each waits for the other
    schedule = Schedule((op(0, 100, hbm=1000), op(1, 5, hbm=1000, after=(0,))), (1, 0))
    with pytest.raises(ScheduleError, match="deadlock: op 0 .* waiting for its router, op 0"):
        compute_timeline(schedule, T)


# ---------------------------------------------------------------- the speculative graph, by hand

# hidden H = 64, E = 4 routed experts of F = 32, top k = 2; layer 0 dense, layer 1 MoE
H, E, K, F = 64, 4, 2, 32
TINY = Architecture("tiny_moe", n_layers=2, hidden=H, n_heads=4, n_kv_heads=2, head_dim=16, ffn=96, vocab=100,
                    gated=True, activation="silu", norm="rmsnorm", positional="rotary", n_experts=E,
                    experts_per_token=K, expert_ffn=F, dense_layers=1)
EXPERT_BYTES = 3 * H * F * 2  # gate, up and down of one expert, fp16: 12288


def routed(graph, suffix=""):
    return [o for o in graph.ops if o.name.startswith("layer1.mlp.experts.") and o.hbm_elements
            and o.name.endswith(suffix)]


def test_routed_layers_read_from_the_graph():
    graph = build_decode_graph(TINY, 3, 16)
    (layer,) = moe.routed_layers(graph)
    assert (layer.n_experts, layer.top_k, layer.tokens, layer.groups) == (4, 2, 3, 3)  # G: divisor of 6 <= 4
    assert graph.ops[layer.router].name == "layer1.mlp.topk.select"
    assert [graph.ops[i].name for i in layer.ops] == ["layer1.mlp.experts.gate_up", "layer1.mlp.experts.down"]


@pytest.mark.parametrize("m", [1, 2, 3])
def test_uniform_speculation_bytes_by_hand(m):
    # batch 2: G = E = 4; an expert is read with probability 1 - (1 - 2/4)^2 = 3/4
    graph = build_decode_graph(TINY, 2, 16)
    spec, report = moe.speculate(graph, m)
    before = sum(o.hbm_bytes(2) for o in routed(spec, ".speculative"))
    after = sum(o.hbm_bytes(2) for o in routed(spec, ".missed"))
    assert before == m * EXPERT_BYTES  # whole experts, before the router
    assert after == pytest.approx((E - m) * 0.75 * EXPERT_BYTES, abs=1)  # expected misses, after it
    assert report.experts == m and report.experts_read == pytest.approx(m + (E - m) * 0.75)
    # only the misses wait; FLOPs and the operands' elements (the SRAM footprint) are unchanged
    assert all(o.routed_by is None for o in routed(spec, ".speculative"))
    assert all(o.routed_by == "layer1.mlp.topk.select" for o in routed(spec, ".missed"))
    assert spec.total_flops == graph.total_flops
    assert sum(o.hbm_elements for o in routed(spec)) == sum(o.hbm_elements for o in routed(graph))
    # the waiting graph: 3 experts' bytes, all after the router
    assert moe.speculate(graph, 0)[0] is graph
    assert sum(o.hbm_bytes(2) for o in routed(graph)) == 3 * EXPERT_BYTES


def test_speculating_every_expert_reads_them_all_without_waiting():
    graph = build_decode_graph(TINY, 4, 16)  # G = E = 4: D = 4 (1 - 1/16) = 3.75
    spec, report = moe.speculate(graph, 4)
    assert [o.name for o in routed(spec)] == ["layer1.mlp.experts.gate_up", "layer1.mlp.experts.down"]
    assert sum(o.hbm_bytes(2) for o in routed(spec)) == 4 * EXPERT_BYTES
    assert all(o.routed_by is None for o in routed(spec)) and not report.waiting
    assert not moe.router_dependencies(spec)


def test_speculation_is_capped_by_the_groups_the_operands_hold():
    # batch 1: G = k = 2 < E: at most G - 1 = 1 expert preloaded, the other group for the misses
    graph = build_decode_graph(TINY, 1, 16)
    spec, report = moe.speculate(graph, 4)
    assert report.experts == 1
    assert report.experts_read == pytest.approx(1 + 3 * 0.5)  # pi = 1/2, one token
    assert sum(o.hbm_bytes(2) for o in routed(spec, ".missed")) == pytest.approx(1.5 * EXPERT_BYTES, abs=1)


def test_skewed_speculation_preloads_the_likeliest_by_hand():
    # zipf:1 at batch 2: pi = 0.96, 0.48, 0.32, 0.24; the likeliest preloaded, the others read
    # with 1 - (1 - pi)^2 = 0.7296, 0.5376, 0.4224
    graph = build_decode_graph(TINY, 2, 16, routing="zipf:1")
    spec, report = moe.speculate(graph, 1, "zipf:1")
    assert sum(o.hbm_bytes(2) for o in routed(spec, ".missed")) == pytest.approx(1.6896 * EXPERT_BYTES, abs=2)
    assert report.experts_read == pytest.approx(2.6896)
    with pytest.raises(ValueError, match=r"routing 'uniform' gives 3: pass the routing the graph was built with"):
        moe.speculate(graph, 1)


# ---------------------------------------------------------------- the decision

SMALL = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)
SLOW_HBM = Chip(name="slow_hbm", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=5e9)


@pytest.mark.parametrize("chip", [SMALL, SLOW_HBM], ids=["small", "slow_hbm"])
def test_decision_keeps_the_fastest_and_never_loses_to_waiting(chip):
    graph = build_decode_graph(TINY, 2, 16)
    auto = compile_model(graph, chip, "static", PlanningOptions())
    wait = compile_model(graph, chip, "static", PlanningOptions(moe_preload="wait"))
    stats = auto.stats
    estimates = {int(m): float(ms.split()[0]) for m, ms in
                 (part.split(": ") for part in stats["moe_preload_estimates"].split("; "))}
    assert set(estimates) == {0, 3, 4}  # waiting, round(D) = round(3) and E
    assert auto.timeline.latency_ms == pytest.approx(min(estimates.values()), rel=1e-3)
    assert auto.timeline.latency_ms <= wait.timeline.latency_ms
    assert stats["moe_wait_ms"] == pytest.approx(wait.timeline.latency_ms)
    assert stats["moe_chosen_ms"] == auto.timeline.latency_ms
    m = stats["moe_experts_preloaded"]
    assert stats["moe_experts_read"] == pytest.approx({0: 3, 3: 3.75, 4: 4}[m])
    if chip is SLOW_HBM:  # HBM-bound: the router's wait costs more than reading every expert
        assert m == 4 and auto.timeline.latency_ms < wait.timeline.latency_ms


def test_wait_plans_the_waiting_graph_and_respects_the_routers():
    graph = build_decode_graph(TINY, 2, 16)
    wait = compile_model(graph, SLOW_HBM, "elkopt", PlanningOptions(moe_preload="wait"))
    assert wait.stats["moe_experts_preloaded"] == 0 and wait.stats["moe_preload_estimates"] == ""
    assert wait.stats["moe_wait_ms"] == wait.timeline.latency_ms
    assert wait.graph.hbm_bytes == graph.hbm_bytes  # nothing cut on this chip: the waiting graph itself
    routers = moe.router_dependencies(wait.graph)
    assert routers and all(wait.schedule.ops[j].load_after == r for j, r in routers.items())
    for j, (r,) in routers.items():
        assert wait.timeline.load_start[j] >= wait.timeline.exec_end[r]
    auto = compile_model(graph, SLOW_HBM, "elkopt", PlanningOptions())
    assert auto.timeline.latency_cycles <= wait.timeline.latency_cycles
    assert auto.stats["moe_wait_ms"] == pytest.approx(wait.timeline.latency_ms)
    assert auto.stats["moe_estimate"] == "static" and auto.stats["moe_preload_estimates"].count("ms") == 3
    assert auto.references["lower_bound"] <= wait.references["lower_bound"]


def test_auto_decides_the_cutting_of_each_candidate_graph_once(monkeypatch):
    # the Static estimate's cutting decision is the one the chosen graphs are planned with
    import elkopt.pipeline as pipeline

    decided = []
    real = pipeline.choose_split

    def counting(graph, *args, **kwargs):
        decided.append(id(graph))
        return real(graph, *args, **kwargs)

    monkeypatch.setattr(pipeline, "choose_split", counting)
    graph = build_decode_graph(TINY, 2, 16)
    auto = compile_model(graph, SLOW_HBM, "elkopt", PlanningOptions())
    assert auto.stats["moe_preload_estimates"].count("ms") == 3  # three candidates weighed
    assert len(decided) == len(set(decided)) == 3


def test_the_plan_file_keeps_the_router_waits():
    from elkopt.report import schedule_from_dict, schedule_to_dict
    from elkopt.schedule.timeline import compute_timeline

    graph = build_decode_graph(TINY, 2, 16)
    wait = compile_model(graph, SLOW_HBM, "static", PlanningOptions(moe_preload="wait"))
    again = schedule_from_dict(schedule_to_dict(wait.schedule, [op.name for op in wait.graph.ops]))
    assert again == wait.schedule and any(op.load_after for op in again.ops)
    assert compute_timeline(again, SLOW_HBM).latency_cycles == wait.timeline.latency_cycles


def test_a_fixed_speculation_is_planned_as_asked():
    graph = build_decode_graph(TINY, 2, 16)
    result = compile_model(graph, SMALL, "static", PlanningOptions(moe_preload="1"))
    assert result.stats["moe_experts_preloaded"] == 1 and result.stats["moe_wait_ms"] is None
    assert result.graph.hbm_bytes == graph.hbm_bytes + round((1 + 3 * 0.75 - 3) * EXPERT_BYTES)
    assert any(o.name.endswith(".speculative") for o in result.graph.ops)


@pytest.mark.parametrize("value, count", [("auto", None), ("wait", 0), ("all", -1), ("3", 3), (5, 5)])
def test_moe_preload_values(value, count):
    assert moe_preload_count(value) == count


@pytest.mark.parametrize("value", ["", "some", "-1", "2.5", "waiting"])
def test_bad_moe_preload_names_the_field(value):
    with pytest.raises(ValueError, match=r"planning\.moe_preload must be 'auto'"):
        PlanningOptions(moe_preload=value)
