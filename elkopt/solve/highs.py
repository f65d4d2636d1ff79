"""One facade from a Pyomo model to a typed `SolveResult`, solved by HiGHS.

Raw Pyomo and HiGHS enums never leave this module. What it adds to calling
the solver directly:

- option names are checked against HiGHS's own list (Pyomo passes a
  misspelt option through and HiGHS then silently uses its default);
- a time limit returns the incumbent with its gap instead of raising;
- a rare HiGHS solve error is retried once with another seed;
- wall time is measured here (HiGHS's own clock accumulates across solves).

It uses the `pyomo.contrib.solver` HiGHS interface with
`load_solutions=False`, then loads the incumbent only when there is one.
With `warm_start=True` the variables' current values are handed to HiGHS as
a MIP start; that path goes through the APPSI HiGHS interface, the one Pyomo
interface that passes a start on (`pyomo.contrib.solver` does not).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import highspy
import pyomo.environ as pyo  # noqa: F401  (registers the solver plugins)
from pyomo.contrib.solver.common.factory import SolverFactory
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proven within the requested gap
    FEASIBLE = "feasible"  # an incumbent, stopped early (time or node limit)
    INFEASIBLE = "infeasible"  # proven to have no solution
    NO_SOLUTION = "no_solution"  # stopped before finding any solution
    ERROR = "error"  # the solver failed (after one retry)


@dataclass(frozen=True)
class SolverOptions:
    """HiGHS settings. time_limit_s: wall-clock seconds per solve; mip_rel_gap:
    stop when (incumbent - bound) / |incumbent| is below it; seed: HiGHS
    random_seed (fixed: same model, same answer); max_nodes: stop a MIP
    after this many branch-and-bound nodes (None: no limit), the
    reproducible way to bound a long solve, unlike a time limit; extra: any
    other HiGHS option by its HiGHS name, checked before use."""

    time_limit_s: float = 60.0
    mip_rel_gap: float = 1e-4
    threads: int = 1
    seed: int = 0
    presolve: str = "choose"
    max_nodes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"solver.time_limit_s must be > 0, got {self.time_limit_s}")
        if not 0 <= self.mip_rel_gap < 1:
            raise ValueError(f"solver.mip_rel_gap must be in [0, 1), got {self.mip_rel_gap}")
        if self.threads < 1:
            raise ValueError(f"solver.threads must be >= 1, got {self.threads}")
        if self.max_nodes is not None and self.max_nodes < 1:
            raise ValueError(f"solver.max_nodes must be >= 1 or null, got {self.max_nodes}")
        if self.presolve not in ("choose", "on", "off"):
            raise ValueError(f"solver.presolve must be choose, on or off, got {self.presolve!r}")
        check_highs_options(self.extra)

    def highs_options(self, seed: int | None = None) -> dict[str, Any]:
        limits = {} if self.max_nodes is None else {"mip_max_nodes": self.max_nodes}
        return {
            "random_seed": self.seed if seed is None else seed,
            "presolve": self.presolve,
            **limits,
            **self.extra,
        }


@dataclass(frozen=True)
class SolveResult:
    """What a solve produced. objective/bound are None when unknown; gap is
    the relative gap of the incumbent (0 when proven optimal)."""

    status: SolveStatus
    objective: float | None
    bound: float | None
    gap: float | None
    wall_s: float
    nodes: int | None
    retried: bool = False
    message: str = ""

    @property
    def has_solution(self) -> bool:
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


@lru_cache(maxsize=1)
def highs_option_names() -> frozenset[str]:
    """Every option name this HiGHS build knows."""
    return frozenset(name for name in dir(highspy.HighsOptions()) if not name.startswith("_"))


def check_highs_options(options: dict[str, Any]) -> None:
    """Raise ValueError naming any option HiGHS does not know."""
    unknown = sorted(set(options) - highs_option_names())
    if unknown:
        raise ValueError(
            f"unknown HiGHS option(s) {', '.join(map(repr, unknown))}; "
            "see https://ergo-code.github.io/HiGHS/stable/options/definitions/ for the names"
        )


def solve(model: Any, options: SolverOptions | None = None, warm_start: bool = False) -> SolveResult:
    """Solve a Pyomo model with HiGHS; load the incumbent into it if there is one.

    warm_start: use the variables' current values as a MIP start (a start
    that violates a constraint is ignored by HiGHS).

    Example:
        >>> m = pyo.ConcreteModel(); m.x = pyo.Var(domain=pyo.Binary)
        >>> m.obj = pyo.Objective(expr=m.x, sense=pyo.maximize)
        >>> solve(m).objective
        1.0
    """
    options = options or SolverOptions()
    start = time.perf_counter()
    once = _solve_once_started if warm_start else _solve_once
    result = once(model, options, options.seed)
    if result.status is SolveStatus.ERROR:
        # HiGHS occasionally fails non-deterministically: one retry, another seed.
        result = once(model, options, options.seed + 1)
        result = _with(result, retried=True)
    return _with(result, wall_s=time.perf_counter() - start)


def _with(result: SolveResult, **changes: Any) -> SolveResult:
    fields = {**result.__dict__, **changes}
    return SolveResult(**fields)


def _solve_once(model: Any, options: SolverOptions, seed: int) -> SolveResult:
    solver = SolverFactory("highs")
    try:
        raw = solver.solve(
            model,
            load_solutions=False,
            raise_exception_on_nonoptimal_result=False,
            time_limit=options.time_limit_s,
            rel_gap=options.mip_rel_gap,
            threads=options.threads,
            solver_options=options.highs_options(seed),
        )
    except Exception as error:  # noqa: BLE001  (any solver failure becomes a result)
        return SolveResult(SolveStatus.ERROR, None, None, None, 0.0, None, message=str(error))
    status = _status(raw.termination_condition, raw.solution_status)
    objective = raw.incumbent_objective if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) else None
    if objective is not None:
        raw.solution_loader.load_vars()
    nodes = dict(raw.extra_info.items()).get("mip_node_count")
    return _result(status, objective, raw.objective_bound, nodes, raw.termination_condition.name)


def _solve_once_started(model: Any, options: SolverOptions, seed: int) -> SolveResult:
    """One solve through APPSI, with the current variable values as a MIP start."""
    from pyomo.contrib.appsi.base import TerminationCondition as Appsi
    from pyomo.contrib.appsi.solvers.highs import Highs

    solver = Highs()
    solver.config.load_solution = False
    solver.config.warmstart = True
    solver.config.time_limit = options.time_limit_s
    solver.config.mip_gap = options.mip_rel_gap
    solver.highs_options = {"threads": options.threads, **options.highs_options(seed)}
    try:
        raw = solver.solve(model)
    except Exception as error:  # noqa: BLE001  (any solver failure becomes a result)
        return SolveResult(SolveStatus.ERROR, None, None, None, 0.0, None, message=str(error))
    termination = raw.termination_condition
    objective = raw.best_feasible_objective
    if termination is Appsi.infeasible:
        status = SolveStatus.INFEASIBLE
    elif termination is Appsi.error:
        status = SolveStatus.ERROR
    elif objective is None:
        status = SolveStatus.NO_SOLUTION
    elif termination is Appsi.optimal:
        status = SolveStatus.OPTIMAL
    else:
        status = SolveStatus.FEASIBLE
    if objective is not None:
        raw.solution_loader.load_vars()
    nodes = solver._solver_model.getInfo().mip_node_count  # noqa: SLF001  (no public accessor)
    return _result(status, objective, raw.best_objective_bound, nodes, termination.name)


def _result(
    status: SolveStatus, objective: float | None, bound: float | None, nodes: int | None, message: str
) -> SolveResult:
    """A SolveResult from raw solver numbers (an infinite bound is no bound)."""
    bound = None if bound is None or math.isinf(bound) else float(bound)
    return SolveResult(
        status=status,
        objective=None if objective is None else float(objective),
        bound=bound,
        gap=_gap(objective, bound, status),
        wall_s=0.0,
        nodes=None if nodes is None or nodes < 0 else int(nodes),
        message=str(message),
    )


def _status(termination: TerminationCondition, solution: SolutionStatus) -> SolveStatus:
    if termination is TerminationCondition.provenInfeasible:
        return SolveStatus.INFEASIBLE
    if termination is TerminationCondition.error:
        return SolveStatus.ERROR
    if solution is SolutionStatus.optimal:
        return SolveStatus.OPTIMAL
    if solution in (SolutionStatus.feasible,):
        return SolveStatus.FEASIBLE
    if termination in (
        TerminationCondition.infeasibleOrUnbounded,
        TerminationCondition.unbounded,
    ):
        return SolveStatus.ERROR
    return SolveStatus.NO_SOLUTION


def _gap(objective: float | None, bound: float | None, status: SolveStatus) -> float | None:
    if status is SolveStatus.OPTIMAL and (objective is None or bound is None):
        return 0.0
    if objective is None or bound is None:
        return None
    return abs(objective - bound) / max(abs(objective), 1e-9)
