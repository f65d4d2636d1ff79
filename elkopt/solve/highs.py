"""One facade from a Pyomo model to a typed `SolveResult`, solved by HiGHS.

Raw Pyomo and HiGHS enums never leave this module. What it adds to calling
the solver directly:

- option names and value types are checked against HiGHS's own (Pyomo
  passes a misspelt option or a wrong type through and HiGHS then silently
  uses its default);
- a time limit returns the incumbent with its gap instead of raising, and a
  solve that found nothing says why (`SolveResult.fallback_reason`), so the
  caller can fall back to a heuristic choice instead of failing;
- a rare HiGHS solve error is retried once with another seed;
- wall time is measured here (HiGHS's own clock accumulates across solves).

It uses the `pyomo.contrib.solver` HiGHS interface with
`load_solutions=False`, then loads the incumbent only when there is one.
With `warm_start=True` the variables' current values are handed to HiGHS as
a MIP start; that path goes through the APPSI HiGHS interface, the one Pyomo
interface that passes a start on (`pyomo.contrib.solver` does not).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import highspy
import pyomo.environ as pyo  # noqa: F401  (registers the solver plugins)
from pyomo.common.tee import capture_output
from pyomo.contrib.solver.common.factory import SolverFactory
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proven within the requested gap
    FEASIBLE = "feasible"  # an incumbent, stopped early (time or node limit)
    INFEASIBLE = "infeasible"  # proven to have no solution
    NO_SOLUTION = "no_solution"  # stopped before finding any solution
    ERROR = "error"  # the solver failed (after one retry)


#: solver.threads may be at most this: HiGHS starts one worker per thread, and
#: a count in the thousands hangs the first solve. 64, or the machine's cores
#: if it has more.
MAX_THREADS = max(64, os.cpu_count() or 1)

#: HiGHS options elkopt sets from its own solver.* fields: not settable
#: again through solver.options.
DEDICATED_OPTIONS = {
    "time_limit": "solver.time_limit_s",
    "mip_rel_gap": "solver.mip_rel_gap",
    "threads": "solver.threads",
    "random_seed": "solver.seed",
    "presolve": "solver.presolve",
    "mip_max_nodes": "solver.max_nodes",
}

OPTIONS_URL = "https://ergo-code.github.io/HiGHS/stable/options/definitions/"


@dataclass(frozen=True)
class SolverOptions:
    """HiGHS settings. time_limit_s: wall-clock seconds per solve; mip_rel_gap:
    stop when (incumbent - bound) / |incumbent| is below it; seed: HiGHS
    random_seed (fixed: same model, same answer); max_nodes: stop a MIP
    after this many branch-and-bound nodes (None: no limit), the
    reproducible way to bound a long solve, unlike a time limit; extra: any
    other HiGHS option by its HiGHS name (config: solver.options), its name
    and value checked by HiGHS before use; not one of DEDICATED_OPTIONS."""

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
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"solver.threads must be an integer from 1 to {MAX_THREADS}, got {self.threads!r} "
                             f"(this machine has {os.cpu_count()} cores; more threads than cores do not help)")
        if self.max_nodes is not None and self.max_nodes < 1:
            raise ValueError(f"solver.max_nodes must be >= 1 or null, got {self.max_nodes}")
        if self.presolve not in ("choose", "on", "off"):
            raise ValueError(f"solver.presolve must be choose, on or off, got {self.presolve!r}")
        for name in self.extra:
            if name in DEDICATED_OPTIONS:
                raise ValueError(
                    f"solver.options.{name}: elkopt sets the HiGHS option {name!r} itself; "
                    f"set {DEDICATED_OPTIONS[name]} instead"
                )
        object.__setattr__(self, "extra", check_highs_options(self.extra))

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
    limit: str | None = None  # "time_limit", or "node_limit" (a node, leaf, solution or iteration limit)

    @property
    def has_solution(self) -> bool:
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)

    @property
    def fallback_reason(self) -> str | None:
        """Why a caller has no solution to use, as a stats key (None when it
        has one): time_limit_no_solution, node_limit_no_solution,
        no_solution (stopped otherwise), solver_error (after the retry) or
        infeasible."""
        if self.has_solution:
            return None
        if self.status is SolveStatus.NO_SOLUTION:
            return f"{self.limit}_no_solution" if self.limit else "no_solution"
        return "solver_error" if self.status is SolveStatus.ERROR else "infeasible"


@lru_cache(maxsize=1)
def _scratch_highs() -> highspy.Highs:
    """A silent HiGHS instance that only answers questions about options."""
    with capture_output(capture_fd=True):  # HiGHS prints a banner when constructed
        highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    return highs


@lru_cache(maxsize=1)
def _option_listing() -> dict[str, str]:
    """Per option HiGHS documents in its own listing (`writeOptions`): what
    values it allows, e.g. "range: [0, 1]" or 'Presolve: "off", "choose" or "on"'."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "options.txt")
        with capture_output(capture_fd=True):
            _scratch_highs().writeOptions(path)
        text = open(path).read() if os.path.exists(path) else ""
    allowed = {}
    for description, kind, name in re.findall(r"^# (.*)\n# \[type: (.*)\]\n([a-z0-9_]+) *=", text, re.MULTILINE):
        bounds = re.search(r"range: ([\[{].*?[\]}])", kind)
        allowed[name] = bounds.group(1) if bounds else description.strip().rstrip(",")
    return allowed


