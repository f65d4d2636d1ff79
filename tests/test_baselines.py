"""Basic, Static and Ideal on small models: valid plans, sane ordering, clear errors."""

import numpy as np
import pytest

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningError, PlanningOptions, compile_model
from elkopt.plans.table import build_tables
from elkopt.schedule import baselines
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.schedule import PROLOGUE

CHIP = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)


@pytest.fixture(scope="module")
def tiny():
    graph = build_graph("tiny", "decode", 8, 256)
    return graph, build_tables(graph, CHIP, 64)


def test_assign_windows_by_hand():
    has_load = np.array([True, False, True, True])
    cold = np.array([10.0, 0.0, 30.0, 30.0])
    # op 1 can hold 40 B of preloads, ops 0 and 2 only 30 B
    capacity = np.array([30.0, 40.0, 30.0, 30.0])
    windows = baselines.assign_windows(has_load, cold, capacity)
    # op 2's 30 B fit beside ops 0 and 1, so it loads before anything runs; op 3's
    # would overflow op 0 (60 > 30) and op 1 (60 > 40), so it is issued when op 2 runs
    assert list(windows) == [PROLOGUE, PROLOGUE, PROLOGUE, 2]
    # with op 2 too full to hold op 3's data, op 3 loads after op 2 ends: its own window
    tight = baselines.assign_windows(has_load, cold, np.array([30.0, 40.0, 20.0, 30.0]))
    assert list(tight) == [PROLOGUE, PROLOGUE, PROLOGUE, 3]


@pytest.mark.parametrize("name", ["basic", "static"])
def test_baseline_schedules_pass_the_checker(tiny, name):
    graph, tables = tiny
    make = {"basic": baselines.schedule_basic, "static": baselines.schedule_static}[name]
    result = make(graph, tables, CHIP)
    deps = [graph.dependencies(i) for i in range(graph.n_ops)]
    assert check_schedule(result.schedule, CHIP, deps, result.timeline) == []
    assert result.timeline.latency_cycles > 0


def test_references_are_ordered(tiny):
    graph, tables = tiny
    ideal = baselines.schedule_ideal(graph, tables, CHIP).timeline.latency_cycles
    bound = baselines.lower_bound_cycles(graph, tables, CHIP)
    static = baselines.schedule_static(graph, tables, CHIP).timeline.latency_cycles
    basic = baselines.schedule_basic(graph, tables, CHIP).timeline.latency_cycles
    assert bound <= ideal * (1 + 1e-9)
    assert ideal <= static and ideal <= basic
    hbm = sum(op.hbm_bytes(2) for op in graph.ops) / CHIP.hbm_bytes_per_cycle
    assert bound >= hbm


def test_static_uses_one_split(tiny):
    graph, tables = tiny
    result = baselines.schedule_static(graph, tables, CHIP)
    # the execution space is fixed: every hot footprint fits the largest one used, and
    # the preload space beside it never overflows (the checker's SRAM rule)
    hot = max(o.option.hot_bytes for o in result.schedule.ops)
    assert hot <= CHIP.usable_sram_bytes_per_core
    assert result.timeline.peak_sram_bytes <= CHIP.usable_sram_bytes_per_core


def test_operator_too_big_names_it():
    cramped = Chip(name="cramped", cores_per_chip=4, sram_bytes_per_core=16 * 1024)
    graph = build_graph("tiny", "decode", 8, 256)
    with pytest.raises(PlanningError, match=r"operator '.*' .* fits in no plan.*short by"):
        compile_model(graph, cramped, "static", PlanningOptions(split_fraction=None))  # never cut
    # cut into as many copies as it needs, it plans
    assert compile_model(graph, cramped, "static", PlanningOptions()).stats["split_must"]


def test_unknown_scheduler():
    graph = build_graph("tiny", "decode", 2, 16)
    with pytest.raises(PlanningError, match="unknown scheduler 'magic'"):
        compile_model(graph, CHIP, "magic", PlanningOptions())


def test_same_input_same_plan(tmp_path):
    graph = build_graph("tiny", "decode", 8, 256)
    first = compile_model(graph, CHIP, "static", PlanningOptions(cache_dir=str(tmp_path)))
    second = compile_model(graph, CHIP, "static", PlanningOptions(cache_dir=str(tmp_path)))
    assert second.stats["plan_table_cache_hits"] == second.stats["unique_ops"]
    assert first.schedule == second.schedule
    assert first.references == second.references
