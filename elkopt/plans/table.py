"""Plan tables: per operator, every (cold layout, hot plan) pair worth keeping.

A table row pairs a preload layout (cold bytes per core) with an executing
plan (hot bytes per core, cycles) and the distribution cost between them.
Rows dominated in (cold, hot, cycles) are dropped. Tables are computed once
per operator signature and chip, and cached on disk as .npz files so a sweep
never recomputes them; every cached file is verified before use
(`elkopt.plans.cache`) and recomputed if it fails.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from elkopt.chip import CALIBRATION_FIELDS, Chip
from elkopt.graph.ir import Graph, Operator, Storage
from elkopt.plans import cache
from elkopt.plans import cycles as cyc
from elkopt.plans.option import Plan, PlanOption
from elkopt.plans.space import (
    CostedPlans, OpShape, divisors, enumerate_plans, min_hot_bytes, pareto_2d, replicas,
)
from elkopt.progress import Ticker

log = logging.getLogger(__name__)

#: Bump when the cost model or the table layout changes: old cache files then miss.
#: 2: cache files carry their format, key and a checksum.
TABLE_FORMAT = 2

#: The arrays of a table and their dtypes (what a cache file must hold).
_DTYPES = {
    "cold_bytes": np.dtype(np.int64),
    "hot_bytes": np.dtype(np.int64),
    "exec_cycles": np.dtype(np.float64),
    "exchange_cycles": np.dtype(np.float64),
    "distribution_cycles": np.dtype(np.float64),
    "spatial": np.dtype(np.int64),
    "temporal": np.dtype(np.int64),
    "cold_split": np.dtype(np.int64),
    "front": np.dtype(np.int64),
}
_ARRAYS = tuple(_DTYPES)

# Corrupt cache files this process warned about but could not replace: read again in the
# same run (a graph is planned whole and cut), they are not warned about again.
_left_corrupt: set[Path] = set()


class InfeasibleOperatorError(ValueError):
    """An operator has no plan whose hot footprint fits in a core's SRAM."""


@dataclass(frozen=True, eq=False)
class PlanTable:
    """All kept (cold, hot) pairs of one operator; arrays share the first axis.

    front: indices of the hot Pareto front (hot bytes vs exec cycles, rows
    whose cold layout is the hot layout, so no distribution).
    """

    cold_bytes: np.ndarray
    hot_bytes: np.ndarray
    exec_cycles: np.ndarray
    exchange_cycles: np.ndarray
    distribution_cycles: np.ndarray
    spatial: np.ndarray  # (n, D)
    temporal: np.ndarray  # (n, D, V)
    cold_split: np.ndarray  # (n, number of HBM operands)
    front: np.ndarray
    _options: dict[int, PlanOption] = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.cold_bytes)

    @property
    def total_cycles(self) -> np.ndarray:
        return self.exec_cycles + self.distribution_cycles

    @property
    def min_cold_bytes(self) -> int:
        return int(self.cold_bytes.min())

    @property
    def min_hot_bytes(self) -> int:
        return int(self.hot_bytes.min())

    def option(self, row: int) -> PlanOption:
        """Row `row` as a PlanOption (built once per row; schedulers ask for the same rows
        many times)."""
        row = int(row)
        cached = self._options.get(row)
        if cached is None:
            cached = self._options[row] = self._build_option(row)
        return cached

    def _build_option(self, row: int) -> PlanOption:
        plan = Plan(
            tuple(int(s) for s in self.spatial[row]),
            tuple(tuple(int(t) for t in dim) for dim in self.temporal[row]),
        )
        return PlanOption(
            plan=plan,
            cold_bytes=int(self.cold_bytes[row]),
            hot_bytes=int(self.hot_bytes[row]),
            exec_cycles=float(self.exec_cycles[row]),
            exchange_cycles=float(self.exchange_cycles[row]),
            distribution_cycles=float(self.distribution_cycles[row]),
            cold_split=tuple(int(q) for q in self.cold_split[row]),
        )

    def best_row(
        self,
        hot_budget: float,
        max_cold: float | None = None,
        same_layout: bool = False,
    ) -> int | None:
        """Fastest row (exec + distribution) with hot <= hot_budget.

        max_cold: only preload layouts of at most this many bytes per core.
        same_layout: only rows whose preload layout is the executing layout.
        Returns None if no row qualifies.
        """
        ok = self.hot_bytes <= hot_budget
        if max_cold is not None:
            ok &= self.cold_bytes <= max_cold
        if same_layout:
            ok &= self.distribution_cycles == 0
        if not ok.any():
            return None
        total = np.where(ok, self.total_cycles, np.inf)
        return int(np.argmin(total))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _ARRAYS}


