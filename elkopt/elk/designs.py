"""What each published design proposes per operator (ELK_REFERENCE 5.2-5.6).

Each class answers `Design` for `run_backward`: the last operator's table row, then for
operator i the candidate deadlines with a row each. The scans walk the placed loads from
the earliest in time (the next operator's) forwards; a deadline at a load's start means the
loads before it overlap operator i and their cold data is resident while it runs.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from elkopt.elk.backward import Step
from elkopt.elk.lookup import COLD_INFLATION, TableIndex


class BasicDesign:
    """Double buffering: overlap stops after one load with HBM data (or when SRAM beside
    the smallest execution is full); the op takes the baseline pick of what is left."""

    def __init__(self, index: Sequence[TableIndex], sram: int, max_load: int, largest_cold: bool):
        self.index, self.sram, self.max_load, self.largest = index, sram, max_load, largest_cold

    def last_row(self) -> int:
        return self.index[-1].baseline_row(self.sram, self.largest)

    def candidates(self, i: int, st: Step) -> list[tuple[float, int, int]]:
        index, ls, lop = self.index, st.loads.start, st.loads.op
        tab = index[i]
        budget, nxt = self.sram - tab.min_hot, st.exe_start[i + 1]
        n = len(ls)
        demand, large, loaded, deadline = 0, False, [], -1.0
        for s in range(min(n, self.max_load)):
            q = n - 1 - s
            op = lop[q]
            cold = index[op].cold_list[st.rows[op]]
            loaded.append(cold)
            if ls[q] >= nxt:
                deadline = nxt
                break
            deadline = ls[q]
            if large or demand + cold > budget:
                break
            demand += cold
            large = large or index[op].min_cold > 0
        # the last scanned load is not overlapped: its start is the deadline
        row = tab.baseline_row(self.sram - sum(loaded[:-1]), self.largest)
        return [(deadline, row, len(loaded) - 1)]


class FixedRowDesign:
    """Static (fixed `rows` from one execution space, preloads while their chosen cold
    sizes fit `preload_bytes`) and Ideal (`preload_bytes` None: fastest rows, preloads
    while their min cold sizes fit beside the op's smallest hot size)."""

    def __init__(self, index: Sequence[TableIndex], rows: Sequence[int], sram: int,
                 max_load: int, preload_bytes: int | None):
        self.index, self.rows, self.sram, self.max_load = index, rows, sram, max_load
        self.preload = preload_bytes

    def last_row(self) -> int:
        return self.rows[-1]

    def candidates(self, i: int, st: Step) -> list[tuple[float, int, int]]:
        index, rows, ls, lop = self.index, self.rows, st.loads.start, st.loads.op
        ideal = self.preload is None
        budget = self.sram - index[i].min_hot if ideal else self.preload
        nxt, n = st.exe_start[i + 1], len(ls)
        demand, deadline, m = 0, -1.0, 0
        for s in range(min(n, self.max_load)):
            q = n - 1 - s
            op = lop[q]
            cold = index[op].min_cold if ideal else index[op].cold_list[rows[op]]
            m += 1
            if ls[q] >= nxt:
                deadline = nxt
                break
            deadline = ls[q]
            if demand + cold > budget:
                break
            demand += cold
        return [(deadline, rows[i], m - 1)]


class ElkDynDesign:
    """Elk-Dyn: every overlap depth is a candidate; the op's row is the fastest that fits
    beside the preloads, counted as sqrt(min cold x chosen cold) each (x 1.01). Plans are
    cached per tuple of operator keys, whatever the preloads' chosen sizes (quirk 6)."""

    def __init__(self, index: Sequence[TableIndex], keys: Sequence[Hashable], sram: int,
                 max_load: int):
        self.index, self.keys, self.sram, self.max_load = index, keys, sram, max_load
        self.cache: dict[tuple, int] = {}

    def last_row(self) -> int:
        return self.index[-1].best_row(float(self.sram))

    def _plan(self, i: int, depth: int, colds: list[int]) -> int:
        key = tuple(self.keys[i:i + depth + 1])
        row = self.cache.get(key)
        if row is None:
            reserved = 0
            for q in range(depth):
                reserved += (self.index[i + 1 + q].min_cold * colds[q]) ** 0.5
            row = self.index[i].best_row(self.sram - COLD_INFLATION * reserved)
            self.cache[key] = row
        return row

    def candidates(self, i: int, st: Step) -> list[tuple[float, int, int]]:
        index, ls, lop = self.index, st.loads.start, st.loads.op
        nxt, n = st.exe_start[i + 1], len(ls)
        deadlines, colds = [], []
        for s in range(min(n, self.max_load)):
            q = n - 1 - s
            op = lop[q]
            colds.append(index[op].cold_list[st.rows[op]])
            if ls[q] >= nxt:
                deadlines.append(nxt)
                break
            deadlines.append(ls[q])
        # an op without HBM data may run late, so it tries the deepest overlap first and
        # falls back to shallower ones one at a time while nothing fits
        first = len(deadlines) - 1 if index[i].min_cold == 0 else 0
        while True:
            out = []
            for depth in range(first, len(deadlines)):
                row = self._plan(i, depth, colds)
                if row < 0:
                    break
                out.append((deadlines[depth], row, depth))
            if out or first == 0:
                return out
            first -= 1


class ElkFullDesign:
    """Elk-Full for one preload `order`: ops loaded before op i but run after it are
    resident ("uncommitted"); preloads count with their min cold size; a non-identity
    order is abandoned when a group would reach `max_load` ops or nothing fits.

    `prefer` (not published; elkopt's search, `elkopt.elk.search`): op -> table row it
    runs in wherever that row fits the overlap's budget, instead of the published pick
    (`best_row`); where it does not fit, the published pick stands."""

    def __init__(self, index: Sequence[TableIndex], order: Sequence[int], sram: int,
                 max_load: int, prefer: Mapping[int, int] | None = None):
        self.index, self.order, self.sram, self.max_load = index, list(order), sram, max_load
        self.prefer = prefer or {}
        n = len(index)
        self.identity = self.order == list(range(n))
        self.resident = [0] * n
        self.reserved = [0] * n
        if not self.identity:
            # per op, the ops among the max_load loads before its own that run after it
            order_arr = np.asarray(self.order)
            pos = np.empty(n, dtype=np.int64)
            pos[order_arr] = np.arange(n)
            padded = np.r_[np.full(max_load, -1), order_arr]
            window = sliding_window_view(padded, max_load)[pos]
            after = window > np.arange(n)[:, None]
            min_cold = np.r_[[t.min_cold for t in index], 0]
            self.resident = after.sum(axis=1).tolist()
            self.reserved = (min_cold[window] * after).sum(axis=1).tolist()

    def _row(self, i: int, budget: float) -> int:
        row = self.prefer.get(i)
        tab = self.index[i]
        if row is not None and max(tab.cold_list[row], tab.hot_list[row]) <= budget:
            return row
        return tab.best_row(budget)

    def last_row(self) -> int:
        return self._row(len(self.index) - 1, float(self.sram))

    def candidates(self, i: int, st: Step) -> list[tuple[float, int, int]] | None:
        index, ls, lop = self.index, st.loads.start, st.loads.op
        reserved = self.reserved[i]
        room = self.max_load - self.resident[i]
        nxt, n = st.exe_start[i + 1], len(ls)
        cands = []
        for s in range(min(n, room)):
            if not self.identity and s == room - 1:
                return None
            q = n - 1 - s
            if ls[q] >= nxt:
                cands.append((nxt, reserved, s))
                break
            cands.append((ls[q], reserved, s))
            reserved += index[lop[q]].min_cold
        if index[i].min_cold == 0:
            cands = cands[-1:]
        out = []
        for deadline, reserved, s in cands:
            # a pure function of the op's table and the reserved bytes: memoised there
            row = self._row(i, self.sram - COLD_INFLATION * reserved)
            if row < 0:
                break
            out.append((deadline, row, s))
        return out or None
