"""Backward ("inductive") list scheduling shared by the published schedulers.

ELK_REFERENCE section 5.1: the last operator ends at t = 0 and operators are placed from
the last to the first. For each operator a design proposes candidates (a deadline, a row of
its cold-hot table, how many already placed loads overlap it); the engine charges NoC
contention, keeps the latest start, then places the loads whose turn has come in the
preload order, each ending when its operator starts or the next load starts. Times are in
cycles (negative) and every float expression keeps the published operation order.

Contention (the published `delay_comp`): "compute" delays the operator until its shift
cycles fit into the idle NoC time of the overlapped loads; "loads" instead pushes the
overlapped loads earlier while the operator's compute uses their NoC time; "none" (Ideal)
charges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence

import numpy as np

from elkopt.elk.lookup import CYCLES_PER_MS, TableIndex

Contention = Literal["compute", "loads", "none"]


def load_bytes(min_cold: int, hbm_bytes: int, cores: int) -> int:
    """What an operator's load streams: `hbm_bytes`, or (-1, published) `min_cold` bytes
    per core on every core, per-core padding included."""
    return hbm_bytes if hbm_bytes >= 0 else min_cold * cores


@dataclass(frozen=True)
class LoadModel:
    """How long an operator's HBM load takes and how much NoC time it leaves idle.

    `noc_gbps`: NoC GB/s per core in the NoC/HBM ratio (the published code uses 5 in
    Basic, Static and Elk-Dyn, 5.5 in Elk-Full and Ideal); `threshold`: the published
    `load_noc_threshold` (None: Ideal, which counts the unique bytes only and stretches a
    load to its NoC time at most); `mesh` as in `Interconnect`.
    """

    hbm_GBps: float
    cores: int
    noc_gbps: float
    threshold: float | None
    mesh: float = 0.0

    def hbm_cycles(self, min_cold: int, hbm_bytes: int = -1) -> float:
        """Cycles to stream an operator's data from HBM (unit: 2^20 B/ms per GB/s):
        `hbm_bytes`, or (-1, published) `min_cold` bytes per core on every core."""
        total = load_bytes(min_cold, hbm_bytes, self.cores)
        return float(total) / 1024. / 1024. / self.hbm_GBps * CYCLES_PER_MS

    def timing(self, cold: int, min_cold: int, hbm_bytes: int = -1) -> tuple[float, float]:
        """(load cycles, idle NoC cycles) for a load parked in a `cold`-byte layout."""
        t = self.hbm_cycles(min_cold, hbm_bytes)
        ratio = (self.noc_gbps * self.cores) / self.hbm_GBps
        if self.threshold is None:
            noc = t / ratio
            t = max(t, noc)
        elif min_cold <= 0:
            noc = 0
        elif self.mesh:
            noc = t / self.mesh
        else:
            # replicated cold layouts carry more NoC traffic than the unique bytes
            noc = t * (cold / min_cold) / ratio
            t = max(t, noc / self.threshold)
        return t, t - noc


class Loads:
    """The placed loads, latest-placed (= earliest in time) last, as published."""

    __slots__ = ("start", "end", "remain", "op")

    def __init__(self) -> None:
        self.start: list[float] = []
        self.end: list[float] = []
        self.remain: list[float] = []
        self.op: list[int] = []


def contended_start(start: float, deadline: float, shift: float, k: int, loads: Loads) -> float:
    """Latest start once `shift` cycles fit into the idle NoC time of the `k` loads placed
    last (those overlapping the op, walked from the latest in time); if they never fit,
    `shift` cycles before the earliest load."""
    ls, le, lr = loads.start, loads.end, loads.remain
    n = len(ls)
    for q in range(n - k, n):
        s, e, noc = ls[q], le[q], lr[q]
        if e > deadline:
            adj, adj_end = noc * (deadline - s) / (e - s), deadline
        else:
            adj, adj_end = noc, e
        shift -= adj
        if shift <= 0:
            shift += adj
            # (the published code divides by zero here for a plan without shift cycles)
            return min(start, adj_end - (adj_end - s) * (shift / adj if adj else 0.0))
    return min(start, ls[-1] - shift)


def delay_loads(start: float, deadline: float, comp: float, k: int, loads: Loads) -> None:
    """Push the `k` overlapped loads earlier so that the operator's `comp` cycles fit
    beside their busy NoC time: the load where `comp` runs out, and every earlier one,
    move by the remainder."""
    ls, le, lr = loads.start, loads.end, loads.remain
    n = len(ls)
    last, remain = -1, 0.0
    for q in range(n - k, n):
        s, e = ls[q], le[q]
        dur = e - s
        noc = dur - lr[q]
        if e > deadline:
            adj = 0 if noc == 0 else noc * (deadline - s) / dur
        else:
            adj = noc
        comp -= adj
        if comp <= 0:
            # (the published code divides by zero here for a load with no NoC time)
            last, remain = q, (-comp) * (dur / noc) if noc else 0.0
            break
        if s < start:
            break
    if last < 0:
        return
    new_start = min(ls[last], start - remain)
    off = new_start - ls[last]
    ls[last], le[last] = new_start, le[last] + off
    for q in range(last + 1, n):
        ls[q] += off
        le[q] += off


class Step:
    """What a design sees when it proposes candidates for operator `i`."""

    __slots__ = ("exe_start", "rows", "loads")

    def __init__(self, n: int) -> None:
        self.exe_start = [0.0] * n
        self.rows = [-1] * n
        self.loads = Loads()


class Design(Protocol):
    """A design's choices: the last operator's row, then per operator its candidates
    [(deadline, row, overlapped placed loads)], or None to abandon the schedule."""

    def last_row(self) -> int: ...

    def candidates(self, i: int, step: Step) -> list[tuple[float, int, int]] | None: ...


@dataclass(frozen=True)
class BackwardSchedule:
    """One backward schedule, per operator (index = execution order): `exe`, `load` as
    (start, end) cycles, the chosen table `row`, `preloads` (placed loads it overlaps),
    `remain` (idle NoC cycles of its load); `load_order` as scheduled."""

    exe: np.ndarray
    load: np.ndarray
    row: np.ndarray
    preloads: np.ndarray
    remain: np.ndarray
    load_order: tuple[int, ...]

    @property
    def latency_cycles(self) -> float:
        """Cycles from the first load's start to the end of the last operator."""
        return -float(self.load[self.load_order[0], 0])


