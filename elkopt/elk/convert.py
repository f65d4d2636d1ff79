"""A published design's decisions as an elkopt `Schedule`, to time on elkopt's timeline.

On elkopt's plan tables (`elkopt.elk.program.elk_ops_from_plans`) every cold-hot row the
published schedulers choose is a row of an elkopt `PlanTable` (`ColdHotTable.row`), so a
published schedule's decisions are elkopt decisions: per operator its plan option, the
operator during whose execution its load starts, and the load order. `to_schedule` writes
them so; `elkopt.schedule.timeline.compute_timeline` then times them under elkopt's
accounting and `elkopt.schedule.checker` checks them, as it does elkopt's own schedules.

A load is issued in the window of the operator running when the published schedule starts
it (an operator's own index when it starts in the gap before that operator, the prologue
before the first). elkopt starts a load at its window's start once the loads before it are
done; loads take their HBM or delivery time, with no threshold stretch.

elkopt's checker counts a waiting load at the size of the layout it waits in; the
published designs reserve its smallest layout (and Elk-Full moves loads earlier without
re-checking), so their decisions can overfill the SRAM. Such loads are deferred to later
windows until every operator fits (`elkopt.schedule.layers.fit_sram`; loads keep their
order unless a deferred one must let a later one pass), and `to_schedule` says how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from elkopt.chip import Chip
from elkopt.elk.coldhot import ElkOp
from elkopt.elk.program import elkopt_problem
from elkopt.elk.schedulers import ElkSchedule, schedule_elk_dyn
from elkopt.graph.ir import Graph
from elkopt.plans.table import TableSet
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.layers import fit_sram
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline


def load_windows(schedule: ElkSchedule, loaded: np.ndarray) -> np.ndarray:
    """Per operator, the window its load is issued in (`Schedule` semantics; module doc)."""
    exe, start = schedule.exe, schedule.load[:, 0]
    n = len(exe)
    tol = 1e-9 * max(1.0, float(np.abs(exe).max()))
    # the last operator to start at or before the load, if it is still running then
    running = np.searchsorted(exe[:, 0], start + tol, side="right") - 1
    windows = np.arange(n)
    for i in np.flatnonzero(loaded).tolist():
        w = running[i]
        if w < 0:
            windows[i] = PROLOGUE
        elif w < i and start[i] < exe[w, 1] - tol:
            windows[i] = w
        else:  # in the gap after op w: issued as op w ends, i.e. with op w + 1 (<= i)
            windows[i] = min(w + 1, i)
    return windows


def to_schedule(schedule: ElkSchedule, ops: Sequence[ElkOp], graph: Graph, tables: TableSet,
                name: str, sram_bytes: float) -> tuple[Schedule, int]:
    """`schedule` (on tables from `elk_ops_from_plans(graph, tables)`) as an elkopt
    `Schedule` named `name` that fits `sram_bytes` per core, and how many loads were
    deferred to make it fit (module doc)."""
    if len(ops) != graph.n_ops or len(tables.tables) != graph.n_ops:
        raise ValueError(f"{len(ops)} published operators, {len(tables.tables)} plan tables and "
                         f"{graph.n_ops} graph operators must be the same operators")
    hbm = np.asarray([op.hbm_bytes(graph.elem_bytes) for op in graph.ops], dtype=np.int64)
    written = graph.write_bytes_per_op()  # Elk-Dyn does not see them; elkopt's timeline times them
    windows = load_windows(schedule, hbm > 0)
    out = []
    for i, (op, table) in enumerate(zip(ops, tables.tables)):
        if not len(op.table.row):
            raise ValueError(f"{op.name}: its cold-hot table was not made from an elkopt plan table")
        row = int(op.table.row[schedule.rows[i]])
        out.append(OpSchedule(i, table.option(row), int(windows[i]) if hbm[i] else i, int(hbm[i]), written[i]))
    plan = Schedule(tuple(out), tuple(j for j in schedule.load_order if hbm[j] > 0), name)
    windows, moved = fit_sram(plan, windows, sram_bytes)
    if not moved:
        return plan, 0
    # loads issue in order, so a load deferred past a later one's window lets it pass
    issue = {j: max(int(windows[j]), -1) for j in plan.preload_order}
    order = tuple(sorted(plan.preload_order, key=lambda j: issue[j]))
    fitted = tuple(replace(o, preload_window=int(windows[o.op])) if o.has_load else o for o in plan.ops)
    return Schedule(fitted, order, name), moved


def elk_dyn_start(graph: Graph, tables: TableSet, chip: Chip, layers: int | None = None) -> Evaluated | None:
    """Elk-Dyn's decisions on elkopt's plan tables (the best of its three NoC thresholds:
    three candidate decision sets) as an elkopt schedule, timed and checked: a starting
    point for elkopt's own scheduler. None when there is none: the published model cannot
    describe the chip (`elkopt.elk.program.published_machine`), the graph is too small for
    it, Elk-Dyn finds no plan, or its decisions do not make a valid elkopt schedule."""
    try:
        pb = elkopt_problem(graph, tables, chip, layers, noc_thresholds=True)
        plan, _deferred = to_schedule(schedule_elk_dyn(pb).schedule, pb.ops, graph, tables, "elk_dyn",
                                      chip.usable_sram_bytes_per_core)
        timeline = compute_timeline(plan, chip, [op.flops for op in graph.ops])
    except ValueError:  # ScheduleError included
        return None
    if check_schedule(plan, chip, [graph.dependencies(i) for i in range(graph.n_ops)], timeline):
        return None
    return Evaluated(plan, timeline)


__all__ = ["elk_dyn_start", "load_windows", "to_schedule"]
