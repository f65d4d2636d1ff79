"""A published design's schedule as the published model times it: its timeline, its
checks and the SRAM it reserves.

`elk_timeline` writes an `ElkSchedule` (times back from 0 at the last operator's end) as an
elkopt `Timeline` from 0; `check_elk_schedule` recomputes the published model's rules from
the schedule's intervals and (cold, hot) bytes against the operators' own tables;
`sram_in_use` measures what the published designs reserve in SRAM, which they do not
always keep within it (`elkopt.elk.compile`); `lower_bound_cycles` bounds every schedule
of a `Problem` from below.
"""

from __future__ import annotations

import numpy as np

from elkopt.elk.backward import load_bytes
from elkopt.elk.lookup import CYCLES_PER_MS
from elkopt.elk.schedulers import ElkSchedule, Problem
from elkopt.schedule.timeline import Timeline

#: What `check_elk_schedule` verifies, in words (metrics.json `verified_checks`).
ELK_CHECKS = (
    "every operator runs in a (cold, hot) pair of its cold-hot table, for at least that pair's cycles",
    "operators run one after another in program order",
    "every operator with HBM data is loaded once, for at least its HBM time, and the load ends "
    "before the operator starts",
    "loads run one after another (one HBM stream)",
)


def hbm_bytes(pb: Problem, i: int) -> int:
    """What op i's load streams: its table's unique bytes, or (published) min cold x cores."""
    t = pb.index[i]
    return load_bytes(t.min_cold, t.hbm_bytes, pb.cores)


def _exe_cycles(pb: Problem, rows: np.ndarray) -> np.ndarray:
    return np.asarray([t.exe_list[r] for t, r in zip(pb.index, rows.tolist())], dtype=np.float64)


def _hbm_cycles(pb: Problem) -> np.ndarray:
    model = pb.loads(5, None)  # the HBM time of a load does not depend on the NoC model
    return np.asarray([model.hbm_cycles(t.min_cold, t.hbm_bytes) for t in pb.index], dtype=np.float64)


def lower_bound_cycles(pb: Problem) -> float:
    """No schedule of `pb` is faster: loads share one HBM stream, and operators run one
    after another, each at least as long as its fastest pair."""
    fastest = sum(min(t.exe_list) for t in pb.index)
    return max(float(_hbm_cycles(pb).sum()), fastest)


def elk_timeline(schedule: ElkSchedule, pb: Problem, total_flops: float | None = None) -> Timeline:
    """`schedule` as an elkopt `Timeline` starting at 0. An operator's stall is how much
    longer it runs than its pair's cycles (NoC contention with loads); operators without
    HBM data have no load; a load's NoC cycles are its length minus its idle NoC time."""
    origin = float(schedule.load[list(schedule.load_order)][:, 0].min(initial=0.0))
    origin = min(origin, float(schedule.exe[:, 0].min()))
    exe, load = schedule.exe - origin, schedule.load - origin
    has_load = np.asarray([t.min_cold > 0 for t in pb.index])
    duration = exe[:, 1] - exe[:, 0]
    stall = duration - _exe_cycles(pb, schedule.rows)
    stall = np.where(stall > 1e-9 * np.maximum(duration, 1.0), stall, 0.0)  # float noise is no stall
    noc = np.where(has_load, (load[:, 1] - load[:, 0]) - schedule.load_remain_noc, 0.0)
    return Timeline(
        clock_hz=CYCLES_PER_MS * 1e3,
        exec_start=exe[:, 0].copy(), exec_end=exe[:, 1].copy(), stall=stall,
        load_start=np.where(has_load, load[:, 0], np.nan), load_end=np.where(has_load, load[:, 1], np.nan),
        hbm_cycles=np.where(has_load, _hbm_cycles(pb), 0.0), noc_cycles=np.maximum(noc, 0.0),
        exchange_cycles=schedule.shift_cycles.astype(np.float64),
        hot_bytes=schedule.hot.astype(np.int64), cold_bytes=np.where(has_load, schedule.cold, 0).astype(np.int64),
        total_flops=total_flops,
    )