def build_table(op: Operator | OpShape, chip: Chip, elem_bytes: int, max_splits: int,
                plan_space: str = "full") -> PlanTable:
    """Enumerate, cost and reduce the plans of one operator (`plan_space`:
    `elkopt.plans.space.PLAN_SPACES`)."""
    shape = op if isinstance(op, OpShape) else OpShape.of(op)
    if min_hot_bytes(shape, chip.cores, elem_bytes) > chip.usable_sram_bytes_per_core:
        return _empty_table(shape)  # no plan can fit: nothing to enumerate (a cut's large copies)
    costed = enumerate_plans(shape, chip, elem_bytes, max_splits, plan_space)
    fits = costed.hot_bytes <= chip.usable_sram_bytes_per_core
    costed = CostedPlans(*(a[fits] for a in _fields(costed)))
    if len(costed) == 0:
        return _empty_table(shape)
    return _pair_with_cold_layouts(shape, costed, chip, elem_bytes)


def _fields(c: CostedPlans) -> tuple[np.ndarray, ...]:
    return (c.spatial, c.temporal, c.hot_bytes, c.exec_cycles, c.exchange_cycles)


def _empty_table(shape: OpShape) -> PlanTable:
    n_dims, n_ops, n_hbm = shape.n_dims, len(shape.uses), len(shape.hbm_operands)
    return PlanTable(
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0),
        np.zeros((0, n_dims), np.int64),
        np.zeros((0, n_dims, n_ops), np.int64),
        np.zeros((0, n_hbm), np.int64),
        np.zeros(0, np.int64),
    )


