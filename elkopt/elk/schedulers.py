"""The published Elk schedulers: Basic, Static, Elk-Dyn, Ideal and Elk-Full.

Each `schedule_*` takes the operators (`ElkOp`, execution order), the aggregate HBM
bandwidth in the published unit (GB/s, a load of b bytes takes b / 2^20 / GBps ms), the
core count, SRAM bytes per core, the `layers` of the published command line (no preload
group exceeds n_ops // layers operators) and the `Interconnect`, and returns a typed
result whose `schedule` holds per-operator intervals in cycles (1.325 GHz).
Elk-Full runs every preload order with delay_comp False, then True, and keeps the first
strictly fastest, as published; most candidate orders are abandoned early by the published
rules, the rest stop once a lower bound on their latency exceeds the best found (the
winner is unchanged). `suite.run_published` runs all five as the launch script does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from elkopt.elk.backward import BackwardSchedule, Bound, LoadModel, run_backward
from elkopt.elk.coldhot import ElkOp
from elkopt.elk.designs import BasicDesign, ElkDynDesign, ElkFullDesign, FixedRowDesign
from elkopt.elk.lookup import (ALL_TO_ALL, CYCLES_PER_MS, Interconnect, TableIndex,
                               build_indices)
from elkopt.elk.orders import preload_orders

#: The three Elk-Dyn NoC thresholds of the published launch script, in its order.
ELK_DYN_THRESHOLDS = (0.9, 0.7, 0.5)
#: The published Elk-Full load_noc_threshold.
ELK_FULL_THRESHOLD = 0.99
#: A run is stopped when sure to lose by this relative margin (float noise is ~1e-13).
PRUNE_MARGIN = 1e-9


@dataclass(frozen=True)
class ElkSchedule:
    """One design's schedule. Per operator (execution order): `exe`, `load` (start, end)
    cycles, `cold`, `hot` bytes per core, `comp_cycles`, `shift_cycles`, `load_remain_noc`
    (idle NoC cycles of its load), `preloads` (loads overlapping it), `rows` (the chosen
    row of its cold-hot table); `load_order`."""

    design: str
    exe: np.ndarray
    load: np.ndarray
    cold: np.ndarray
    hot: np.ndarray
    comp_cycles: np.ndarray
    shift_cycles: np.ndarray
    load_remain_noc: np.ndarray
    preloads: np.ndarray
    load_order: tuple[int, ...]
    latency_cycles: float
    rows: np.ndarray

    @property
    def latency_ms(self) -> float:
        return self.latency_cycles / CYCLES_PER_MS

    @property
    def exe_ms(self) -> float:
        """Sum of execution durations (summed in order, as published)."""
        return float(np.add.accumulate(self.exe[:, 1] - self.exe[:, 0])[-1]) / CYCLES_PER_MS

    @property
    def load_ms(self) -> float:
        """Sum of load durations (summed in preload order, as published)."""
        load = self.load[list(self.load_order)]
        return float(np.add.accumulate(load[:, 1] - load[:, 0])[-1]) / CYCLES_PER_MS


def make_schedule(design: str, back: BackwardSchedule,
                  index: Sequence[TableIndex]) -> ElkSchedule:
    """An `ElkSchedule` from a backward pass and the tables its rows index."""
    rows = back.row.tolist()
    pick = lambda name: np.asarray([getattr(t, name)[r] for t, r in zip(index, rows)])
    return ElkSchedule(design, back.exe, back.load, pick("cold"), pick("hot"), pick("comp"),
                       pick("shift"), back.remain, back.preloads, back.load_order,
                       back.latency_cycles, back.row.copy())


@dataclass(frozen=True)
class Problem:
    """The inputs every design shares, with each table's `TableIndex` built once. Pass it
    to any `schedule_*` function in place of the operator list. `noc_gbps`: every design
    delivers loads at this many GB/s per core (None: the published 5, or 5.5 in Elk-Full
    and Ideal); `noc_thresholds`: a load takes at most its design's published share of
    the NoC (off: the whole NoC, and Elk-Dyn runs once)."""

    ops: Sequence[ElkOp]
    hbm_GBps: float
    cores: int
    sram_bytes: int
    layers: int = 1
    interconnect: Interconnect = ALL_TO_ALL
    noc_gbps: float | None = None
    noc_thresholds: bool = True
    index: list[TableIndex] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.ops) < 2:
            raise ValueError("the published schedulers need at least two operators")
        if min(self.hbm_GBps, self.cores, self.sram_bytes, self.layers) <= 0:
            raise ValueError("HBM bandwidth, cores, SRAM and layers must be positive")
        if len(self.ops) // self.layers < 1:
            raise ValueError(f"{len(self.ops)} operators cannot form {self.layers} layers")
        object.__setattr__(self, "ops", list(self.ops))
        object.__setattr__(self, "index", build_indices(self.ops, self.interconnect))

    @property
    def max_load(self) -> int:
        """At most one layer of operators is preloaded (n_ops // layers)."""
        return len(self.ops) // self.layers

    def loads(self, noc_gbps: float, threshold: float | None) -> LoadModel:
        """The load model of a design that delivers at `noc_gbps` per core (published),
        or at `self.noc_gbps` when that is set (every design at the chip's rate), whose
        loads take at most `threshold` of the NoC (1 without `noc_thresholds`; None:
        Ideal's model)."""
        if threshold is not None and not self.noc_thresholds:
            threshold = 1.0
        return LoadModel(self.hbm_GBps, self.cores, self.noc_gbps or noc_gbps, threshold,
                         self.interconnect.mesh)


@dataclass(frozen=True)
class BasicResult:
    """Basic: the faster of the min-cold and max-cold variants (ties: max-cold)."""

    schedule: ElkSchedule
    min_cold: ElkSchedule
    max_cold: ElkSchedule


@dataclass(frozen=True)
class StaticResult:
    """Static: per variant the best execution space (KiB, first of equal latency), and
    the faster variant (ties: min-cold) as `schedule`, `exec_kb`."""

    schedule: ElkSchedule
    exec_kb: int
    min_cold: ElkSchedule
    min_cold_exec_kb: int
    max_cold: ElkSchedule
    max_cold_exec_kb: int


@dataclass(frozen=True)
class ElkDynResult:
    """Elk-Dyn: the fastest threshold's schedule (`schedule`, `threshold`), every
    threshold's, and what the published launch script prints (quirk 3)."""

    schedule: ElkSchedule
    threshold: float
    by_threshold: dict[float, ElkSchedule]
    printed_threshold: float
    printed_ms: float


@dataclass(frozen=True)
class ElkFullResult:
    """The winning `schedule`, its preload `order` and `delay_comp`; how many
    (order, delay_comp) runs there were and how many were scheduled to the end (the rest
    were abandoned by the published rules, or stopped as sure to lose)."""

    schedule: ElkSchedule
    order: tuple[int, ...]
    delay_comp: bool
    runs: int
    completed: int


def as_problem(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None, cores: int | None,
               sram_bytes: int | None, layers: int, interconnect: Interconnect) -> Problem:
    """`ops` itself if it is a `Problem`, else a `Problem` of the other arguments."""
    if isinstance(ops, Problem):
        return ops
    if hbm_GBps is None or cores is None or sram_bytes is None:
        raise TypeError("give hbm_GBps, cores and sram_bytes (or a Problem)")
    return Problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)


