"""The published designs as elkopt schedulers: ``scheduler=elk_basic``, ``elk_static``,
``elk_dyn``, ``elk_full`` and ``elk_ideal``.

    graph + chip -> cold-hot tables -> published designs -> timeline -> check

`compile_elk` gives the graph's operators cold-hot tables, runs Basic, Static, Elk-Dyn and
Ideal (and Elk-Full when it is the one asked for: it is the slow one), and returns the
asked design's schedule with every design's latency beside it. Under
`conventions.published_plans` it also runs ``scheduler=elkopt``: elkopt's search in the
published model (`elkopt.elk.search`), which starts from Elk-Full's schedule. The tables
and the timing follow the conventions:

- `conventions.published_plans` on: the published cold-hot tables (`elkopt.elk.program.
  elk_ops`, after the published capacity split under `conventions.capacity_split`), and
  the published model's timing (`elkopt.elk.timing`): the published numbers.
- off: elkopt's plan tables as cold-hot tables (after elkopt's cut of large operators,
  `planning.split_fraction`, whenever it cuts), the operators' unique HBM bytes, loads
  delivered at the chip's link rate; the designs' decisions are then timed on elkopt's
  timeline and checked by elkopt's checker (`elkopt.elk.convert`), like any elkopt
  schedule. Ideal keeps its own model's timing: it is a bound, not a schedule.

The machine is the published one: cycles at 1.325 GHz, an all-to-all exchange whose per
core bandwidth scales the published COMM knob (5.5 GB/s is 1), `chip.compute_scale` the
COMP knob. `layers` is the published ``--layers`` (no preload group is longer than
n_ops // layers operators; Elk-Full permutes the groups of one layer); by default the
number of repeats of the graph's layer (`count_layers`).

What the published model reserves in SRAM (`elkopt.elk.timing.sram_in_use`) is measured,
not enforced: the published designs move loads earlier under compute contention
(delay_comp False) without re-checking the SRAM, so a schedule can reserve slightly more
than the SRAM for a moment. The excess is logged and reported
(metrics.json stats.sram_overcommit_bytes).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from elkopt.chip import Chip
from elkopt.conventions import Conventions
from elkopt.elk.coldhot import ElkOp
from elkopt.elk.lookup import CYCLES_PER_MS
from elkopt.elk.convert import to_schedule
from elkopt.elk.program import chip_noc_gbps, count_layers, elk_ops, elkopt_problem, published_machine
from elkopt.elk.schedulers import (ElkSchedule, Problem, schedule_basic, schedule_elk_dyn,
                                   schedule_elk_full, schedule_ideal, schedule_static)
from elkopt.elk.search import SearchResult, search_published
from elkopt.elk.suite import PublishedResults
from elkopt.elk.timing import (ELK_CHECKS, check_elk_schedule, elk_timeline, hbm_bytes,
                               lower_bound_cycles, sram_in_use)
from elkopt.graph.ir import Graph
from elkopt.graph.split import SplitReport
from elkopt.pipeline import PlanningError, PlanningOptions, split_graph
from elkopt.plans.table import InfeasibleOperatorError, TableSet, build_tables
from elkopt.published import DEFAULT_SPLIT_FACTOR
from elkopt.schedule import baselines
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import assert_valid
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import ScheduleError, Timeline, compute_timeline

#: scheduler name -> the paper's design name.
ELK_SCHEDULERS = {"elk_basic": "Basic", "elk_static": "Static", "elk_dyn": "Elk-Dyn",
                  "elk_full": "Elk-Full", "elk_ideal": "Ideal"}

#: The name of elkopt's own scheduler: under `conventions.published_plans` its search in the
#: published model (`elkopt.elk.search`), run by `compile_elk`; otherwise its pipeline.
ELKOPT = "elkopt"

#: scheduler name -> its key among the references (metrics.json <key>_ms).
REFERENCE_KEYS = {"elk_basic": "basic", "elk_static": "static", "elk_dyn": "elk_dyn", "elk_full": "elk_full",
                  "elk_ideal": "ideal"}


@dataclass(frozen=True)
class ElkRun:
    """One run of the published designs: the asked design's `schedule` and `timeline`,
    every design's results (`results`), the operators with their tables and the setting;
    for ``scheduler=elkopt`` (published plans only) `search`, elkopt's search in the
    published model, whose schedule is `schedule`.
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
    search: SearchResult | None = None

    @property
    def design(self) -> str:
        return design_name(self.scheduler)

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
        elif self.search is not None:
            rows = self.search.rows
            choices.update(delay_comp=self.search.delay_comp, search_trials=self.search.trials,
                           rows_chosen=[{"published_name": op.name, "table_row": rows[op.key]}
                                        for op in {op.key: op for op in self.problem.ops if op.key in rows}.values()])
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
                     {"op": i, "hbm_bytes": hbm_bytes(self.problem, i),
                      "cold_bytes": int(s.cold[i]), "hbm_cycles": float(tl.hbm_cycles[i]),
                      "noc_cycles": float(tl.noc_cycles[i])} for i in range(tl.n_ops)]
        return exec_args, load_args


