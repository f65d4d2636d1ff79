"""Solves that find nothing: every MILP subproblem falls back to a heuristic choice,
the plan stays valid, and the solve statistics say which fell back and why."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from pyomo.contrib.solver.common.factory import SolverFactory as RealSolverFactory

from elkopt.chip import Chip
from elkopt.graph.zoo import ARCHITECTURES, build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.table import build_tables
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.inductive import schedule_inductive
from elkopt.schedule.window import Group, brute_force_window, greedy_window, solve_window
from elkopt.solve import SolverOptions, SolveStatus, solve
from elkopt.solve import highs as facade

CHIP = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)
#: So short that HiGHS stops before it has any solution (it checks the clock first).
NO_TIME = SolverOptions(time_limit_s=1e-9)


def random_window(rng, n_groups=3, items=8):
    groups = []
    for g in range(n_groups):
        weight = rng.integers(0, 400, size=items).astype(float)
        groups.append(Group(f"op{g}", weight, 1000.0 - weight + rng.integers(0, 300, size=items)))
    return groups


def dependencies(graph):
    return [graph.dependencies(i) for i in range(graph.n_ops)]


@pytest.fixture(scope="module")
def tiny():
    graph = build_graph(dataclasses.replace(ARCHITECTURES["tiny"], n_layers=2), "decode", 8, 256)
    # the reference plan space, in which the golden latencies below were measured
    return graph, build_tables(graph, CHIP, 64, plan_space="reference")


# -- the window MILP ---------------------------------------------------------------
def test_a_window_without_a_solution_takes_the_greedy_choice():
    groups = random_window(np.random.default_rng(0))
    capacity = 600.0
    solution = solve_window(groups, capacity, NO_TIME)
    assert solution.solve.status is SolveStatus.NO_SOLUTION
    assert solution.fallback == "time_limit_no_solution"
    assert solution.picks == greedy_window(groups, capacity)
    assert solution.weight <= capacity
    assert solution.cost == pytest.approx(sum(g.cost[k] for g, k in zip(groups, solution.picks)))
    # with time, the same window is solved exactly and does not fall back
    exact = solve_window(groups, capacity, SolverOptions(mip_rel_gap=0.0))
    assert exact.fallback is None
    assert exact.cost == pytest.approx(brute_force_window(groups, capacity)[0])


@pytest.mark.parametrize("seed", range(20))
def test_the_greedy_choice_fits_and_never_beats_the_optimum(seed):
    rng = np.random.default_rng(seed)
    groups = random_window(rng, n_groups=int(rng.integers(1, 5)), items=int(rng.integers(1, 7)))
    lightest = sum(g.weight.min() for g in groups)
    capacity = float(rng.uniform(lightest, sum(g.weight.max() for g in groups)))
    picks = greedy_window(groups, capacity)
    assert sum(g.weight[k] for g, k in zip(groups, picks)) <= capacity
    cost = sum(g.cost[k] for g, k in zip(groups, picks))
    assert cost >= brute_force_window(groups, capacity)[0] - 1e-9


class FailingFactory:
    """SolverFactory("highs") whose solves raise the first `failures` times."""

    def __init__(self, failures):
        self.failures = failures
        self.seeds = []

    def __call__(self, name):
        solver, outer = RealSolverFactory(name), self

        class Flaky:
            def solve(self, model, **kwargs):
                outer.seeds.append(kwargs["solver_options"]["random_seed"])
                if outer.failures > 0:
                    outer.failures -= 1
                    raise RuntimeError("HiGHS solve error")
                return solver.solve(model, **kwargs)

        return Flaky()


def test_a_solver_error_is_retried_once_with_another_seed(monkeypatch):
    groups = random_window(np.random.default_rng(1))
    factory = FailingFactory(failures=1)
    monkeypatch.setattr(facade, "SolverFactory", factory)
    solution = solve_window(groups, 600.0, SolverOptions(seed=5))
    assert factory.seeds == [5, 6]
    assert solution.solve.retried and solution.solve.has_solution and solution.fallback is None

    # failing again after the retry: the window falls back, naming the error
    monkeypatch.setattr(facade, "SolverFactory", FailingFactory(failures=2))
    solution = solve_window(groups, 600.0, SolverOptions(seed=5))
    assert solution.solve.status is SolveStatus.ERROR and "HiGHS solve error" in solution.solve.message
    assert solution.fallback == "solver_error"
    assert solution.picks == greedy_window(groups, 600.0)


def test_the_facade_says_why_there_is_no_solution():
    import pyomo.environ as pyo

    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(40), domain=pyo.Binary)
    m.c = pyo.Constraint(expr=sum((i % 7 + 3) * m.x[i] for i in range(40)) <= 50)
    m.o = pyo.Objective(expr=sum((i % 5 + 1) * m.x[i] for i in range(40)), sense=pyo.maximize)
    for warm_start in (False, True):
        result = solve(m, NO_TIME, warm_start=warm_start)
        assert (result.status, result.limit, result.fallback_reason) == (
            SolveStatus.NO_SOLUTION, "time_limit", "time_limit_no_solution")
    assert solve(m).fallback_reason is None


# -- the schedulers ----------------------------------------------------------------
def test_inductive_falls_back_and_its_plan_stays_valid(tiny, caplog):
    graph, tables = tiny
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        evaluated, stats = schedule_inductive(graph, tables, CHIP, NO_TIME)
    assert check_schedule(evaluated.schedule, CHIP, dependencies(graph), evaluated.timeline) == []
    summary = stats.as_dict()
    assert summary["fallback_windows"] > 0
    assert summary["fallback_reasons"] == {"time_limit_no_solution": summary["fallback_windows"]}
    assert stats.fallback_windows <= stats.milps_solved
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one line per run, not one per window
    assert "time_limit_no_solution" in warnings[0].getMessage()
    assert "solver.time_limit_s" in warnings[0].getMessage()


def test_with_a_normal_limit_nothing_falls_back_and_the_latency_is_unchanged(tiny, caplog):
    graph, tables = tiny
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        evaluated, stats = schedule_inductive(graph, tables, CHIP, SolverOptions())
    assert stats.as_dict()["fallback_windows"] == 0 and stats.as_dict()["fallback_reasons"] == {}
    assert not caplog.records
    # the golden latency of this graph (the same before fallbacks existed)
    assert evaluated.timeline.latency_cycles == pytest.approx(113292.37, rel=1e-4)


def test_elkopt_with_the_layer_milp_falls_back_everywhere_and_stays_valid(tiny):
    graph, _ = tiny
    options = PlanningOptions(max_spatial_splits=64, layer_milp=True, plan_space="reference")
    # compile_model runs the independent checker on the plan it returns
    result = compile_model(graph, CHIP, "elkopt", options, solver=NO_TIME)
    assert check_schedule(result.schedule, CHIP, dependencies(graph), result.timeline) == []
    stats = result.solve_stats
    assert stats["fallback_windows"] > 0
    assert stats["layer_milp_status"] == "no_solution"
    assert stats["layer_milp_fallbacks"] == 1
    assert stats["layer_milp_fallback_reasons"] == {"time_limit_no_solution": 1}
    assert result.timeline.latency_ms <= stats["inductive_ms"] + 1e-9

    # with a normal limit (the layer MILP, ~20 s here, is left to test_periodic)
    normal = compile_model(graph, CHIP, "elkopt", dataclasses.replace(options, layer_milp=False),
                           solver=SolverOptions(max_nodes=200))
    assert normal.solve_stats["fallback_windows"] == 0
    assert normal.solve_stats["layer_milp_fallbacks"] == 0
    assert normal.solve_stats["layer_milp_fallback_reasons"] == {}
    assert normal.timeline.latency_cycles == pytest.approx(112438.39, rel=1e-4)


def test_the_command_line_run_ends_with_a_valid_plan_and_one_warning(tmp_path):
    env = {**os.environ, "ELKOPT_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, "-m", "elkopt.run", f"hydra.run.dir={tmp_path / 'run'}", "model=tiny",
         "scheduler=elkopt", "solver.time_limit_s=1e-6"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["solve"]["fallback_windows"] > 0
    assert metrics["solve"]["fallback_reasons"]["time_limit_no_solution"] > 0
    log = result.stdout + result.stderr
    assert log.count("window MILPs gave no usable solution") == 1


def test_an_incumbent_over_the_capacity_is_not_trusted(monkeypatch):
    import elkopt.schedule.window as window

    groups = random_window(np.random.default_rng(2))

    def every_heaviest(model, options=None):  # a wrong answer, as HiGHS has given under some options
        for g, k in model.x:
            model.x[g, k].set_value(1.0 if k == max(kk for gg, kk in model.x if gg == g) else 0.0)
        return facade.SolveResult(SolveStatus.OPTIMAL, 0.0, 0.0, 0.0, 0.0, 0)

    monkeypatch.setattr(window, "solve", every_heaviest)
    solution = solve_window(groups, 600.0)
    assert solution.fallback == "invalid_incumbent"
    assert solution.picks == greedy_window(groups, 600.0) and solution.weight <= 600.0