def _mesh_toggle(ic: Interconnect, period: int, power: int):
    """The published mesh hack: for 1 <= MESH <= 1.15 `delay_comp` holds only for every
    int(period // MESH**power)-th operator (Elk-Dyn 32 and 13, Static 10 and 10)."""
    if not 1 <= ic.mesh <= 1.15:
        return "compute"
    every = int(period // ic.mesh ** power)
    return lambda i: "compute" if i % every == 0 else "loads"


def schedule_basic(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None = None,
                   cores: int | None = None, sram_bytes: int | None = None,
                   layers: int = 1, interconnect: Interconnect = ALL_TO_ALL) -> BasicResult:
    """Basic ("naive"): double buffering of the next operator with HBM data."""
    pb = as_problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)
    loads = pb.loads(5, 0.7)
    variants = []
    for largest in (False, True):
        design = BasicDesign(pb.index, pb.sram_bytes, pb.max_load, largest)
        back = run_backward(pb.index, loads, design, "compute")
        variants.append(make_schedule("basic", back, pb.index))
    lo, hi = variants
    return BasicResult(lo if lo.latency_cycles < hi.latency_cycles else hi, lo, hi)


def static_rows(pb: Problem, exec_kb: int, largest: bool) -> list[int]:
    """Each operator's baseline pick within an execution space of `exec_kb` KiB."""
    unique = {id(t): t for t in pb.index}.values()
    picks = {id(t): t.baseline_row(exec_kb * 1024, largest) for t in unique}
    return [picks[id(t)] for t in pb.index]


