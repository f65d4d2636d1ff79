"""What the published schedulers read of an operator: its cold-hot table and hot set.

The published compiler keeps, per operator, a table keyed by cold size then hot size (both
bytes per core, ascending): for each (cold, hot) pair the best cold plan and hot plan with
the same spatial split, and the cycles the schedulers charge for the pair, the hot plan's
execution plus the warm-up from the cold layout (ELK_REFERENCE section 4.4). Its hot set
is the near-Pareto list of executing plans (section 4.3), which Ideal reads.

`ColdHotTable` holds both as arrays in the published order, so "the largest hot size for a
cold size" is the last row of that cold size's run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import numpy as np


@dataclass(frozen=True, eq=False)
class ColdHotTable:
    """One operator's cold-hot table (rows sorted by cold, then hot) and hot set.

    Rows: `cold`, `hot` (bytes per core), `total` (hot plan's cycles + warm-up: what a
    schedule charges), `exe`, `comp`, `shift` (the hot plan's cycles: all, compute,
    synchronisation + shifts + shuffle). `row` maps a row to the row of an elkopt
    `PlanTable` it came from (empty when built by the published enumeration).
    `hbm_bytes`: the operator's unique HBM bytes, what its load streams; -1 (published)
    for min_cold x cores, per-core padding included.
    Hot set, in the published order: `hot_set_mem`, `hot_set_total`, `hot_set_comp`,
    `hot_set_shift`.
    """

    cold: np.ndarray
    hot: np.ndarray
    total: np.ndarray
    exe: np.ndarray
    comp: np.ndarray
    shift: np.ndarray
    hot_set_mem: np.ndarray
    hot_set_total: np.ndarray
    hot_set_comp: np.ndarray
    hot_set_shift: np.ndarray
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hbm_bytes: int = -1

    def __post_init__(self) -> None:
        n = len(self.cold)
        if not n:
            raise ValueError("a cold-hot table needs at least one (cold, hot) pair")
        for name in ("hot", "total", "exe", "comp", "shift"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"cold-hot table: {name} has {len(getattr(self, name))} rows, cold {n}")
        key = np.lexsort((self.hot, self.cold))
        if not np.array_equal(key, np.arange(n)):
            raise ValueError("cold-hot table rows must be sorted by cold, then hot")

    @property
    def min_cold(self) -> int:
        """The smallest cold size: min_cold x cores is the operator's unique HBM bytes."""
        return int(self.cold[0])

    def cold_sizes(self) -> np.ndarray:
        """The distinct cold sizes, ascending."""
        return np.unique(self.cold)

    def rows_of(self, cold: int) -> np.ndarray:
        """Indices of the rows of cold size `cold` (hot ascending)."""
        lo, hi = np.searchsorted(self.cold, [cold, cold + 1])
        return np.arange(lo, hi)


@dataclass(frozen=True)
class ElkOp:
    """One operator as the published schedulers see it: its name (``Op_<i>_<type>``), its
    type id (0 reduce, 1 unary, 2 element-wise, 3 pool, 4 conv, 5 matmul, 6 gather,
    8 slice), its dim lengths, `key` (operators with equal keys share one table: the
    published compiler's unique expressions), the table, and `source`, the index of the
    graph operator it stands for (-1: none given; copies of a split operator share it)."""

    name: str
    op_type: int
    dims: tuple[int, ...]
    key: Hashable
    table: ColdHotTable
    source: int = -1