@dataclass(frozen=True)
class Bound:
    """Stop a schedule once its latency is sure to exceed `limit` cycles. `hbm`: each op's
    HBM load cycles; `fastest_before[i]`: the least run time of ops 0..i-1."""

    limit: float
    hbm: list[float]
    fastest_before: list[float]

    @classmethod
    def build(cls, index: Sequence[TableIndex], loads_model: LoadModel) -> "Bound":
        """The data for `index`, with no limit yet."""
        hbm = [loads_model.hbm_cycles(t.min_cold, t.hbm_bytes) for t in index]
        fastest = np.r_[0.0, np.cumsum([min(t.exe_list) for t in index])].tolist()
        return cls(float("inf"), hbm, fastest)


def run_backward(index: Sequence[TableIndex], loads_model: LoadModel, design: Design,
                 contention: Contention | Callable[[int], Contention],
                 order: Sequence[int] | None = None,
                 bound: Bound | None = None) -> BackwardSchedule | None:
    """Schedule backwards with preload `order` (identity by default); None if abandoned,
    or once the latency is sure to exceed `bound.limit`.

    `contention` may depend on the operator (the published mesh toggling). The bound uses
    that starts only move earlier: every load not yet placed will run, at least at HBM
    speed, before the earliest placed one; every op not yet placed runs, at least at its
    fastest, before the earliest placed op, and op 0's load before it."""
    n = len(index)
    order = list(range(n)) if order is None else list(order)
    mode_of = contention if callable(contention) else (lambda i, c=contention: c)
    st = Step(n)
    loads = st.loads
    exe_end = [0.0] * n
    preloads = [0] * n
    info: dict[int, tuple[float, float]] = {}
    if bound is not None:
        hbm, fastest_before, limit = bound.hbm, bound.fastest_before, bound.limit
        unplaced = sum(hbm) - (hbm[-1] if order[-1] == n - 1 else 0.0)

    def place(i: int, cur: int) -> int:
        # loads are placed in reverse preload order once their operator is placed
        while cur >= 0 and order[cur] >= i:
            op = order[cur]
            t, rem = info[op]
            end = st.exe_start[op] if not loads.start else min(st.exe_start[op], loads.start[-1])
            loads.start.append(end - t)
            loads.end.append(end)
            loads.remain.append(rem)
            loads.op.append(op)
            cur -= 1
        return cur

    tab = index[-1]
    row = design.last_row()
    st.rows[-1], st.exe_start[-1] = row, -tab.exe_list[row]
    info[n - 1] = loads_model.timing(tab.cold_list[row], tab.min_cold, tab.hbm_bytes)
    cur = place(n - 1, n - 1)
    for i in range(n - 2, -1, -1):
        cands = design.candidates(i, st)
        if not cands:
            return None
        tab = index[i]
        mode = mode_of(i)
        best = None
        for deadline, row, k in cands:
            start = deadline - tab.exe_list[row]
            if mode == "compute":
                start = contended_start(start, deadline, tab.shift_list[row], k, loads)
            if best is None or start > best[0]:
                best = (start, deadline, row, k)
        start, deadline, row, k = best
        if mode == "loads":
            delay_loads(start, deadline, tab.comp_list[row], k, loads)
        st.exe_start[i], exe_end[i], st.rows[i], preloads[i] = start, deadline, row, k
        info[i] = loads_model.timing(tab.cold_list[row], tab.min_cold, tab.hbm_bytes)
        placed = len(loads.op)
        cur = place(i, cur)
        if bound is not None:
            for op in loads.op[placed:]:
                unplaced -= hbm[op]
            by_loads = unplaced - loads.start[-1] if loads.start else 0.0
            by_ops = fastest_before[i] + hbm[0] - start
            if max(by_loads, by_ops) > limit:
                return None
    by_op = np.argsort(np.asarray(loads.op))
    load = np.column_stack([loads.start, loads.end])[by_op]
    return BackwardSchedule(
        exe=np.column_stack([st.exe_start, exe_end]),
        load=load,
        row=np.asarray(st.rows, dtype=np.int64),
        preloads=np.asarray(preloads, dtype=np.int64),
        remain=np.asarray(loads.remain)[by_op],
        load_order=tuple(order),
    )
