"""The published compiler's plan space of one operator, enumerated with numpy.

Written from ELK_REFERENCE sections 4.1, 4.2 and quirk 7.1 (no artifact code). A plan is
a spatial split `p[d]` (core groups per dim) and a temporal split `t[d][v]` (rotating
pieces per dim and variable, output first). The published search enumerates:

1. spatial splits, lexicographically, with `p[d] <= min(cores, L[d])`, `prod(p) <= cores`
   and the core-use and padding floors of `ElkExpr.util_floor` / `pad_floor`;
2. per split, a candidate list per dim: the tuples `t[d]` whose entries divide the
   variables' replica counts, form a divisibility chain, exceed 1 only for variables
   holding dim d, stay within the per-core length and keep the padding floor. The
   published code then sorts this list of lists (quirk 7.1), so dim d takes the list
   ranked d-th, which may belong to another dim;
3. every combination of one tuple per dim whose per-variable products divide the
   replica counts and whose per-iteration padding keeps the floor, in tree order.

Plans come out in the published order: by split, then by combination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

#: Type ids of the published TExpr format.
REDUCE, UNARY, ELEMENTWISE, POOL, CONV, MATMUL, GATHER, SLICE = 0, 1, 2, 3, 4, 5, 6, 8
SUPPORTED_TYPES = (REDUCE, UNARY, ELEMENTWISE, MATMUL, GATHER, SLICE)
#: Above this many cores the published model charges inter-chip exchange (one IPU-Mk2).
CHIP_CORES = 1472
#: Tree rows grown per batch (bounds the temporaries of the temporal enumeration).
EXPAND_ROWS = 400_000


@dataclass(frozen=True)
class PlanRules:
    """Which quirks of the published plan search and cost model apply (all, as published;
    `elkopt.conventions` turns each off by name): `temporal_sort`, the temporal
    enumeration's dimension sort (ELK_REFERENCE section 7, quirk 1; off: each dim its own
    candidate list); `inter_chip_always`, the inter-chip factor on every plan of a
    multi-chip machine (off: only on plans using more than one chip's cores);
    `slice_compute`, a Slice's shift of its output plus a sync (off: no compute);
    `reduce_ladder`, the published alignment of reduced partial sums, which leaves
    outputs of 2 or less unrounded (off: elkopt's, `elkopt.plans.cycles.aligned_output`)."""

    temporal_sort: bool = True
    inter_chip_always: bool = True
    slice_compute: bool = True
    reduce_ladder: bool = True


@dataclass(frozen=True)
class ElkExpr:
    """One operator as the published plan search sees it.

    `slots[v]` lists the dim of each slot of variable v (output first); `ignore[v]` is
    True for variables already on chip (always for the output); `sram_bytes` per core;
    `rules` the published quirks that apply.
    """

    op_type: int
    dims: tuple[int, ...]
    slots: tuple[tuple[int, ...], ...]
    ignore: tuple[bool, ...]
    cores: int
    sram_bytes: int
    elem_bytes: int = 2
    rules: PlanRules = PlanRules()

    @classmethod
    def of(cls, op_type, dims, variables, ignore, cores, sram_bytes, elem_bytes=2,
           rules: PlanRules = PlanRules()) -> "ElkExpr":
        """From the TExpr form: `variables` lists slots of dim indices, `ignore` is per input.

        >>> ElkExpr.of(5, [32, 64, 64], [[[0], [1]], [[0], [2]], [[2], [1]]], [True, False], 16, 1 << 16).slots
        ((0, 1), (0, 2), (2, 1))
        """
        if op_type in (POOL, CONV):
            raise ValueError("published tables: convolution and pool operators are not supported")
        if op_type not in SUPPORTED_TYPES:
            raise ValueError(f"published tables: unknown operator type {op_type}")
        dims = tuple(int(x) for x in dims)
        if not dims or min(dims) < 1:
            raise ValueError(f"published tables: dim lengths must be positive, got {dims}")
        slots = []
        for var in variables:
            if not var or any(len(slot) != 1 for slot in var):
                raise ValueError("published tables: each slot must name one dim (windows are conv/pool only)")
            slots.append(tuple(int(slot[0]) for slot in var))
        if any(d < 0 or d >= len(dims) for var in slots for d in var):
            raise ValueError("published tables: a slot names a dim outside the operator")
        if len(ignore) != len(slots) - 1:
            raise ValueError(f"published tables: {len(slots) - 1} inputs but {len(ignore)} ignore flags")
        if op_type in (MATMUL, GATHER) and len(slots) != 3:
            raise ValueError("published tables: a matmul or gather needs an output and two inputs")
        ignore = (True, *map(bool, ignore))
        return cls(op_type, dims, tuple(slots), ignore, int(cores), int(sram_bytes), int(elem_bytes), rules)

    @property
    def n_dims(self) -> int:
        return len(self.dims)

    @property
    def n_vars(self) -> int:
        return len(self.slots)

    @cached_property
    def uses(self) -> np.ndarray:
        """(V, D) bool: variable v has a slot on dim d."""
        uses = np.zeros((self.n_vars, self.n_dims), dtype=bool)
        for v, var in enumerate(self.slots):
            uses[v, list(var)] = True
        return uses

    def _shape_ratio(self, cores_weight: int) -> float:
        total = math.prod(self.dims)
        return min(total / (total + cores_weight * self.cores), max(self.dims) * self.n_dims / 220)

    @property
    def util_floor(self) -> float:
        """Fewest cores a spatial split may use, as a fraction of `cores`."""
        return (0.951 if self.op_type == GATHER else 0.9) * self._shape_ratio(2)

    @property
    def pad_floor(self) -> float:
        """Lowest padding efficiency of a split (spatial, per dim and per iteration)."""
        return 0.951 if self.op_type == GATHER else 0.9 * self._shape_ratio(1)

    @property
    def inter_chip(self) -> bool:
        return self.cores > CHIP_CORES


@dataclass(frozen=True)
class PlanSpace:
    """All plans of an operator in the published order.

    Per split: `spatial` (S, D), `tile` (S, D) per-core lengths, `replicas` (S, V) cores
    per tile. Per plan: `split` (N,) its split row and `choice` (N, D) the row of
    `candidates` (M, V) it takes as temporal factors at each dim.
    """

    spatial: np.ndarray
    tile: np.ndarray
    replicas: np.ndarray
    split: np.ndarray
    choice: np.ndarray
    candidates: np.ndarray

    def __len__(self) -> int:
        return len(self.split)

    def temporal(self, plans=slice(None)) -> np.ndarray:
        """Temporal factors (n, D, V) of the selected plans."""
        return self.candidates[self.choice[plans]]


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parent, offset) of every child when row i has counts[i] children, in order."""
    counts = np.asarray(counts, dtype=np.int64)
    parent = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return parent, np.arange(len(parent)) - starts[parent]


def sequential_prod(columns: np.ndarray) -> np.ndarray:
    """Product over the last axis, left to right (float results match a scalar loop)."""
    out = columns[..., 0]
    for i in range(1, columns.shape[-1]):
        out = out * columns[..., i]
    return out


def enumerate_spatial(expr: ElkExpr) -> np.ndarray:
    """Spatial splits (S, D) of the published tree that pass both floors, lexicographic."""
    cores, floor = expr.cores, expr.util_floor
    most = [min(cores, n) for n in expr.dims]
    parts = np.zeros((1, 0), dtype=np.int64)
    used = np.ones(1, dtype=np.int64)
    for d in range(expr.n_dims):
        # The tree starts each level where the remaining dims could still reach the floor.
        rest = math.prod(most[d + 1 :]) if d + 1 < expr.n_dims else 1.0
        lo = np.floor(cores * floor / used / rest).astype(np.int64)
        lo = np.minimum(np.maximum(lo, 1), most[d])
        hi = np.minimum(most[d], cores // used)
        parent, offset = expand(np.maximum(hi - lo + 1, 0))
        value = lo[parent] + offset
        parts = np.column_stack([parts[parent], value])
        used = used[parent] * value
    lengths = np.array(expr.dims, dtype=np.int64)
    padded = -(-lengths // parts) * parts
    keep = (used / cores >= floor) & (sequential_prod(lengths / padded) >= expr.pad_floor)
    return parts[keep]


def replica_counts(expr: ElkExpr, spatial: np.ndarray) -> np.ndarray:
    """(S, V): cores holding the same tile of each variable."""
    tile = -(-np.array(expr.dims, dtype=np.int64) // spatial)
    cores_used = spatial.prod(axis=1)
    out = np.empty((len(spatial), expr.n_vars), dtype=np.int64)
    for v, var in enumerate(expr.slots):
        size = tile[:, list(var)].prod(axis=1)
        padded = (tile[:, list(var)] * spatial[:, list(var)]).prod(axis=1)
        out[:, v] = -(-(size * cores_used) // padded)
    return out


@lru_cache(maxsize=8)
def divisor_table(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, divisors): divisors of n, ascending, are divisors[start[n]:start[n+1]]."""
    base = np.arange(1, limit + 1)
    multiple = np.concatenate([np.arange(i, limit + 1, i) for i in base])
    divisor = np.repeat(base, limit // base)
    order = np.lexsort((divisor, multiple))
    start = np.zeros(limit + 2, dtype=np.int64)
    np.add.at(start, multiple + 1, 1)
    return np.cumsum(start), divisor[order]


def dim_candidates(expr: ElkExpr, tile: np.ndarray, replicas: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate tuples of dim d for every split: (split row (n,), tuples (n, V)), split-major,
    each split's tuples in lexicographic order."""
    start, divisors = divisor_table(int(replicas.max()))
    limit = tile[:, d]
    rows = np.arange(len(tile))
    tuples = np.ones((len(tile), expr.n_vars), dtype=np.int64)
    for v in np.flatnonzero(expr.uses[:, d]):
        n = replicas[rows, v]
        # Divisors above the per-core length can never pass, so they are not expanded.
        lo, hi = start[n], start[n + 1]
        fits = _count_at_most(divisors, lo, hi, limit[rows])
        parent, offset = expand(fits)
        value = divisors[lo[parent] + offset]
        rows, tuples = rows[parent], tuples[parent]
        tuples[:, v] = value
    ordered = np.sort(tuples, axis=1)
    keep = np.all(ordered[:, 1:] % ordered[:, :-1] == 0, axis=1)
    top = tuples.max(axis=1)
    length = tile[rows, d].astype(np.float64)
    pad_ok = length / (top * np.ceil(length / top)) >= expr.pad_floor
    keep &= (top == 1) | pad_ok
    return rows[keep], tuples[keep]


def _count_at_most(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per row, how many of the ascending values[lo:hi] are <= limit (vectorised bisection)."""
    left, right = lo.copy(), hi.copy()
    while True:
        active = left < right
        if not active.any():
            return left - lo
        mid = (left + right) // 2
        below = active & (values[np.minimum(mid, len(values) - 1)] <= limit)
        left = np.where(below, mid + 1, left)
        right = np.where(active & ~below, mid, right)


def sort_quirk_order(keys: list[np.ndarray], rows: list[np.ndarray], n_splits: int) -> np.ndarray:
    """(S, D): for each split, which dim's candidate list the published sort puts at depth k.

    Python compares the lists of tuples lexicographically (a prefix sorts first) and sorts
    stably; `keys[d]` ranks each tuple of dim d's lists, `rows[d]` gives its split.
    """
    n_dims = len(keys)
    padded = []
    for key, row in zip(keys, rows):
        counts = np.bincount(row, minlength=n_splits)
        width = max(int(counts.max(initial=0)), 1)
        table = np.full((n_splits, width), -1, dtype=np.int64)
        table[row, np.arange(len(row)) - (np.cumsum(counts) - counts)[row]] = key
        padded.append(table)
    width = max(t.shape[1] for t in padded)
    padded = [np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=-1) for t in padded]
    rank = np.zeros((n_splits, n_dims), dtype=np.int64)
    every = np.arange(n_splits)
    for a in range(n_dims):
        for b in range(a + 1, n_dims):
            differ = padded[a] != padded[b]
            first = differ.argmax(axis=1)
            b_less = differ.any(axis=1) & (padded[b][every, first] < padded[a][every, first])
            # Equal lists keep their dim order (a stable sort): b ranks after a.
            rank[:, a] += b_less
            rank[:, b] += ~b_less
    order = np.empty_like(rank)
    np.put_along_axis(order, rank, np.arange(n_dims)[None, :].repeat(n_splits, 0), axis=1)
    return order


def _tuple_ranks(tuples: np.ndarray) -> np.ndarray:
    """Lexicographic rank of each row among all rows (equal rows share a rank)."""
    order = np.lexsort(tuples.T[::-1])
    ranked = tuples[order]
    new = np.ones(len(ranked), dtype=bool)
    new[1:] = np.any(ranked[1:] != ranked[:-1], axis=1)
    ranks = np.empty(len(tuples), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks


def enumerate_plans(expr: ElkExpr, spatial: np.ndarray | None = None, published_sort: bool = True) -> PlanSpace:
    """Every plan of `expr` in the published order (splits from `enumerate_spatial` unless given).

    `published_sort=False` gives each dim its own candidate list (the intended search,
    without quirk 7.1).
    """
    if spatial is None:
        spatial = enumerate_spatial(expr)
    spatial = np.asarray(spatial, dtype=np.int64).reshape(-1, expr.n_dims)
    tile = -(-np.array(expr.dims, dtype=np.int64) // spatial)
    replicas = replica_counts(expr, spatial)
    n_splits, n_dims, n_vars = len(spatial), expr.n_dims, expr.n_vars
    if n_splits == 0:
        none = np.zeros(0, dtype=np.int64)
        no_candidates = np.ones((1, n_vars), dtype=np.int64)
        return PlanSpace(spatial, tile, replicas, none, none.reshape(0, n_dims), no_candidates)

    per_dim = [dim_candidates(expr, tile, replicas, d) for d in range(n_dims)]
    flat = np.concatenate([tuples for _, tuples in per_dim])
    ranks = _tuple_ranks(flat)
    keys, rows, counts, starts = [], [], np.zeros((n_dims, n_splits), dtype=np.int64), []
    base = 0
    for d, (row, tuples) in enumerate(per_dim):
        keys.append(ranks[base : base + len(row)])
        rows.append(row)
        counts[d] = np.bincount(row, minlength=n_splits)
        starts.append(base + np.cumsum(counts[d]) - counts[d])
        base += len(row)
    starts = np.array(starts)
    if published_sort:
        depth_dim = sort_quirk_order(keys, rows, n_splits)
    else:
        depth_dim = np.tile(np.arange(n_dims), (n_splits, 1))

    # Tree over depths: one tuple per depth from the list ranked at that depth. A partial
    # product that no longer divides the replica counts can never become valid.
    split = np.arange(n_splits)
    product = np.ones((n_splits, n_vars), dtype=np.int64)
    chosen = np.zeros((n_splits, 0), dtype=np.int32)
    top_of = flat.max(axis=1)
    for k in range(n_dims):
        dim = depth_dim[split, k]
        count = counts[dim, split]
        kept = []
        for lo, hi in _chunks(count, EXPAND_ROWS):
            parent, offset = expand(count[lo:hi])
            parent += lo
            row = starts[dim[parent], split[parent]] + offset
            grown = product[parent] * flat[row]
            ok = ~np.any(replicas[split[parent]] % grown, axis=1)
            parent, row, grown = parent[ok], row[ok], grown[ok]
            grown_choice = np.column_stack([chosen[parent], row.astype(np.int32)])
            if k == n_dims - 1:
                # Leaves: the per-iteration padding floor.
                top = top_of[grown_choice]
                length = tile[split[parent]].astype(np.float64)
                ok = sequential_prod(length / (np.ceil(length / top) * top)) >= expr.pad_floor
                parent, grown, grown_choice = parent[ok], grown[ok], grown_choice[ok]
            kept.append((split[parent], grown, grown_choice))
        split, product, chosen = (np.concatenate(x) for x in zip(*kept))
    return PlanSpace(spatial, tile, replicas, split, chosen, flat)


def _chunks(counts: np.ndarray, size: int):
    """(lo, hi) row ranges whose summed counts stay near `size` (at least one row each)."""
    total = np.cumsum(counts)
    cuts = np.searchsorted(total, np.arange(size, int(total[-1]) if len(total) else 0, size), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(counts)]]))
    return zip(bounds[:-1], bounds[1:])
