"""The published reference points: Basic, Static, Ideal, and a true lower bound.

- Basic: every operator runs in the largest execution space; the rest of
  SRAM holds the preload of the next operator that has HBM data (one at most).
- Static: one fixed split of every core's SRAM into an execution space and a
  preload space for the whole model, swept in 10 KiB steps; every operator
  runs in its fastest plan that fits the execution space and loads are issued
  as early as the preload space allows.
- Ideal: each operator in its fastest plan with the whole SRAM, preloads
  limited only by the sum of min-cold footprints, no interconnect contention.
  Not a bound, the reference the published work reports against.
- Lower bound: max(all HBM bytes read and written / HBM bandwidth, sum of
  fastest executions).

Every schedule here carries the graph's HBM writes (`Graph.stores`, per op
`OpSchedule.write_bytes`); the timeline queues them on the HBM channel. Routed-expert
loads wait for their router (`OpSchedule.load_after`, `elkopt.graph.moe`), Ideal's too:
the relaxation lifts contention and memory limits, not causality.

Basic and Static try both preload layouts (the smallest, and the executing
layout itself) and keep the faster, as the published baselines do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.ir import Graph
from elkopt.graph.moe import router_dependencies
from elkopt.plans.table import PlanTable, TableSet
from elkopt.progress import Ticker
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import Timeline, compute_timeline

#: At most this many operators ahead can be preloaded (one transformer layer).
DEFAULT_MAX_PRELOAD_OPS = 48


@dataclass(frozen=True)
class Evaluated:
    schedule: Schedule
    timeline: Timeline


def assign_windows(
    has_load: np.ndarray,
    cold_bytes: np.ndarray,
    preload_capacity: np.ndarray,
    max_preload_ops: int = DEFAULT_MAX_PRELOAD_OPS,
) -> np.ndarray:
    """Earliest preload windows for loads issued in program order.

    Op j's load is issued during op w (w < j) so that, for every op i in
    [w, j-1], the cold bytes resident while i runs stay within
    preload_capacity[i]. Windows never move backwards (loads are in program
    order). A load that fits beside no earlier op gets window j: it is
    issued when op j-1 ends and overlaps no execution.
    """
    n = len(has_load)
    used = np.zeros(n, dtype=np.float64)
    windows = np.full(n, PROLOGUE, dtype=np.int64)
    floor = PROLOGUE
    for j in np.flatnonzero(has_load):
        w = max(floor, j - max_preload_ops)
        span = slice(max(w, 0), j)
        over = np.flatnonzero(used[span] + cold_bytes[j] > preload_capacity[span])
        if len(over):
            w = max(w, 0) + int(over[-1]) + 1
        if j == 0:
            w = PROLOGUE
        used[max(w, 0) : j] += cold_bytes[j]
        windows[j] = w
        floor = w
    return windows


def _schedule(
    graph: Graph, tables: TableSet, rows: Sequence[int], windows: np.ndarray, name: str
) -> Schedule:
    ops = []
    written = graph.write_bytes_per_op()
    routers = router_dependencies(graph)
    for i, op in enumerate(graph.ops):
        ops.append(
            OpSchedule(
                op=i,
                option=tables[i].option(rows[i]),
                preload_window=int(windows[i]),
                hbm_bytes=op.hbm_bytes(graph.elem_bytes),
                write_bytes=written[i],
                load_after=routers.get(i, ()),
            )
        )
    order = tuple(i for i, o in enumerate(ops) if o.has_load)
    return Schedule(tuple(ops), order, scheduler=name)


def _has_load(graph: Graph) -> np.ndarray:
    return np.array([op.hbm_bytes(graph.elem_bytes) > 0 for op in graph.ops])


def _flops(graph: Graph) -> list[int]:
    return [op.flops for op in graph.ops]


def _best_row(table: PlanTable, budget: float, variant: str) -> int | None:
    """The fastest row within a hot budget for a preload-layout variant:
    'min' = the smallest preload layout, 'same' = the executing layout."""
    if variant == "min":
        return table.best_row(budget, max_cold=table.min_cold_bytes)
    return table.best_row(budget, same_layout=True)


def _best_rows(tables: TableSet, budget: float, variant: str) -> list[int] | None:
    """_best_row for every operator under one budget; None if one has no row.
    Identical operators share a table, so each table is searched once."""
    found: dict[int, int | None] = {}
    rows = []
    for table in tables.tables:
        key = id(table)
        if key not in found:
            found[key] = _best_row(table, budget, variant)
        if found[key] is None:
            return None
        rows.append(found[key])
    return rows


def schedule_basic(graph: Graph, tables: TableSet, chip: Chip) -> Evaluated:
    """Basic: largest execution space, preload only the next HBM operator.

    The ops from one HBM operator up to the next run beside that next
    operator's preload; if one of them cannot, the next load waits until the
    op before it ends and they all get the whole SRAM.
    """
    sram = chip.usable_sram_bytes_per_core
    n = graph.n_ops
    loads = [int(j) for j in np.flatnonzero(_has_load(graph))]
    best: Evaluated | None = None
    for variant in ("min", "same"):
        rows: list[int | None] = [None] * n
        windows = np.full(n, PROLOGUE, dtype=np.int64)
        # the ops after the last HBM operator run beside nothing
        tail = range(loads[-1] if loads else 0, n)
        for i in tail:
            rows[i] = _best_row(tables[i], sram, variant)
        for t in range(len(loads) - 1, -1, -1):
            j = loads[t]
            segment = range(loads[t - 1] if t else 0, j)
            cold = float(tables[j].cold_bytes[rows[j]]) if rows[j] is not None else 0.0
            beside = [_best_row(tables[i], sram - cold, variant) for i in segment]
            if all(r is not None for r in beside):
                windows[j] = loads[t - 1] if t else PROLOGUE
                for i, r in zip(segment, beside):
                    rows[i] = r
            else:
                windows[j] = j
                for i in segment:
                    rows[i] = _best_row(tables[i], sram, variant)
        if any(r is None for r in rows):
            continue
        schedule = _schedule(graph, tables, rows, windows, "basic")
        evaluated = Evaluated(schedule, compute_timeline(schedule, chip, _flops(graph)))
        if best is None or evaluated.timeline.latency_cycles < best.timeline.latency_cycles:
            best = evaluated
    if best is None:
        raise ValueError("Basic: some operator fits in no plan")
    return best


def schedule_static(
    graph: Graph,
    tables: TableSet,
    chip: Chip,
    step_bytes: int = 10 * 1024,
    max_preload_ops: int = DEFAULT_MAX_PRELOAD_OPS,
    progress: Callable[[str], None] | None = None,
) -> Evaluated:
    """Static: the best fixed execution/preload split, swept in `step_bytes`."""
    sram = chip.usable_sram_bytes_per_core
    has_load = _has_load(graph)
    n = graph.n_ops
    flops = _flops(graph)
    smallest = max(t.min_hot_bytes for t in tables.tables)
    first = -(-smallest // step_bytes) * step_bytes
    best: Evaluated | None = None
    spaces = [*range(first, sram, step_bytes), sram]
    ticker = Ticker(progress, "Static: execution spaces", len(spaces))
    for k, execution in enumerate(spaces):
        if best is not None:
            ticker.update(k, f"best {best.timeline.latency_cycles * 1e3 / chip.clock_hz:.3f} ms")
        for variant in ("min", "same"):
            rows = _best_rows(tables, float(execution), variant)
            if rows is None:
                continue
            cold = np.array([tables[i].cold_bytes[r] for i, r in enumerate(rows)], dtype=np.float64)
            capacity = np.full(n, float(sram - execution))
            windows = assign_windows(has_load, np.where(has_load, cold, 0.0), capacity, max_preload_ops)
            schedule = _schedule(graph, tables, rows, windows, "static")
            timeline = compute_timeline(schedule, chip, flops)
            if best is None or timeline.latency_cycles < best.timeline.latency_cycles:
                best = Evaluated(schedule, timeline)
    ticker.update(len(spaces))
    ticker.finish()
    if best is None:
        raise ValueError("Static: no execution/preload split fits every operator")
    return best


def schedule_ideal(
    graph: Graph, tables: TableSet, chip: Chip, max_preload_ops: int = DEFAULT_MAX_PRELOAD_OPS
) -> Evaluated:
    """Ideal: fastest plans with the whole SRAM, preloads bounded by min-cold
    footprints only, separate interconnects for loads and execution.

    The returned schedule deliberately breaks the SRAM rule (that is the
    relaxation); it is for reporting, never for the checker.
    """
    sram = chip.usable_sram_bytes_per_core
    has_load = _has_load(graph)
    rows = [t.best_row(sram, same_layout=True) for t in tables.tables]
    min_cold = np.array([t.min_cold_bytes for t in tables.tables], dtype=np.float64)
    min_hot = np.array([t.min_hot_bytes for t in tables.tables], dtype=np.float64)
    windows = assign_windows(has_load, np.where(has_load, min_cold, 0.0), sram - min_hot, max_preload_ops)
    schedule = _schedule(graph, tables, rows, windows, "ideal")
    relaxed = tuple(
        replace(o, option=replace(o.option, cold_bytes=int(min_cold[o.op]), exchange_cycles=0.0))
        for o in schedule.ops
    )
    schedule = replace(schedule, ops=relaxed)
    return Evaluated(schedule, compute_timeline(schedule, chip, _flops(graph)))


def lower_bound_cycles(graph: Graph, tables: TableSet, chip: Chip) -> float:
    """max(HBM bytes read and written / HBM bandwidth, sum of each operator's fastest
    plan), cycles. Reads and writes share the HBM channel."""
    sram = chip.usable_sram_bytes_per_core
    moved = sum(op.hbm_bytes(graph.elem_bytes) for op in graph.ops) + graph.hbm_bytes_written
    hbm = moved / chip.hbm_bytes_per_cycle
    fastest = 0.0
    for table in tables.tables:
        fits = table.hot_bytes <= sram
        fastest += float(table.exec_cycles[fits].min())
    return max(hbm, fastest)


__all__ = [
    "Evaluated",
    "assign_windows",
    "schedule_basic",
    "schedule_static",
    "schedule_ideal",
    "lower_bound_cycles",
]
