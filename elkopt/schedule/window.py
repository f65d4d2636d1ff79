"""Cost-aware SRAM allocation inside one window, solved exactly as a MILP.

A window is one operator executing plus the operators whose preloads sit in
SRAM beside it. Each of them offers a set of choices (the executing operator
its plans, a preloaded operator its preload layouts), each choice with a
weight (bytes per core) and a cost (cycles). Pick exactly one choice per
group, total weight within the SRAM left, least total cost: a
multiple-choice knapsack.

    minimise    sum_g sum_k cost[g][k] * x[g, k]
    subject to  sum_k x[g, k] = 1                          for every group g
                sum_g sum_k weight[g][k] * x[g, k] <= capacity
                x binary

Choices dominated inside their group (no lighter and no cheaper) are
dropped before the model is built; that never changes the optimum. The
model is solved by HiGHS through `elkopt.solve`; `brute_force_window` is
the reference it is tested against.

A solve that ends without a usable solution (a time or node limit hit
before any incumbent, a solver error after its retry, an incumbent that
breaks the capacity) never fails the caller: the window takes the greedy
choice (`greedy_window`, always feasible) and `WindowSolution.fallback`
says why.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo

from elkopt.plans.space import pareto_2d
from elkopt.solve import SolveResult, SolverOptions, solve


@dataclass(frozen=True, eq=False)
class Group:
    """One operator's alternatives in a window: pick exactly one.

    weight[k]: bytes per core that choice k holds while the window runs.
    cost[k]: cycles choice k adds to the window.
    """

    name: str
    weight: np.ndarray
    cost: np.ndarray

    def __post_init__(self) -> None:
        if len(self.weight) != len(self.cost):
            raise ValueError(f"group {self.name!r}: {len(self.weight)} weights, {len(self.cost)} costs")
        if len(self.weight) == 0:
            raise ValueError(f"group {self.name!r} has no choice")


@dataclass(frozen=True)
class WindowSolution:
    """picks[g]: index (into group g's arrays) of the chosen item."""

    picks: tuple[int, ...]
    cost: float
    weight: float
    solve: SolveResult | None  # None when no MILP was needed (one candidate left)
    fallback: str | None = None  # why the greedy choice replaced the MILP's (None: it did not)


class WindowInfeasible(ValueError):
    """Even the lightest choice of every group exceeds the capacity."""


def _front(group: Group) -> np.ndarray:
    """Indices of the group's items that are not dominated (weight, cost both minimised)."""
    return pareto_2d(np.asarray(group.weight, dtype=np.float64), np.asarray(group.cost, dtype=np.float64))


def build_window_model(groups: Sequence[Group], capacity: float) -> tuple[pyo.ConcreteModel, list[np.ndarray]]:
    """The Pyomo model over each group's non-dominated items; returns the
    model and, per group, the original indices of its modelled items."""
    kept = [_front(g) for g in groups]
    m = pyo.ConcreteModel(name="window")
    pairs = [(g, k) for g, idx in enumerate(kept) for k in range(len(idx))]
    m.x = pyo.Var(pairs, domain=pyo.Binary)
    weight = {(g, k): float(groups[g].weight[idx[k]]) for g, idx in enumerate(kept) for k in range(len(idx))}
    cost = {(g, k): float(groups[g].cost[idx[k]]) for g, idx in enumerate(kept) for k in range(len(idx))}
    m.one = pyo.Constraint(
        range(len(groups)),
        rule=lambda m, g: pyo.quicksum(m.x[g, k] for k in range(len(kept[g]))) == 1,
    )
    m.capacity = pyo.Constraint(expr=pyo.quicksum(weight[p] * m.x[p] for p in pairs) <= float(capacity))
    m.cost = pyo.Objective(expr=pyo.quicksum(cost[p] * m.x[p] for p in pairs), sense=pyo.minimize)
    return m, kept


def solve_window(
    groups: Sequence[Group], capacity: float, options: SolverOptions | None = None
) -> WindowSolution:
    """The cheapest feasible pick, one item per group (exact up to the MIP gap).

    Raises WindowInfeasible (naming the capacity and the lightest total) when
    nothing fits. When the solver gives no usable solution, the pick is
    `greedy_window`'s and `fallback` names the reason (a `SolveResult.fallback_reason`,
    or "invalid_incumbent" for a solution over the capacity).
    """
    lightest = sum(float(np.min(g.weight)) for g in groups)
    if lightest > capacity:
        raise WindowInfeasible(
            f"window {'+'.join(g.name for g in groups)}: the lightest choices need "
            f"{lightest:,.0f} B per core, {capacity:,.0f} B are free"
        )
    model, kept = build_window_model(groups, capacity)
    if all(len(idx) == 1 for idx in kept):
        picks = tuple(int(idx[0]) for idx in kept)
        return _solution(groups, picks, None)
    result = solve(model, options)
    if not result.has_solution:
        return _solution(groups, greedy_window(groups, capacity), result, result.fallback_reason)
    picks = []
    for g, idx in enumerate(kept):
        values = [pyo.value(model.x[g, k]) for k in range(len(idx))]
        picks.append(int(idx[int(np.argmax(values))]))  # binaries come back slightly off 0/1
    solution = _solution(groups, tuple(picks), result)
    # HiGHS has returned wrong answers under some options: check the incumbent
    if solution.weight > capacity + 1e-6 * max(1.0, abs(capacity)):
        return _solution(groups, greedy_window(groups, capacity), result, "invalid_incumbent")
    return solution


def greedy_window(groups: Sequence[Group], capacity: float) -> tuple[int, ...]:
    """A feasible pick without a solver (the fallback when the MILP gives none).

    Start from every group's lightest item (cheapest among equally light),
    then repeatedly make the one upgrade, within a group's non-dominated
    items, that saves the most cycles per extra byte and still fits. Assumes
    the lightest items fit (`solve_window` checks that first).

    Example: capacity 350 affords the fast plan (40 cycles saved for 200
    bytes), and then no room is left for the broadcast layout:
        >>> fast_but_big = Group("exec", np.array([100.0, 300.0]), np.array([50.0, 10.0]))
        >>> layout = Group("preload", np.array([50.0, 150.0]), np.array([20.0, 0.0]))
        >>> greedy_window([fast_but_big, layout], 350)
        (1, 0)
    """
    fronts = [_front(g) for g in groups]  # indices sorted by weight, cost falling
    at = [0] * len(groups)  # position in each front
    used = sum(float(g.weight[f[0]]) for g, f in zip(groups, fronts))
    while True:
        best: tuple[float, int, int] | None = None  # (cycles saved per byte, group, position)
        for g, (group, front) in enumerate(zip(groups, fronts)):
            here = front[at[g]]
            for q in range(at[g] + 1, len(front)):
                extra = float(group.weight[front[q]] - group.weight[here])
                if used + extra > capacity:
                    break  # heavier still: fits even less
                saving = float(group.cost[here] - group.cost[front[q]]) / max(extra, 1e-9)
                if best is None or saving > best[0]:
                    best = (saving, g, q)
        if best is None:
            return tuple(int(f[a]) for f, a in zip(fronts, at))
        _, g, q = best
        used += float(groups[g].weight[fronts[g][q]] - groups[g].weight[fronts[g][at[g]]])
        at[g] = q


def _solution(
    groups: Sequence[Group], picks: tuple[int, ...], result: SolveResult | None, fallback: str | None = None
) -> WindowSolution:
    cost = sum(float(g.cost[k]) for g, k in zip(groups, picks))
    weight = sum(float(g.weight[k]) for g, k in zip(groups, picks))
    return WindowSolution(picks, cost, weight, result, fallback)


def brute_force_window(groups: Sequence[Group], capacity: float) -> tuple[float, tuple[int, ...]] | None:
    """Reference: every combination, cheapest feasible (None if none fits).
    Exponential in the number of groups; for tests on small windows."""
    best: tuple[float, tuple[int, ...]] | None = None
    for picks in itertools.product(*(range(len(g.weight)) for g in groups)):
        weight = sum(float(g.weight[k]) for g, k in zip(groups, picks))
        if weight > capacity:
            continue
        cost = sum(float(g.cost[k]) for g, k in zip(groups, picks))
        if best is None or cost < best[0]:
            best = (cost, picks)
    return best


__all__ = [
    "Group",
    "WindowSolution",
    "WindowInfeasible",
    "build_window_model",
    "solve_window",
    "greedy_window",
    "brute_force_window",
]
