"""The per-operator look-ups the published schedulers make, precomputed as arrays.

Every scheduler reads an operator's cold-hot table in three ways (ELK_REFERENCE 4.4, 5):
the cycles a (cold, hot) pair costs under the MESH/COMM/COMP knobs (`exe`), the fastest
pair that fits a hot-size budget when preloads take the rest of SRAM (`best_row`, Elk-Dyn,
Elk-Full, Ideal), and the static pick of Basic and Static (`baseline_row`). `TableIndex`
answers each with a bisection; float expressions keep the published operation order, so
the cycles are bit-identical to the published ones.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from elkopt.elk.coldhot import ColdHotTable, ElkOp

#: IPU-Mk2 clock: cycles per millisecond.
CYCLES_PER_MS = 1.325e6
#: NoC bandwidth per core that delivers HBM data, GB/s (published unit, 2^30 B).
NOC_GBPS_PER_CORE = 5.5
#: The same in bytes per cycle, evaluated as published (left to right).
NOC_BYTES_PER_CYCLE = NOC_GBPS_PER_CORE * 1024 * 1024 * 1024 / 1.325e9
#: Preloaded cold data is inflated by 1% when it reserves SRAM (COLD_THRESHOLD).
COLD_INFLATION = 1.01


@dataclass(frozen=True)
class Interconnect:
    """The published topology knobs (section 3.6): `mesh` 0 is the all-to-all exchange,
    > 0 the 2-D mesh approximation; `comm` divides shift cycles, `comp` compute cycles."""

    mesh: float = 0.0
    comm: float = 1.0
    comp: float = 1.0

    @property
    def mesh_penalty(self) -> float:
        """Extra share of shift cycles a mesh plan pays for distributing its cold data."""
        return max(0, 1 - 4 * (self.mesh - 1))


ALL_TO_ALL = Interconnect()


class TableIndex:
    """Look-ups into one cold-hot table under one `Interconnect`.

    `exe`, `comp`, `shift`: cycles per row with COMM/COMP applied. `best_row(max_hot)`:
    the published group plan (`search_optimal_global_config_icbm`) for a budget;
    `baseline_row(budget, largest_cold)`: the published `baseline_cold_hot`.
    """

    def __init__(self, table: ColdHotTable, ic: Interconnect = ALL_TO_ALL) -> None:
        self.cold = table.cold.astype(np.int64)
        self.hot = table.hot.astype(np.int64)
        self.cold_list = self.cold.tolist()
        self.hot_list = self.hot.tolist()
        self.min_cold = int(self.cold[0])
        self.hbm_bytes = int(table.hbm_bytes)
        self.min_hot = int(self.hot[0])
        total = table.total.astype(np.float64)
        comp = table.comp.astype(np.float64)
        shift = table.shift.astype(np.float64)
        new_shift, new_comp = shift / ic.comm, comp / ic.comp
        # published: exe -= (shift - shift/COMM); exe -= (comp - comp/COMP)
        self.exe = (total - (shift - new_shift)) - (comp - new_comp)
        self.comp = new_comp
        self.shift = new_shift
        self.exe_list = self.exe.tolist()
        self.comp_list = self.comp.tolist()
        self.shift_list = self.shift.tolist()
        diff = (shift - new_shift) + (comp - new_comp)
        if ic.mesh:
            noc = new_shift * ic.mesh_penalty
        else:
            noc = self.cold / NOC_BYTES_PER_CYCLE / 2
        # A row is eligible for budget B when cold <= B and hot <= B; the published scan
        # keeps the first row (table order) of least score, hence ties go to the lower row.
        self._fit = np.maximum(self.cold, self.hot)
        self._score = {False: (total + noc) - diff, True: (total + 0) - diff}
        self._prefix = {k: self._prefix_best(v) for k, v in self._score.items()}
        self._memo: dict[tuple[float, bool], int] = {}
        # Basic/Static: distinct cold sizes, their first row, and the suffix minimum of
        # their smallest hot size (the largest cold whose smallest hot fits a budget).
        starts = np.flatnonzero(np.r_[True, self.cold[1:] != self.cold[:-1]])
        self._group_start = starts.tolist()
        self._group_end = np.r_[starts[1:], len(self.cold)].tolist()
        first_hot = self.hot[starts]
        self._first_hot_suffix_min = np.minimum.accumulate(first_hot[::-1])[::-1].tolist()

    def _prefix_best(self, score: np.ndarray) -> tuple[list, list]:
        order = np.argsort(self._fit, kind="stable")
        best, out = -1, []
        for r in order.tolist():
            if best < 0 or score[r] < score[best] or (score[r] == score[best] and r < best):
                best = r
            out.append(best)
        return self._fit[order].tolist(), out

    def best_row(self, max_hot: float, ideal: bool = False) -> int:
        """Row of the fastest pair with cold and hot <= `max_hot` bytes, scored with
        the NoC distribution of its cold data (none when `ideal`); -1 when the published
        search gives up (its smallest hot size does not fit, or no pair fits)."""
        row = self._memo.get((max_hot, ideal))
        if row is None:
            fits, best = self._prefix[ideal]
            k = bisect_right(fits, max_hot)
            row = -1 if self.min_hot > max_hot or not k else best[k - 1]
            self._memo[(max_hot, ideal)] = row
        return row

    def baseline_row(self, budget: int, largest_cold: bool) -> int:
        """Basic/Static pick within `budget` bytes: the largest hot size of the smallest
        cold size, or (`largest_cold`) of the largest cold size whose smallest hot fits."""
        g = 0
        if largest_cold:
            g = bisect_right(self._first_hot_suffix_min, budget) - 1
            if g < 0:
                raise ValueError("execution space smaller than every hot size")
        lo, hi = self._group_start[g], self._group_end[g]
        r = bisect_right(self.hot_list, budget, lo, hi) - 1
        if r < lo:
            raise ValueError("execution space smaller than every hot size")
        return r


def build_indices(ops: list[ElkOp], ic: Interconnect = ALL_TO_ALL) -> list[TableIndex]:
    """One `TableIndex` per operator, shared between operators of equal `key`."""
    by_key: dict = {}
    for op in ops:
        if op.key not in by_key:
            by_key[op.key] = TableIndex(op.table, ic)
    return [by_key[op.key] for op in ops]