def design_name(scheduler: str) -> str:
    """The paper's name of a published design's scheduler (elkopt's search: its own)."""
    return ELK_SCHEDULERS.get(scheduler, scheduler)


def runs_published_model(scheduler: str, conventions: Conventions) -> bool:
    """Whether `compile_elk` runs `scheduler`: a published design, or elkopt's search in
    the published model (``elkopt`` under `conventions.published_plans`)."""
    return scheduler in ELK_SCHEDULERS or (scheduler == ELKOPT and conventions.published_plans)


def compile_elk(graph: Graph, chip: Chip, scheduler: str, conventions: Conventions,
                layers: int | None = None, split_factor: int = DEFAULT_SPLIT_FACTOR,
                options: PlanningOptions | None = None,
                progress: Callable[[str], None] | None = None) -> ElkRun:
    """Run the published designs on `graph` and `chip` (module doc); the result holds
    `scheduler`'s schedule, checked (ScheduleError if a check fails). `options`: elkopt's
    plan space, cache and cut, used when the published plans are not."""
    if not runs_published_model(scheduler, conventions):
        raise ValueError(f"unknown published scheduler {scheduler!r}; choose one of {', '.join(ELK_SCHEDULERS)}, "
                         f"or {ELKOPT} with conventions.published_plans")
    if layers is not None and layers < 1:
        raise ValueError(f"planning.layers must be >= 1 (or null: detected), got {layers}")
    if graph.stores:
        raise ValueError(f"scheduler={scheduler}: the published designs model no HBM writes, and {graph.name} "
                         f"writes {graph.hbm_bytes_written:,} B to HBM (its KV cache); choose "
                         "scheduler=basic|static|inductive|elkopt")
    if split_factor < 1 or chip.cores // split_factor < 1:
        raise ValueError(f"planning.split_factor must be from 1 to the core count ({chip.cores}), got {split_factor}")
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    n_layers = layers or count_layers(graph)
    if conventions.published_plans:
        tables, cut = None, SplitReport({})
        pb = _published_problem(graph, chip, conventions, n_layers, split_factor, say)
    else:
        graph, cut, tables, pb = _elkopt_problem(graph, chip, n_layers, options or PlanningOptions(), conventions,
                                                 say)
    tables_s = time.perf_counter() - start
    results, timings = _run_designs(pb, scheduler in ("elk_full", ELKOPT), say)
    search = None
    if scheduler == ELKOPT:
        say("elkopt's search in the published model, from Elk-Full's schedule")
        began = time.perf_counter()
        search = search_published(pb, results.elk_full, progress=say)
        timings["elkopt_search"] = time.perf_counter() - began
    chosen = {"elk_basic": results.basic.schedule, "elk_static": results.static.schedule,
              "elk_dyn": results.elk_dyn.schedule, "elk_ideal": results.ideal,
              "elk_full": results.elk_full.schedule if results.elk_full else None,
              ELKOPT: search.schedule if search else None}[scheduler]
    design = design_name(scheduler)
    problems = check_elk_schedule(chosen, pb)
    if problems:
        raise ScheduleError(f"the {design} schedule breaks {len(problems)} rules: " + "; ".join(problems[:3]))
    timeline, plan, timed = elk_timeline(chosen, pb, graph.total_flops), None, {}
    if tables is not None:
        say("timing the published designs' decisions on elkopt's timeline")
        evaluated, deferred = _on_elkopt_timeline(results, pb.ops, graph, tables, chip)
        timed = {key: ev.timeline.latency_ms for key, ev in evaluated.items()}
        timed["lower_bound"] = baselines.lower_bound_cycles(graph, tables, chip) * 1e3 / chip.clock_hz
        if scheduler != "elk_ideal":
            ev = evaluated[REFERENCE_KEYS[scheduler]]
            plan, timeline = ev.schedule, ev.timeline
            if deferred[REFERENCE_KEYS[scheduler]]:
                say(f"{deferred[REFERENCE_KEYS[scheduler]]} of the {ELK_SCHEDULERS[scheduler]} loads deferred "
                    "to fit elkopt's SRAM count (the published designs reserve the smallest layouts)")
    over = float((sram_in_use(chosen, pb) - pb.sram_bytes).max())
    if over > 0:
        say(f"the {design} schedule reserves up to {over:,.0f} B per core more than the "
            f"{pb.sram_bytes:,} B of SRAM (as the published design does: sram_overcommit_bytes in metrics.json)")
    ops = pb.ops
    copies = Counter(op.source for op in ops)
    stats: dict[str, float | int] = {
        "unique_ops": len({op.key for op in ops}),
        "plan_table_s": round(tables_s, 3),
        "plan_options": sum(len(t.cold) for t in {id(op.table): op.table for op in ops}.values()),
        "layers": n_layers,
        "sram_overcommit_bytes": max(0, int(np.ceil(over))),
        # operators cut by the published capacity split, or by elkopt's
        "split_ops": sum(1 for k in copies.values() if k > 1) + len(cut.splits),
        "split_copies_added": len(ops) - len(copies) + cut.added_ops,
        **{f"{name.lower().replace('-', '_')}_s": round(s, 3) for name, s in timings.items()},
    }
    if tables is not None:
        stats["deferred_loads"] = deferred.get(REFERENCE_KEYS[scheduler], 0)
    if results.elk_full is not None:
        full = results.elk_full
        stats.update(elk_full_orders=full.runs // 2, elk_full_runs_completed=full.completed,
                     elk_full_delay_comp=int(full.delay_comp))
    if search is not None:
        stats.update(search_trials=search.trials, search_rounds=search.rounds, search_rows_chosen=len(search.rows),
                     search_gain_vs_elk_full=round(search.gain, 6))
    return ElkRun(graph, chip, scheduler, chosen, timeline, results, pb, time.perf_counter() - start, stats,
                  plan, timed, search)


