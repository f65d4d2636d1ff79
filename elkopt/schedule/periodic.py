"""The stitched global plan (`scheduler=elkopt`): one transformer layer in
steady state, optimised once and unrolled over all layers.

Transformer layers repeat, so the plan of one layer in steady state (each
layer's loads may be issued during the layer before) is the plan of every
layer. Each operator's plan and preload layout come from a starting
schedule (the inductive one and Static's; the better result is kept). What
is optimised here is when each of the layer's loads is issued (its window,
possibly in the previous layer): loads must be hidden, and kept off the
interconnect while exchange-heavy operators run, within SRAM.

1. `elkopt.schedule.loadtiming` solves that exactly for the fixed plans as a
   shortest path (busy periods of the HBM between operator starts), with the
   cycle cut where the HBM is likely idle: at exchange-heavy ops, and where
   the start's own timeline idles it.
2. The preload order of the layer's heavy loads is searched by pairwise
   swaps, each order timed exactly by the same path
   (`elkopt.schedule.preloadorder`).
3. Optionally (`layer_milp=True`), a layer-periodic MILP over the same
   decisions, each op's executing plan (among the rows of its plan table
   with the same preload layout, `plan_alternatives`) and the place of the
   heavy loads in the issue order (sequencing binaries) polishes it,
   warm-started from steps 1-2, within the solver's node limit (the
   formulation: `elkopt.schedule.layermilp`). It can place the cycle's seam
   anywhere, which the shortest path cannot.
4. The per-layer windows are unrolled over every layer
   (`elkopt.schedule.layers`), loads that would overflow SRAM at the seams
   are deferred. Then (`elkopt.schedule.seams`) a window of middle layers is
   timed exactly by the same shortest path as a chain, not a cycle, and its
   middle layer's windows are unrolled in turn (a steady state that leaves
   the HBM idle at no fixed op); and the seams, the head with the first
   layers and the tail with the last ones, are re-timed by that path, from
   and to ops where the HBM is idle. Each candidate is evaluated by the
   timeline and kept only if it is faster and the independent checker finds
   nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Hashable

import numpy as np
import pyomo.environ as pyo

from elkopt.chip import Chip
from elkopt.graph.ir import Graph
from elkopt.plans.option import PlanOption
from elkopt.progress import Ticker
from elkopt.schedule.alternatives import _with_plans, plan_alternatives
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.layermilp import _build, _chosen, _warm_start, _windows
from elkopt.schedule.layers import LayerBlock, find_layers, layer_loads, seam_candidates, unroll
from elkopt.schedule.loadtiming import LayerLoads, best_offsets
from elkopt.schedule.preloadorder import heavy_loads, search_order
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.seams import (
    SEAM_LAYERS, STEADY_LAYERS, idle_cuts, idle_loads, retime_segment, retime_steady_state, seam_segments, short_graph,
)
from elkopt.solve import SolveResult, SolverOptions, describe_fallbacks, solve

log = logging.getLogger(__name__)


@dataclass
class PeriodicStats:
    layer_ops: int = 0
    layers: int = 0
    start: str = ""  # which starting schedule the result builds on
    start_period_cycles: float = 0.0  # the middle layer of the best starting schedule
    layer_cycles: float = 0.0  # the middle layer of the result
    path_period_cycles: float = 0.0  # steady-state layer from the shortest path
    path_s: float = 0.0
    milp_period_cycles: float | None = None
    milp_binaries: int = 0
    milp: SolveResult | None = None
    milp_plan_choices: int = 0  # layer ops with more than one plan to choose from
    milp_plans_changed: int = 0  # layer ops whose plan the kept result changed
    milp_movable_loads: int = 0  # loads the MILP may place anywhere in the issue order
    milp_loads_moved: int = 0  # loads whose place in the order the kept result changed
    repaired_loads: int = 0
    seam_s: float = 0.0
    seam_ops: int = 0  # ops of the segments re-timed at the seams
    seam_steady_gain_cycles: float = 0.0  # of seam_gain_cycles, from the middle layers' steady state
    seam_gain_cycles: float = 0.0
    order_swaps_tried: int = 0
    order_swaps_kept: int = 0
    order_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, float | int | str | dict[str, int] | None]:
        r = self.milp
        return {
            "layer_ops": self.layer_ops,
            "layers": self.layers,
            "start": self.start,
            "start_layer_cycles": round(self.start_period_cycles, 1),
            "layer_cycles": round(self.layer_cycles, 1),
            "path_layer_cycles": round(self.path_period_cycles, 1),
            "path_s": round(self.path_s, 3),
            "layer_milp_status": str(r.status) if r else "not run",
            # no usable solution: the shortest-path layer plan is kept
            "layer_milp_fallbacks": int(r is not None and not r.has_solution),
            "layer_milp_fallback_reasons": {r.fallback_reason: 1} if r and not r.has_solution else {},
            "layer_milp_layer_cycles": None if self.milp_period_cycles is None else round(self.milp_period_cycles, 1),
            "layer_milp_binaries": self.milp_binaries,
            "layer_milp_s": round(r.wall_s, 3) if r else 0.0,
            "layer_milp_gap": r.gap if r else None,
            "layer_milp_nodes": r.nodes if r else None,
            "layer_milp_plan_choices": self.milp_plan_choices,
            "layer_milp_plans_changed": self.milp_plans_changed,
            "layer_milp_movable_loads": self.milp_movable_loads,
            "layer_milp_loads_moved": self.milp_loads_moved,
            "repaired_loads": self.repaired_loads,
            "order_swaps_tried": self.order_swaps_tried,
            "order_swaps_kept": self.order_swaps_kept,
            "order_s": round(self.order_s, 3),
            "seam_s": round(self.seam_s, 3),
            "seam_ops": self.seam_ops,
            "seam_steady_gain_cycles": round(self.seam_steady_gain_cycles, 1),
            "seam_gain_cycles": round(self.seam_gain_cycles, 1),
            "periodic_s": round(self.wall_s, 3),
        }

def schedule_periodic(
    graph: Graph, starts: Sequence[tuple[str, Evaluated]], chip: Chip,
    progress: Callable[[str], None] | None = None, **options: Any,
) -> tuple[Evaluated, PeriodicStats]:
    """Re-time the loads of each (name, schedule) start layer-periodically;
    return the fastest valid result (a start itself if nothing beats it).
    progress: where to say how far each long phase is (a line every few
    seconds); `options` are those of `stitch`."""
    return stitch(
        starts, chip,
        signatures=[op.signature for op in graph.ops],
        dependencies=[graph.dependencies(i) for i in range(graph.n_ops)],
        flops=[op.flops for op in graph.ops],
        progress=progress,
        **options,
    )


def stitch(
    starts: Sequence[tuple[str, Evaluated]],
    chip: Chip,
    signatures: Sequence[Hashable],
    dependencies: Sequence[Sequence[int]],
    flops: list[int],
    solver: SolverOptions | None = None,
    max_preload_ops: int = 48,
    layer_milp: bool = False,
    name: str = "elkopt",
    seams: bool = True,
    seam_layers: int | None = SEAM_LAYERS,
    reorder: bool = True,
    alternatives: Callable[[Schedule, int], Sequence[PlanOption]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Evaluated, PeriodicStats]:
    """`schedule_periodic` on plain data: per op a signature (equal for the
    same op in every layer), its dependencies and FLOPs.

    alternatives(schedule, j): the plans op j may execute in instead of its
    own in `schedule` (its own first), keeping its preload layout; the layer
    MILP then chooses plans too (`plan_alternatives` builds them from plan
    tables). None: plans stay as the starts have them.

    progress(line): counted progress of the phases that can run long (the
    layer's load timing, the preload orders, the layer MILP, the seams).

    seam_layers: the seams re-time the head and the tail up to this many layers
    into the repeating block, and the steady state from a window of middle
    layers (`elkopt.schedule.seams`); None re-times the whole graph at once
    (exact for the plans, but minutes on thousands of ops).
    """
    begin = time.perf_counter()
    stats = PeriodicStats()
    label, best = min(starts, key=lambda s: s[1].timeline.latency_cycles)
    best = Evaluated(replace(best.schedule, scheduler=name), best.timeline)
    stats.start = label
    block = find_layers(list(signatures))
    if block is None:
        stats.wall_s = time.perf_counter() - begin
        return best, stats
    stats.layer_ops, stats.layers = block.period, block.count
    middle = block.start + (block.count // 2) * block.period
    max_offset = min(max_preload_ops, block.period)
    best_layer, best_cut = None, 0

    def layer_cycles(evaluated: Evaluated) -> float:
        """Cycles of the middle layer in the timeline (start to start)."""
        tl = evaluated.timeline
        end = middle + block.period
        return float(tl.exec_start[end] - tl.exec_start[middle]) if end < len(tl.exec_start) else 0.0

    stats.start_period_cycles = layer_cycles(best)

    def better(candidate: Evaluated | None) -> bool:
        """Faster than the best so far, and valid (the checker finds nothing)."""
        if candidate is None or candidate.timeline.latency_cycles >= best.timeline.latency_cycles - 1e-6:
            return False
        return not check_schedule(candidate.schedule, chip, dependencies, candidate.timeline)

    # Each start's middle layer, cut where an exchange-heavy op leaves the HBM
    # likely idle, and where the start's own timeline idles it.
    distinct: list[tuple[str, Evaluated, LayerLoads, list[int]]] = []
    for label, start in starts:
        layer = layer_loads(start.schedule, chip, middle, block.period, max_offset)
        cuts = sorted(set(seam_candidates(layer)) | set(idle_cuts(
            idle_loads(start.schedule, start.timeline), middle, block.period)))
        for _, _, other, other_cuts in distinct:
            if _same_layer(layer, other):  # the same plans: the same timing
                other_cuts[:] = sorted(set(other_cuts) | set(cuts))
                break
        else:
            distinct.append((label, start, layer, cuts))
    ticker = Ticker(progress, "elkopt: layer load timing (start plans x cuts)",
                    sum(len(cuts) for *_, cuts in distinct))
    for label, start, layer, cuts in distinct:
        t0 = time.perf_counter()
        timing = best_offsets(layer, cuts, tick=_step(ticker, lambda: f"{label} plans"))
        stats.path_s += time.perf_counter() - t0
        if timing is None:
            continue
        evaluated, moved = unroll(start.schedule, block, layer.load_op, timing.offsets, chip, flops, name)
        if better(evaluated):
            best, best_layer, best_cut = evaluated, layer, timing.cut
            stats.start, stats.repaired_loads = label, moved
            stats.path_period_cycles = timing.period
    ticker.finish()
    # Elk searched preload orders of the heavy loads within a layer; here
    # pairwise swaps are kept while the exact timing of the layer improves.
    # The search works on the layer cut where its HBM idles (so a swapped
    # order stays one layer's order): ops best_cut .. of a layer and the ops
    # before best_cut of the next; the partial layer at the start keeps its
    # windows until the seams are re-timed below.
    first = middle
    if reorder and best_layer is not None:
        t0 = time.perf_counter()
        rotated, _ = best_layer.rotated(best_cut)
        layer, stats.order_swaps_tried, stats.order_swaps_kept = search_order(rotated, 0, progress=progress)
        if stats.order_swaps_kept:
            timing = best_offsets(layer, [0])
            shifted = LayerBlock(block.start + best_cut, block.period, block.count - (1 if best_cut else 0))
            if timing is not None:
                evaluated, moved = unroll(best.schedule, shifted, layer.load_op, timing.offsets, chip, flops, name)
                if better(evaluated):
                    best, best_layer, block, first = evaluated, layer, shifted, middle + best_cut
                    stats.repaired_loads = moved
                    stats.path_period_cycles = timing.period
        stats.order_s = time.perf_counter() - t0
    if layer_milp and best_layer is not None:
        options = [
            list(alternatives(best.schedule, first + k)) if alternatives else [best.schedule.ops[first + k].option]
            for k in range(block.period)
        ]
        stats.milp_plan_choices = sum(len(o) > 1 for o in options)
        choices = [np.array([[o.total_cycles, o.exchange_cycles + o.distribution_cycles, o.hot_bytes]
                             for o in opts]) for opts in options]
        movable = heavy_loads(best_layer) if reorder else []
        stats.milp_movable_loads = len(movable)
        model = _build(best_layer, choices=choices, movable=movable)
        stats.milp_binaries = sum(1 for v in model.component_data_objects(pyo.Var) if v.is_binary())
        _warm_start(model, best_layer, best.schedule, best.timeline, first)
        stats.milp = _solve_ticking(model, solver, progress, f"{stats.milp_binaries} binaries")
        if not stats.milp.has_solution:
            log.warning("elkopt: the layer MILP gave no usable solution; the shortest-path layer plan "
                        "is kept (%s)", describe_fallbacks({stats.milp.fallback_reason: 1}))
        if stats.milp.has_solution:
            stats.milp_period_cycles = float(pyo.value(model.T))
            picked = _chosen(model, block.period)
            order = np.argsort([pyo.value(x) for x in model.S], kind="stable")
            schedule = _with_plans(best.schedule, block, first, [opts[a] for opts, a in zip(options, picked)])
            offsets = _windows(model, best_layer)[order]
            ordered = best_layer.reordered(order)
            candidates = [unroll(schedule, block, ordered.load_op, offsets, chip, flops, name)]
            moved_loads = int((order != np.arange(len(order))).sum())
            if any(picked) or moved_loads:  # new plans or order: also their exact load timing
                layer = layer_loads(schedule, chip, first, block.period, max_offset)
                if np.array_equal(layer.load_op, best_layer.load_op):
                    layer = layer.reordered(order)
                    timing = best_offsets(layer, [0])
                    if timing is not None:
                        candidates.append(unroll(schedule, block, layer.load_op, timing.offsets, chip, flops, name))
            for evaluated, moved in candidates:
                if better(evaluated):
                    best = evaluated
                    stats.repaired_loads = moved
                    stats.milp_plans_changed = sum(a > 0 for a in picked)
                    stats.milp_loads_moved = moved_loads
    # The seams (head, tail, first and last layers) are not steady state: re-time
    # the loads of a window of middle layers (unrolled as the steady state), then
    # of the head and the tail segments (`elkopt.schedule.seams`; the whole graph
    # with seam_layers=None) by the same shortest path, with the plans of the
    # best result so far. The work grows with the layer, not with the layers.
    if seams:
        t0 = time.perf_counter()
        n = len(best.schedule.ops)
        whole = seam_layers is None or short_graph(block, seam_layers)
        if not whole:  # first the steady state from a window of middle layers
            ticker = Ticker(progress, "elkopt: seams (load timing over the middle layers)",
                            (STEADY_LAYERS + 1) * block.period)
            evaluated, moved, stats.seam_ops = retime_steady_state(
                best, block, chip, flops, name, max_preload_ops, tick=_step(ticker))
            ticker.finish()
            if better(evaluated):
                stats.seam_steady_gain_cycles = best.timeline.latency_cycles - evaluated.timeline.latency_cycles
                stats.seam_gain_cycles += stats.seam_steady_gain_cycles
                best = evaluated
                stats.repaired_loads = moved
        segments = [(0, n)] if whole else seam_segments(block, idle_loads(best.schedule, best.timeline), seam_layers)
        head_tail_ops = sum(end - first for first, end in segments)
        stats.seam_ops += head_tail_ops
        ticker = Ticker(progress, "elkopt: seams (load timing over the head and tail ops)", head_tail_ops)
        for first, end in segments:
            evaluated, moved = retime_segment(best, first, end, chip, flops, name, max_preload_ops,
                                              tick=_step(ticker))
            if better(evaluated):
                stats.seam_gain_cycles += best.timeline.latency_cycles - evaluated.timeline.latency_cycles
                best = evaluated
                stats.repaired_loads = moved
        ticker.finish()
        stats.seam_s = time.perf_counter() - t0
    stats.layer_cycles = layer_cycles(best)
    stats.wall_s = time.perf_counter() - begin
    return best, stats


def _step(ticker: Ticker, note: Callable[[], str] = lambda: "") -> Callable[[], None]:
    """tick() for `loadtiming`: one more unit of the ticker's work done."""
    return lambda: ticker.update(ticker.done + 1, note())


def _solve_ticking(model: Any, solver: SolverOptions | None, progress: Callable[[str], None] | None,
                   note: str) -> SolveResult:
    """`solve(model, solver, warm_start=True)`, saying every few seconds how
    much of the time limit has passed. HiGHS reports nothing countable while
    it runs (a node limit may stop it sooner), so a watcher thread counts
    seconds; HiGHS solves off the GIL, so the watcher gets its turns."""
    limit = (solver or SolverOptions()).time_limit_s
    ticker = Ticker(progress, f"elkopt: layer MILP, seconds of the {limit:g} s time limit", math.ceil(limit))
    solved = threading.Event()

    def watch() -> None:
        while not solved.wait(1.0):
            ticker.update(min(ticker.total, int(ticker.clock() - ticker.start)), note)

    watcher = threading.Thread(target=watch, name="elkopt-layer-milp-progress", daemon=True)
    watcher.start()
    try:
        result = solve(model, solver, warm_start=True)
    finally:
        solved.set()
        watcher.join()
    ticker.finish(f"{result.status}, {note}")
    return result


def _same_layer(a: LayerLoads, b: LayerLoads) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(LayerLoads))


__all__ = ["LayerBlock", "PeriodicStats", "find_layers", "layer_loads", "plan_alternatives",
           "schedule_periodic", "stitch", "unroll"]
