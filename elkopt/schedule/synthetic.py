"""Small hand-made schedules of repeated layers, for tests and experiments.

On `UNIT_CHIP` (one core, one byte per cycle of HBM and of interconnect, one
cycle per second) a load of D bytes lasts D cycles and its layout's
interconnect bytes set its rate, so timings can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from elkopt.chip import Chip
from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule

UNIT_CHIP = Chip(name="unit", cores_per_chip=1, sram_bytes_per_core=10_000, clock_hz=1.0,
                 core_link_bytes_per_s=1.0, hbm_bytes_per_s=1.0)


def repeated_layers(
    nominal: Sequence[float],
    exchange: Sequence[float],
    loads: Mapping[int, tuple[int, float]],
    n_layers: int,
) -> Schedule:
    """A layer of ops (nominal and exchange cycles), repeated n_layers times.

    loads: {op position: (duration in cycles, interconnect rate)}; every
    load is issued before the first op (the scheduler under test moves it).
    """
    ops = []
    for layer in range(n_layers):
        for k in range(len(nominal)):
            duration, rate = loads.get(k, (0, 0.0))
            option = PlanOption(Plan((1,), ((1,),)), cold_bytes=int(round(rate * duration)),
                                hot_bytes=0, exec_cycles=float(nominal[k]),
                                exchange_cycles=float(exchange[k]), distribution_cycles=0.0)
            ops.append(OpSchedule(layer * len(nominal) + k, option, PROLOGUE, int(duration)))
    order = tuple(i for i, o in enumerate(ops) if o.has_load)
    return Schedule(tuple(ops), order, "synthetic")


def random_layers(seed: int, ops_per_layer: int = 5, n_layers: int = 5, n_loads: int = 2) -> Schedule:
    """repeated_layers with random cycles: some ops all exchange, some all
    compute; loads of 30 to 150 cycles at rate 0.5 or 1."""
    rng = np.random.default_rng(seed)
    K = ops_per_layer
    nominal = rng.integers(20, 120, size=K).astype(float)
    exchange = nominal * rng.choice([0.0, 0.3, 1.0], size=K)
    positions = sorted(rng.choice(np.arange(1, K), size=n_loads, replace=False).tolist())
    loads = {int(p): (int(rng.integers(30, 150)), float(rng.choice([0.5, 1.0]))) for p in positions}
    return repeated_layers(nominal, exchange, loads, n_layers)


__all__ = ["UNIT_CHIP", "random_layers", "repeated_layers"]
