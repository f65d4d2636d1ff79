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
   shortest path (busy periods of the HBM between operator starts).
2. The preload order of the layer's heavy loads is searched by pairwise
   swaps, each order timed exactly by the same path (`search_order`).
3. Optionally (`layer_milp=True`), a layer-periodic MILP over the same
   decisions, each op's executing plan (among the rows of its plan table
   with the same preload layout, `plan_alternatives`) and the place of the
   heavy loads in the issue order (sequencing binaries) polishes it,
   warm-started from steps 1-2, within the solver's node limit (see `_build`
   for the formulation). It can place the cycle's seam anywhere, which the
   shortest path cannot.
4. The per-layer windows are unrolled over every layer, loads that would
   overflow SRAM at the seams are deferred, and then every load of the
   whole graph is re-timed by the same shortest path (the seams: head,
   tail, first and last layers). Each candidate is evaluated by the
   timeline and kept only if the independent checker finds nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Hashable

import numpy as np
import pyomo.environ as pyo

from elkopt.chip import Chip
from elkopt.graph.ir import Graph
from elkopt.plans.option import PlanOption
from elkopt.plans.table import PlanTable
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.loadtiming import LayerLoads, best_offsets, best_path
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.schedule.timeline import ScheduleError, compute_timeline, load_duration_and_rate
from elkopt.solve import SolveResult, SolverOptions, describe_fallbacks, solve

log = logging.getLogger(__name__)


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
            "seam_gain_cycles": round(self.seam_gain_cycles, 1),
            "periodic_s": round(self.wall_s, 3),
        }


