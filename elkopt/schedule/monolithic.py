"""One MILP over a whole (small) graph: what the layer decomposition loses.

elkopt times one layer in steady state and stitches it over every layer
(`elkopt.schedule.periodic`). Here the same decisions (when each load is
issued, every operator's plan and layout fixed) are made for all operators
at once, with no periodicity and no seam: the model of
`periodic._build(..., periodic=False)`. It grows with the graph, so it is
meant for graphs of a few dozen operators; `experiments/decomposition_gap.py`
compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyomo.environ as pyo

from elkopt.chip import Chip
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.periodic import LayerBlock, _build, _warm_start, _windows, layer_loads, unroll
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import compute_timeline
from elkopt.solve import SolveResult, SolverOptions, solve

#: Above this many operators the monolithic model is refused (it would not solve).
MAX_MONOLITHIC_OPS = 200


@dataclass(frozen=True)
class Monolithic:
    evaluated: Evaluated  # the decoded schedule, evaluated by the timeline
    result: SolveResult
    makespan_cycles: float | None  # the model's objective (None without a solution)
    binaries: int


def solve_monolithic(
    schedule: Schedule, chip: Chip, solver: SolverOptions | None = None, max_offset: int | None = None,
) -> Monolithic:
    """The load windows of every operator of `schedule` from one MILP.

    The model is warm-started from `schedule` itself. On no solution, the
    input schedule is returned unchanged (with the solve result saying why).
    """
    n = len(schedule.ops)
    if n > MAX_MONOLITHIC_OPS:
        raise ValueError(
            f"the monolithic MILP is for small graphs: {n} operators > {MAX_MONOLITHIC_OPS}; "
            "use scheduler=elkopt for whole models"
        )
    flops = [0] * n
    start = Evaluated(schedule, compute_timeline(schedule, chip, flops))
    data = layer_loads(schedule, chip, 0, n, n if max_offset is None else max_offset)
    model = _build(data, periodic=False)
    binaries = sum(1 for v in model.component_data_objects(pyo.Var) if v.is_binary())
    _warm_start(model, data, schedule, start.timeline, 0)
    result = solve(model, solver, warm_start=True)
    if not result.has_solution:
        return Monolithic(start, result, None, binaries)
    offsets = _windows(model, data, periodic=False)
    evaluated, _ = unroll(schedule, LayerBlock(0, n, 1), data.load_op, offsets, chip, flops, "monolithic")
    if evaluated is None:  # cannot happen with loads in program order
        raise RuntimeError("the monolithic MILP's plan deadlocks in the timeline; please report it")
    return Monolithic(evaluated, result, float(pyo.value(model.T)), binaries)


__all__ = ["MAX_MONOLITHIC_OPS", "Monolithic", "solve_monolithic"]
