"""Re-timing the seams of a stitched plan: the head, the tail, and the steady state.

Unrolled over every layer, one steady-state layer's load windows leave the
ops before the first layers (the embedding, the first loads of the prologue)
and after the last layers (the last norm and the output projection) where a
steady state does not hold. The shortest path of `elkopt.schedule.loadtiming`
re-times them exactly for the fixed plans, but over a whole graph of
thousands of ops it takes minutes (Llama2-70B at 8 TB/s: 3,848 ops, 86 s).

So it runs over *segments* that start and end where the HBM is idle in the
current timeline (`idle_loads`). At an idle op k every load issued before it
(a prefix of the preload order) has ended when op k may start, and no other
load is issued during an earlier op, so the plan outside a segment runs as
before (shifted) whatever the segment does: a segment's path is exact from
the state the rest of the plan leaves it in.

- The steady state (`retime_steady_state`): a window of `STEADY_LAYERS`
  middle layers timed as a chain, whose middle layer's windows are then
  unrolled over every layer. The periodic path must leave the HBM idle at
  one op of every layer (its cut); a chain need not, and on Llama2-13B
  (full plan space, batch 32) its layer is 0.1% shorter.
- The seams (`seam_segments`): the head, from op 0 to the first idle op at
  least `SEAM_LAYERS` layers into the repeating block, and the tail, from
  the last idle op at least `SEAM_LAYERS` layers before its end (nearer the
  ends of the graph when the HBM idles nowhere there).

The work is bounded by the segments' length, never by the number of layers,
and depends on the plan only (no clock): the same config gives the same plan.
A graph too short for separate seams is re-timed whole (`short_graph`); a seam
with no idle op on its side of the graph (an HBM busy throughout, as
Llama2-70B at 8 TB/s) is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from elkopt.chip import Chip
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.layers import LayerBlock, apply_windows, layer_loads, unroll, window_at
from elkopt.schedule.loadtiming import best_path
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.schedule.timeline import Timeline

#: Layers of the repeating block re-timed with each seam (at least; a segment ends
#: at the first op past them where the HBM is idle, at most one layer further).
SEAM_LAYERS = 4
#: Layers of the middle window whose exact timing gives the steady state (`retime_steady_state`).
STEADY_LAYERS = 4


def idle_loads(schedule: Schedule, timeline: Timeline) -> np.ndarray:
    """Per op k (0..n), how many loads (a prefix of the preload order) are issued
    before op k when the HBM is idle as op k may start, or -1 where it is not:
    every load issued during an op before k (or in the prologue) has ended by the
    end of op k-1, and every other load is issued during op k or later. Op 0 is
    idle with no load issued; entry n (the end) with every load issued."""
    n = len(schedule.ops)
    order = np.array(schedule.preload_order, dtype=np.int64)
    window = np.array([schedule.ops[j].preload_window for j in order], dtype=np.int64)
    issued = np.full(n + 1, -1, dtype=np.int64)
    issued[0], issued[n] = 0, len(order)
    if n < 2:
        return issued
    ops = np.arange(1, n)
    if not len(order):
        issued[1:n] = 0
        return issued
    before = np.concatenate([[PROLOGUE - 1], np.maximum.accumulate(window)])  # max window of order[:q]
    after = np.concatenate([np.minimum.accumulate(window[::-1])[::-1], [n]])  # min window of order[q:]
    q = np.searchsorted(np.sort(window), ops, side="left")  # loads issued during ops < k
    clean = (before[q] < ops) & (after[q] >= ops)
    ended = timeline.load_end[order]  # loads run one after another: the last ends last
    done = (q == 0) | (ended[np.maximum(q - 1, 0)] <= timeline.exec_end[ops - 1] + 1e-6)
    issued[1:n] = np.where(clean & done, q, -1)
    return issued


def idle_cuts(idle: np.ndarray, first: int, period: int) -> list[int]:
    """Where the HBM starts to idle in the layer at op `first`: the first op of
    every run of idle ops (`idle_loads`), relative to `first`. Cuts at which a
    steady-state layer is likely to leave the HBM idle too."""
    inside = idle[first : first + period] >= 0
    return [k for k in range(len(inside)) if inside[k] and (k == 0 or not inside[k - 1])]


def short_graph(block: LayerBlock, layers: int = SEAM_LAYERS) -> bool:
    """Too few layers for separate seams: the head and tail segments would meet."""
    return 2 * (layers + 1) >= block.count


def seam_segments(block: LayerBlock, idle: np.ndarray, layers: int = SEAM_LAYERS) -> list[tuple[int, int]]:
    """The op ranges [a, b) to re-time: the head up to the first idle op at least
    `layers` layers into the block, the tail from the last idle op at least
    `layers` layers before its end; the whole graph when they would meet
    (`short_graph`). With no idle op within one more layer, a seam's segment is
    shorter (it ends at the last idle op before the head's layers, or starts at
    the first after the tail's); with none there either it is left as it is."""
    n = len(idle) - 1
    head_end = block.start + layers * block.period
    tail_start = block.start + (block.count - layers) * block.period
    if short_graph(block, layers):
        return [(0, n)]
    segments = []
    # the first idle op past the head's layers, else the last before them (a shorter head)
    ends = [k for k in range(head_end, head_end + block.period) if idle[k] >= 0]
    ends = ends or [k for k in range(head_end - 1, 0, -1) if idle[k] >= 0]
    if ends:
        segments.append((0, ends[0]))
    # the last idle op before the tail's layers, else the first after them (a shorter tail)
    starts = [k for k in range(tail_start, tail_start - block.period, -1) if idle[k] >= 0]
    starts = starts or [k for k in range(tail_start + 1, n) if idle[k] >= 0]
    if starts:
        segments.append((starts[0], n))
    return segments


def retime_steady_state(
    best: Evaluated, block: LayerBlock, chip: Chip, flops: list[int], name: str, max_offset: int,
    layers: int = STEADY_LAYERS, tick: Callable[[], None] | None = None,
) -> tuple[Evaluated | None, int, int]:
    """`layers` layers from the middle of the block re-timed exactly (`retime_segment`,
    from the first idle op there, or after, to an idle op `layers` layers later), and
    the windows of the middle layer of that window unrolled over every layer: the
    steady state of a chain of layers, which need not leave the HBM idle at one op
    of every layer as the periodic path's cycle does. Returns the candidate (None if
    there is no such window or nothing to unroll), the loads deferred to fit SRAM,
    and the ops re-timed."""
    if layers < 2 or block.count < layers + 2:
        return None, 0, 0
    idle = idle_loads(best.schedule, best.timeline)
    first_layer = (block.count - layers) // 2
    low = block.start + first_layer * block.period
    # from the first idle op at or after the middle layers (their timeline may still
    # run a transient of the prologue there) ...
    block_end = block.start + block.count * block.period
    first = next((k for k in range(low, block_end - (layers + 1) * block.period) if idle[k] >= 0), None)
    if first is None:
        return None, 0, 0
    low = block.start + -(-(first - block.start) // block.period) * block.period  # a layer's first op
    # ... to the first idle op `layers` layers later
    end = next((k for k in range(first + layers * block.period, first + (layers + 1) * block.period)
                if k < len(idle) and idle[k] >= 0), None)
    if end is None:
        return None, 0, 0
    window, _ = retime_segment(best, first, end, chip, flops, name, max_offset, tick=tick)
    if window is None:
        return None, 0, end - first
    # the whole layer within [first, end) nearest its centre: the farthest from both ends
    centre = (first + end - block.period) / 2 - block.start
    middle = block.start + math.floor(centre / block.period + 0.5) * block.period
    last = block.start + (end - block.period - block.start) // block.period * block.period
    middle = min(max(middle, low), last)
    ops = window.schedule.ops
    order = [j for j in window.schedule.preload_order if middle <= j < middle + block.period]
    offsets = np.array([0 if ops[j].preload_window == j else j - ops[j].preload_window for j in order])
    evaluated, moved = unroll(best.schedule, block, np.array(order, dtype=np.int64) - middle, offsets, chip,
                              flops, name)
    return evaluated, moved, end - first


def retime_segment(
    best: Evaluated, first: int, end: int, chip: Chip, flops: list[int], name: str, max_offset: int,
    tick: Callable[[], None] | None = None,
) -> tuple[Evaluated | None, int]:
    """The plan `best` with the loads issued during ops first..end-1 re-timed by
    the exact shortest path; the HBM must be idle at both ends (`idle_loads`).
    Returns the evaluated candidate (None if the ends are not idle, the path
    finds nothing or the timeline a deadlock) and the loads deferred to fit SRAM.
    tick(): once per op of the segment."""
    schedule = best.schedule
    idle = idle_loads(schedule, best.timeline)
    if idle[first] < 0 or idle[end] < 0:
        return None, 0
    order = schedule.preload_order
    carried = [j for j in order[: idle[first]] if j >= first]  # in SRAM when the segment starts
    loads = carried + list(order[idle[first] : idle[end]])
    segment = layer_loads(schedule, chip, first, end - first, max_offset, loads=loads)
    timing = best_path(segment, tick=tick, issued=len(carried))
    if timing is None:
        return None, 0
    windows = np.array([o.preload_window for o in schedule.ops], dtype=np.int64)
    for j, offset in zip(loads[len(carried):], timing.offsets[len(carried):]):
        windows[j] = window_at(j, int(offset))
    return apply_windows(schedule, windows, chip, flops, name)


__all__ = ["SEAM_LAYERS", "STEADY_LAYERS", "idle_cuts", "idle_loads", "retime_segment", "retime_steady_state",
           "seam_segments", "short_graph"]
