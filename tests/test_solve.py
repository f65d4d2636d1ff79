"""The solver facade: typed results, option checks, limits and infeasibility."""

import random

import pyomo.environ as pyo
import pytest

from elkopt.solve import SolverOptions, SolveStatus, check_highs_options, solve


def knapsack(n=30, seed=1, capacity=200):
    rng = random.Random(seed)
    w = [rng.randint(1, 50) for _ in range(n)]
    v = [rng.randint(1, 60) for _ in range(n)]
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(n), domain=pyo.Binary)
    m.cap = pyo.Constraint(expr=sum(w[i] * m.x[i] for i in range(n)) <= capacity)
    m.obj = pyo.Objective(expr=sum(v[i] * m.x[i] for i in range(n)), sense=pyo.maximize)
    return m, w, v


def brute_force(w, v, capacity):
    best = [0] * (capacity + 1)  # 0/1 knapsack by dynamic programming
    for wi, vi in zip(w, v):
        for c in range(capacity, wi - 1, -1):
            best[c] = max(best[c], best[c - wi] + vi)
    return best[capacity]


def test_optimal_matches_exact_knapsack_and_loads_the_solution():
    m, w, v = knapsack()
    result = solve(m, SolverOptions(mip_rel_gap=0.0))
    assert result.status is SolveStatus.OPTIMAL
    assert result.objective == brute_force(w, v, 200)
    assert result.gap == pytest.approx(0.0, abs=1e-9)
    chosen = [i for i in m.x if round(pyo.value(m.x[i])) == 1]
    assert sum(w[i] for i in chosen) <= 200
    assert sum(v[i] for i in chosen) == result.objective
    assert result.wall_s > 0 and result.nodes is not None


def test_infeasible():
    m = pyo.ConcreteModel()
    m.x = pyo.Var(domain=pyo.Binary)
    m.c = pyo.Constraint(expr=m.x >= 2)
    m.obj = pyo.Objective(expr=m.x)
    result = solve(m)
    assert result.status is SolveStatus.INFEASIBLE
    assert result.objective is None and not result.has_solution


def test_limit_returns_the_incumbent_with_its_gap():
    m, w, v = knapsack(n=300, seed=3, capacity=2000)
    # stopping at the first improving solution truncates reproducibly (a time limit would not)
    result = solve(m, SolverOptions(mip_rel_gap=0.0, presolve="off", extra={"mip_max_improving_sols": 1}))
    assert result.status is SolveStatus.FEASIBLE and result.has_solution
    assert result.objective < brute_force(w, v, 2000) <= result.bound + 1e-6
    assert result.gap == pytest.approx((result.bound - result.objective) / result.objective)
    chosen = [i for i in m.x if round(pyo.value(m.x[i])) == 1]  # the incumbent is loaded
    assert sum(v[i] for i in chosen) == result.objective


def test_same_options_same_answer():
    first = solve(knapsack()[0], SolverOptions(seed=7))
    second = solve(knapsack()[0], SolverOptions(seed=7))
    assert (first.status, first.objective) == (second.status, second.objective)


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="unknown HiGHS option.*'mip_rel_gapp'"):
        SolverOptions(extra={"mip_rel_gapp": 0.1})
    check_highs_options({"mip_rel_gap": 0.1, "random_seed": 3})
    with pytest.raises(ValueError, match="solver.presolve"):
        SolverOptions(presolve="maybe")
    with pytest.raises(ValueError, match="solver.time_limit_s"):
        SolverOptions(time_limit_s=0)


def test_a_warm_start_reaches_the_same_optimum_and_is_typed():
    m, w, v = knapsack(n=20, seed=3, capacity=150)
    for i in range(20):
        m.x[i].set_value(0.0)  # a feasible start: the empty knapsack
    result = solve(m, SolverOptions(mip_rel_gap=0.0), warm_start=True)
    assert result.status is SolveStatus.OPTIMAL
    assert result.objective == pytest.approx(brute_force(w, v, 150))
    chosen = [i for i in range(20) if round(pyo.value(m.x[i]))]
    assert sum(w[i] for i in chosen) <= 150
    assert sum(v[i] for i in chosen) == pytest.approx(result.objective)