def sram_in_use(schedule: ElkSchedule, pb: Problem) -> np.ndarray:
    """Per operator, the bytes per core in use while it runs as the published designs
    reserve them: its hot bytes and the smallest cold bytes of every operator whose load
    has started (for later operators)."""
    n = len(pb.ops)
    exe, load = schedule.exe, schedule.load
    tol = 1e-9 * max(1.0, float(np.abs(exe).max()), float(np.abs(load).max()))
    min_cold = np.asarray([t.min_cold for t in pb.index], dtype=np.float64)
    loaded = np.flatnonzero(min_cold > 0)
    # load j waits in SRAM while ops first..j-1 run, first = the first op to end after it starts
    first = np.searchsorted(exe[:, 1], load[loaded, 0] + tol, side="right")
    waiting = np.zeros(n + 1)
    np.add.at(waiting, np.minimum(first, loaded), min_cold[loaded])
    np.add.at(waiting, loaded, -min_cold[loaded])
    return schedule.hot.astype(np.float64) + np.cumsum(waiting)[:n]


def check_elk_schedule(schedule: ElkSchedule, pb: Problem) -> list[str]:
    """The rules of `ELK_CHECKS` `schedule` breaks (empty: none), recomputed from its
    intervals and its (cold, hot) bytes against the operators' own tables."""
    n = len(pb.ops)
    exe, load = schedule.exe, schedule.load
    tol = 1e-9 * max(1.0, float(np.abs(exe).max()), float(np.abs(load).max()))
    problems: list[str] = []
    for name, arr in (("exe", exe), ("load", load)):
        if arr.shape != (n, 2) or not np.isfinite(arr).all():
            return [f"{name} intervals: {arr.shape} for {n} operators, or not finite"]
    for i, op in enumerate(pb.ops):
        table, index = op.table, pb.index[i]
        pair = np.flatnonzero((table.cold == schedule.cold[i]) & (table.hot == schedule.hot[i]))
        if not len(pair):
            problems.append(f"{op.name} runs in ({schedule.cold[i]}, {schedule.hot[i]}) bytes, not a pair of its table")
            continue
        need = min(index.exe_list[r] for r in pair.tolist())
        if exe[i, 1] - exe[i, 0] < need - tol:
            problems.append(f"{op.name} runs {exe[i, 1] - exe[i, 0]:.1f} cycles, its pair needs {need:.1f}")
    gaps = exe[1:, 0] - exe[:-1, 1]
    for i in np.flatnonzero(gaps < -tol).tolist()[:5]:
        problems.append(f"{pb.ops[i + 1].name} starts before {pb.ops[i].name} ends")
    hbm = _hbm_cycles(pb)
    loaded = np.flatnonzero(hbm > 0)
    for i in loaded.tolist():
        if load[i, 1] - load[i, 0] < hbm[i] - tol:
            problems.append(f"{pb.ops[i].name}'s load lasts {load[i, 1] - load[i, 0]:.1f} cycles, its HBM "
                            f"time is {hbm[i]:.1f}")
        if load[i, 1] > exe[i, 0] + tol:
            problems.append(f"{pb.ops[i].name}'s load ends after it starts")
    by_start = loaded[np.argsort(load[loaded, 0], kind="stable")]
    overlap = load[by_start[1:], 0] - load[by_start[:-1], 1]
    for k in np.flatnonzero(overlap < -tol).tolist()[:5]:
        problems.append(f"the loads of {pb.ops[by_start[k]].name} and {pb.ops[by_start[k + 1]].name} overlap")
    return problems



__all__ = ["ELK_CHECKS", "check_elk_schedule", "elk_timeline", "hbm_bytes", "lower_bound_cycles", "sram_in_use"]