def static_exec_kbs(pb: Problem) -> list[int]:
    """The published sweep: from the largest smallest-hot size (KiB, rounded up) to all
    of SRAM, in 10 KiB steps."""
    low = (max(t.min_hot for t in pb.index) + 1023) // 1024
    return list(range(low, pb.sram_bytes // 1024 + 1, 10))


def schedule_static(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None = None,
                    cores: int | None = None, sram_bytes: int | None = None,
                    layers: int = 1, interconnect: Interconnect = ALL_TO_ALL) -> StaticResult:
    """Static ("baseline"): one execution space for all operators, swept, both variants."""
    pb = as_problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)
    loads = pb.loads(5, 0.7)
    kbs = static_exec_kbs(pb)
    if not kbs:
        raise ValueError("Static: no execution space (KiB) between the largest smallest "
                         "hot size and SRAM")
    best: dict[bool, tuple[float, int, ElkSchedule]] = {}
    for kb in kbs:
        for largest in (False, True):
            rows = static_rows(pb, kb, largest)
            design = FixedRowDesign(pb.index, rows, pb.sram_bytes, pb.max_load,
                                    pb.sram_bytes - kb * 1024)
            back = run_backward(pb.index, loads, design, _mesh_toggle(pb.interconnect, 10, 10))
            if largest not in best or back.latency_cycles < best[largest][0]:
                best[largest] = (back.latency_cycles, kb, make_schedule("static", back, pb.index))
    (_, kb_lo, lo), (_, kb_hi, hi) = best[False], best[True]
    if hi.latency_cycles < lo.latency_cycles:
        return StaticResult(hi, kb_hi, lo, kb_lo, hi, kb_hi)
    return StaticResult(lo, kb_lo, lo, kb_lo, hi, kb_hi)


def schedule_elk_dyn(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None = None,
                     cores: int | None = None, sram_bytes: int | None = None,
                     layers: int = 1, interconnect: Interconnect = ALL_TO_ALL) -> ElkDynResult:
    """Elk-Dyn ("icbm ordered"): program-order preloads, cost-aware SRAM split per op,
    at NoC thresholds 0.9, 0.7 and 0.5 (only 0.7 on a mesh; 1 without
    `Problem.noc_thresholds`)."""
    pb = as_problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)
    keys = [op.key for op in pb.ops]
    thresholds = ELK_DYN_THRESHOLDS if pb.interconnect.mesh < 0.5 else (0.7,)
    if not pb.noc_thresholds:
        thresholds = (1.0,)  # every threshold would be the whole NoC
    runs: dict[float, ElkSchedule] = {}
    for th in thresholds:
        design = ElkDynDesign(pb.index, keys, pb.sram_bytes, pb.max_load)
        contention = _mesh_toggle(pb.interconnect, 32, 13)
        back = run_backward(pb.index, pb.loads(5, th), design, contention)
        if back is None:
            raise ValueError(f"Elk-Dyn found no plan for some operator (threshold {th})")
        runs[th] = make_schedule("elk_dyn", back, pb.index)
    best = min(runs, key=lambda th: runs[th].latency_cycles)
    printed = best
    if len(runs) == 3:
        # quirk 3: strict comparisons, so a tie between 0.9 and 0.7 reports 0.5
        a, b, c = (runs[th].latency_cycles for th in ELK_DYN_THRESHOLDS)
        printed = 0.9 if a < b and a < c else 0.7 if b < a and b < c else 0.5
    return ElkDynResult(runs[best], best, runs, printed, runs[printed].latency_ms)