def _pair_with_cold_layouts(
    shape: OpShape, costed: CostedPlans, chip: Chip, elem_bytes: int
) -> PlanTable:
    """Attach every compatible preload layout to every hot plan, then drop
    rows dominated in (cold bytes, hot bytes, total cycles).

    A preload layout cuts the tile of each HBM operand v into q_v pieces,
    q_v a multiple of the hot plan's h_v = prod_d t[d][v] and a divisor of
    the replica count (spec: t_hot divides t_cold). Distribution then gathers
    m_v = q_v / h_v cold pieces per hot piece. Which dims carry the extra
    split does not change any cost, so q_v alone identifies the layout.
    """
    hbm = shape.hbm_operands
    n = len(costed)
    lengths = np.array(shape.lengths, dtype=np.int64)
    tile = -(-lengths // costed.spatial)
    uses = shape.uses_array
    rows = np.arange(n)
    splits = np.zeros((n, 0), dtype=np.int64)
    cold = np.zeros(n, dtype=np.float64)
    moved = np.zeros(n, dtype=np.float64)  # elements gathered at distribution
    syncs = np.zeros(n, dtype=np.float64)
    reps = replicas(shape, costed.spatial)
    for v in hbm:
        tile_v = np.where(uses[v][None, :], tile, 1).prod(axis=1)[rows]
        hot_v = costed.temporal[rows][:, :, v].prod(axis=1)
        free = reps[rows, v] // hot_v
        extra = [divisors(int(f)) for f in free]
        counts = np.array([len(e) for e in extra])
        m = np.concatenate(extra).astype(np.int64)
        rows, tile_v, hot_v = (np.repeat(a, counts) for a in (rows, tile_v, hot_v))
        splits, cold, moved, syncs = (np.repeat(a, counts, axis=0) for a in (splits, cold, moved, syncs))
        q = hot_v * m
        piece = -(-tile_v // q)
        splits = np.concatenate([splits, q[:, None]], axis=1)
        cold = cold + piece
        moved = moved + np.where(m > 1, m * piece, 0)
        syncs = syncs + np.where(m > 1, m, 0)
    cores_used = costed.spatial[rows].prod(axis=1)
    factor = np.where(
        (chip.n_chips > 1) & (cores_used > chip.cores_per_chip), chip.inter_chip_exchange_factor, 1.0
    )
    dist = (cyc.shift_cycles(moved, elem_bytes, chip.shift_cycles_per_byte) + cyc.SYNC_CYCLES * syncs) * factor
    cold_bytes = (cold * elem_bytes).astype(np.int64)
    hot = costed.hot_bytes[rows]
    total = costed.exec_cycles[rows] + dist

    keep = _pareto_3d(cold_bytes, hot, total)
    rows, splits, cold_bytes, dist = rows[keep], splits[keep], cold_bytes[keep], dist[keep]
    same = dist == 0
    front = np.flatnonzero(same)[pareto_2d(costed.hot_bytes[rows][same], costed.exec_cycles[rows][same])]
    return PlanTable(
        cold_bytes=cold_bytes,
        hot_bytes=costed.hot_bytes[rows],
        exec_cycles=costed.exec_cycles[rows],
        exchange_cycles=costed.exchange_cycles[rows],
        distribution_cycles=dist,
        spatial=costed.spatial[rows],
        temporal=costed.temporal[rows],
        cold_split=splits,
        front=np.sort(front),
    )


def _pareto_3d(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Indices of rows not dominated in (a, b, c), all minimised.

    Rows are swept by a ascending; a row survives if no earlier row has
    b' <= b and c' <= c, checked against the 2-D staircase built so far.
    """
    order = np.lexsort((c, b, a))
    stair_b: list[float] = []  # ascending b
    stair_c: list[float] = []  # strictly descending c
    kept = []
    for i in order:
        bi, ci = b[i], c[i]
        pos = bisect.bisect_right(stair_b, bi)
        if pos and stair_c[pos - 1] <= ci:
            continue
        kept.append(i)
        # insert (bi, ci) and drop the staircase points it dominates
        end = pos
        while end < len(stair_b) and stair_c[end] >= ci:
            end += 1
        stair_b[pos:end] = [bi]
        stair_c[pos:end] = [ci]
    return np.array(sorted(kept), dtype=np.int64)


# -- the cache ---------------------------------------------------------------


def default_cache_dir() -> Path:
    """The plan-table cache of `conf/config.yaml`: $ELKOPT_CACHE/plan_tables, else
    ~/.cache/elkopt/plan_tables (for scripts that call the pipeline directly)."""
    return Path(os.environ.get("ELKOPT_CACHE", Path.home() / ".cache" / "elkopt")) / "plan_tables"


#: Chip fields no plan depends on: the name, HBM, and what only the network simulator uses.
_NOT_IN_PLANS = ("name", "hbm_bytes_per_s", "link_latency_cycles", "hbm_controllers_per_chip",
                 "hbm_sides", "inter_chip_bytes_per_s", *CALIBRATION_FIELDS)


def table_key(shape: OpShape, chip: Chip, elem_bytes: int, max_splits: int, plan_space: str = "full") -> str:
    """Hex digest naming the table of `shape` on `chip` (name excluded) in `plan_space`
    (the reference space keeps the keys it had before there were others)."""
    chip_fields = asdict(chip)
    for name in _NOT_IN_PLANS:
        chip_fields.pop(name)
    # the full space's selection also keeps the reference choice (enumerate_plans) since revision 2,
    # and ranks splits by plans that fit where none of the fastest fits as it is since revision 3
    # (a bounded scan for those plans since revision 4)
    space = () if plan_space == "reference" else (plan_space, 4)
    factor = () if shape.load_factor == 1 else (("load_factor", float(shape.load_factor)),)
    text = repr((TABLE_FORMAT, shape, sorted(chip_fields.items()), elem_bytes, max_splits, *space, *factor))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TableSet:
    """Plan tables of a whole graph: one per op, shared by identical ops."""

    tables: tuple[PlanTable, ...]  # per operator, program order
    unique_ops: int
    cache_hits: int
    seconds: float

    def __getitem__(self, i: int) -> PlanTable:
        return self.tables[i]

    @property
    def total_rows(self) -> int:
        """Rows over the distinct tables (shared tables counted once)."""
        return sum(len(t) for t in {id(t): t for t in self.tables}.values())


def build_tables(
    graph: Graph,
    chip: Chip,
    max_splits: int = 256,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    plan_space: str = "full",
    memo: TableMemo | None = None,
) -> TableSet:
    """Plan tables for every operator of `graph`, computed once per signature, in
    `plan_space` (`elkopt.plans.space.PLAN_SPACES`), through `memo` when given
    (`cached_table`).

    Raises InfeasibleOperatorError naming the operator when one fits in no plan.
    """
    start = time.perf_counter()
    # Operators equal up to names share one table (every layer repeats).
    members: dict[OpShape, int] = {}
    for i, op in enumerate(graph.ops):
        members.setdefault(OpShape.of(op), i)
    by_shape: dict[OpShape, PlanTable] = {}
    hits = 0
    ticker = Ticker(progress, "plan tables: unique operators", len(members))
    for n, (shape, first) in enumerate(members.items(), 1):
        op = graph.ops[first]
        table, hit = cached_table(shape, chip, graph.elem_bytes, max_splits, cache_dir, plan_space, memo)
        hits += hit
        if len(table) == 0:
            raise _infeasible(op, shape, chip, graph.elem_bytes)
        by_shape[shape] = table
        ticker.update(n, f"{hits} from cache")
    ticker.finish(f"{hits} from cache")
    tables = tuple(by_shape[OpShape.of(op)] for op in graph.ops)
    return TableSet(tables, len(members), hits, time.perf_counter() - start)


#: Plan tables kept in memory for one compilation (`elkopt.pipeline.compile_model`), by
#: `table_key`: (table, whether it came from the disk cache). A graph weighed for cutting,
#: estimated and planned builds or reads each table once, with or without a disk cache.
TableMemo = dict[str, tuple["PlanTable", bool]]


def cached_table(
    op: Operator | OpShape, chip: Chip, elem_bytes: int, max_splits: int,
    cache_dir: str | Path | None, plan_space: str = "full", memo: TableMemo | None = None,
) -> tuple[PlanTable, bool]:
    """`build_table` through the disk cache: (table, whether it came from the cache).

    A cache file that fails verification (unreadable, wrong format or key, checksum
    mismatch, arrays that do not fit the operator) is logged as one warning, rebuilt and
    replaced. Empty tables (the operator fits in no plan) are not cached. With `memo`, a
    table already in it is returned as it was first found, and a new one is kept there.
    """
    shape = op if isinstance(op, OpShape) else OpShape.of(op)
    key = table_key(shape, chip, elem_bytes, max_splits, plan_space) if memo is not None or cache_dir else ""
    if memo is not None and key in memo:
        return memo[key]
    found = _disk_table(shape, chip, elem_bytes, max_splits, cache_dir, plan_space, key)
    if memo is not None:
        memo[key] = found
    return found


def _disk_table(shape: OpShape, chip: Chip, elem_bytes: int, max_splits: int, cache_dir: str | Path | None,
                plan_space: str, key: str) -> tuple[PlanTable, bool]:
    """cached_table without the memo; `key` is the table's `table_key`."""
    if not cache_dir:
        return build_table(shape, chip, elem_bytes, max_splits, plan_space), False
    path = Path(cache_dir) / f"{key}.npz"
    try:
        arrays = cache.read_entry(path, key, TABLE_FORMAT, _ARRAYS)
        problem = None if arrays is None else _layout_problem(arrays, shape, chip)
        if arrays is not None and problem is None:
            return PlanTable(**arrays), True
    except cache.CorruptEntry as err:
        problem = str(err)
    table = build_table(shape, chip, elem_bytes, max_splits, plan_space)
    if len(table):
        not_saved = cache.write_entry(path, key, TABLE_FORMAT, table.to_arrays())
    else:  # nothing to cache, but a bad file in its place must go
        not_saved = cache.remove_entry(path) if problem else None
    if problem is not None and (not_saved is None or path not in _left_corrupt):
        outcome = "rebuilt" if not_saved is None else f"rebuilt but not replaced ({not_saved})"
        log.warning("plan table cache: %s is corrupt (%s); %s", path, problem, outcome)
    if problem is not None and not_saved is not None:
        _left_corrupt.add(path)
    return table, False


def _layout_problem(arrays: dict[str, np.ndarray], shape: OpShape, chip: Chip) -> str | None:
    """Why `arrays` cannot be a (non-empty) table of `shape` on `chip`, or None if they can.

    Checks what a writer bug or a hand-edited file with a fresh checksum could get wrong:
    dtypes, shapes that match the operator, equal row counts, and values no table holds.
    """
    for name, dtype in _DTYPES.items():
        if arrays[name].dtype != dtype:
            return f"{name} has dtype {arrays[name].dtype}, expected {dtype}"
    if arrays["cold_bytes"].ndim != 1:
        return f"cold_bytes has shape {arrays['cold_bytes'].shape}, expected one axis"
    n = len(arrays["cold_bytes"])
    if n == 0:
        return "no rows"
    n_dims, n_operands, n_hbm = shape.n_dims, len(shape.uses), len(shape.hbm_operands)
    rows = {"spatial": (n_dims,), "temporal": (n_dims, n_operands), "cold_split": (n_hbm,)}
    for name in _ARRAYS:
        if name == "front":  # a subset of the rows, checked below
            continue
        expected = (n, *rows.get(name, ()))
        if arrays[name].shape != expected:
            return f"{name} has shape {arrays[name].shape}, expected {expected}"
    cycles = np.concatenate([arrays[name] for name in ("exec_cycles", "exchange_cycles", "distribution_cycles")])
    if not (np.isfinite(cycles).all() and (cycles >= 0).all()):
        return "negative or non-finite cycles"
    if (arrays["cold_bytes"] < 0).any() or (arrays["hot_bytes"] < 0).any():
        return "negative bytes"
    if (arrays["hot_bytes"] > chip.usable_sram_bytes_per_core).any():
        return "hot bytes above the SRAM of a core"
    spatial = arrays["spatial"]
    if (spatial < 1).any() or (spatial > np.array(shape.lengths)).any() or (spatial > chip.cores).any():
        return "spatial splits outside the operator's dims"
    if spatial.prod(axis=1, dtype=np.float64).max() > chip.cores:
        return "spatial splits use more cores than the chip has"
    if (arrays["temporal"] < 1).any() or (arrays["cold_split"] < 1).any():
        return "temporal or cold splits below 1"
    front = arrays["front"]
    if front.ndim != 1 or not 1 <= len(front) <= n:
        return f"front has shape {front.shape}, expected 1 to {n} rows"
    if front[0] < 0 or front[-1] >= n or (np.diff(front) <= 0).any():
        return "front rows out of range or not increasing"
    if (arrays["distribution_cycles"][front] != 0).any():
        return "front rows with a distribution cost"
    return None


def _infeasible(op: Operator, shape: OpShape, chip: Chip, elem_bytes: int) -> InfeasibleOperatorError:
    need = min_hot_bytes(shape, chip.cores, elem_bytes)  # every operand spread over all cores
    have = chip.usable_sram_bytes_per_core
    dims = dict((d.name, d.length) for d in op.dims)
    if need <= have:  # the plan space always holds a split, so the padding is what does not fit
        return InfeasibleOperatorError(
            f"operator {op.name!r} ({op.label}, dims {dims}) fits in no plan of its plan space on "
            f"{chip.cores} cores ({chip.topology}): spread evenly over all cores it would need "
            f"{need:,} B per core of the {have:,} B of SRAM, but every split it may use pads it past "
            "that. Use a chip with more SRAM per core or another core count, or a smaller batch or sequence."
        )
    return InfeasibleOperatorError(
        f"operator {op.name!r} ({op.label}, dims {dims}) fits in no plan: it needs at least "
        f"{need:,} B per core, more than the {have:,} B of SRAM per core (short by at least "
        f"{need - have:,} B). Use a chip with more cores or SRAM, or a smaller batch or sequence"
        + (", or cut operators with large HBM data into (more) copies "
           "(planning.split_fraction, planning.max_copies)." if any(x.storage == Storage.HBM for x in op.inputs)
           else ".")
    )

__all__ = [
    "PlanTable",
    "TableSet",
    "TableMemo",
    "InfeasibleOperatorError",
    "build_table",
    "build_tables",
    "cached_table",
    "default_cache_dir",
    "table_key",
]