def _published_problem(graph: Graph, chip: Chip, conventions: Conventions, layers: int, split_factor: int,
                       say: Callable[[str], None]) -> Problem:
    """The operators with the published cold-hot tables, on the published machine."""
    hbm_GBps, interconnect = published_machine(chip)
    sram = chip.usable_sram_bytes_per_core
    capacity = chip.cores // split_factor if conventions.capacity_split else None
    ops = elk_ops(graph, chip.cores, sram, conventions.drop_scalar_operands, capacity, conventions.plan_rules(),
                  conventions.padded_hbm_bytes, progress=say)
    if len(ops) > graph.n_ops:
        say(f"published capacity split ({capacity} MiB): {graph.n_ops} -> {len(ops)} operators")
    _check_layers(len(ops), layers)
    return Problem(ops, hbm_GBps, chip.cores, sram, layers, interconnect,
                   None if conventions.published_delivery else chip_noc_gbps(chip), conventions.noc_thresholds)


def _elkopt_problem(graph: Graph, chip: Chip, layers: int, options: PlanningOptions, conventions: Conventions,
                    say: Callable[[str], None]) -> tuple[Graph, SplitReport, TableSet, Problem]:
    """The graph (cut as elkopt cuts it) and what was cut, its plan tables, and the
    operators with those as cold-hot tables (`elkopt.elk.program.elkopt_problem`)."""
    published_machine(chip)  # the published model must be able to describe the chip
    whole = graph
    graph, report = split_graph(graph, chip, options)
    if graph is not whole:
        say(f"cut operators reading more than {options.split_fraction:g} of the SRAM from HBM: "
            f"{whole.n_ops} -> {graph.n_ops} operators")
    try:
        tables = build_tables(graph, chip, options.max_spatial_splits, options.cache_dir, progress=say,
                              plan_space=options.plan_space)
    except InfeasibleOperatorError as err:
        raise PlanningError(str(err)) from None
    _check_layers(graph.n_ops, layers)
    return graph, report, tables, elkopt_problem(graph, tables, chip, layers, conventions.padded_hbm_bytes,
                                                 conventions.published_delivery, conventions.noc_thresholds)