def schedule_ideal(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None = None,
                   cores: int | None = None, sram_bytes: int | None = None,
                   layers: int = 1, interconnect: Interconnect = ALL_TO_ALL) -> ElkSchedule:
    """Ideal: fastest plans with all of SRAM, preloads limited by min cold sizes only, no
    NoC contention."""
    pb = as_problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)
    rows = [t.best_row(float(pb.sram_bytes), ideal=True) for t in pb.index]
    design = FixedRowDesign(pb.index, rows, pb.sram_bytes, pb.max_load, None)
    back = run_backward(pb.index, pb.loads(5.5, None), design, "none")
    return make_schedule("ideal", back, pb.index)


def elk_full_bound(pb: Problem) -> Bound:
    """The data to stop Elk-Full's runs early (`Bound`) under its load model, no limit yet."""
    return Bound.build(pb.index, pb.loads(5.5, ELK_FULL_THRESHOLD))


def evaluate_order(pb: Problem, order: Sequence[int], delay_comp: bool,
                   bound: Bound | None = None, prefer: Mapping[int, int] | None = None
                   ) -> BackwardSchedule | None:
    """One Elk-Full backward pass for preload `order`; None when the order is abandoned
    (or its latency would exceed `bound.limit`). `prefer`: rows chosen per op where they
    fit (`ElkFullDesign`; not published)."""
    design = ElkFullDesign(pb.index, order, pb.sram_bytes, pb.max_load, prefer)
    loads = pb.loads(5.5, ELK_FULL_THRESHOLD)
    return run_backward(pb.index, loads, design, "compute" if delay_comp else "loads", order,
                        bound)


def schedule_elk_full(ops: Sequence[ElkOp] | Problem, hbm_GBps: float | None = None,
                      cores: int | None = None, sram_bytes: int | None = None,
                      layers: int = 1, interconnect: Interconnect = ALL_TO_ALL,
                      orders: Sequence[Sequence[int]] | None = None,
                      prune: bool = True, prefer: Mapping[int, int] | None = None) -> ElkFullResult:
    """Elk-Full ("icbm"): the fastest of every preload order (default: `preload_orders`)
    x delay_comp in {False, True}; ties go to the earlier order, then to False.

    With `prune`, the identity order runs first and a run stops once its latency is sure
    to exceed the best so far by more than float noise: the winner is unchanged.
    `prefer`: rows chosen per op where they fit (`ElkFullDesign`; not published)."""
    pb = as_problem(ops, hbm_GBps, cores, sram_bytes, layers, interconnect)
    if orders is None:
        orders = preload_orders(pb.ops, pb.layers)
    orders = [tuple(o) for o in orders]
    identity = tuple(range(len(pb.ops)))
    # identity first: it is never abandoned and gives the pruning bound early
    first = sorted(range(len(orders)), key=lambda p: orders[p] != identity)
    best: tuple[float, int, int, BackwardSchedule] | None = None
    completed = 0
    base = elk_full_bound(pb)
    for p in first:
        for dc in (0, 1):
            bound = replace(base, limit=best[0] * (1 + PRUNE_MARGIN)) if prune and best else None
            back = evaluate_order(pb, orders[p], bool(dc), bound, prefer)
            if back is None:
                continue
            completed += 1
            key = (back.latency_cycles, p, dc)
            if best is None or key < best[:3]:
                best = (*key, back)
    if best is None:
        raise ValueError("Elk-Full: every preload order was abandoned")
    _, p, dc, back = best
    return ElkFullResult(make_schedule("elk_full", back, pb.index), orders[p], bool(dc),
                         2 * len(orders), completed)
