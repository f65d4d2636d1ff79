"""An independent checker for schedules and their timelines.

It trusts neither the scheduler nor the timeline's bookkeeping: the rules are
recomputed from the schedule, the chip and the raw interval arrays (cycles).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from elkopt.chip import Chip
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.schedule.timeline import ScheduleError, Timeline, compute_timeline

__all__ = ["CHECKS", "ScheduleError", "assert_valid", "check_schedule"]

#: What `check_schedule` verifies, in words (metrics.json `verified_checks`).
CHECKS = (
    "every operator's hot footprint fits the usable SRAM",
    "every operator with HBM data is loaded exactly once, in a window at or before it",
    "no load waits on a load issued after its own operator (no deadlock)",
    "operators run in program order, each after the operators whose outputs it reads, "
    "for at least its plan's cycles",
    "every load lasts at least its HBM and interconnect time and ends before its operator starts",
    "every routed-expert load starts after its router has run (speculative preloads are operators of their own)",
    "every HBM write starts after its operator ends and lasts at least its HBM and interconnect time; "
    "HBM loads and writes never overlap",
    "hot footprints of running operators and cold footprints of waiting loads never exceed "
    "the SRAM at any instant",
)


def check_schedule(
    schedule: Schedule,
    chip: Chip,
    dependencies: Sequence[Sequence[int]],
    timeline: Timeline | None = None,
    routers: Mapping[int, Sequence[int]] | None = None,
) -> list[str]:
    """All rule violations of `schedule` (empty list = valid).

    dependencies[i]: the ops whose outputs op i reads. Without a `timeline`
    one is computed; if that fails, its error is reported as a violation.
    routers[j]: the ops whose routing decision op j's load waits for, taken
    from the graph (`elkopt.graph.moe.router_dependencies`), not from the
    schedule's `load_after`; None or {} for a graph without routed experts.
    """
    n = len(schedule.ops)
    problems = _check_structure(schedule, chip)
    if len(dependencies) != n:
        problems.append(f"dependencies has {len(dependencies)} entries for {n} ops")
    if timeline is None:
        try:
            timeline = compute_timeline(schedule, chip)
        except ScheduleError as error:
            return problems + [f"no timeline: {error}"]
    if timeline.n_ops != n:
        return problems + [f"timeline has {timeline.n_ops} ops, schedule {n}"]
    tolerance = 1e-9 * max(1.0, float(abs(timeline.exec_end).max()) if n else 1.0)
    problems += _check_execution(schedule, dependencies, timeline, tolerance)
    problems += _check_loads(schedule, chip, timeline, tolerance)
    problems += _check_router_waits(schedule, routers or {}, timeline, tolerance)
    problems += _check_writes(schedule, chip, timeline, tolerance)
    problems += _check_sram(schedule, chip, timeline)
    return problems


def assert_valid(
    schedule: Schedule,
    chip: Chip,
    dependencies: Sequence[Sequence[int]],
    timeline: Timeline | None = None,
    routers: Mapping[int, Sequence[int]] | None = None,
) -> None:
    """Raise ScheduleError listing every violation, if there is any."""
    problems = check_schedule(schedule, chip, dependencies, timeline, routers)
    if problems:
        listing = "\n  ".join(problems)
        raise ScheduleError(f"invalid schedule ({len(problems)} violations):\n  {listing}")


def _check_structure(schedule: Schedule, chip: Chip) -> list[str]:
    """Rules on the decisions alone, no times."""
    problems = []
    ops = schedule.ops
    n = len(ops)
    usable = chip.usable_sram_bytes_per_core
    for i, op in enumerate(ops):
        if op.op != i:
            problems.append(f"op {i}: ops[{i}].op is {op.op}")
        if op.option.hot_bytes > usable:
            problems.append(f"op {i}: hot {op.option.hot_bytes} B > usable SRAM {usable} B")
        if op.has_load and not PROLOGUE <= op.preload_window <= i:
            problems.append(
                f"op {i}: preload_window {op.preload_window} not in [{PROLOGUE}, {i}]"
            )
    counts: dict[int, int] = {}
    for j in schedule.preload_order:
        counts[j] = counts.get(j, 0) + 1
    for j, count in counts.items():
        if not 0 <= j < n:
            problems.append(f"preload_order: op {j} does not exist (ops 0..{n - 1})")
        elif not ops[j].has_load:
            problems.append(f"op {j}: in preload_order but has no HBM data")
        if count > 1:
            problems.append(f"op {j}: appears {count} times in preload_order")
    for i, op in enumerate(ops):
        if op.has_load and i not in counts:
            problems.append(f"op {i}: has {op.hbm_bytes} HBM bytes but is not in preload_order")
    problems += _check_deadlock(schedule)
    return problems


def _check_deadlock(schedule: Schedule) -> list[str]:
    """A load cannot start before every earlier load in the order has been issued,
    so it waits on the latest window so far; that op must come before its own op."""
    problems = []
    ops = schedule.ops
    latest_window, latest_owner = PROLOGUE, None
    for j in schedule.preload_order:
        if not 0 <= j < len(ops):
            continue
        if ops[j].preload_window > latest_window:
            latest_window, latest_owner = ops[j].preload_window, j
        if latest_window > j or (latest_window == j and latest_owner != j):
            problems.append(
                f"op {j}: deadlock, its load is queued behind the load of op {latest_owner}, "
                f"issued during op {latest_window}, which cannot start before op {j}"
            )
    return problems


def _check_execution(
    schedule: Schedule, dependencies: Sequence[Sequence[int]], timeline: Timeline, tolerance: float
) -> list[str]:
    problems = []
    start, end = timeline.exec_start, timeline.exec_end
    for i, op in enumerate(schedule.ops):
        s, e = float(start[i]), float(end[i])
        if not (math.isfinite(s) and math.isfinite(e)):
            problems.append(f"op {i}: execution interval [{s}, {e}] not finite")
            continue
        if s < -tolerance:
            problems.append(f"op {i}: starts at cycle {s} < 0")
        if e - s < op.option.total_cycles - tolerance:
            problems.append(
                f"op {i}: runs {e - s} cycles < its {op.option.total_cycles} cycles"
            )
        if i > 0 and s < float(end[i - 1]) - tolerance:
            problems.append(
                f"op {i}: starts at cycle {s} before op {i - 1} ends at cycle {float(end[i - 1])}"
            )
        for d in dependencies[i] if i < len(dependencies) else ():
            if not 0 <= d < len(schedule.ops):
                problems.append(f"op {i}: depends on op {d}, which does not exist")
            elif s < float(end[d]) - tolerance:
                problems.append(
                    f"op {i}: starts at cycle {s} before its input op {d} ends "
                    f"at cycle {float(end[d])}"
                )
    return problems


def _check_loads(schedule: Schedule, chip: Chip, timeline: Timeline, tolerance: float) -> list[str]:
    problems = []
    ops = schedule.ops
    start, end = timeline.exec_start, timeline.exec_end
    load_start, load_end = timeline.load_start, timeline.load_end
    previous = None
    for j in schedule.preload_order:
        if not 0 <= j < len(ops) or not ops[j].has_load:
            continue
        ls, le = float(load_start[j]), float(load_end[j])
        if not (math.isfinite(ls) and math.isfinite(le)):
            problems.append(f"op {j}: load interval [{ls}, {le}] not finite")
            continue
        duration = max(
            ops[j].hbm_bytes / chip.hbm_bytes_per_cycle,
            float(chip.delivery_cycles(ops[j].option.cold_bytes, ops[j].option.cores_used)),
        ) * chip.load_scale_of(j)
        if le - ls < duration - tolerance:
            problems.append(f"op {j}: load lasts {le - ls} cycles < {duration} cycles needed")
        if le > float(start[j]) + tolerance:
            problems.append(
                f"op {j}: load ends at cycle {le} after the op starts at cycle {float(start[j])}"
            )
        window = ops[j].preload_window
        if window == PROLOGUE or window == j == 0:
            window_start = 0.0
        elif window == j:  # issued when the previous op ends
            window_start = float(end[j - 1])
        else:
            window_start = float(start[window]) if 0 <= window < len(ops) else math.inf
        if ls < window_start - tolerance:
            problems.append(
                f"op {j}: load starts at cycle {ls} before its window op {window} "
                f"starts at cycle {window_start}"
            )
        if previous is not None and ls < float(load_end[previous]) - tolerance:
            problems.append(
                f"op {j}: load starts at cycle {ls} before the previous load in "
                f"preload_order (op {previous}) ends at cycle {float(load_end[previous])}"
            )
        previous = j
    return problems


def _check_router_waits(schedule: Schedule, routers: Mapping[int, Sequence[int]], timeline: Timeline,
                        tolerance: float) -> list[str]:
    """A routed-expert load reads the experts its router chose: it cannot start before
    that router ends."""
    problems = []
    for j, producers in sorted(routers.items()):
        if not 0 <= j < len(schedule.ops) or not schedule.ops[j].has_load:
            continue
        ls = float(timeline.load_start[j])
        for r in producers:
            if not 0 <= r < len(schedule.ops):
                problems.append(f"op {j}: routed by op {r}, which does not exist")
            elif not ls >= float(timeline.exec_end[r]) - tolerance:
                problems.append(f"op {j}: routed-expert load starts at cycle {ls} before its router, op {r}, "
                                f"ends at cycle {float(timeline.exec_end[r])} (preload speculatively instead)")
    return problems


def _check_writes(schedule: Schedule, chip: Chip, timeline: Timeline, tolerance: float) -> list[str]:
    """HBM writes (`OpSchedule.write_bytes`): each after its operator, long enough for its
    bytes at the HBM rate and for their delivery from the operator's cores; and the HBM
    channel moves one transfer at a time, loads and writes alike."""
    ops = schedule.ops
    if not any(op.has_write for op in ops):
        return []
    if timeline.write_start is None or timeline.write_end is None:
        return ["the timeline has no HBM writes, the schedule has"]
    problems = []
    transfers = [(float(timeline.load_start[j]), float(timeline.load_end[j]), f"load of op {j}")
                 for j in schedule.preload_order if 0 <= j < len(ops) and ops[j].has_load]
    for i, op in enumerate(ops):
        if not op.has_write:
            continue
        ws, we = float(timeline.write_start[i]), float(timeline.write_end[i])
        if not (math.isfinite(ws) and math.isfinite(we)):
            problems.append(f"op {i}: HBM write interval [{ws}, {we}] not finite")
            continue
        cores = op.option.cores_used
        needed = max(op.write_bytes / chip.hbm_bytes_per_cycle,
                     float(chip.delivery_cycles(op.write_bytes / cores, cores)))
        if we - ws < needed - tolerance:
            problems.append(f"op {i}: HBM write lasts {we - ws} cycles < {needed} cycles needed")
        if ws < float(timeline.exec_end[i]) - tolerance:
            problems.append(f"op {i}: HBM write starts at cycle {ws} before the op ends at cycle "
                            f"{float(timeline.exec_end[i])}")
        transfers.append((ws, we, f"write of op {i}"))
    transfers = sorted(t for t in transfers if math.isfinite(t[0]) and math.isfinite(t[1]))
    for (_, end, first), (begin, _, second) in zip(transfers, transfers[1:]):
        if begin < end - tolerance:
            problems.append(f"HBM: the {second} starts at cycle {begin} before the {first} ends at cycle {end}")
    return problems


def _check_sram(schedule: Schedule, chip: Chip, timeline: Timeline) -> list[str]:
    """Sweep every interval boundary; in use = hot of executing ops + cold of waiting ops.

    Intervals are half-open: an op's hot bytes hold on [exec start, exec end),
    its cold bytes on [load start, exec start).
    """
    ops = schedule.ops
    usable = chip.usable_sram_bytes_per_core
    # (time, op, is_hot, +1 begins / -1 ends); ends sort before begins at equal times.
    events = []
    for i, op in enumerate(ops):
        a, b = float(timeline.exec_start[i]), float(timeline.exec_end[i])
        if a < b:
            events += [(a, 1, i, True), (b, -1, i, True)]
        ls = float(timeline.load_start[i])
        if op.has_load and math.isfinite(ls) and ls < a:
            events += [(ls, 1, i, False), (a, -1, i, False)]
    events.sort(key=lambda e: (e[0], e[1]))
    executing: dict[int, None] = {}
    waiting: dict[int, None] = {}
    in_use = 0
    problems = []
    k = 0
    while k < len(events):
        t = events[k][0]
        arriving = []
        while k < len(events) and events[k][0] == t:
            _, sign, i, is_hot = events[k]
            held = executing if is_hot else waiting
            in_use += sign * (ops[i].option.hot_bytes if is_hot else ops[i].option.cold_bytes)
            if sign > 0:
                held[i] = None
                arriving.append(i)
            else:
                del held[i]
            k += 1
        if in_use <= usable or not arriving:
            continue
        culprit = arriving[-1]
        hot_text = " + ".join(f"hot {ops[i].option.hot_bytes} of op {i}" for i in executing)
        cold_text = f"cold of ops {', '.join(map(str, sorted(waiting)))}" if waiting else ""
        parts = " + ".join(p for p in (hot_text, cold_text) if p)
        problems.append(f"op {culprit}: SRAM {in_use} B > {usable} B at cycle {t} ({parts})")
    return problems