def _check_layers(n_ops: int, layers: int) -> None:
    if n_ops // layers < 1:
        raise ValueError(f"planning.layers={layers} is more than the graph's {n_ops} operators")


def _run_designs(pb: Problem, elk_full: bool, say: Callable[[str], None]
                 ) -> tuple[PublishedResults, dict[str, float]]:
    """Basic, Static, Elk-Dyn, Ideal and (if `elk_full`) Elk-Full, with their seconds."""
    timings: dict[str, float] = {}

    def timed(name: str, run: Callable):
        say(f"published design: {name}")
        began = time.perf_counter()
        out = run(pb)
        timings[name] = time.perf_counter() - began
        return out

    results = PublishedResults(timed("Basic", schedule_basic), timed("Static", schedule_static),
                               timed("Elk-Dyn", schedule_elk_dyn), timed("Ideal", schedule_ideal),
                               timed("Elk-Full", schedule_elk_full) if elk_full else None)
    return results, timings


def _on_elkopt_timeline(results: PublishedResults, ops: list[ElkOp], graph: Graph, tables: TableSet,
                        chip: Chip) -> tuple[dict[str, Evaluated], dict[str, int]]:
    """Each design's decisions (Elk-Dyn's printed threshold too) timed on elkopt's timeline
    and checked by elkopt's checker (`elkopt.elk.convert`), by reference key (not Ideal),
    and how many of each design's loads were deferred to fit the SRAM."""
    dyn = results.elk_dyn
    designs = {"basic": results.basic.schedule, "static": results.static.schedule, "elk_dyn": dyn.schedule,
               "elk_dyn_printed": dyn.by_threshold[dyn.printed_threshold]}
    if results.elk_full is not None:
        designs["elk_full"] = results.elk_full.schedule
    flops = [op.flops for op in graph.ops]
    deps = [graph.dependencies(i) for i in range(graph.n_ops)]
    out, deferred = {}, {}
    for key, schedule in designs.items():
        plan, deferred[key] = to_schedule(schedule, ops, graph, tables, key, chip.usable_sram_bytes_per_core)
        timeline = compute_timeline(plan, chip, flops)
        assert_valid(plan, chip, deps, timeline)
        out[key] = Evaluated(plan, timeline)
    return out, deferred


__all__ = ["ELKOPT", "ELK_CHECKS", "ELK_SCHEDULERS", "REFERENCE_KEYS", "ElkRun", "compile_elk", "count_layers",
           "design_name", "published_machine", "runs_published_model"]