def layer_loads(schedule: Schedule, chip: Chip, first: int, period: int, max_offset: int) -> LayerLoads:
    """The decisions of the layer starting at op `first`, as load-timing data;
    its loads in the order the schedule issues them."""
    ops = schedule.ops[first : first + period]
    duration, rate = load_duration_and_rate(schedule, chip)
    loads = [j for j in schedule.preload_order if first <= j < first + period]
    duration, rate = duration[loads], rate[loads]
    loads = [j - first for j in loads]
    return LayerLoads(
        nominal=np.array([o.option.total_cycles for o in ops]),
        exchange=np.array([o.option.exchange_cycles + o.option.distribution_cycles for o in ops]),
        hot=np.array([o.option.hot_bytes for o in ops], dtype=np.float64),
        load_op=np.array(loads, dtype=np.int64),
        duration=duration,
        rate=rate,
        cold=np.array([ops[k].option.cold_bytes for k in loads], dtype=np.float64),
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
            windows[j] = j if offset == 0 else max(PROLOGUE, j - int(offset))
            layered.append(j)
    end = block.start + block.count * block.period
    order = [j for j in schedule.preload_order if j < block.start]
    order += layered + [j for j in schedule.preload_order if j >= end]
    windows, moved = _fit_sram(schedule, windows, chip.usable_sram_bytes_per_core)
    ops = tuple(
        replace(o, preload_window=int(windows[i])) if o.has_load else o for i, o in enumerate(schedule.ops)
    )
    candidate = replace(schedule, ops=ops, preload_order=tuple(order), scheduler=name)
    try:
        return Evaluated(candidate, compute_timeline(candidate, chip, flops)), moved
    except ScheduleError:
        return None, moved  # a deadlock: the caller keeps what it had


def schedule_periodic(
    graph: Graph, starts: Sequence[tuple[str, Evaluated]], chip: Chip, **options: Any
) -> tuple[Evaluated, PeriodicStats]:
    """Re-time the loads of each (name, schedule) start layer-periodically;
    return the fastest valid result (a start itself if nothing beats it).
    `options` are those of `stitch`."""
    return stitch(
        starts, chip,
        signatures=[op.signature for op in graph.ops],
        dependencies=[graph.dependencies(i) for i in range(graph.n_ops)],
        flops=[op.flops for op in graph.ops],
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
    reorder: bool = True,
    alternatives: Callable[[Schedule, int], Sequence[PlanOption]] | None = None,
) -> tuple[Evaluated, PeriodicStats]:
    """`schedule_periodic` on plain data: per op a signature (equal for the
    same op in every layer), its dependencies and FLOPs.

    alternatives(schedule, j): the plans op j may execute in instead of its
    own in `schedule` (its own first), keeping its preload layout; the layer
    MILP then chooses plans too (`plan_alternatives` builds them from plan
    tables). None: plans stay as the starts have them.
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
    seen: list[LayerLoads] = []

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

    for label, start in starts:
        layer = layer_loads(start.schedule, chip, middle, block.period, max_offset)
        if any(_same_layer(layer, other) for other in seen):
            continue  # the same plans: the same timing
        seen.append(layer)
        t0 = time.perf_counter()
        timing = best_offsets(layer, seam_candidates(layer))
        stats.path_s += time.perf_counter() - t0
        if timing is None:
            continue
        evaluated, moved = unroll(start.schedule, block, layer.load_op, timing.offsets, chip, flops, name)
        if better(evaluated):
            best, best_layer, best_cut = evaluated, layer, timing.cut
            stats.start, stats.repaired_loads = label, moved
            stats.path_period_cycles = timing.period
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
        layer, stats.order_swaps_tried, stats.order_swaps_kept = search_order(rotated, 0)
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
        stats.milp = solve(model, solver, warm_start=True)
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
    # The seams (head, tail, first and last layers) are not steady state:
    # re-time every load of the whole graph by the same shortest path, with
    # the plans of the best result so far.
    if seams:
        t0 = time.perf_counter()
        whole = layer_loads(best.schedule, chip, 0, len(best.schedule.ops), max_preload_ops)
        timing = best_path(whole)
        stats.seam_s = time.perf_counter() - t0
        if timing is not None:
            evaluated, moved = unroll(best.schedule, LayerBlock(0, len(best.schedule.ops), 1),
                                      whole.load_op, timing.offsets, chip, flops, name)
            if better(evaluated):
                stats.seam_gain_cycles = best.timeline.latency_cycles - evaluated.timeline.latency_cycles
                best = evaluated
                stats.repaired_loads = moved
    stats.layer_cycles = layer_cycles(best)
    stats.wall_s = time.perf_counter() - begin
    return best, stats


#: The preload-order search swaps at most this many loads: the longest ones,
#: which carry almost all HBM bytes of a layer (six in a Llama layer).
MAX_REORDERED_LOADS = 8


def heavy_loads(layer: LayerLoads) -> list[int]:
    """The loads whose order is searched: each at least 1% of the layer's
    execution, the MAX_REORDERED_LOADS longest (indices into the loads)."""
    long_enough = layer.duration >= 0.01 * float(layer.nominal.sum())
    longest = np.argsort(-layer.duration, kind="stable")[:MAX_REORDERED_LOADS]
    return sorted(int(h) for h in longest if long_enough[h])


def search_order(layer: LayerLoads, cut: int, rounds: int = 3) -> tuple[LayerLoads, int, int]:
    """Swap pairs of the layer's heavy loads (each at least 1% of the layer's
    execution; the MAX_REORDERED_LOADS longest) in its issue order, keeping a
    swap when the exact timing (cut at `cut`) gets shorter; up to `rounds`
    passes. Returns the layer in the best order found, the swaps tried and
    the swaps kept."""
    heavy = heavy_loads(layer)
    found = best_offsets(layer, [cut])
    if found is None:
        return layer, 0, 0
    period, tried, kept = found.period, 0, 0
    for _ in range(rounds):
        improved = False
        for a, b in itertools.combinations(heavy, 2):
            order = np.arange(layer.n_loads)
            order[[a, b]] = order[[b, a]]
            trial = layer.reordered(order)
            tried += 1
            timing = best_offsets(trial, [cut])
            if timing is not None and timing.period < period - 1e-6:
                layer, period = trial, timing.period
                kept += 1
                improved = True
        if not improved:
            break
    return layer, tried, kept


def _same_layer(a: LayerLoads, b: LayerLoads) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(LayerLoads))


def _build(
    d: LayerLoads,
    periodic: bool = True,
    choices: Sequence[np.ndarray] | None = None,
    movable: Sequence[int] = (),
) -> pyo.ConcreteModel:
    """The layer-periodic MILP over the load windows and, with `choices`, the
    executing plan of each op.

    Per op k: c[k] its HBM-busy prefix, e[k] HBM work during its stall,
    V[k] the HBM work done when it starts (a position on the work axis where
    the layer's loads occupy [0, P]), wait[k] for its own load, stall[k].
    Binaries: full/through (the op is busy to its end), z (a busy period
    that ends inside op k ends at a load boundary: loads never pause), r
    (a load has been issued by op k: SRAM), q (issued before op k's nominal
    end), p (it has not finished), and
    w[h, k] the work of load h inside op k, bounded by the overlap of the
    two stretches of the work axis; stall >= exchange + sum rate * w - nominal.
    Minimises the layer's length. periodic=False: the ops are a whole graph
    instead (no layer before or after; the HBM starts at time 0, and op 0
    waits for its own load).

    choices[k]: rows (nominal cycles, exchange cycles, hot bytes) of the plans
    op k may execute in, the first its plan in `d`; binaries x[k, a] pick one.
    Alternatives must keep the op's preload layout (the loads do not change).
    Without choices every op keeps its plan.

    movable: loads (indices into d's loads) whose place in the issue order is
    chosen too: sequencing binaries y[g, h] (g before h, g < h) for every
    pair with a movable load, transitive over every triple; the other loads
    keep their order. A load's stretch of the work axis then starts at
    S[h] = sum of the durations of the loads before it.
    """
    K = len(d.nominal)
    loads = [int(k) for k in d.load_op]
    H = len(loads)
    if choices is None:
        choices = [np.array([[d.nominal[k], d.exchange[k], d.hot[k]]]) for k in range(K)]
    choices = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in choices]
    if len(choices) != K or any(len(c) == 0 for c in choices):
        raise ValueError(f"choices needs at least one plan for each of the {K} ops")
    per_layer = float(d.duration.sum())
    ends = np.cumsum(d.duration).tolist()  # L[h]: HBM work done when load h ends (d's order)
    starts = [0.0] + ends[:-1]
    # Big-M constants from the ranges they span: stalls are at most the
    # exchange; HBM work positions lie in [-P, 2P] plus stall work.
    stall_max = [max(0.0, float(c[:, 1].max())) for c in choices]
    nominal_max = [float(c[:, 0].max()) for c in choices]
    big_stall = float(sum(stall_max)) + 1.0
    big_work = 3.0 * per_layer + big_stall
    big = big_work
    m = pyo.ConcreteModel(name="layer")
    m.plans = pyo.Set(initialize=[(k, a) for k in range(K) for a in range(len(choices[k]))], dimen=2)
    m.x = pyo.Var(m.plans, domain=pyo.Binary)  # op k executes in plan a
    for k in range(K):
        if len(choices[k]) == 1:
            m.x[k, 0].fix(1)

    def pick(k: int, column: int):  # the chosen plan's nominal / exchange / hot of op k
        return pyo.quicksum(float(choices[k][a, column]) * m.x[k, a] for a in range(len(choices[k])))

    nominal = [pick(k, 0) for k in range(K)]

    # The issue order: S[h], E[h] where load h's stretch of the work axis
    # starts and ends (constants unless a movable load may pass it).
    movable = sorted(set(int(h) for h in movable))
    sequenced = [(g, h) for g, h in itertools.combinations(range(H), 2) if g in movable or h in movable]
    m.seq = pyo.Set(initialize=sequenced, dimen=2)
    m.y = pyo.Var(m.seq, domain=pyo.Binary)  # y[g, h]: load g (g < h) is issued before load h

    def before(g: int, h: int):
        if (min(g, h), max(g, h)) not in m.seq:
            return 1.0 if g < h else 0.0
        return m.y[g, h] if g < h else 1 - m.y[h, g]

    S = [starts[h] if not any(h in pair for pair in sequenced)
         else pyo.quicksum(float(d.duration[g]) * before(g, h) for g in range(H) if g != h)
         for h in range(H)]
    E = [S[h] + float(d.duration[h]) for h in range(H)]
    m.order = pyo.ConstraintList()
    for a, b, c in itertools.combinations(range(H), 3):
        if {a, b, c} & set(movable):  # transitivity: a before b before c means a before c
            m.order.add(before(a, b) + before(b, c) - before(a, c) <= 1)
            m.order.add(before(a, c) - before(a, b) - before(b, c) <= 0)
    m.c = pyo.Var(range(K), bounds=lambda _, k: (0.0, nominal_max[k]))  # HBM-busy prefix of op k
    m.e = pyo.Var(range(K), bounds=lambda _, k: (0.0, stall_max[k]))  # HBM work in op k's stall
    m.full = pyo.Var(range(K), domain=pyo.Binary)  # op k's nominal interval entirely HBM-busy
    m.through = pyo.Var(range(K), domain=pyo.Binary)  # ... and its stall too
    m.wait = pyo.Var(range(K), bounds=(0.0, per_layer))  # op k waiting for its load
    for k in range(K):
        if k not in loads:
            m.wait[k].fix(0.0)  # only an op whose data is loading waits
    work_range = (-per_layer, 2 * per_layer) if periodic else (0.0, per_layer)
    m.V = pyo.Var(range(K), bounds=work_range)  # HBM work done when op k starts
    m.stall = pyo.Var(range(K), bounds=lambda _, k: (0.0, stall_max[k]))

    def Y(k):  # HBM work done at the end of op k's nominal interval
        return m.V[k] + m.c[k]

    def X(k):  # ... and at the end of its busy prefix (the stall included)
        return m.V[k] + m.c[k] + m.e[k]

    m.flow = pyo.ConstraintList()
    for k in range(K):
        if len(choices[k]) > 1:
            m.flow.add(pyo.quicksum(m.x[k, a] for a in range(len(choices[k]))) == 1)
        m.flow.add(m.c[k] <= nominal[k])
        m.flow.add(m.c[k] >= nominal[k] - nominal_max[k] * (1 - m.full[k]))
        m.flow.add(m.through[k] <= m.full[k])
        m.flow.add(m.e[k] <= m.stall[k])
        m.flow.add(m.e[k] <= stall_max[k] * m.full[k])
        m.flow.add(m.e[k] >= m.stall[k] - stall_max[k] * (1 - m.through[k]))
        if k + 1 < K:
            m.flow.add(m.V[k + 1] == X(k) + m.wait[k + 1])
        elif periodic:
            m.flow.add(m.V[0] + per_layer == X(k) + m.wait[0])
    if not periodic:
        m.flow.add(m.V[0] == m.wait[0])  # the HBM runs from time 0
    # an op starts once its data is loaded, and waits only while its own load
    # is still running: then its start is exactly that load's end
    m.waiting = pyo.Var(loads, domain=pyo.Binary)
    for h, k in enumerate(loads):
        m.flow.add(m.V[k] >= E[h])
        m.flow.add(m.wait[k] <= per_layer * m.waiting[k])
        m.flow.add(m.V[k] <= E[h] + 3 * per_layer * (1 - m.waiting[k]))

    # A busy period ends inside op k (not through) only where a load ends:
    # loads are never paused. Candidate boundaries: the end of any load that
    # may have started by op k (this layer's, the previous layer's and, in
    # steady state, the next layer's), or 0 (nothing loaded yet).
    cands = []  # (op, boundary id); fixed boundaries closer than a cycle are merged
    point_of: dict[tuple[int, int], float] = {}  # the boundary in d's order (warm start)
    point_expr: dict[tuple[int, int], Any] = {}  # ... and as the model places it
    for k in range(K):
        points = [(0.0, 0.0)]
        for h, kh in enumerate(loads):
            shifts = [0] if kh - k <= d.max_offset else []
            if periodic:
                shifts += [-1] + ([1] if kh + K - k <= d.max_offset else [])
            points += [(ends[h] + x * per_layer, E[h] + x * per_layer) for x in shifts]
        fixed = sorted(value for value, expr in points if isinstance(expr, float))
        kept: list[tuple[float, Any]] = []
        for x in fixed:
            if not kept or x - kept[-1][0] >= 1.0:
                kept.append((x, x))
        kept += [(value, expr) for value, expr in points if not isinstance(expr, float)]
        for b, (value, expr) in enumerate(kept):
            cands.append((k, b))
            point_of[k, b] = value
            point_expr[k, b] = expr
    m.cands = pyo.Set(initialize=cands, dimen=2)
    m.z = pyo.Var(m.cands, domain=pyo.Binary)
    m.align = pyo.ConstraintList()
    for k in range(K):
        mine = [c for c in cands if c[0] == k]
        m.align.add(pyo.quicksum(m.z[c] for c in mine) == 1 - m.through[k])
        for c in mine:
            m.align.add(X(k) - point_expr[c] <= big * (1 - m.z[c]))
            m.align.add(point_expr[c] - X(k) <= big * (1 - m.z[c]))

    # SRAM: a load counts from the op during which it starts until its own op.
    # Tiny loads (a few bytes per core, a few cycles) are not tracked: their
    # bytes are reserved throughout, and their work is the `ignored` slack.
    tiny = [h for h in range(H) if d.duration[h] < 16.0 and d.cold[h] <= 1024.0]
    reserve = 2.0 * float(sum(d.cold[h] for h in tiny))
    held = []
    for h, kh in enumerate(loads):
        if h in tiny:
            continue
        for k in range(K):
            if k < kh and kh - k <= d.max_offset:
                held.append((h, k, 0, S[h]))
            if periodic and kh + K - k <= d.max_offset:
                held.append((h, k, 1, S[h] + per_layer))
    m.held = pyo.Set(initialize=[x[:3] for x in held], dimen=3)
    m.r = pyo.Var(m.held, domain=pyo.Binary)
    m.sram = pyo.ConstraintList()
    for h, k, nxt, point in held:
        m.sram.add(X(k) - point <= big * m.r[h, k, nxt])
    for h, kh in enumerate(loads):  # never earlier than max_offset ops ahead
        for k in range(K):
            early = k < kh and kh - k > d.max_offset
            if early or (periodic and k >= kh and kh + K - k > d.max_offset):
                point = S[h] + (per_layer if k >= kh else 0.0)
                m.sram.add(X(k) <= point)
    for k in range(K):
        terms = [float(d.cold[h]) * m.r[h, kk, nxt] for (h, kk, nxt, _) in held if kk == k]
        if terms:
            m.sram.add(pick(k, 2) + pyo.quicksum(terms) <= d.sram - reserve)

    # Which load's work fills op k's busy prefix: w <= the overlap of [V_k, X_k]
    # with the load's stretch [S, S + D] of the work axis (r: started by X_k,
    # p: not finished at V_k); the w of op k add up to its prefix, so each is
    # the overlap exactly, and the op's interconnect load is sum rate * w.
    ignored = float(sum(d.duration[h] for h in tiny))
    pairs = [(h, k, nxt) for (h, k, nxt, _) in held]
    m.pairs = pyo.Set(initialize=pairs, dimen=3)
    m.p = pyo.Var(m.pairs, domain=pyo.Binary)
    m.q = pyo.Var(m.pairs, domain=pyo.Binary)  # started before op k's nominal end
    m.w = pyo.Var(m.pairs, bounds=lambda _, h, k, nxt: (0.0, float(d.duration[h])))
    m.share = pyo.ConstraintList()
    for h, k, nxt in pairs:
        begin = S[h] + nxt * per_layer
        end = E[h] + nxt * per_layer
        D = float(d.duration[h])
        m.share.add(Y(k) - begin <= big * m.q[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= D * m.q[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= Y(k) - begin + big * (1 - m.q[h, k, nxt]))
        m.share.add(end - m.V[k] <= big * m.p[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= D * m.p[h, k, nxt])
        m.share.add(m.w[h, k, nxt] <= end - m.V[k] + big * (1 - m.p[h, k, nxt]))
    for k in range(K):
        mine = [c for c in pairs if c[1] == k]
        filled = pyo.quicksum(m.w[c] for c in mine)
        m.share.add(filled <= m.c[k])
        m.share.add(filled >= m.c[k] - ignored)
        busy = pyo.quicksum(float(d.rate[c[0]]) * m.w[c] for c in mine)
        m.share.add(m.stall[k] >= pick(k, 1) + busy - nominal[k])

    m.T = pyo.Expression(expr=pyo.quicksum(nominal[k] + m.stall[k] + m.wait[k] for k in range(K)))
    m.obj = pyo.Objective(expr=m.T, sense=pyo.minimize)
    m.ends = ends
    m.starts = starts
    m.S = S
    m.point_of = point_of
    m.per_layer = per_layer
    return m


def _warm_start(model, d: LayerLoads, schedule: Schedule, timeline, first: int) -> None:
    """Set the binaries (and the flows) from the starting schedule's layer at
    `first`: a MIP start that HiGHS completes with an LP, or discards."""
    K = len(d.nominal)
    loads = list(schedule.preload_order)
    ls = np.array([timeline.load_start[j] for j in loads])
    le = np.array([timeline.load_end[j] for j in loads])
    # HBM work of this layer's loads and later, at time t
    origin = loads.index(first + int(d.load_op[0])) if len(d.load_op) else 0
    done_before = float((le[:origin] - ls[:origin]).sum())

    def work(t: float) -> float:
        return float(np.clip(t - ls, 0.0, le - ls).sum()) - done_before

    for k in range(K):
        j = first + k
        start = float(timeline.exec_start[j])
        nominal_end = start + float(d.nominal[k])
        busy = float(np.clip(np.minimum(le, nominal_end) - np.maximum(ls, start), 0.0, None).sum())
        _set(model.V[k], work(start))
        _set(model.c[k], min(busy, float(d.nominal[k])))
        full = busy >= float(d.nominal[k]) - 1e-6
        _set(model.full[k], 1.0 if full else 0.0)
        stall_end = float(timeline.exec_end[j])
        in_stall = float(np.clip(np.minimum(le, stall_end) - np.maximum(ls, nominal_end), 0.0, None).sum())
        _set(model.e[k], in_stall if full else 0.0)
        through = full and in_stall >= stall_end - nominal_end - 1e-6
        _set(model.through[k], 1.0 if through else 0.0)
        previous_end = float(timeline.exec_end[j - 1]) if j else 0.0
        if not model.wait[k].fixed:
            wait = max(0.0, start - previous_end)
            _set(model.wait[k], wait)
            _set(model.waiting[k], 1.0 if wait > 1e-9 else 0.0)
        _set(model.stall[k], float(timeline.stall[j]))
    for k, a in model.plans:
        _set(model.x[k, a], 1.0 if a == 0 else 0.0)
    for g, h in model.seq:
        _set(model.y[g, h], 1.0)  # the order of d
    for c in model.cands:
        _set(model.z[c], 0.0)
    for k in range(K):
        if model.through[k].value > 0.5:
            continue
        x = model.V[k].value + model.c[k].value + model.e[k].value
        best = min((c for c in model.cands if c[0] == k), key=lambda c: abs(x - model.point_of[c]))
        _set(model.z[best], 1.0)
    for h, k, nxt in model.held:
        x = model.V[k].value + model.c[k].value + model.e[k].value
        point = model.starts[h] + nxt * model.per_layer
        _set(model.r[h, k, nxt], 1.0 if x > point + 1e-6 else 0.0)
    for h, k, nxt in model.pairs:
        v, x = model.V[k].value, model.V[k].value + model.c[k].value
        lo, hi = model.starts[h] + nxt * model.per_layer, model.ends[h] + nxt * model.per_layer
        _set(model.p[h, k, nxt], 1.0 if hi > v + 1e-6 else 0.0)
        _set(model.q[h, k, nxt], 1.0 if x > lo + 1e-6 else 0.0)
        _set(model.w[h, k, nxt], max(0.0, min(x, hi) - max(v, lo)))


def _chosen(model, K: int) -> list[int]:
    """Per op of the layer, the index of the plan the MILP picked."""
    picked = [0] * K
    for k, a in model.plans:
        if pyo.value(model.x[k, a]) > 0.5:
            picked[k] = a
    return picked


def _with_plans(schedule: Schedule, block: LayerBlock, first: int, plans: Sequence[PlanOption]) -> Schedule:
    """`schedule` with the ops of every layer of `block` at the positions of
    ops first.. executing in `plans`, where they had the same plan as the
    op at `first` + position (a layer that differs keeps its own)."""
    ops = list(schedule.ops)
    for k, plan in enumerate(plans):
        own = schedule.ops[first + k].option
        if plan == own:
            continue
        for layer in range(block.count):
            j = block.start + layer * block.period + (first - block.start) % block.period + k
            if j < len(ops) and ops[j].option == own:
                ops[j] = replace(ops[j], option=plan)
    return replace(schedule, ops=tuple(ops))


def plan_alternatives(tables: Sequence[PlanTable], limit: int = 6) -> Callable[[Schedule, int], list[PlanOption]]:
    """alternatives(schedule, j) for `stitch`: op j's own plan, then up to
    `limit` - 1 other rows of its plan table with the same preload layout
    (same spatial split and cold split; any row for an op without HBM data),
    not dominated in (total cycles, exchange cycles, hot bytes), fastest
    first."""

    def alternatives(schedule: Schedule, j: int) -> list[PlanOption]:
        own = schedule.ops[j].option
        table = tables[j]
        same = np.ones(len(table), dtype=bool)
        if schedule.ops[j].has_load:
            same &= (table.spatial == np.array(own.plan.spatial)).all(axis=1)
            same &= (table.cold_split == np.array(own.cold_split)).all(axis=1)
            same &= table.cold_bytes == own.cold_bytes
        rows = np.flatnonzero(same)
        total = table.total_cycles[rows]
        exchange = table.exchange_cycles[rows] + table.distribution_cycles[rows]
        hot = table.hot_bytes[rows].astype(np.float64)
        keep = []
        for i in np.argsort(total, kind="stable"):
            dominated = any(total[q] <= total[i] and exchange[q] <= exchange[i] and hot[q] <= hot[i]
                            and (total[q], exchange[q], hot[q]) != (total[i], exchange[i], hot[i])
                            for q in keep)
            if not dominated:
                keep.append(i)
        result = [own]
        for i in keep:
            option = table.option(int(rows[i]))
            if option != own and len(result) < limit:
                result.append(option)
        return result

    return alternatives


def _set(var, value: float) -> None:
    """Set a start value, clipped into the variable's bounds (floating-point
    noise can put it a hair outside)."""
    if var.fixed:
        return
    if var.lb is not None:
        value = max(value, var.lb)
    if var.ub is not None:
        value = min(value, var.ub)
    var.set_value(value)


def _windows(model, d: LayerLoads, periodic: bool = True) -> np.ndarray:
    """Per load of the layer: how many ops before its own it is issued
    (0: when the op before it ends), from where its HBM work starts."""
    K = len(d.nominal)
    V = [pyo.value(model.V[k]) for k in range(K)]
    X = [V[k] + pyo.value(model.c[k]) + pyo.value(model.e[k]) for k in range(K)]
    offsets = np.zeros(len(d.load_op), dtype=np.int64)
    tol = 1e-6 * max(1.0, model.per_layer)
    for h, kh in enumerate(int(k) for k in d.load_op):
        begin = float(pyo.value(model.S[h]))  # where the model placed it in the order
        offset = 0
        # ops of this layer before kh, then the previous layer's (work shifted by one layer)
        for back in range(1, d.max_offset + 1):
            if not periodic and back > kh:
                break
            k = (kh - back) % K
            shift = 0.0 if kh - back >= 0 else model.per_layer
            if X[k] - shift > begin + tol and V[k] - shift <= begin + tol:
                offset = back
                break
        offsets[h] = offset
    return offsets


def _fit_sram(schedule: Schedule, windows: np.ndarray, sram: float) -> tuple[np.ndarray, int]:
    """Defer loads until, at every op, hot bytes + cold bytes of loads issued
    at or before it and not yet consumed fit; returns (windows, loads moved)."""
    ops = schedule.ops
    n = len(ops)
    windows = windows.copy()
    cold = np.array([o.option.cold_bytes if o.has_load else 0 for o in ops], dtype=np.float64)
    loads = [j for j in range(n) if ops[j].has_load]
    moved = set()
    for i in range(n):
        while True:
            held = [j for j in loads if j > i and max(windows[j], 0) <= i and windows[j] != j]
            if ops[i].option.hot_bytes + cold[held].sum() <= sram or not held:
                break
            j = max(held)
            windows[j] = i + 1 if i + 1 < j else j
            moved.add(j)
    return windows, len(moved)


__all__ = ["LayerBlock", "PeriodicStats", "find_layers", "layer_loads", "plan_alternatives",
           "schedule_periodic", "stitch", "unroll"]
