"""The published designs as elkopt schedulers: ``scheduler=elk_basic``, ``elk_static``,
``elk_dyn``, ``elk_full`` and ``elk_ideal``.

    graph + chip -> published cold-hot tables -> published designs -> timeline -> check

`compile_elk` gives the graph's operators their published cold-hot tables
(`elkopt.elk.program.elk_ops`), runs Basic, Static, Elk-Dyn and Ideal (and Elk-Full when
it is the one asked for: it is the slow one), and returns the asked design's schedule as
an elkopt `Timeline` (times from 0, the first load's start), checked by
`check_elk_schedule`, with every design's latency beside it.

The machine is the published one: cycles at 1.325 GHz, an all-to-all exchange whose per
core bandwidth scales the published COMM knob (5.5 GB/s is 1), `chip.compute_scale` the
COMP knob. `layers` is the published ``--layers`` (no preload group is longer than
n_ops // layers operators; Elk-Full permutes the groups of one layer); by default the
number of repeats of the graph's layer (`count_layers`).
Operators are cut only by the published capacity split (`conventions.capacity_split`;
`planning.split_fraction` is the elkopt schedulers').

What the published model reserves in SRAM (an operator's hot bytes and the smallest cold
bytes of the loads waiting for later operators, `sram_in_use`) is measured, not enforced:
the published designs move loads earlier under compute contention (delay_comp False)
without re-checking the SRAM, so a schedule can reserve slightly more than the SRAM for a
moment. The excess is logged and reported (metrics.json stats.sram_overcommit_bytes).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from elkopt.chip import PUBLISHED_GB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S, Chip, Topology
from elkopt.conventions import Conventions
from elkopt.elk.lookup import ALL_TO_ALL, CYCLES_PER_MS, Interconnect
from elkopt.elk.program import elk_ops, elk_ops_from_plans, published_hbm_GBps
from elkopt.elk.coldhot import ElkOp
from elkopt.elk.schedulers import (ElkSchedule, Problem, schedule_basic, schedule_elk_dyn,
                                   schedule_elk_full, schedule_ideal, schedule_static)
from elkopt.elk.suite import PublishedResults
from elkopt.elk.texpr import published_type
from elkopt.elk.convert import to_schedule
from elkopt.graph.ir import Graph
from elkopt.schedule import baselines
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import assert_valid
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import compute_timeline
from elkopt.pipeline import PlanningError, PlanningOptions, split_graph
from elkopt.plans.table import InfeasibleOperatorError, TableSet, build_tables
from elkopt.published import DEFAULT_SPLIT_FACTOR
from elkopt.schedule.layers import find_layers
from elkopt.schedule.timeline import ScheduleError, Timeline

#: scheduler name -> the paper's design name.
ELK_SCHEDULERS = {"elk_basic": "Basic", "elk_static": "Static", "elk_dyn": "Elk-Dyn",
                  "elk_full": "Elk-Full", "elk_ideal": "Ideal"}

#: scheduler name -> its key among the references (metrics.json <key>_ms).
REFERENCE_KEYS = {"elk_basic": "basic", "elk_static": "static", "elk_dyn": "elk_dyn", "elk_full": "elk_full",
                  "elk_ideal": "ideal"}

#: What `check_elk_schedule` verifies, in words (metrics.json `verified_checks`).
ELK_CHECKS = (
    "every operator runs in a (cold, hot) pair of its cold-hot table, for at least that pair's cycles",
    "operators run one after another in program order",
    "every operator with HBM data is loaded once, for at least its HBM time, and the load ends "
    "before the operator starts",
    "loads run one after another (one HBM stream)",
)


@dataclass(frozen=True)
class ElkRun:
    """One run of the published designs: the asked design's `schedule` and `timeline`,
    every design's results (`results`), the operators with their tables and the setting.
    On elkopt's plan tables (conventions.published_plans off), `plan` is the design's
    decisions as an elkopt `Schedule`, `timeline` its elkopt timeline, and `timed_ms`
    every design's latency so timed (Ideal keeps its own model's timing: it is a bound)."""

    graph: Graph
    chip: Chip
    scheduler: str
    schedule: ElkSchedule
    timeline: Timeline
    results: PublishedResults
    problem: Problem
    compile_s: float
    stats: dict[str, float | int] = field(default_factory=dict)
    plan: Schedule | None = None
    timed_ms: dict[str, float] = field(default_factory=dict)

    @property
    def design(self) -> str:
        return ELK_SCHEDULERS[self.scheduler]

    @property
    def op_names(self) -> list[str]:
        """The scheduled operators' names: the graph's, ``<name>.part<j>`` for the copies
        of an operator halved by the published capacity split."""
        copies = Counter(op.source for op in self.problem.ops)
        seen: Counter = Counter()
        names = []
        for op in self.problem.ops:
            name = self.graph.ops[op.source].name
            names.append(f"{name}.part{seen[op.source]}" if copies[op.source] > 1 else name)
            seen[op.source] += 1
        return names

    @property
    def references(self) -> dict[str, float]:
        """Latencies in ms beside this run's, keyed as elkopt's references are (basic,
        static, ideal, lower_bound: here the published designs' and `lower_bound_cycles`),
        plus elk_dyn, elk_dyn_printed (section 7 quirk 3) and elk_full when it ran."""
        ms = self.results.latency_ms()
        out = {"basic": ms["Basic"], "static": ms["Static"], "ideal": ms["Ideal"],
               "lower_bound": lower_bound_cycles(self.problem) / CYCLES_PER_MS,
               "elk_dyn": ms["Elk-Dyn"], "elk_dyn_printed": self.results.elk_dyn.printed_ms}
        if "Elk-Full" in ms:
            out["elk_full"] = ms["Elk-Full"]
        return {**out, **self.timed_ms}

    def plan_dict(self) -> dict:
        """plan.json: per operator its (cold, hot) bytes per core, cycles, intervals (the
        timeline's, from 0) and preload group; the load order and the design's choices."""
        tl, s = self.timeline, self.schedule
        res = self.results
        ops = []
        for i, (name, op) in enumerate(zip(self.op_names, self.problem.ops)):
            has_load = not np.isnan(tl.load_start[i])
            ops.append({
                "op": i, "name": name, "published_name": op.name, "graph_op": op.source,
                "cold_bytes": int(s.cold[i]), "hot_bytes": int(s.hot[i]), "table_row": int(s.rows[i]),
                "comp_cycles": float(s.comp_cycles[i]), "shift_cycles": float(s.shift_cycles[i]),
                "exec": [float(tl.exec_start[i]), float(tl.exec_end[i])],
                "load": [float(tl.load_start[i]), float(tl.load_end[i])] if has_load else None,
                "preloads_overlapping": int(s.preloads[i]),
            })
        choices: dict = {"layers": self.problem.layers}
        if self.scheduler == "elk_static":
            choices.update(exec_kb=res.static.exec_kb,
                           variant="min_cold" if s is res.static.min_cold else "max_cold")
        elif self.scheduler == "elk_basic":
            choices["variant"] = "min_cold" if s is res.basic.min_cold else "max_cold"
        elif self.scheduler == "elk_dyn":
            choices.update(threshold=res.elk_dyn.threshold, printed_threshold=res.elk_dyn.printed_threshold)
        elif self.scheduler == "elk_full":
            choices.update(delay_comp=res.elk_full.delay_comp, orders_tried=res.elk_full.runs // 2)
        return {"scheduler": self.scheduler, "design": self.design, "choices": choices,
                "latency_cycles": tl.latency_cycles, "load_order": [int(j) for j in s.load_order],
                "ops": ops}

    def trace_args(self) -> tuple[list[dict], list[dict | None]]:
        """Per operator the args of its execution and load events in trace.json."""
        tl, s = self.timeline, self.schedule
        exec_args = [{"op": i, "cold_bytes": int(s.cold[i]), "hot_bytes": int(s.hot[i]),
                      "comp_cycles": float(s.comp_cycles[i]), "shift_cycles": float(s.shift_cycles[i]),
                      "stall_cycles": float(tl.stall[i])} for i in range(tl.n_ops)]
        load_args = [None if np.isnan(tl.load_start[i]) else
                     {"op": i, "hbm_bytes": _hbm_bytes(self.problem, i),
                      "cold_bytes": int(s.cold[i]), "hbm_cycles": float(tl.hbm_cycles[i]),
                      "noc_cycles": float(tl.noc_cycles[i])} for i in range(tl.n_ops)]
        return exec_args, load_args


def published_machine(chip: Chip) -> tuple[float, Interconnect]:
    """The chip as the published schedulers see it: (HBM in published GB/s, knobs);
    ValueError naming the field the published model cannot represent."""
    if chip.clock_hz != CYCLES_PER_MS * 1e3:
        raise ValueError(f"chip.clock_hz: the published schedulers count cycles at 1.325 GHz, the chip "
                         f"runs at {chip.clock_hz / 1e9:g} GHz; use an elkopt scheduler, or clock_hz=1325000000")
    if chip.topology is not Topology.ALL_TO_ALL:
        raise ValueError(f"chip.topology: the published schedulers model an all-to-all exchange, the chip is "
                         f"a {chip.topology.value}; use an elkopt scheduler (they time mesh and torus routes)")
    comm = chip.core_link_bytes_per_s / REFERENCE_CORE_LINK_BYTES_PER_S
    return published_hbm_GBps(chip.hbm_bytes_per_s), Interconnect(0.0, comm, chip.compute_scale)


def count_layers(graph: Graph) -> int:
    """How many times the graph's layer repeats (1 if none repeats): operators compared by
    their type only, since the published graphs' layers differ in a few shapes."""
    block = find_layers([(op.label, published_type(op)) for op in graph.ops])
    return block.count if block is not None else 1


def compile_elk(graph: Graph, chip: Chip, scheduler: str, conventions: Conventions,
                layers: int | None = None, split_factor: int = DEFAULT_SPLIT_FACTOR,
                options: PlanningOptions | None = None,
                progress: Callable[[str], None] | None = None) -> ElkRun:
    """Run the published designs on `graph` and `chip`; the result holds `scheduler`'s
    schedule, checked (ScheduleError if the check fails).

    Under `conventions.published_plans` the operators get the published cold-hot tables
    (and, under `conventions.capacity_split`, operators above cores // `split_factor` MiB
    are halved first, `elkopt.elk.program.capacity_split`). Otherwise they get elkopt's
    plan tables (`options`: the plan space, the cache and elkopt's cut of large
    operators, applied whenever it cuts), their unique HBM bytes, and every design
    delivers loads at the chip's per-core link rate."""
    if scheduler not in ELK_SCHEDULERS:
        raise ValueError(f"unknown published scheduler {scheduler!r}; choose one of {', '.join(ELK_SCHEDULERS)}")
    if layers is not None and layers < 1:
        raise ValueError(f"planning.layers must be >= 1 (or null: detected), got {layers}")
    if split_factor < 1 or chip.cores // split_factor < 1:
        raise ValueError(f"planning.split_factor must be from 1 to the core count ({chip.cores}), got {split_factor}")
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    hbm_GBps, interconnect = published_machine(chip)
    sram = chip.usable_sram_bytes_per_core
    n_layers = layers or count_layers(graph)
    noc_gbps, tables = None, None
    if conventions.published_plans:
        capacity = chip.cores // split_factor if conventions.capacity_split else None
        ops = elk_ops(graph, chip.cores, sram, conventions.drop_scalar_operands, capacity, progress=say)
        if len(ops) > graph.n_ops:
            say(f"published capacity split ({capacity} MiB): {graph.n_ops} -> {len(ops)} operators")
    else:
        options = options or PlanningOptions()
        whole = graph
        graph, _report = split_graph(graph, chip, options)
        if graph is not whole:
            say(f"cut operators reading more than {options.split_fraction:g} of the SRAM from HBM: "
                f"{whole.n_ops} -> {graph.n_ops} operators")
        try:
            tables = build_tables(graph, chip, options.max_spatial_splits, options.cache_dir, progress=say)
        except InfeasibleOperatorError as err:
            raise PlanningError(str(err)) from None
        ops = elk_ops_from_plans(graph, tables)
        # elkopt's plan costs hold the link rate and the compute scale already
        interconnect, noc_gbps = ALL_TO_ALL, chip.core_link_bytes_per_s / PUBLISHED_GB_PER_S
    tables_s = time.perf_counter() - start
    if len(ops) // n_layers < 1:
        raise ValueError(f"planning.layers={n_layers} is more than the graph's {len(ops)} operators")
    pb = Problem(ops, hbm_GBps, chip.cores, sram, n_layers, interconnect, noc_gbps)
    timings: dict[str, float] = {}

    def timed(name: str, run: Callable):
        say(f"published design: {name}")
        began = time.perf_counter()
        out = run(pb)
        timings[name] = time.perf_counter() - began
        return out

    basic = timed("Basic", schedule_basic)
    static = timed("Static", schedule_static)
    dyn = timed("Elk-Dyn", schedule_elk_dyn)
    ideal = timed("Ideal", schedule_ideal)
    full = timed("Elk-Full", schedule_elk_full) if scheduler == "elk_full" else None
    results = PublishedResults(basic, static, dyn, ideal, full)
    chosen = {"elk_basic": basic.schedule, "elk_static": static.schedule, "elk_dyn": dyn.schedule,
              "elk_ideal": ideal, "elk_full": full.schedule if full else None}[scheduler]
    timeline = elk_timeline(chosen, pb, graph.total_flops)
    plan, timed = None, {}
    if tables is not None:  # elkopt's accounting: the designs' decisions on elkopt's timeline
        say("timing the published designs' decisions on elkopt's timeline")
        designs = {"basic": basic.schedule, "static": static.schedule, "elk_dyn": dyn.schedule,
                   "elk_dyn_printed": dyn.by_threshold[dyn.printed_threshold]}
        if full is not None:
            designs["elk_full"] = full.schedule
        evaluated = {key: _on_elkopt_timeline(s, ops, graph, tables, chip, key) for key, s in designs.items()}
        timed = {key: ev.timeline.latency_ms for key, ev in evaluated.items()}
        timed["lower_bound"] = baselines.lower_bound_cycles(graph, tables, chip) * 1e3 / chip.clock_hz
        if scheduler != "elk_ideal":  # Ideal is a bound, not a schedule: its model's timing stays
            key = REFERENCE_KEYS[scheduler]
            plan, timeline = evaluated[key].schedule, evaluated[key].timeline
    problems = check_elk_schedule(chosen, pb)
    if problems:
        raise ScheduleError(f"the {ELK_SCHEDULERS[scheduler]} schedule breaks {len(problems)} rules: "
                            + "; ".join(problems[:3]))
    over = float((sram_in_use(chosen, pb) - sram).max())
    if over > 0:
        say(f"the {ELK_SCHEDULERS[scheduler]} schedule reserves up to {over:,.0f} B per core more than the "
            f"{sram:,} B of SRAM (as the published design does: sram_overcommit_bytes in metrics.json)")
    stats: dict[str, float | int] = {
        "unique_ops": len({op.key for op in ops}),
        "plan_table_s": round(tables_s, 3),
        "plan_options": sum(len(t.cold) for t in {id(op.table): op.table for op in ops}.values()),
        "layers": n_layers,
        "sram_overcommit_bytes": max(0, int(np.ceil(over))),
        "split_ops": sum(1 for k in Counter(op.source for op in ops).values() if k > 1),
        "split_copies_added": len(ops) - graph.n_ops,
        **{f"{name.lower().replace('-', '_')}_s": round(s, 3) for name, s in timings.items()},
    }
    if full is not None:
        stats.update(elk_full_orders=full.runs // 2, elk_full_runs_completed=full.completed,
                     elk_full_delay_comp=int(full.delay_comp))
    return ElkRun(graph, chip, scheduler, chosen, timeline, results, pb, time.perf_counter() - start, stats,
                  plan, timed)


def _on_elkopt_timeline(schedule: ElkSchedule, ops: list[ElkOp], graph: Graph, tables: TableSet, chip: Chip,
                        name: str) -> Evaluated:
    """A published design's decisions timed on elkopt's timeline and checked by elkopt's
    checker (`elkopt.elk.convert`)."""
    plan = to_schedule(schedule, ops, graph, tables, name)
    timeline = compute_timeline(plan, chip, [op.flops for op in graph.ops])
    assert_valid(plan, chip, [graph.dependencies(i) for i in range(graph.n_ops)], timeline)
    return Evaluated(plan, timeline)


def _hbm_bytes(pb: Problem, i: int) -> int:
    """What op i's load streams: its table's unique bytes, or (published) min cold x cores."""
    t = pb.index[i]
    return t.hbm_bytes if t.hbm_bytes >= 0 else t.min_cold * pb.cores


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


__all__ = ["ELK_CHECKS", "ELK_SCHEDULERS", "ElkRun", "check_elk_schedule", "compile_elk", "count_layers",
           "elk_timeline", "lower_bound_cycles", "published_machine", "sram_in_use"]
