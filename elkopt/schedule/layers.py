"""The repeating layer of a graph: finding it (`find_layers`), one layer's
loads as load-timing data (`layer_loads`, `seam_candidates`), and unrolling
one layer's load windows over every layer (`unroll`), deferring loads that
would overflow SRAM at the seams.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Hashable, Sequence

import numpy as np

from elkopt.chip import Chip
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.loadtiming import LayerLoads
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.schedule.timeline import ScheduleError, compute_timeline, load_duration_and_rate


@dataclass(frozen=True)
class LayerBlock:
    """ops[start + l * period + k] is op k of layer l, for l < count."""

    start: int
    period: int
    count: int


def find_layers(signatures: list[Hashable], min_count: int = 2, max_period: int = 400) -> LayerBlock | None:
    """The longest run of a repeating block of operators (by signature), or None.

    The period is the smallest whose repetition covers at least 90% of the
    graph; the block starts at the first operator of that run.
    """
    n = len(signatures)
    codes = np.unique(np.array([hash(s) for s in signatures]), return_inverse=True)[1]
    for period in range(2, min(max_period, n // min_count) + 1):
        same = codes[:-period] == codes[period:]
        if same.sum() < 0.9 * (n - period):
            continue
        # longest run of matches
        best_len, best_start, run = 0, 0, 0
        for i, ok in enumerate(same):
            run = run + 1 if ok else 0
            if run > best_len:
                best_len, best_start = run, i - run + 1
        count = (best_len + period) // period
        if count >= min_count:
            return LayerBlock(best_start, period, count)
    return None


def layer_loads(schedule: Schedule, chip: Chip, first: int, period: int, max_offset: int,
                loads: Sequence[int] | None = None) -> LayerLoads:
    """The decisions of the layer starting at op `first`, as load-timing data;
    its loads in the order the schedule issues them. loads: the ops whose loads
    to time instead, in their issue order (some may be past the layer)."""
    ops = schedule.ops[first : first + period]
    duration, rate = load_duration_and_rate(schedule, chip)
    if loads is None:
        loads = [j for j in schedule.preload_order if first <= j < first + period]
    loads = list(loads)
    duration, rate = duration[loads], rate[loads]
    loads = [j - first for j in loads]
    return LayerLoads(
        nominal=np.array([o.option.total_cycles for o in ops]),
        exchange=np.array([o.option.exchange_cycles + o.option.distribution_cycles for o in ops]),
        hot=np.array([o.option.hot_bytes for o in ops], dtype=np.float64),
        load_op=np.array(loads, dtype=np.int64),
        duration=duration,
        rate=rate,
        cold=np.array([schedule.ops[first + k].option.cold_bytes for k in loads], dtype=np.float64),
        sram=float(chip.usable_sram_bytes_per_core),
        max_offset=max_offset,
    )


def seam_candidates(layer: LayerLoads) -> list[int]:
    """Ops at which to cut the cycle: the layer start, and around every op
    that is (nearly) all exchange and long enough to matter: the HBM is
    likely idle there."""
    total = float(layer.nominal.sum())
    cuts = {0}
    for k in range(layer.n_ops):
        if layer.exchange[k] >= 0.9 * layer.nominal[k] and layer.nominal[k] >= 0.02 * total:
            cuts |= {k, (k + 1) % layer.n_ops}
    return sorted(cuts)


def unroll(
    schedule: Schedule, block: LayerBlock, load_op: np.ndarray, offsets: np.ndarray, chip: Chip,
    flops: list[int], name: str,
) -> tuple[Evaluated | None, int]:
    """Apply per-layer window offsets to every layer, issuing each layer's
    loads in the order of `load_op` (the ops before and after the layers keep
    their order); returns the evaluated schedule and the number of loads
    deferred to fit SRAM. The schedule is None if the timeline finds a
    deadlock (a load queued behind one issued after its own operator)."""
    windows = np.array([o.preload_window for o in schedule.ops], dtype=np.int64)
    layered = []
    for layer in range(block.count):
        base = block.start + layer * block.period
        for k, offset in zip(load_op, offsets):
            j = base + int(k)
            windows[j] = window_at(j, int(offset))
            layered.append(j)
    end = block.start + block.count * block.period
    order = [j for j in schedule.preload_order if j < block.start]
    order += layered + [j for j in schedule.preload_order if j >= end]
    return apply_windows(schedule, windows, chip, flops, name, order)


def window_at(j: int, offset: int) -> int:
    """The preload window of op j's load issued `offset` ops ahead (0: with op j)."""
    return j if offset == 0 else max(PROLOGUE, j - offset)


def apply_windows(
    schedule: Schedule, windows: np.ndarray, chip: Chip, flops: list[int], name: str,
    order: list[int] | None = None,
) -> tuple[Evaluated | None, int]:
    """`schedule` with these preload windows (loads deferred to fit SRAM, `fit_sram`)
    and, if given, this preload order, evaluated: (schedule or None if the timeline finds
    a deadlock, loads deferred)."""
    windows, moved = fit_sram(schedule, windows, chip.usable_sram_bytes_per_core)
    ops = tuple(
        replace(o, preload_window=int(windows[i])) if o.has_load else o for i, o in enumerate(schedule.ops)
    )
    preload_order = schedule.preload_order if order is None else tuple(order)
    candidate = replace(schedule, ops=ops, preload_order=preload_order, scheduler=name)
    try:
        return Evaluated(candidate, compute_timeline(candidate, chip, flops)), moved
    except ScheduleError:
        return None, moved  # a deadlock: the caller keeps what it had


def fit_sram(schedule: Schedule, windows: np.ndarray, sram: float) -> tuple[np.ndarray, int]:
    """Defer loads until, at every op, hot bytes + cold bytes of loads issued
    at or before it and not yet consumed fit; returns (windows, loads moved).

    At op i the loads held are those j > i issued at or before it (window <= i, the
    prologue counting as 0) other than loads issued at their own op (window j). While they
    do not fit beside op i's hot bytes, the latest of them is deferred to op i + 1 (or to
    its own op when that is i + 1). One pass in program order: a load joins the held set
    at its window and leaves it at its own op, so each op costs the loads that join,
    leave or move there, not all loads (bytes are integers: the sums are exact).
    """
    ops = schedule.ops
    n = len(ops)
    windows = windows.copy()
    cold = [int(o.option.cold_bytes) if o.has_load else 0 for o in ops]
    joining: list[list[int]] = [[] for _ in range(n + 1)]  # op -> loads whose window it is
    for j in range(n):
        if ops[j].has_load and windows[j] != j and max(int(windows[j]), 0) < j:
            joining[max(int(windows[j]), 0)].append(j)
    held = [False] * n
    latest: list[int] = []  # max-heap (negated) of held loads; entries no longer held are skipped
    total = 0  # cold bytes of the loads held
    moved = set()
    for i in range(n):
        if held[i]:  # consumed by its own op
            held[i], total = False, total - cold[i]
        for j in joining[i]:
            held[j], total = True, total + cold[j]
            heapq.heappush(latest, -j)
        while ops[i].option.hot_bytes + total > sram:
            while latest and not held[-latest[0]]:
                heapq.heappop(latest)
            if not latest:
                break  # nothing held: op i alone decides
            j = -heapq.heappop(latest)
            held[j], total = False, total - cold[j]
            moved.add(j)
            if i + 1 < j:
                windows[j] = i + 1
                joining[i + 1].append(j)
            else:
                windows[j] = j
    return windows, len(moved)


__all__ = ["LayerBlock", "apply_windows", "find_layers", "fit_sram", "layer_loads", "seam_candidates", "unroll",
           "window_at"]
