"""Feedback from the simulator into planning: re-plan with simulator-calibrated load costs.

The planners cost a load analytically, `max(hbm, noc)` cycles from aggregate bandwidths.
On a mesh a load really lasts as long as its busiest link needs (edge controllers feed
the cores nearest them), and under contention it pauses while exchanges hold the links;
neither is in the analytic cost. The loop:

1. plan as usual (the graph is cut once, then kept: indices must stay the same);
2. simulate; for every load measure `simulated duration / analytic duration` of the
   layout the plan chose;
3. re-plan with those factors on the loads' analytic durations
   (`Chip.load_time_scale`), so that the planners see slow loads as slow; with
   `routed_delivery` (the default) every preload layout's delivery is also costed by its
   routed busiest link (`Chip.delivery_link_loads`: on a mesh, a load to fewer cores draws
   on fewer edge controllers) and the factors are measured against that cost, so that
   they are left to account for contention only;
4. simulate the new plan; stop when the simulated latency no longer improves by
   `min_gain` (or after `rounds` re-plans) and keep the fastest simulated plan.

HBM writes (a prefill step's KV cache) are simulated with the rest, and they delay the
loads queued behind them in the simulation, but they get no factor of their own: the
analytic timeline applies none to writes (`elkopt.schedule.timeline`), so a load's factor
measures its own duration only.

A factor belongs to an operator, measured on the layout it had; a re-plan may choose
another layout, for which the routed delivery cost changes exactly and the factor is an
estimate that the next round measures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.ir import Graph
from elkopt.pipeline import PlanningOptions, RunResult, compile_model
from elkopt.plans.space import OpShape
from elkopt.schedule.schedule import Schedule
from elkopt.schedule.timeline import compute_timeline, load_duration_and_rate
from elkopt.sim.network import Network, network_from_chip
from elkopt.sim.preload import load_routes
from elkopt.sim.step import SimulatedRun, simulate_schedule
from elkopt.solve import SolverOptions


def load_slowdown(run: SimulatedRun, schedule: Schedule, chip: Chip) -> np.ndarray:
    """Per op: its simulated load duration over its analytic one on `chip` without the
    per-op factors (with its `delivery_link_loads`, if any; 1 for ops without a load)."""
    plain = dataclasses.replace(chip, load_time_scale=())
    analytic, _ = load_duration_and_rate(schedule, plain)
    simulated = run.load_end - run.load_start
    factor = np.ones(len(schedule.ops))
    measured = (analytic > 0) & np.isfinite(simulated)
    factor[measured] = simulated[measured] / analytic[measured]
    return factor


@dataclass(frozen=True)
class CalibrationRound:
    """One plan of the loop: its analytic latency (uncalibrated cost model), simulated
    latency (cycles), and the mean and largest load factor it was planned with."""

    round: int
    analytic_cycles: float
    simulated_cycles: float
    mean_scale: float
    max_scale: float


@dataclass(frozen=True)
class Calibrated:
    """The fastest simulated plan of the loop and the rounds that led there."""

    result: RunResult  # the uncalibrated analytic timeline of the chosen schedule; compile_s: the whole loop
    run: SimulatedRun
    rounds: tuple[CalibrationRound, ...]
    best_round: int

    @property
    def gain(self) -> float:
        """Simulated latency of round 0 over the best one's, minus 1."""
        return self.rounds[0].simulated_cycles / self.run.latency_cycles - 1.0


def calibrate(
    graph: Graph, chip: Chip, scheduler: str, options: PlanningOptions | None = None,
    solver: SolverOptions | None = None, rounds: int = 3, min_gain: float = 1e-3,
    network: Network | None = None, exchange_first: bool = True, bins: int = 256,
    routed_delivery: bool = True, mapping: str = "dims",
    progress: Callable[[str], None] | None = None,
) -> Calibrated:
    """Plan `graph`, then re-plan with simulator-calibrated load costs (module docs).

    routed_delivery: the re-plans also cost every preload layout's delivery by its routed
    busiest link (`Chip.delivery_link_loads`), and the measured factors are relative to
    that; False: relative to the analytic aggregate."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    say = progress or (lambda _message: None)
    begin = time.perf_counter()
    options = options or PlanningOptions()
    network = network or network_from_chip(chip)
    result = compile_model(graph, chip, scheduler, options, progress=progress, solver=solver)
    references = result.references  # of the uncalibrated cost model
    fixed = dataclasses.replace(options, split_fraction=None)  # keep the cut graph's indices
    planned = result.graph

    shapes = [OpShape.of(op) for op in planned.ops]

    def simulate(schedule: Schedule) -> SimulatedRun:
        return simulate_schedule(schedule, chip, network, exchange_first=exchange_first, bins=bins,
                                 shapes=shapes, mapping=mapping)

    run = simulate(result.schedule)
    history = [CalibrationRound(0, result.timeline.latency_cycles, run.latency_cycles, 1.0, 1.0)]
    best = (run.latency_cycles, 0, result, run)
    say(f"calibration round 0: analytic {result.timeline.latency_ms:.3f} ms, "
        f"simulated {run.latency_cycles * 1e3 / chip.clock_hz:.3f} ms")
    scale = np.ones(planned.n_ops)
    base = chip
    if routed_delivery and rounds:
        base = dataclasses.replace(chip, delivery_link_loads=tuple(load_routes(network).link_loads()))
    for k in range(1, rounds + 1):
        measured = load_slowdown(run, result.schedule, base)
        has_load = np.array([op.has_load for op in result.schedule.ops])
        scale = np.where(has_load, measured, scale)
        calibrated_chip = dataclasses.replace(base, load_time_scale=tuple(scale))
        say(f"calibration round {k} of at most {rounds}: re-planning with the measured load factors")
        replanned = compile_model(planned, calibrated_chip, scheduler, fixed, solver=solver,
                                  progress=lambda line, k=k: say(f"  round {k}: {line}"))
        run = simulate(replanned.schedule)
        timeline = compute_timeline(replanned.schedule, chip, [op.flops for op in planned.ops])
        result = dataclasses.replace(replanned, chip=chip, timeline=timeline, references=references)
        history.append(CalibrationRound(k, timeline.latency_cycles, run.latency_cycles,
                                        float(scale[has_load].mean()), float(scale.max())))
        say(f"calibration round {k}: load factors mean {history[-1].mean_scale:.3f}, "
            f"max {history[-1].max_scale:.3f}; analytic {timeline.latency_ms:.3f} ms, "
            f"simulated {run.latency_cycles * 1e3 / chip.clock_hz:.3f} ms")
        improved = run.latency_cycles < best[0] * (1 - min_gain)
        if run.latency_cycles < best[0]:
            best = (run.latency_cycles, k, result, run)
        if not improved:
            say(f"calibration stops after round {k} of {rounds}: the simulated latency did not improve "
                f"by {min_gain:.1%} on the best round's")
            break
    else:
        if rounds:
            say(f"calibration: all {rounds} rounds done")
    _, best_round, best_result, best_run = best
    say(f"calibration keeps round {best_round}: simulated {best[0] * 1e3 / chip.clock_hz:.3f} ms")
    best_result = dataclasses.replace(best_result, compile_s=time.perf_counter() - begin)
    return Calibrated(best_result, best_run, tuple(history), best_round)


__all__ = ["Calibrated", "CalibrationRound", "calibrate", "load_slowdown"]
