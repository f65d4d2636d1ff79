"""HiGHS options: solver.options is passed through and checked by HiGHS, solver.threads
is bounded, and an option elkopt sets from its own field cannot be set twice."""

from __future__ import annotations

import random

import pyomo.environ as pyo
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import elkopt.config  # noqa: F401  (registers the schemas)
from elkopt.config import RunConfig, to_solver_options
from elkopt.solve import MAX_THREADS, SolverOptions, SolveStatus, check_highs_options, solve


@pytest.fixture(autouse=True)
def hydra_context():
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        yield


def solver_options(*overrides: str) -> SolverOptions:
    run_config: RunConfig = OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))
    return to_solver_options(run_config.solver)


def knapsack(n=300, seed=3, capacity=2000):
    rng = random.Random(seed)
    w = [rng.randint(1, 50) for _ in range(n)]
    v = [rng.randint(1, 60) for _ in range(n)]
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(n), domain=pyo.Binary)
    m.cap = pyo.Constraint(expr=sum(w[i] * m.x[i] for i in range(n)) <= capacity)
    m.obj = pyo.Objective(expr=sum(v[i] * m.x[i] for i in range(n)), sense=pyo.maximize)
    return m


def test_the_default_has_no_extra_options():
    assert solver_options().extra == {}


def test_a_valid_option_is_applied():
    # HiGHS stops at its first improving solution: observable as a feasible, not optimal, answer
    common = ("solver.mip_rel_gap=0", "solver.presolve=off", "solver.max_nodes=null")
    options = solver_options(*common, "+solver.options.mip_max_improving_sols=1")
    assert options.extra == {"mip_max_improving_sols": 1}
    assert solve(knapsack(), options).status is SolveStatus.FEASIBLE
    assert solve(knapsack(), solver_options(*common)).status is SolveStatus.OPTIMAL


def test_an_integer_for_a_real_option_becomes_a_float():
    assert solver_options("+solver.options.mip_heuristic_effort=1").extra == {"mip_heuristic_effort": 1.0}
    assert solver_options("+solver.options.mip_heuristic_effort=0.2").extra == {"mip_heuristic_effort": 0.2}


def test_a_misspelt_option_names_the_field_and_the_closest_names():
    with pytest.raises(ValueError, match=r"solver\.options\.mip_heuristic_efort: unknown HiGHS option.*"
                                         r"did you mean mip_heuristic_effort"):
        solver_options("+solver.options.mip_heuristic_efort=0.2")


@pytest.mark.parametrize("override, message", [
    ("+solver.options.mip_heuristic_effort=abc", r"solver\.options\.mip_heuristic_effort must be a number"),
    ("+solver.options.mip_max_leaves=2.5", r"solver\.options\.mip_max_leaves must be an integer"),
    ("+solver.options.output_flag=1", r"solver\.options\.output_flag must be true or false"),
    ("+solver.options.mip_max_leaves=true", r"solver\.options\.mip_max_leaves must be an integer"),
    ("+solver.options.parallel=3", r"solver\.options\.parallel must be a string"),
])
def test_a_wrong_type_names_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        solver_options(override)


def test_a_value_highs_refuses_names_the_field_and_what_it_allows():
    with pytest.raises(ValueError, match=r"solver\.options\.mip_heuristic_effort=2\.0 is refused.*\[0, 1\]"):
        solver_options("+solver.options.mip_heuristic_effort=2.0")
    with pytest.raises(ValueError, match=r"solver\.options\.parallel='sometimes' is refused.*\"off\""):
        solver_options("+solver.options.parallel=sometimes")


@pytest.mark.parametrize("name, field", [
    ("time_limit", "solver.time_limit_s"), ("mip_rel_gap", "solver.mip_rel_gap"),
    ("threads", "solver.threads"), ("random_seed", "solver.seed"),
    ("presolve", "solver.presolve"), ("mip_max_nodes", "solver.max_nodes"),
])
def test_an_option_with_its_own_field_cannot_be_set_twice(name, field):
    with pytest.raises(ValueError, match=rf"solver\.options\.{name}: .*set {field} instead"):
        SolverOptions(extra={name: 1})


def test_threads_are_bounded():
    assert solver_options("solver.threads=2").threads == 2
    for threads in (0, 100000, MAX_THREADS + 1):
        with pytest.raises(ValueError, match=rf"solver\.threads must be an integer from 1 to {MAX_THREADS}"):
            solver_options(f"solver.threads={threads}")


def test_check_highs_options_checks_any_field_name():
    assert check_highs_options({"mip_rel_gap": 0.1, "random_seed": 3}) == {"mip_rel_gap": 0.1, "random_seed": 3}
    with pytest.raises(ValueError, match=r"sweep\.highs\.mip_rel_gapp"):
        check_highs_options({"mip_rel_gapp": 0.1}, field="sweep.highs")
