"""Plans an op may execute in instead of its own, for the layer MILP to choose
from (`plan_alternatives`), and the chosen plans applied to every layer
(`_with_plans`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from elkopt.plans.option import PlanOption
from elkopt.plans.table import PlanTable
from elkopt.schedule.layers import LayerBlock
from elkopt.schedule.schedule import Schedule


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


__all__ = ["plan_alternatives"]