@lru_cache(maxsize=1)
def highs_option_names() -> frozenset[str]:
    """The option names this HiGHS build lists (for suggestions; whether a
    name exists is asked of HiGHS itself)."""
    names = {name for name in dir(highspy.HighsOptions()) if not name.startswith("_")}
    return frozenset(names | set(_option_listing()))


_TYPES = {  # HiGHS option type -> (accepted Python types, how to say it)
    highspy.HighsOptionType.kBool: ((bool,), "true or false"),
    highspy.HighsOptionType.kInt: ((int,), "an integer"),
    highspy.HighsOptionType.kDouble: ((int, float), "a number"),
    highspy.HighsOptionType.kString: ((str,), "a string"),
}


def check_highs_options(options: dict[str, Any], field: str = "solver.options") -> dict[str, Any]:
    """Check every option's name and value against HiGHS itself; return the
    options with integers given for real-valued options made floats.

    Raises ValueError naming `field.<name>` and the fix: an unknown name
    (with the closest known names), a value of the wrong type, or one HiGHS
    rejects (out of its range, or not one of a string option's values).
    """
    highs = _scratch_highs()
    checked: dict[str, Any] = {}
    for name, value in options.items():
        where = f"{field}.{name}"
        status, kind = highs.getOptionType(str(name))
        if status != highspy.HighsStatus.kOk or kind not in _TYPES:
            close = difflib.get_close_matches(str(name), sorted(highs_option_names()), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"{where}: unknown HiGHS option {name!r}; {hint}"
                             f"the options are listed at {OPTIONS_URL}")
        accepted, wanted = _TYPES[kind]
        is_bool = kind == highspy.HighsOptionType.kBool
        if isinstance(value, bool) is not is_bool or not isinstance(value, accepted):
            raise ValueError(f"{where} must be {wanted} (HiGHS option type {kind.name[1:].lower()}), "
                             f"got {value!r} ({type(value).__name__})")
        if kind == highspy.HighsOptionType.kDouble:
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"{where} must be a number, got nan")
        if not name.endswith("_file"):  # HiGHS opens a *_file option's file when it is set
            _check_value(highs, name, value, where)
        checked[name] = value
    return checked


def _check_value(highs: highspy.Highs, name: str, value: Any, where: str) -> None:
    """Let HiGHS itself judge a value (range, allowed strings) on the scratch
    instance, then put the option back."""
    _, before = highs.getOptionValue(name)
    with capture_output(capture_fd=True):  # HiGHS prints why it refuses
        status = highs.setOptionValue(name, value)
        highs.setOptionValue(name, before)
        highs.setOptionValue("output_flag", False)
    if status != highspy.HighsStatus.kOk:
        allowed = _option_listing().get(name)
        allowed = f"HiGHS allows {allowed}" if allowed else f"see {name} at {OPTIONS_URL}"
        raise ValueError(f"{where}={value!r} is refused by HiGHS (out of the option's range, or not one of "
                         f"its values): {allowed}")


#: What to change when solves end without a solution, by fallback reason.
_FIXES = {
    "time_limit_no_solution": "raise solver.time_limit_s",
    "node_limit_no_solution": "raise solver.max_nodes",
}


def describe_fallbacks(reasons: dict[str, int]) -> str:
    """One line for a warning: the fallback counts by reason, and what to
    change (e.g. "time_limit_no_solution: 12; raise solver.time_limit_s")."""
    counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))
    fixes = sorted({_FIXES[reason] for reason in reasons if reason in _FIXES})
    return f"{counts}; {' and '.join(fixes)}" if fixes else counts


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
    """One solve through `pyomo.contrib.solver`; any exception becomes an ERROR result."""
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
        status = _status(raw.termination_condition, raw.solution_status)
        objective = raw.incumbent_objective if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) else None
        if objective is not None:
            raw.solution_loader.load_vars()
        nodes = dict(raw.extra_info.items()).get("mip_node_count")
        return _result(status, objective, raw.objective_bound, nodes, raw.termination_condition.name)
    except Exception as error:  # noqa: BLE001  (any solver failure becomes a result)
        return _failed(error)


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
    except Exception as error:  # noqa: BLE001  (any solver failure becomes a result)
        return _failed(error)


def _failed(error: Exception) -> SolveResult:
    return SolveResult(SolveStatus.ERROR, None, None, None, 0.0, None,
                       message=f"{type(error).__name__}: {error}")


#: Termination names (of either Pyomo interface) of a solve stopped by a limit.
_LIMITS = {"maxTimeLimit": "time_limit", "iterationLimit": "node_limit", "maxIterations": "node_limit"}


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
        limit=_LIMITS.get(str(message)),
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
