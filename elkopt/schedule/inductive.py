"""Inductive scheduling: backward induction over preload numbers, with the
window MILP as the allocator (an Elk-Dyn-class scheduler, `scheduler=inductive`).

Time runs backward from the end of the last operator (spec section 8).
Loads are in program order. For operator i, from the last to the first:

1. Candidate preload numbers p: ops i+1 .. i+p are resident (or loading)
   while i runs. Only the largest p for each set of resident loads is worth
   trying, and p never reaches past what op i+1 holds (i + p <= i+1 + p_{i+1}),
   since a load cannot be resident during i and not during i+1.
2. For each candidate, the window MILP (`elkopt.schedule.window`) picks op i's
   executing plan and, when op i+1's data is resident, op i+1's preload layout,
   within the SRAM left after the (already fixed) layouts of ops i+2 .. i+p.
   Cost: i's execution plus its expected interconnect stall, plus op i+1's
   distribution and the load time its layout adds beyond the HBM time. The
   stall assumes loads take a fixed share rho of the interconnect while any
   op runs: the delivery time of all loads (smallest layouts) over the sum
   of the fastest executions, rounded up to eighths.
3. Op i must end by min(start of i+1, start of the first load past i+p);
   the p that lets it start latest wins (the larger p on ties: it keeps
   more room to issue loads early).
4. Op i+1's layout is now final, so its load is placed as late as possible:
   ending at min(start of i+1, start of the load after it).

Every operator's layout is fixed by the first window (in backward order)
that holds it, so later windows see it as a constant weight. The windows of
the forward schedule follow from the preload numbers: op j's load is issued
during the first op whose window holds j. The returned plan is evaluated by
the forward timeline, which is the truth; the backward times only guide the
choices.

Windows recur layer after layer, so solutions are memoised on the window's
signature (the two operators' tables, op i+1's plan and the free SRAM);
`InductiveStats` counts solves and cache hits. A window MILP that ends
without a usable solution (e.g. a time limit too short to find one) takes
the greedy choice for that window (`elkopt.schedule.window.greedy_window`);
the stats count these fallbacks by reason, and one warning per run says so.

Given a `start` (Static's answer on the same plan tables), the induction's plan
is kept only if the timeline finds it no slower; otherwise the start is the
result. So the scheduler is never worse than its start; the stats say which won
(`start`) and what the induction alone achieved (`induction_cycles`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.ir import Graph
from elkopt.plans.table import PlanTable, TableSet
from elkopt.progress import Ticker
from elkopt.schedule.baselines import DEFAULT_MAX_PRELOAD_OPS, Evaluated, _schedule
from elkopt.schedule.schedule import PROLOGUE
from elkopt.schedule.timeline import compute_timeline
from elkopt.schedule.window import Group, WindowInfeasible, solve_window
from elkopt.solve import SolverOptions, describe_fallbacks

#: The contention share rho is rounded up to a multiple of 1/RHO_STEPS.
RHO_STEPS = 8

log = logging.getLogger(__name__)


@dataclass
class InductiveStats:
    """What the induction did: windows looked up, MILPs solved, cache hits."""

    windows: int = 0
    milps_solved: int = 0
    cache_hits: int = 0
    trivial: int = 0  # windows with one candidate left after dominance pruning
    infeasible: int = 0  # windows where nothing fits (that preload number is skipped)
    fallbacks: Counter[str] = field(default_factory=Counter)  # reason -> MILPs replaced by the greedy choice
    retries: int = 0  # MILPs retried after a HiGHS error
    solve_s: float = 0.0
    max_gap: float = 0.0
    wall_s: float = 0.0
    backward_cycles: float = 0.0  # latency the induction predicted
    induction_cycles: float = 0.0  # latency of the induction's own plan (timeline)
    start: str = "induction"  # which plan the scheduler returns: the induction's, or its start's
    # the induction's own plan, also when the start won (elkopt re-times it as a start of its own)
    induction: Evaluated | None = field(default=None, repr=False)

    @property
    def fallback_windows(self) -> int:
        return sum(self.fallbacks.values())

    def as_dict(self) -> dict[str, float | int | dict[str, int]]:
        return {
            "windows": self.windows,
            "milps_solved": self.milps_solved,
            "cache_hits": self.cache_hits,
            "trivial_windows": self.trivial,
            "infeasible_windows": self.infeasible,
            "fallback_windows": self.fallback_windows,
            "fallback_reasons": dict(sorted(self.fallbacks.items())),
            "solver_retries": self.retries,
            "solve_s": round(self.solve_s, 3),
            "max_gap": self.max_gap,
            "scheduler_s": round(self.wall_s, 3),
            "predicted_cycles": round(self.backward_cycles, 1),
            "induction_cycles": round(self.induction_cycles, 1),
            "inductive_start": self.start,
        }


@dataclass(frozen=True, eq=False)
class HotPlans:
    """A plan table grouped by executing plan: every row with the same
    spatial and temporal split shares hot bytes, cycles and exchange."""

    row_plan: np.ndarray  # row -> plan id
    hot: np.ndarray  # per plan, bytes per core
    exec: np.ndarray  # per plan, cycles (without distribution)
    exchange: np.ndarray  # per plan, cycles of exec on the interconnect
    rows: tuple[np.ndarray, ...]  # per plan, its rows (preload layouts)

    @staticmethod
    def of(table: PlanTable) -> "HotPlans":
        keys: dict[tuple, int] = {}
        row_plan = np.empty(len(table), dtype=np.int64)
        for r in range(len(table)):
            key = (table.spatial[r].tobytes(), table.temporal[r].tobytes())
            row_plan[r] = keys.setdefault(key, len(keys))
        first = np.array([np.flatnonzero(row_plan == p)[0] for p in range(len(keys))])
        return HotPlans(
            row_plan=row_plan,
            hot=table.hot_bytes[first].astype(np.float64),
            exec=table.exec_cycles[first].astype(np.float64),
            exchange=table.exchange_cycles[first].astype(np.float64),
            rows=tuple(np.flatnonzero(row_plan == p) for p in range(len(keys))),
        )


@dataclass
class _Backward:
    """Backward times (cycles, <= 0) and decisions, filled from the last op."""

    n: int
    exec_start: np.ndarray = field(init=False)  # after distribution
    start: np.ndarray = field(init=False)  # including distribution
    load_start: np.ndarray = field(init=False)
    plan: np.ndarray = field(init=False)
    row: np.ndarray = field(init=False)
    reach: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.exec_start = np.full(self.n, np.nan)
        self.start = np.full(self.n, np.nan)
        self.load_start = np.full(self.n, np.nan)
        self.plan = np.full(self.n, -1, dtype=np.int64)
        self.row = np.full(self.n, -1, dtype=np.int64)
        self.reach = np.full(self.n, -1, dtype=np.int64)


def schedule_inductive(
    graph: Graph,
    tables: TableSet,
    chip: Chip,
    solver: SolverOptions | None = None,
    max_preload_ops: int = DEFAULT_MAX_PRELOAD_OPS,
    progress: Callable[[str], None] | None = None,
    start: Evaluated | None = None,
) -> tuple[Evaluated, InductiveStats]:
    """Schedule `graph` by backward induction with exact window allocation.

    start: an incumbent on the same plan tables (Static's answer): returned instead
    of the induction's plan, renamed "inductive", when its timeline is strictly faster.
    """
    begin = time.perf_counter()
    solver = solver or SolverOptions()
    n = graph.n_ops
    sram = float(chip.usable_sram_bytes_per_core)
    elem = graph.elem_bytes
    hbm_bytes = np.array([op.hbm_bytes(elem) for op in graph.ops], dtype=np.float64)
    has_load = hbm_bytes > 0
    loads = np.flatnonzero(has_load)
    scale = np.array([chip.load_scale_of(i) for i in range(n)])  # calibration (1 without)
    hbm_cycles = hbm_bytes / chip.hbm_bytes_per_cycle * scale

    table_ids: dict[int, int] = {}
    plans_by_table: dict[int, HotPlans] = {}
    tid = np.empty(n, dtype=np.int64)
    for i, table in enumerate(tables.tables):
        tid[i] = table_ids.setdefault(id(table), len(table_ids))
        if tid[i] not in plans_by_table:
            plans_by_table[tid[i]] = HotPlans.of(table)
    plans = [plans_by_table[t] for t in tid]

    def noc_cycles(j: int, rows: np.ndarray) -> np.ndarray:
        t = tables[j]
        cores = t.spatial[rows].prod(axis=1)
        return chip.delivery_cycles(t.cold_bytes[rows], cores) * scale[j]

    def layout_cost(j: int, rows: np.ndarray) -> np.ndarray:
        """Distribution plus the load time a layout adds beyond the HBM time."""
        return tables[j].distribution_cycles[rows] + np.maximum(0.0, noc_cycles(j, rows) - hbm_cycles[j])

    def cheapest_layout(j: int) -> int:
        rows = plans[j].rows[b.plan[j]]
        cost = layout_cost(j, rows)
        # ties: the smaller footprint
        return int(rows[np.lexsort((tables[j].cold_bytes[rows], cost))[0]])

    def load_duration(j: int, row: int) -> float:
        return max(hbm_cycles[j], float(noc_cycles(j, np.array([row]))[0]))

    # Expected share of the interconnect that loads take while an op runs:
    # the loads' delivery time (smallest layouts) over the fastest execution.
    fastest = sum(float(p.exec[p.hot <= sram].min()) for p in plans)
    rho_bar = float(hbm_bytes.sum()) / chip.noc_bytes_per_cycle / max(fastest, 1.0)
    rho_bar = math.ceil(min(1.0, rho_bar) * RHO_STEPS - 1e-9) / RHO_STEPS

    def expected_run(i: int) -> np.ndarray:
        """Per plan of op i: its execution plus the stall the share rho_bar causes."""
        hp = plans[i]
        return hp.exec + np.maximum(0.0, hp.exchange - (1.0 - rho_bar) * hp.exec)

    stats = InductiveStats()
    memo: dict[tuple, tuple[tuple[int, ...], float]] = {}
    b = _Backward(n)

    def next_load_after(j: int) -> int | None:
        k = int(np.searchsorted(loads, j, side="right"))
        return int(loads[k]) if k < len(loads) else None

    def place_load(j: int) -> None:
        b.load_start[j] = load_start_if(j, int(b.row[j]), b.start[j])

    def load_start_if(j: int, row: int, start: float) -> float:
        """Where op j's load would start, placed as late as possible."""
        after = next_load_after(j)
        end = start if after is None else min(start, b.load_start[after])
        return end - load_duration(j, row)

    def window(i: int, capacity: float, resident_next: bool) -> tuple[tuple[int, ...], float]:
        """(chosen plan of i, chosen row of i+1 or -1), MILP cost; memoised."""
        nxt = resident_next and has_load[i + 1]
        key = (tid[i], int(capacity), (tid[i + 1], int(b.plan[i + 1])) if nxt else None)
        stats.windows += 1
        if key in memo:
            stats.cache_hits += 1
            return memo[key]
        groups = [Group(f"op{i}", plans[i].hot, expected_run(i))]
        rows = None
        if nxt:
            rows = plans[i + 1].rows[b.plan[i + 1]]
            groups.append(
                Group(f"op{i + 1}.preload", tables[i + 1].cold_bytes[rows].astype(np.float64), layout_cost(i + 1, rows))
            )
        try:
            sol = solve_window(groups, capacity, solver)
        except WindowInfeasible:
            stats.infeasible += 1
            memo[key] = ((-1, -1), math.inf)
            return memo[key]
        if sol.solve is None:
            stats.trivial += 1
        else:
            stats.milps_solved += 1
            stats.solve_s += sol.solve.wall_s
            stats.retries += sol.solve.retried
            if sol.fallback is not None:
                stats.fallbacks[sol.fallback] += 1
            else:
                stats.max_gap = max(stats.max_gap, sol.solve.gap or 0.0)
        picks = (sol.picks[0], int(rows[sol.picks[1]]) if rows is not None else -1)
        memo[key] = (picks, sol.cost)
        return memo[key]

    # -- the last operator runs beside nothing -------------------------------
    last = n - 1
    hp = plans[last]
    fits = np.flatnonzero(hp.hot <= sram)
    b.plan[last] = int(fits[np.argmin(hp.exec[fits])])
    b.exec_start[last] = -hp.exec[b.plan[last]]
    b.reach[last] = last

    ticker = Ticker(progress, "inductive: operators", n - 1)
    for i in range(n - 2, -1, -1):
        ticker.update(n - 2 - i, f"{stats.milps_solved} window MILPs solved")
        nxt = i + 1
        p_max = min(int(b.reach[nxt]) - i, max_preload_ops, n - 1 - i)
        ahead = [int(j) for j in loads[np.searchsorted(loads, nxt):] if j <= i + p_max]
        candidates = sorted({min(p_max, j - 1 - i) for j in ahead} | {p_max})
        default_row = cheapest_layout(nxt) if has_load[nxt] else int(plans[nxt].rows[b.plan[nxt]][0])
        best = None
        for p in candidates:
            resident = [j for j in ahead if j <= i + p]
            fixed = sum(float(tables[j].cold_bytes[b.row[j]]) for j in resident if j != nxt)
            beyond = next(iter(j for j in ahead if j > i + p), None)
            if beyond is None and i + p < n - 1:
                beyond = next_load_after(i + p)
            resident_next = bool(resident) and resident[0] == nxt
            (plan_i, row_next), cost = window(i, sram - fixed, resident_next)
            if not math.isfinite(cost):
                continue
            if row_next < 0:
                row_next = default_row
            start_next = b.exec_start[nxt] - float(tables[nxt].distribution_cycles[row_next])
            end = start_next
            if beyond is not None:
                if beyond == nxt:  # op i+1's load comes after op i: place it first
                    end = min(end, load_start_if(nxt, row_next, start_next))
                else:
                    end = min(end, b.load_start[beyond])
            begin_i = end - float(expected_run(i)[plan_i])
            if best is None or begin_i >= best[0] - 1e-9:
                best = (begin_i, p, plan_i, row_next)
        if best is None:
            raise ValueError(f"inductive: operator {graph.ops[i].name!r} fits beside no preload set")
        begin_i, p, plan_i, row_next = best
        b.plan[i] = plan_i
        b.exec_start[i] = begin_i
        b.reach[i] = i + p
        b.row[nxt] = row_next
        b.start[nxt] = b.exec_start[nxt] - float(tables[nxt].distribution_cycles[row_next])
        if has_load[nxt]:
            place_load(nxt)

    b.row[0] = cheapest_layout(0) if has_load[0] else int(plans[0].rows[b.plan[0]][0])
    b.start[0] = b.exec_start[0] - float(tables[0].distribution_cycles[b.row[0]])
    if has_load[0]:
        place_load(0)

    ticker.update(n - 1)
    ticker.finish(f"{stats.milps_solved} window MILPs solved")
    windows = np.full(n, PROLOGUE, dtype=np.int64)
    for j in loads:
        w = int(np.searchsorted(b.reach, j, side="left"))
        windows[j] = PROLOGUE if j == 0 else min(w, int(j))
    schedule = _schedule(graph, tables, [int(r) for r in b.row], windows, "inductive")
    timeline = compute_timeline(schedule, chip, [op.flops for op in graph.ops])
    result = stats.induction = Evaluated(schedule, timeline)
    stats.induction_cycles = timeline.latency_cycles
    if start is not None and start.timeline.latency_cycles < timeline.latency_cycles - 1e-6:
        result = Evaluated(replace(start.schedule, scheduler="inductive"), start.timeline)
        stats.start = start.schedule.scheduler
    stats.wall_s = time.perf_counter() - begin
    first_load = float(b.load_start[loads].min()) if len(loads) else 0.0
    stats.backward_cycles = -min(float(b.start.min()), first_load)
    if stats.fallbacks:
        log.warning(
            "inductive: %d of %d window MILPs gave no usable solution and took the greedy choice, "
            "a valid plan that may be slower (%s)",
            stats.fallback_windows, stats.milps_solved, describe_fallbacks(stats.fallbacks),
        )
    return result, stats


__all__ = ["InductiveStats", "HotPlans", "schedule_inductive"]
