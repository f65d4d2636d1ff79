"""Chrome trace export of a timeline (open in Perfetto or chrome://tracing).

Lanes: "execute" (each op over its whole interval, stall included),
"HBM load" (each load), "interconnect stall" (the stall, at the end of its op),
plus a per-core SRAM counter, all in the process named after the chip (the analytic
timeline). A simulated run adds a second process with its own lanes
(`elkopt.sim.report.trace_events`). Times are converted from cycles to microseconds.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

from elkopt.chip import Chip
from elkopt.report import write_json_atomic
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import Timeline

_PID = 1
_LANES = {"execute": 1, "HBM load": 2, "interconnect stall": 3, "HBM write": 4}
#: Lanes drawn only when the timeline has something on them.
_OPTIONAL_LANES = ("HBM write",)


def build_chrome_trace(
    timeline: Timeline, schedule: Schedule, op_names: Sequence[str], chip: Chip,
    extra_events: Sequence[dict] = (),
) -> dict:
    """The trace as a dict: {"traceEvents": [...], "displayTimeUnit": "ns"}; `extra_events`
    (other processes' lanes, e.g. the simulator's, `elkopt.sim.report.trace_events`) are
    appended."""
    n = len(schedule.ops)
    if len(op_names) != n or timeline.n_ops != n:
        raise ValueError(
            f"{len(op_names)} names and a {timeline.n_ops}-op timeline for {n} ops"
        )
    exec_args, load_args = [], []
    for i, op in enumerate(schedule.ops):
        option = op.option
        exec_args.append({
            "op": i, "hot_bytes": option.hot_bytes, "cold_bytes": option.cold_bytes,
            "spatial": list(option.plan.spatial),
            "temporal": [list(t) for t in option.plan.temporal],
            "cores_used": option.cores_used, "exec_cycles": option.exec_cycles,
            "distribution_cycles": option.distribution_cycles,
            "exchange_cycles": option.exchange_cycles, "stall_cycles": float(timeline.stall[i]),
        })
        load_args.append({
            "op": i, "hbm_bytes": op.hbm_bytes, "noc_bytes": option.load_noc_bytes,
            "cold_bytes": option.cold_bytes, "spatial": list(option.plan.spatial),
            "preload_window": op.preload_window,
            "hbm_cycles": float(timeline.hbm_cycles[i]),
            "noc_cycles": float(timeline.noc_cycles[i]),
        } if op.has_load else None)
    return timeline_trace(timeline, op_names, chip, exec_args, load_args, extra_events)


def timeline_trace(
    timeline: Timeline, op_names: Sequence[str], chip: Chip, exec_args: Sequence[dict],
    load_args: Sequence[dict | None], extra_events: Sequence[dict] = (),
) -> dict:
    """The trace of any timeline, each op's execution and load (None: no load event)
    carrying the given args (`build_chrome_trace` for an elkopt schedule)."""
    if not len(op_names) == len(exec_args) == len(load_args) == timeline.n_ops:
        raise ValueError(f"{len(op_names)} names, {len(exec_args)} and {len(load_args)} args "
                         f"for a {timeline.n_ops}-op timeline")
    us_per_cycle = 1e6 / chip.clock_hz
    events: list[dict] = [
        {"ph": "M", "pid": _PID, "name": "process_name", "args": {"name": chip.name}},
    ]
    writes = timeline.has_write
    for lane, tid in _LANES.items():
        if lane in _OPTIONAL_LANES and not writes.any():
            continue
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_name",
                       "args": {"name": lane}})
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})

    def span(lane: str, name: str, start: float, end: float, args: dict) -> dict:
        return {"ph": "X", "pid": _PID, "tid": _LANES[lane], "name": name,
                "ts": start * us_per_cycle, "dur": (end - start) * us_per_cycle, "args": args}

    for i in range(timeline.n_ops):
        start, end = float(timeline.exec_start[i]), float(timeline.exec_end[i])
        stall = float(timeline.stall[i])
        events.append(span("execute", op_names[i], start, end, exec_args[i]))
        if stall > 0:
            events.append(span("interconnect stall", op_names[i], end - stall, end,
                               {"op": i, "stall_cycles": stall}))
        load_start = float(timeline.load_start[i])
        if load_args[i] is not None and not math.isnan(load_start):
            events.append(span("HBM load", op_names[i], load_start, float(timeline.load_end[i]),
                               load_args[i]))
        if writes[i]:
            events.append(span("HBM write", op_names[i], float(timeline.write_start[i]),
                               float(timeline.write_end[i]),
                               {"op": i, "hbm_cycles": float(timeline.write_hbm_cycles[i]),
                                "noc_cycles": float(timeline.write_noc_cycles[i])}))
    times, in_use = timeline.sram_profile()
    for t, used in zip(times, in_use):
        events.append({"ph": "C", "pid": _PID, "name": "SRAM per core (B)",
                       "ts": float(t) * us_per_cycle, "args": {"bytes": int(used)}})
    events.extend(extra_events)
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_chrome_trace(
    path: str | os.PathLike, timeline: Timeline, schedule: Schedule,
    op_names: Sequence[str], chip: Chip, extra_events: Sequence[dict] = (),
) -> None:
    """Write the Chrome trace JSON of `timeline` to `path` atomically (ts/dur in microseconds)."""
    write_json_atomic(path, build_chrome_trace(timeline, schedule, op_names, chip, extra_events), indent=None)
