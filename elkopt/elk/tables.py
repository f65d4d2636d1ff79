"""The published hot set and cold-hot table of one operator (ELK_REFERENCE 4.3, 4.4, 7.2).

`build_cold_hot_table` runs the published per-operator search: enumerate every plan
(`enumerate`), cost it (`evaluate`), keep the hot set, then pair cold and hot plans.

- Hot set: among plans whose hot footprint fits the SRAM, taken by footprint and then in
  enumeration order, every plan strictly faster than all before it. The published code
  never deletes a slower plan of the same footprint once a faster one arrives, so a
  footprint can appear several times (quirk 7.2).
- Cold-hot table: for every cold size c (any plan's cold footprint) and hot size h (a
  hot-set footprint) with c <= h, the cheapest pair of a cold plan of footprint c and a
  hot-set plan of footprint h with the same spatial split, cold footprint <= hot
  footprint, and each hot temporal factor dividing the cold one. A pair costs the hot
  plan's cycles plus the warm-up from the parked (cold) layout. Ties go to the earliest
  cold plan, then the earliest hot-set plan, as the published loops find them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elkopt.elk.coldhot import ColdHotTable
from elkopt.elk.enumerate import ElkExpr, PlanRules, PlanSpace, enumerate_plans, expand
from elkopt.elk.evaluate import SYNC_CYCLES, PlanCosts, evaluate_plans, shift_time


@dataclass(frozen=True)
class PublishedSearch:
    """Everything the published search produces for one operator: the plans and their
    costs, the hot set (plan indices, published order), and the cold-hot table as plan
    indices per row (`cold_plan`, `hot_plan`) with the charged cycles `total`."""

    expr: ElkExpr
    plans: PlanSpace
    costs: PlanCosts
    hot_set: np.ndarray
    cold_plan: np.ndarray
    hot_plan: np.ndarray
    total: np.ndarray

    def table(self) -> ColdHotTable:
        """The `ColdHotTable` the schedulers read."""
        c, h = self.costs, self.hot_plan
        return ColdHotTable(
            cold=c.cold_mem[self.cold_plan].astype(np.int64),
            hot=c.hot_mem[h].astype(np.int64),
            total=self.total,
            exe=c.exe[h],
            comp=c.comp[h],
            shift=c.sss[h],
            hot_set_mem=c.hot_mem[self.hot_set].astype(np.int64),
            hot_set_total=c.exe[self.hot_set],
            hot_set_comp=c.comp[self.hot_set],
            hot_set_shift=c.sss[self.hot_set],
            row=np.full(len(self.total), -1, dtype=np.int64),
        )


def select_hot_set(hot_mem: np.ndarray, exe: np.ndarray, sram_bytes: int) -> np.ndarray:
    """Plan indices of the published hot set, in its order (footprint, then enumeration).

    >>> select_hot_set(np.array([10, 20, 20, 30]), np.array([5.0, 4.0, 3.0, 3.5]), 64).tolist()
    [0, 1, 2]
    """
    fits = np.flatnonzero(hot_mem <= sram_bytes)
    if not len(fits):
        raise ValueError("published tables: no hot plan fits the SRAM (SRAM too small)")
    order = fits[np.lexsort((fits, hot_mem[fits]))]
    exe = exe[order]
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], exe[:-1]]))
    return order[exe < best_before]


def warm_up_cycles(expr: ElkExpr, cold_t: np.ndarray, hot_t: np.ndarray, cold_sizes: np.ndarray) -> np.ndarray:
    """Cycles to re-lay parked data from cold plans (N, D, V) into hot plans of the same split.

    Per variable, m = prod_d cold/hot factor (0 when 1): inputs move m x their cold piece,
    and every variable with m > 0 (the output too) pays m synchronisations.
    """
    ratio = cold_t / hot_t
    m = ratio[:, 0, :]
    for d in range(1, ratio.shape[1]):
        m = m * ratio[:, d, :]
    m = np.where(m == 1, 0.0, m)
    moved = m[:, 1:] * cold_sizes[:, 1:]
    transfer = moved[:, 0] if moved.shape[1] else np.zeros(len(m))
    for v in range(1, moved.shape[1]):
        transfer = transfer + moved[:, v]
    syncs = m[:, 0]
    for v in range(1, m.shape[1]):
        syncs = syncs + m[:, v]
    return shift_time(transfer, expr.elem_bytes) + syncs * SYNC_CYCLES


def pair_cold_hot(expr: ElkExpr, plans: PlanSpace, costs: PlanCosts, hot_set: np.ndarray):
    """(cold plan, hot plan, total cycles) per cold-hot table row, sorted by cold then hot size."""
    # Plans come split by split, so each hot plan's split is one contiguous run.
    bounds = np.searchsorted(plans.split, np.arange(len(plans.spatial) + 1))
    hot_split = plans.split[hot_set]
    position, offset = expand(bounds[hot_split + 1] - bounds[hot_split])
    cold = bounds[hot_split][position] + offset
    hot = hot_set[position]
    cold_t, hot_t = plans.temporal(cold), plans.temporal(hot)
    ok = (costs.cold_mem[cold] <= costs.hot_mem[hot]) & np.all(cold_t % hot_t == 0, axis=(1, 2))
    cold, hot, position, cold_t, hot_t = cold[ok], hot[ok], position[ok], cold_t[ok], hot_t[ok]
    total = costs.exe[hot] + warm_up_cycles(expr, cold_t, hot_t, costs.sizes[cold])
    cold_size, hot_size = costs.cold_mem[cold], costs.hot_mem[hot]
    order = np.lexsort((position, cold, total, hot_size, cold_size))
    cold_size, hot_size = cold_size[order], hot_size[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (cold_size[1:] != cold_size[:-1]) | (hot_size[1:] != hot_size[:-1])
    best = order[first]
    return cold[best], hot[best], total[best]


def search_published(expr: ElkExpr, published_sort: bool | None = None) -> PublishedSearch:
    """Run the published per-operator search on `expr` (`published_sort`: see
    `enumerate_plans`; None: as `expr.rules.temporal_sort` says)."""
    sort = expr.rules.temporal_sort if published_sort is None else published_sort
    plans = enumerate_plans(expr, published_sort=sort)
    if not len(plans):
        raise ValueError("published tables: no plan passes the published pruning")
    costs = evaluate_plans(expr, plans)
    hot_set = select_hot_set(costs.hot_mem, costs.exe, expr.sram_bytes)
    cold, hot, total = pair_cold_hot(expr, plans, costs, hot_set)
    return PublishedSearch(expr, plans, costs, hot_set, cold, hot, total)


def build_cold_hot_table(
    op_type: int,
    dims,
    variables,
    ignore,
    cores: int,
    sram_bytes: int,
    elem_bytes: int = 2,
    rules: PlanRules = PlanRules(),
) -> ColdHotTable:
    """The published cold-hot table and hot set of one operator.

    `variables` is the TExpr form (output first; per variable its slots, each a list
    holding one dim index), `ignore` the per-input flags of data already on chip, sizes
    in bytes per core, cycles at the IPU-Mk2 clock; `rules`, the published quirks that
    apply. Conv and pool are refused.

    >>> t = build_cold_hot_table(2, [32, 64], [[[0], [1]], [[0], [1]], [[0], [1]]], [True, False], 16, 1 << 16)
    >>> int(t.min_cold), len(t.hot_set_mem)
    (256, 1)
    """
    expr = ElkExpr.of(op_type, dims, variables, ignore, cores, sram_bytes, elem_bytes, rules)
    return search_published(expr).table()
