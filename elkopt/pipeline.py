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
from elkopt.graph import moe
from elkopt.graph.ir import Graph, Operator
from elkopt.graph.split import CutChoice, SplitReport, choose_cuts, split_large_operators
from elkopt.plans.space import OpShape, check_plan_space
from elkopt.plans.table import InfeasibleOperatorError, PlanTable, TableMemo, TableSet, build_tables, cached_table
from elkopt.schedule import baselines
from elkopt.schedule.checker import assert_valid
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import ScheduleError, Timeline, compute_timeline

if TYPE_CHECKING:
    from elkopt.solve import SolverOptions

SCHEDULERS = ("basic", "static", "inductive", "elkopt")
SPLIT_POLICIES = ("if_faster", "per_op", "always")
#: How `choose_split` weighs a cut graph: the latency of Elk-Dyn's schedule on elkopt's
#: tables and timeline, or of the Ideal schedule.
SPLIT_ESTIMATES = ("elk_dyn", "ideal")
#: `planning.moe_preload`: how MoE layers load their routed experts (`compile_model`).
MOE_PRELOADS = ("auto", "wait", "all", "<experts>")
_MOE_PRELOAD_HELP = ("planning.moe_preload must be 'auto' (weigh waiting against speculative preloads, keep the "
                     "fastest), 'wait' (routed experts load after their router), 'all' (preload every expert) or "
                     "a number of experts >= 0 to preload before the router")


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
        may be cut into copies before planning, and those that fit in no plan whole must
        be (`elkopt.graph.split`); None = never cut.
    max_copies: at most this many copies per cut operator, but for streamed ones and those
        that need more to fit (`elkopt.graph.split`, "Streaming").
    split_policy: "if_faster" decides per operator (`choose_split`) and, when a decision
        was close (split_margin), also plans the runner-up graph (the close decisions the
        other way) and keeps the faster; "per_op" plans only the per-operator choice;
        "always" cuts every operator above split_fraction by the capacity rule of earlier
        versions.
    split_margin: an optional cut-or-whole decision whose best alternative's estimated
        latency is within this fraction of its own is close.
    split_estimate: the graph latency that weighs the options (`SPLIT_ESTIMATES`).
    plan_space: "reference" keeps the reference pruning's core-use floor; "full" lets a
        split use any number of cores (`elkopt.plans.space.PLAN_SPACES`).
    moe_preload: how a mixture-of-experts layer loads its routed experts (`MOE_PRELOADS`,
        `compile_model`): "wait" for the router, preload "all" or "<m>" likeliest experts
        speculatively and load the misses after it, or "auto": the fastest of these.
    """

    cache_dir: str | None = None
    max_spatial_splits: int = 256
    static_step_bytes: int = 10 * 1024
    max_preload_ops: int = baselines.DEFAULT_MAX_PRELOAD_OPS
    layer_milp: bool = False
    split_fraction: float | None = 0.25
    max_copies: int = 4
    split_policy: str = "if_faster"
    split_margin: float = 0.05
    split_estimate: str = "elk_dyn"
    plan_space: str = "full"
    moe_preload: str = "auto"

    def __post_init__(self) -> None:
        moe_preload_count(self.moe_preload)
        for name in ("max_spatial_splits", "static_step_bytes", "max_preload_ops"):
            if getattr(self, name) < 1:
                raise ValueError(f"planning.{name} must be >= 1, got {getattr(self, name)}")
        if self.split_fraction is not None and not 0 < self.split_fraction <= 1:
            raise ValueError(f"planning.split_fraction must be in (0, 1] or null (never split), "
                             f"got {self.split_fraction}")
        if self.max_copies < 2:
            raise ValueError(f"planning.max_copies must be >= 2, got {self.max_copies}")
        if not 0 <= self.split_margin < float("inf"):
            raise ValueError(f"planning.split_margin must be a finite fraction >= 0, got {self.split_margin}")
        check_plan_space(self.plan_space)
        if self.split_estimate not in SPLIT_ESTIMATES:
            raise ValueError(f"planning.split_estimate must be one of {', '.join(SPLIT_ESTIMATES)}, "
                             f"got {self.split_estimate!r}")
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
    stats: dict[str, float | int | str] = field(default_factory=dict)
    tables: TableSet | None = None
    solve_stats: dict[str, float | int] = field(default_factory=dict)  # MILP schedulers only


def moe_preload_count(value: str | int) -> int | None:
    """`planning.moe_preload` as a number of experts to preload (-1 for "all"), or None
    for "auto"; "wait" is 0. ValueError naming the field otherwise."""
    text = str(value).strip()
    if text == "auto":
        return None
    if text == "wait":
        return 0
    if text == "all":
        return -1
    if text.isdigit():
        return int(text)
    raise ValueError(f"{_MOE_PRELOAD_HELP}; got {value!r}")


def compile_model(
    graph: Graph,
    chip: Chip,
    scheduler: str,
    options: PlanningOptions,
    progress: Callable[[str], None] | None = None,
    solver: SolverOptions | None = None,
    routing: moe.Routing | str | None = None,
) -> RunResult:
    """Plan `graph` on `chip` with `scheduler`, check the plan, evaluate it.

    With `options.split_fraction` set, operators are cut into copies first, decided per
    operator (`choose_split`; `options.split_policy` says whether the runner-up graph is
    planned too); the result's `graph` is the graph that was planned.
    A graph with routed experts (`elkopt.graph.moe`) loads them as `options.moe_preload`
    says (`choose_moe_preload`); `routing` is the routing it was built with (None: uniform).
    solver: HiGHS settings for the MILP schedulers (defaults if None).
    """
    if scheduler not in SCHEDULERS:
        raise PlanningError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    check_static_sweep(chip, options)
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    memo: TableMemo = {}  # each plan table built or read once, whichever graphs are weighed
    if any(op.routed_by is not None for op in graph.ops):
        return choose_moe_preload(graph, chip, scheduler, options, say, solver, routing, start, memo=memo)
    return _compile_cut(graph, chip, scheduler, options, say, solver, start, memo=memo)


def choose_moe_preload(graph: Graph, chip: Chip, scheduler: str, options: PlanningOptions,
                       say: Callable[[str], None], solver: SolverOptions | None,
                       routing: moe.Routing | str | None, start: float, memo: TableMemo | None = None) -> RunResult:
    """Plan an MoE graph waiting for its routers or preloading experts speculatively
    (`elkopt.graph.moe.speculate`), as `options.moe_preload` says.

    "auto" weighs waiting (m = 0) and preloading the round(D) and E likeliest experts
    (each capped by `moe.max_speculation`) by planning each graph with the Static scheduler
    (with Basic or Static asked for, that one, whose plans are then final), then plans the
    fastest and the waiting graph with `scheduler` and keeps the faster, waiting on ties:
    the chosen plan is never slower than waiting, by construction. The stats say what was
    chosen: moe_experts_preloaded (m), moe_experts_read (expected experts read per layer),
    moe_wait_ms, moe_chosen_ms, moe_preload_estimates (ms per m, by moe_estimate).
    A graph built with another routing than `routing` raises PlanningError; with routing
    None (uniform assumed) it is planned waiting, and the log says why.
    """
    count = moe_preload_count(options.moe_preload)
    layers = moe.routed_layers(graph)
    if count is None:
        wanted = [0]
        for layer in layers:
            d = moe.expected_experts(routing, layer.n_experts, layer.top_k, layer.tokens)
            wanted += [min(m, moe.max_speculation(layer)) for m in (round(d), layer.n_experts)]
    else:
        wanted = [max(layer.n_experts for layer in layers) if count < 0 else count]
    candidates: dict[int, tuple[Graph, moe.Speculation]] = {}
    try:
        for m in wanted:
            speculated = moe.speculate(graph, m, routing)
            candidates.setdefault(speculated[1].experts, speculated)
    except ValueError as error:
        if routing is not None:
            raise PlanningError(str(error)) from None
        say(f"mixture of experts: {error}; planned waiting for the routers")
        candidates = {0: (graph, moe.Speculation(0, len(layers), float("nan"), True))}
    if len(candidates) == 1:
        ((m, (planned, spec)),) = candidates.items()
        result = _compile_cut(planned, chip, scheduler, options, say, solver, start, memo=memo)
        latency = result.timeline.latency_ms
        return _with_moe_stats(result, m, spec, options, latency if m == 0 else None, {}, "")

    estimator = scheduler if scheduler in ("basic", "static") else "static"
    estimates: dict[int, float] = {}  # ms
    finals: dict[int, RunResult] = {}  # Basic or Static asked for: the estimates are the plans
    cuts: dict[int, CutChoice] = {}  # the estimate's cutting decision, reused when that graph is planned
    for m, (candidate, spec) in sorted(candidates.items()):
        what = "waiting for the routers" if m == 0 else f"preloading the {m} likeliest experts of every layer"
        say(f"mixture of experts: weighing {what} ({spec.experts_read:.2f} experts read per layer) by {estimator}")
        try:
            if estimator == scheduler:
                finals[m] = _compile_cut(candidate, chip, scheduler, options, lambda _msg: None, solver,
                                         time.perf_counter(), memo=memo)
                estimates[m] = finals[m].timeline.latency_ms
            else:
                # the policy only says whether a runner-up is planned, not what is cut
                cuts[m] = choose_split(candidate, chip, options, memo=memo)
                estimates[m] = _estimate_static(cuts[m].graph, chip, options, memo)
        except PlanningError as error:
            if m == 0:
                raise
            say(f"mixture of experts: {m} experts preloaded cannot be planned ({error})")
            continue
        say(f"mixture of experts: {m} preloaded: {estimates[m]:.4f} ms by {estimator}")
    best = min(sorted(estimates), key=lambda m: estimates[m])  # ties: fewer preloaded
    if estimator == scheduler:
        wait, chosen, m = finals[0], finals[best], best
    else:
        say(f"mixture of experts: planning the waiting graph with {scheduler}")
        wait = chosen = _compile_cut(graph, chip, scheduler, options, say, solver, time.perf_counter(), cuts[0],
                                     memo=memo)
        m = 0
        if best != 0:
            say(f"mixture of experts: planning {best} experts preloaded with {scheduler}")
            try:
                speculative = _compile_cut(candidates[best][0], chip, scheduler, options, say, solver,
                                           time.perf_counter(), cuts[best], memo=memo)
            except PlanningError as error:
                say(f"mixture of experts: {best} experts preloaded cannot be planned by {scheduler} ({error})")
            else:
                if speculative.timeline.latency_cycles < wait.timeline.latency_cycles:
                    chosen, m = speculative, best
    say(f"mixture of experts: {'waiting for the routers' if m == 0 else f'{m} experts preloaded speculatively'}: "
        f"{chosen.timeline.latency_ms:.4f} ms (waiting {wait.timeline.latency_ms:.4f} ms)")
    # the bound of the step, not of one way to load it: waiting reads the fewest bytes
    bound = min(chosen.references["lower_bound"], wait.references["lower_bound"])
    result = replace(chosen, compile_s=time.perf_counter() - start,
                     references={**chosen.references, "lower_bound": bound})
    return _with_moe_stats(result, m, candidates[m][1], options, wait.timeline.latency_ms, estimates, estimator)


def _estimate_static(cut: Graph, chip: Chip, options: PlanningOptions, memo: TableMemo | None = None) -> float:
    """Latency (ms) of the Static schedule of `cut`, a graph with its operators cut as
    `choose_split` chose (no runner-up): the cheap estimate that ranks MoE preload candidates."""
    try:
        tables = build_tables(cut, chip, options.max_spatial_splits, options.cache_dir, plan_space=options.plan_space,
                              memo=memo)
        static = baselines.schedule_static(cut, tables, chip, options.static_step_bytes, options.max_preload_ops)
    except (InfeasibleOperatorError, ValueError) as error:
        raise PlanningError(str(error)) from None
    return static.timeline.latency_cycles * 1e3 / chip.clock_hz


def _with_moe_stats(result: RunResult, preloaded: int, spec: moe.Speculation, options: PlanningOptions,
                    wait_ms: float | None, estimates: dict[int, float], estimator: str) -> RunResult:
    """`result` with the MoE preload decision in its stats (`choose_moe_preload`)."""
    stats = {
        "moe_preload": str(options.moe_preload),
        "moe_experts_preloaded": preloaded,
        "moe_experts_read": spec.experts_read,
        "moe_hbm_bytes_read": result.graph.hbm_bytes,
        "moe_wait_ms": wait_ms,
        "moe_chosen_ms": result.timeline.latency_ms,
        "moe_preload_estimates": "; ".join(f"{m}: {ms:.4f} ms" for m, ms in sorted(estimates.items())),
        "moe_estimate": estimator,
    }
    return replace(result, stats={**result.stats, **stats})


def _compile_cut(graph: Graph, chip: Chip, scheduler: str, options: PlanningOptions, say: Callable[[str], None],
                 solver: SolverOptions | None, start: float, choice: CutChoice | None = None,
                 memo: TableMemo | None = None) -> RunResult:
    """compile_model on one graph: operators cut into copies as `options` say (`choice`,
    when `choose_split` already decided for this graph and these options), then planned."""
    if choice is None:
        choice = choose_split(graph, chip, options, say, memo=memo)
    if not choice.report.splits and choice.runner_up is None:
        return _compile(graph, chip, scheduler, options, say, solver, start, choice.report, memo)
    stats = split_stats(choice)
    what = (f"cut {len(choice.report.splits)} operators into copies: {graph.n_ops} -> {choice.graph.n_ops} operators"
            if choice.report.splits else "every operator kept whole")
    say(f"cutting decided per operator: {what} ({stats['split_choice_s']:.1f} s, "
        f"{choice.evaluations} graphs weighed)")
    if options.split_policy != "if_faster" or choice.runner_up is None:
        result = _compile(choice.graph, chip, scheduler, options, say, solver, start, choice.report, memo)
        return replace(result, stats={**result.stats, **stats})
    alternative, alternative_report = choice.runner_up
    say("planning the graph with the operators cut as chosen")
    chosen = _compile(choice.graph, chip, scheduler, options, say, solver, start, choice.report, memo)
    say(f"as chosen: {chosen.timeline.latency_ms:.3f} ms; planning the runner-up (the close choices the other "
        f"way: {', '.join(choice.flipped)}; {len(alternative_report.splits)} operators cut, "
        f"{alternative.n_ops} operators)")
    try:
        other = _compile(alternative, chip, scheduler, options, say, solver, start, alternative_report, memo)
    except PlanningError as error:
        say(f"the runner-up cannot be planned ({error}); keeping the choice")
        return replace(chosen, stats={**chosen.stats, **stats, "split_kept": "choice"},
                       compile_s=time.perf_counter() - start)
    faster = chosen if chosen.timeline.latency_cycles <= other.timeline.latency_cycles else other
    say(f"runner-up: {other.timeline.latency_ms:.3f} ms; keeping the "
        f"{'choice' if faster is chosen else 'runner-up'}")
    stats.update(split_choice_ms=chosen.timeline.latency_ms, split_runner_up_ms=other.timeline.latency_ms,
                 split_kept="choice" if faster is chosen else "runner-up")
    return replace(faster, stats={**faster.stats, **stats}, compile_s=time.perf_counter() - start)


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


def split_graph(graph: Graph, chip: Chip, options: PlanningOptions,
                progress: Callable[[str], None] | None = None) -> tuple[Graph, SplitReport]:
    """The graph with operators cut as `options.split_policy` says (`choose_split`); the
    graph itself when `options.split_fraction` is None."""
    choice = choose_split(graph, chip, options, progress)
    return choice.graph, choice.report


def choose_split(graph: Graph, chip: Chip, options: PlanningOptions,
                 progress: Callable[[str], None] | None = None, memo: TableMemo | None = None) -> CutChoice:
    """Which operators to cut, how and along which dim (`elkopt.graph.split`).

    An operator's cost is its fastest plan (its plan table, through `memo` and the disk cache); the
    graph latency that weighs whole against k copies is that of Elk-Dyn's schedule on these
    tables, timed on elkopt's timeline (`elkopt.elk.convert.elk_dyn_start`), or of the Ideal
    schedule (`baselines.schedule_ideal`) with `options.split_estimate="ideal"` or where the
    published model cannot describe the chip. split_policy "always" cuts every operator
    above `options.split_fraction` by the capacity rule (`split_large_operators`) and names
    no runner-up. Nothing is cut when `options.split_fraction` is None.
    """
    if options.split_fraction is None:
        return CutChoice(graph, SplitReport({}))
    started = time.perf_counter()
    tables: dict[OpShape, PlanTable] = {}

    def table(op: Operator) -> PlanTable:
        shape = OpShape.of(op)
        if shape not in tables:
            tables[shape] = cached_table(shape, chip, graph.elem_bytes, options.max_spatial_splits,
                                         options.cache_dir, options.plan_space, memo)[0]
        return tables[shape]

    def fastest(op: Operator) -> float:  # cycles of the op's fastest plan; inf if none fits
        plans = table(op)
        return float(plans.total_cycles.min()) if len(plans) else float("inf")

    say = progress or (lambda _msg: None)
    state = {"elk_dyn": options.split_estimate == "elk_dyn", "weighed": 0}

    def estimate(candidate: Graph) -> float:  # latency of `candidate`, cycles; inf if an op fits in no plan
        per_op = tuple(table(op) for op in candidate.ops)
        if any(len(t) == 0 for t in per_op):
            return float("inf")
        tableset = TableSet(per_op, len({id(t) for t in per_op}), 0, 0.0)
        state["weighed"] += 1
        if state["elk_dyn"]:
            from elkopt.elk.convert import elk_dyn_start

            dyn = with_router_waits(elk_dyn_start(candidate, tableset, chip), candidate, chip)
            if dyn is not None:
                return dyn.timeline.latency_cycles
            if state["weighed"] > 1:  # the others were weighed by Elk-Dyn: this option is not taken
                return float("inf")
            state["elk_dyn"] = False
            say("cutting: Elk-Dyn cannot schedule this graph on this chip; weighing the options by Ideal")
        return baselines.schedule_ideal(candidate, tableset, chip, options.max_preload_ops).timeline.latency_cycles

    if options.split_policy == "always":
        cut, report = split_large_operators(graph, chip.total_sram_bytes, options.split_fraction,
                                            options.max_copies, fastest)
        return CutChoice(cut, report, seconds=time.perf_counter() - started)
    choice = choose_cuts(graph, chip.total_sram_bytes, options.split_fraction, options.max_copies,
                         fastest, estimate, options.split_margin, progress)
    return replace(choice, seconds=time.perf_counter() - started)


def with_router_waits(evaluated: baselines.Evaluated | None, graph: Graph,
                      chip: Chip) -> baselines.Evaluated | None:
    """A schedule made without the graph's routers (Elk-Dyn's decisions,
    `elkopt.elk.convert`) with its routed-expert loads waiting for them
    (`OpSchedule.load_after`), re-timed; None for None or when that deadlocks."""
    routers = moe.router_dependencies(graph)
    if evaluated is None or not routers:
        return evaluated
    ops = tuple(replace(o, load_after=routers.get(o.op, ())) for o in evaluated.schedule.ops)
    schedule = replace(evaluated.schedule, ops=ops)
    try:
        timeline = compute_timeline(schedule, chip, [op.flops for op in graph.ops])
    except ScheduleError:
        return None
    return baselines.Evaluated(schedule, timeline)


def split_stats(choice: CutChoice) -> dict[str, float | int | str]:
    """metrics.json `stats` of a cut: the decisions (`split_choices`, one per distinct
    operator decided), the adds, the graphs weighed and the time taken."""
    return {
        "split_adds": choice.report.adds,
        "split_must": len(choice.report.must),
        "split_choices": "; ".join(c.label for c in choice.candidates),
        "split_evaluations": choice.evaluations,
        "split_choice_s": round(choice.seconds, 3),
    }


def _compile(
    graph: Graph,
    chip: Chip,
    scheduler: str,
    options: PlanningOptions,
    say: Callable[[str], None],
    solver: SolverOptions | None,
    start: float,
    split: SplitReport,
    memo: TableMemo | None = None,
) -> RunResult:
    """compile_model on one graph (already cut or not, as `split` says); plan tables
    through `memo` (`elkopt.plans.table.cached_table`)."""
    say(f"{graph.name}: {graph.n_ops} operators; building plan tables")
    try:
        tables = build_tables(
            graph, chip, options.max_spatial_splits, options.cache_dir, progress=say, plan_space=options.plan_space,
            memo=memo,
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

        say("scheduling: inductive (backward induction, window MILPs, Static's answer as the incumbent)")
        inductive, induction = schedule_inductive(
            graph, tables, chip, solver, options.max_preload_ops, progress=say, start=static
        )
        solve_stats = {**induction.as_dict(), "inductive_ms": inductive.timeline.latency_cycles * to_ms,
                       "induction_ms": induction.induction_cycles * to_ms}
        say(
            f"inductive: {inductive.timeline.latency_cycles * to_ms:.3f} ms (the induction "
            f"{induction.induction_cycles * to_ms:.3f} ms, kept: {induction.start}); "
            f"{induction.milps_solved} window MILPs solved, "
            f"{induction.cache_hits} of {induction.windows} windows from the memo, "
            f"{induction.wall_s:.1f} s"
        )
        chosen = inductive
        if scheduler == "elkopt":
            from elkopt.schedule.periodic import plan_alternatives, schedule_periodic

            # the induction's own plans are a start even where Static's won the inductive result
            starts = [("inductive", induction.induction or inductive), ("static", static)]
            from elkopt.elk.convert import elk_dyn_start

            say("scheduling: Elk-Dyn's decisions on these plan tables (a third start)")
            dyn = with_router_waits(elk_dyn_start(graph, tables, chip), graph, chip)
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
    assert_valid(chosen.schedule, chip, [graph.dependencies(i) for i in range(graph.n_ops)], chosen.timeline,
                 moe.router_dependencies(graph))

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
