"""From a graph and a chip to a checked schedule, its timeline and the references.

    graph + chip -> plan tables -> scheduler -> timeline -> independent check

Typed arguments only: the Hydra layer converts its config before calling in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from elkopt.chip import Chip
from elkopt.graph.ir import Graph, Operator
from elkopt.graph.split import SplitReport, split_large_operators
from elkopt.plans.space import check_plan_space
from elkopt.plans.table import InfeasibleOperatorError, TableSet, build_tables, cached_table
from elkopt.schedule import baselines
from elkopt.schedule.checker import assert_valid
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import Timeline

if TYPE_CHECKING:
    from elkopt.solve import SolverOptions

SCHEDULERS = ("basic", "static", "inductive", "elkopt")
SPLIT_POLICIES = ("if_faster", "always")


class PlanningError(ValueError):
    """The model cannot be planned on the chip as asked (the message says why)."""


@dataclass(frozen=True)
class PlanningOptions:
    """Knobs of the plan space and the baselines.

    cache_dir: plan-table disk cache; None = no cache.
    max_spatial_splits: spatial splits per operator given a full temporal
        enumeration (the rest are costed without temporal splitting).
    static_step_bytes: step of the Static baseline's execution-space sweep.
    max_preload_ops: how many operators ahead a load may be issued.
    layer_milp: elkopt polishes its layer plan with the layer-periodic MILP.
    split_fraction: operators whose HBM bytes exceed this fraction of the chip's SRAM
        are cut into copies before planning (`elkopt.graph.split`); None = never.
    max_copies: at most this many copies per split operator.
    split_policy: "if_faster" plans the graph both whole and cut and keeps the faster
        (whole if cut is not faster; cut if whole cannot be planned); "always" plans only
        the cut graph.
    plan_space: "reference" keeps the reference pruning's core-use floor; "full" lets a
        split use any number of cores (`elkopt.plans.space.PLAN_SPACES`).
    """

    cache_dir: str | None = None
    max_spatial_splits: int = 256
    static_step_bytes: int = 10 * 1024
    max_preload_ops: int = baselines.DEFAULT_MAX_PRELOAD_OPS
    layer_milp: bool = False
    split_fraction: float | None = 0.25
    max_copies: int = 4
    split_policy: str = "if_faster"
    plan_space: str = "reference"

    def __post_init__(self) -> None:
        for name in ("max_spatial_splits", "static_step_bytes", "max_preload_ops"):
            if getattr(self, name) < 1:
                raise ValueError(f"planning.{name} must be >= 1, got {getattr(self, name)}")
        if self.split_fraction is not None and not 0 < self.split_fraction <= 1:
            raise ValueError(f"planning.split_fraction must be in (0, 1] or null (never split), "
                             f"got {self.split_fraction}")
        if self.max_copies < 2:
            raise ValueError(f"planning.max_copies must be >= 2, got {self.max_copies}")
        check_plan_space(self.plan_space)
        if self.split_policy not in SPLIT_POLICIES:
            raise ValueError(f"planning.split_policy must be one of {', '.join(SPLIT_POLICIES)}, "
                             f"got {self.split_policy!r}")


@dataclass(frozen=True)
class RunResult:
    graph: Graph
    chip: Chip
    schedule: Schedule
    timeline: Timeline
    references: dict[str, float]  # latency in ms: basic, static, ideal, lower_bound
    compile_s: float
    stats: dict[str, float | int] = field(default_factory=dict)
    tables: TableSet | None = None
    solve_stats: dict[str, float | int] = field(default_factory=dict)  # MILP schedulers only


def compile_model(
    graph: Graph,
    chip: Chip,
    scheduler: str,
    options: PlanningOptions,
    progress: Callable[[str], None] | None = None,
    solver: SolverOptions | None = None,
) -> RunResult:
    """Plan `graph` on `chip` with `scheduler`, check the plan, evaluate it.

    With `options.split_fraction` set, large operators are cut into copies first
    (`elkopt.graph.split`; `options.split_policy` says whether the whole graph is planned
    too); the result's `graph` is the graph that was planned.
    solver: HiGHS settings for the MILP schedulers (defaults if None).
    """
    if scheduler not in SCHEDULERS:
        raise PlanningError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    check_static_sweep(chip, options)
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    cut, split = split_graph(graph, chip, options)
    if not split.splits:
        return _compile(graph, chip, scheduler, options, say, solver, start, split)
    say(f"cut {len(split.splits)} operators reading more than {options.split_fraction:g} of the "
        f"SRAM from HBM into copies: {graph.n_ops} -> {cut.n_ops} operators")
    if options.split_policy == "always":
        return _compile(cut, chip, scheduler, options, say, solver, start, split)
    say("planning the graph with the operators cut")
    with_cut = _compile(cut, chip, scheduler, options, say, solver, start, split)
    say(f"with the operators cut: {with_cut.timeline.latency_ms:.3f} ms; planning them whole")
    try:
        whole = _compile(graph, chip, scheduler, options, say, solver, start, SplitReport({}))
    except PlanningError as error:
        say(f"whole, the graph cannot be planned ({error}); keeping the cut graph")
        return with_cut
    faster = whole if whole.timeline.latency_cycles <= with_cut.timeline.latency_cycles else with_cut
    say(f"whole: {whole.timeline.latency_ms:.3f} ms; keeping the "
        f"{'whole' if faster is whole else 'cut'} graph")
    stats = {**faster.stats, "split_cut_ms": with_cut.timeline.latency_ms,
             "split_whole_ms": whole.timeline.latency_ms}
    return replace(faster, stats=stats, compile_s=time.perf_counter() - start)


#: At most this many execution-space steps in the Static sweep (each step schedules the
#: whole graph twice; the default 10 KiB step over 624 KiB makes 62).
MAX_STATIC_STEPS = 2000


def check_static_sweep(chip: Chip, options: PlanningOptions) -> None:
    """ValueError when the Static sweep would take more than MAX_STATIC_STEPS steps."""
    sram = chip.usable_sram_bytes_per_core
    steps = -(-sram // options.static_step_bytes)
    if steps > MAX_STATIC_STEPS:
        least = -(-sram // MAX_STATIC_STEPS)
        raise ValueError(
            f"planning.static_step_bytes={options.static_step_bytes} sweeps the {sram:,} B of SRAM per core "
            f"(chip.sram_bytes_per_core) in {steps:,} steps, more than {MAX_STATIC_STEPS:,}: set "
            f"planning.static_step_bytes to at least {least:,}")


def split_graph(graph: Graph, chip: Chip, options: PlanningOptions) -> tuple[Graph, SplitReport]:
    """The graph with its large operators cut (`options.split_fraction`), dims chosen by
    the fastest plan of the copies."""
    if options.split_fraction is None:
        return graph, SplitReport({})

    def fastest(op: Operator) -> float:  # cycles of the op's fastest plan; inf if none fits
        table, _hit = cached_table(op, chip, graph.elem_bytes, options.max_spatial_splits,
                                   options.cache_dir, options.plan_space)
        return float(table.total_cycles.min()) if len(table) else float("inf")

    return split_large_operators(graph, chip.total_sram_bytes, options.split_fraction,
                                 options.max_copies, fastest)


def _compile(
    graph: Graph,
    chip: Chip,
    scheduler: str,
    options: PlanningOptions,
    say: Callable[[str], None],
    solver: SolverOptions | None,
    start: float,
    split: SplitReport,
) -> RunResult:
    """compile_model on one graph (already cut or not, as `split` says)."""
    say(f"{graph.name}: {graph.n_ops} operators; building plan tables")
    try:
        tables = build_tables(
            graph, chip, options.max_spatial_splits, options.cache_dir, progress=say, plan_space=options.plan_space
        )
    except InfeasibleOperatorError as err:
        raise PlanningError(str(err)) from None
    say(f"plan tables ready in {tables.seconds:.1f} s ({tables.cache_hits} of {tables.unique_ops} from cache)")

    to_ms = 1e3 / chip.clock_hz
    say("scheduling: Basic")
    basic = baselines.schedule_basic(graph, tables, chip)
    say("scheduling: Static (sweeping the execution space)")
    static = baselines.schedule_static(
        graph, tables, chip, options.static_step_bytes, options.max_preload_ops, progress=say
    )
    say("scheduling: Ideal")
    ideal = baselines.schedule_ideal(graph, tables, chip, options.max_preload_ops)
    solve_stats: dict[str, float | int] = {}
    if scheduler in ("inductive", "elkopt"):
        from elkopt.schedule.inductive import schedule_inductive  # imports Pyomo

        say("scheduling: inductive (backward induction, window MILPs)")
        inductive, induction = schedule_inductive(
            graph, tables, chip, solver, options.max_preload_ops, progress=say
        )
        solve_stats = {**induction.as_dict(), "inductive_ms": inductive.timeline.latency_cycles * to_ms}
        say(
            f"inductive: {inductive.timeline.latency_cycles * to_ms:.3f} ms; "
            f"{induction.milps_solved} window MILPs solved, "
            f"{induction.cache_hits} of {induction.windows} windows from the memo, "
            f"{induction.wall_s:.1f} s"
        )
        chosen = inductive
        if scheduler == "elkopt":
            from elkopt.schedule.periodic import plan_alternatives, schedule_periodic

            starts = [("inductive", inductive), ("static", static)]
            from elkopt.elk.convert import elk_dyn_start

            say("scheduling: Elk-Dyn's decisions on these plan tables (a third start)")
            dyn = elk_dyn_start(graph, tables, chip)
            if dyn is not None:
                starts.append(("elk_dyn", dyn))
                solve_stats["elk_dyn_start_ms"] = dyn.timeline.latency_cycles * to_ms
            say("scheduling: elkopt (layer-periodic load timing, stitched over all layers)")
            chosen, periodic = schedule_periodic(
                graph, starts, chip, solver=solver,
                max_preload_ops=options.max_preload_ops, layer_milp=options.layer_milp,
                alternatives=plan_alternatives(tables.tables), progress=say,
            )
            solve_stats.update(periodic.as_dict())
            say(
                f"elkopt: {chosen.timeline.latency_cycles * to_ms:.3f} ms from the {periodic.start} "
                f"plans, {periodic.layers} layers of {periodic.layer_ops} ops, {periodic.wall_s:.1f} s"
            )
    else:
        chosen = {"basic": basic, "static": static}[scheduler]
    say("checking the plan independently")
    assert_valid(chosen.schedule, chip, [graph.dependencies(i) for i in range(graph.n_ops)], chosen.timeline)

    references = {
        "basic": basic.timeline.latency_cycles * to_ms,
        "static": static.timeline.latency_cycles * to_ms,
        "ideal": ideal.timeline.latency_cycles * to_ms,
        "lower_bound": baselines.lower_bound_cycles(graph, tables, chip) * to_ms,
    }
    stats: dict[str, float | int] = {
        "unique_ops": tables.unique_ops,
        "plan_table_cache_hits": tables.cache_hits,
        "plan_table_s": round(tables.seconds, 3),
        "plan_options": tables.total_rows,
        "split_ops": len(split.splits),
        "split_copies_added": split.added_ops,
    }
    return RunResult(
        graph=graph,
        chip=chip,
        schedule=chosen.schedule,
        timeline=chosen.timeline,
        references=references,
        compile_s=time.perf_counter() - start,  # both graphs' work when both are planned
        stats=stats,
        tables=tables,
        solve_stats=solve_stats,
    )
