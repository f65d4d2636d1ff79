"""The inductive scheduler: valid plans, memoised windows, determinism."""

import dataclasses

import pytest

from elkopt.chip import Chip
from elkopt.graph.zoo import ARCHITECTURES, build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.table import build_tables
from elkopt.schedule import baselines
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.inductive import schedule_inductive
from elkopt.solve import SolverOptions

CHIP = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)


def tiny_with_layers(n_layers):
    arch = dataclasses.replace(ARCHITECTURES["tiny"], n_layers=n_layers)
    graph = build_graph(arch, "decode", 8, 256)
    return graph, build_tables(graph, CHIP, 64)


@pytest.fixture(scope="module")
def tiny():
    return tiny_with_layers(2)


def dependencies(graph):
    return [graph.dependencies(i) for i in range(graph.n_ops)]


def test_plan_passes_the_independent_checker(tiny):
    graph, tables = tiny
    evaluated, stats = schedule_inductive(graph, tables, CHIP)
    assert evaluated.schedule.scheduler == "inductive"
    assert check_schedule(evaluated.schedule, CHIP, dependencies(graph), evaluated.timeline) == []
    assert stats.windows == stats.cache_hits + stats.milps_solved + stats.trivial + stats.infeasible


def test_latency_is_above_the_lower_bound(tiny):
    graph, tables = tiny
    evaluated, _ = schedule_inductive(graph, tables, CHIP)
    assert evaluated.timeline.latency_cycles >= baselines.lower_bound_cycles(graph, tables, CHIP) - 1e-6


def test_plan_fits_an_sram_that_forces_smaller_plans():
    # with little SRAM, windows must trade execution space for preloads
    chip = dataclasses.replace(CHIP, sram_bytes_per_core=40 * 1024)
    graph = build_graph("tiny", "decode", 8, 256)
    tables = build_tables(graph, chip, 64)
    evaluated, _ = schedule_inductive(graph, tables, chip)
    assert check_schedule(evaluated.schedule, chip, dependencies(graph), evaluated.timeline) == []
    assert evaluated.timeline.peak_sram_bytes <= chip.usable_sram_bytes_per_core


def test_windows_recur_across_layers():
    # deeper models reuse the same window MILPs: the count of distinct solves
    # does not grow with the number of layers
    _, small = schedule_inductive(*tiny_with_layers(3), CHIP)
    _, deep = schedule_inductive(*tiny_with_layers(8), CHIP)
    assert deep.windows > small.windows
    assert deep.milps_solved + deep.trivial <= small.milps_solved + small.trivial + 4
    assert deep.cache_hits > small.cache_hits


def test_same_input_same_plan(tiny):
    graph, tables = tiny
    first, _ = schedule_inductive(graph, tables, CHIP, SolverOptions(seed=0))
    second, _ = schedule_inductive(graph, tables, CHIP, SolverOptions(seed=0))
    assert first.schedule == second.schedule


def test_pipeline_reports_solve_statistics(tiny):
    graph, _ = tiny
    result = compile_model(graph, CHIP, "inductive", PlanningOptions(max_spatial_splits=64))
    assert result.schedule.scheduler == "inductive"
    assert result.solve_stats["windows"] > 0
    assert result.solve_stats["milps_solved"] >= 1


def test_with_static_as_its_start_inductive_is_never_slower_than_static(tiny):
    # on this graph the induction alone loses to Static (113,292 against 112,770 cycles)
    graph, tables = tiny
    static = baselines.schedule_static(graph, tables, CHIP)
    alone, alone_stats = schedule_inductive(graph, tables, CHIP)
    assert alone.timeline.latency_cycles > static.timeline.latency_cycles  # the case this test is for
    assert alone_stats.start == "induction" and alone_stats.induction.schedule == alone.schedule
    evaluated, stats = schedule_inductive(graph, tables, CHIP, start=static)
    assert evaluated.timeline.latency_cycles <= static.timeline.latency_cycles
    assert evaluated.schedule.scheduler == "inductive"
    assert check_schedule(evaluated.schedule, CHIP, dependencies(graph), evaluated.timeline) == []
    assert stats.start == "static" and stats.as_dict()["inductive_start"] == "static"
    # the induction itself ran as without a start, and its plan is kept for elkopt
    assert stats.induction_cycles == pytest.approx(alone.timeline.latency_cycles)
    assert stats.induction.schedule == alone.schedule


def test_a_faster_induction_beats_its_start():
    # little SRAM and a long KV cache: the induction is well ahead of Static
    chip = dataclasses.replace(CHIP, sram_bytes_per_core=64 * 1024)
    graph = build_graph("tiny", "decode", 32, 1024)
    tables = build_tables(graph, chip, 64)
    static = baselines.schedule_static(graph, tables, chip)
    evaluated, stats = schedule_inductive(graph, tables, chip, start=static)
    assert stats.start == "induction"
    assert evaluated.timeline.latency_cycles == stats.induction_cycles < static.timeline.latency_cycles


def test_the_pipeline_keeps_inductive_no_slower_than_static(tiny):
    graph, _ = tiny
    result = compile_model(graph, CHIP, "inductive", PlanningOptions(max_spatial_splits=64))
    stats = result.solve_stats
    assert result.timeline.latency_ms <= result.references["static"] + 1e-9
    assert stats["inductive_ms"] == pytest.approx(result.timeline.latency_ms)
    assert stats["induction_ms"] > result.references["static"]  # the induction alone loses here
    assert stats["inductive_start"] == "static"


def test_windows_where_nothing_fits_are_skipped():
    # Llama2-13B with a 4096-token KV cache: the attention loads are so big that
    # some preload sets leave no room for any plan of the executing operator
    chip = Chip(name="ipu_pod4", n_chips=4)
    graph = build_graph("llama2_13b", "decode", 32, 4096)
    tables = build_tables(graph, chip, 256)
    evaluated, stats = schedule_inductive(graph, tables, chip)
    assert stats.infeasible > 0
    assert check_schedule(evaluated.schedule, chip, dependencies(graph), evaluated.timeline) == []
