"""elkopt's search inside the published model: ``scheduler=elkopt`` under
``conventions.published_plans``.

The published designs fix how an operator's table row is picked (Elk-Full: the fastest
pair that fits beside its preloads, scored with its own NoC distribution only). That pick
ignores what the row does to the rest of the schedule: a row with a replicated cold layout
keeps the NoC busy while its load streams, and every operator overlapping that load then
waits for idle NoC time. This search keeps everything else the published model says
(tables, timing, contention, the SRAM each overlap reserves, the preload orders Elk-Full
may use) and chooses rows by what they do to the whole schedule's latency:

1. Start from Elk-Full's answer: its preload order, its delay_comp and its row picks.
2. Operators that share a cold-hot table (the repeats of one operator of the layer) share
   one decision, as elkopt's inductive decomposition does. For each such group, most run
   time first, try each of its Pareto rows (no other row is at most as large, as fast, as
   light on the NoC and as small in cold bytes) as the row its operators run in wherever
   it fits the overlap's budget (`ElkFullDesign.prefer`); keep a row only if the whole
   schedule gets faster.
3. If 2 chose any row, try the other contention mode (delay_comp) and rerun Elk-Full's order
   enumeration (every published order x delay_comp) with those rows; repeat from 2 until a
   round of 2 chooses no row.

Every trial is one backward pass of the published engine, stopped as soon as it is sure to
lose (`Bound`), so a trial costs a few milliseconds to tens of them. The search is
deterministic and bounded by `max_trials` (an order enumeration, once started, runs to its
end and counts each of its runs); it never returns a schedule slower than Elk-Full's,
which it starts from (and returns, renamed, when nothing is faster).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Hashable

import numpy as np

from elkopt.elk.backward import BackwardSchedule
from elkopt.elk.lookup import TableIndex
from elkopt.elk.schedulers import (PRUNE_MARGIN, ElkFullResult, ElkSchedule, Problem, elk_full_bound,
                                   evaluate_order, make_schedule, schedule_elk_full)

#: Trials (backward passes) the search may spend by default, order enumerations included.
MAX_TRIALS = 5000
#: Rows tried per group in a first pass; the neighbours of the best are tried next.
COARSE_ROWS = 12


@dataclass(frozen=True)
class SearchResult:
    """elkopt's schedule in the published model: `schedule`, the preload `order` and
    `delay_comp` it runs with, the row chosen per operator group (`rows`: table key ->
    row; groups absent keep the published pick), the Elk-Full latency it started from,
    and how many backward passes it spent (`trials`) over how many `rounds`."""

    schedule: ElkSchedule
    order: tuple[int, ...]
    delay_comp: bool
    rows: dict[Hashable, int]
    start_cycles: float
    trials: int
    rounds: int

    @property
    def gain(self) -> float:
        """How much faster than the start, as a fraction of the start's latency."""
        return 1 - self.schedule.latency_cycles / self.start_cycles


def pareto_rows(table: TableIndex) -> list[int]:
    """Rows no other row dominates in (SRAM it needs, cycles, shift cycles, cold bytes),
    one per distinct tuple (the first), by SRAM needed."""
    fit = np.maximum(table.cold, table.hot)
    keys = np.column_stack([fit, table.exe, table.shift, table.cold]).astype(np.float64)
    order = np.lexsort(keys.T[::-1])
    kept: list[int] = []
    for r in order.tolist():
        k = keys[r]
        if any((keys[q] <= k).all() for q in kept):
            continue  # an equal or better row came first
        kept.append(r)
    return sorted(kept, key=lambda r: (fit[r], r))


def _groups(pb: Problem) -> list[tuple[Hashable, list[int], list[int]]]:
    """(key, operators, candidate rows) for every table with a choice, most run time
    (fastest row x repeats) first."""
    members: dict[Hashable, list[int]] = {}
    for i, op in enumerate(pb.ops):
        members.setdefault(op.key, []).append(i)
    out = []
    for key, ops in members.items():
        rows = pareto_rows(pb.index[ops[0]])
        if len(rows) > 1:
            out.append((key, ops, rows))
    weight = {key: min(pb.index[ops[0]].exe_list) * len(ops) for key, ops, _ in out}
    return sorted(out, key=lambda g: -weight[g[0]])


def search_published(pb: Problem, full: ElkFullResult | None = None, max_trials: int = MAX_TRIALS,
                     progress: Callable[[str], None] | None = None) -> SearchResult:
    """elkopt's schedule of `pb` in the published model (module doc), starting from
    `full` (Elk-Full's result; run here when not given)."""
    say = progress or (lambda _msg: None)
    full = full or schedule_elk_full(pb)
    base = elk_full_bound(pb)
    order, dc = full.order, full.delay_comp
    best = replace(full.schedule, design="elkopt")
    chosen: dict[Hashable, int] = {}
    prefer: dict[int, int] = {}
    trials = rounds = 0
    groups = _groups(pb)

    def trial(rows: dict[int, int], delay_comp: bool) -> BackwardSchedule | None:
        """The backward pass with `rows` preferred, if it beats the best so far."""
        nonlocal trials
        trials += 1
        bound = replace(base, limit=best.latency_cycles * (1 - PRUNE_MARGIN))
        back = evaluate_order(pb, order, delay_comp, bound, rows)
        return back if back is not None and back.latency_cycles < bound.limit else None

    improved = True
    while improved and trials < max_trials:
        improved, rounds = False, rounds + 1
        rows_before = dict(chosen)
        for key, ops, rows in groups:
            if trials >= max_trials:
                break
            tried = {chosen.get(key)}
            coarse = rows if len(rows) <= COARSE_ROWS else \
                [rows[k] for k in np.linspace(0, len(rows) - 1, COARSE_ROWS).round().astype(int)]
            pending = [r for r in coarse if r not in tried]
            while pending and trials < max_trials:
                r = pending.pop(0)
                tried.add(r)
                rows_i = {**prefer, **{i: r for i in ops}}
                back = trial(rows_i, dc)
                if back is not None:
                    best, prefer, improved = make_schedule("elkopt", back, pb.index), rows_i, True
                    chosen[key] = r
                    at = rows.index(r)  # its neighbours next
                    pending = [q for q in rows[max(0, at - 2):at + 3] if q not in tried] + pending
        if chosen != rows_before and trials < max_trials:
            # the other contention mode, then every published order, with the rows chosen
            back = trial(prefer, not dc)
            if back is not None:
                best, dc = make_schedule("elkopt", back, pb.index), not dc
            reordered = schedule_elk_full(pb, prefer=prefer)
            trials += reordered.runs
            if reordered.schedule.latency_cycles < best.latency_cycles * (1 - PRUNE_MARGIN):
                order, dc = reordered.order, reordered.delay_comp
                best = replace(reordered.schedule, design="elkopt")
        say(f"elkopt search in the published model, round {rounds}: {best.latency_ms:.4f} ms "
            f"(Elk-Full {full.schedule.latency_ms:.4f} ms), {trials} trials")
    return SearchResult(best, tuple(order), dc, chosen, full.schedule.latency_cycles, trials, rounds)


__all__ = ["COARSE_ROWS", "MAX_TRIALS", "SearchResult", "pareto_rows", "search_published"]
