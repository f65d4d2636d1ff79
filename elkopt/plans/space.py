"""Enumerate and cost compute-shift plans of one operator (spec sections 3-4).

A plan splits the iteration space spatially (`s[d]` core groups per dim) and
temporally (`t[d][v]` rotating pieces per dim and operand). Enumeration runs
in two stages, both vectorised with numpy:

1. every spatial split that passes the reference pruning (core use and
   padding floors; on a mesh at most two split dims) is costed without
   temporal splitting. An operator left with no split widens the core-use
   floor once (`enumerate_spatial`) instead of failing. The "full" plan
   space (`PLAN_SPACES`, `planning.plan_space`) has no core-use floor;
2. the `max_spatial_splits` most promising splits (the fastest, and those on
   the front of fastest vs smallest possible footprint) get the full
   temporal enumeration under the divisibility rules.

"The fastest" are ranked by their cost without temporal factors. Where none of
the fastest half fits the SRAM that way (a prefill's big matmuls: at 2048 rows
no split of gate_up does), that cost is one no fitting plan reaches, and in the
full space the half is ranked instead by each split's fastest plan that fits
with at most one temporal factor (one operand, one dim: `_one_factor_fits`).
Those are evaluated in the order of the cost without temporal factors, a
chunk at a time, until the next chunk cannot enter the half (its cost without
temporal factors is already above the half's worst), for at most 8 chunks of
4096 splits. Llama2-13B's prefill gate_up at 2048 rows: its fastest plan
1,626,921 -> 1,057,924 cycles.

Stage 1 keeps the plan space tractable: the reference enumerates temporal
factors for every spatial split and needs minutes for one large matmul.

Temporal factors, and partial sums carried in time
--------------------------------------------------
`t[d][v] = f` cuts operand v's tile into f pieces along dim d; the pieces sit on
f of the cores that hold replicas of that tile and rotate among them, one shift
per iteration, so every core sees every piece (spec section 4). A factor is
allowed only on a dim the operand indexes: a piece must be a piece of the tile.

Partial sums of a contracted dim K are carried in time by the output's factor
on one of its own dims. Say the output tile (M x N per core) has s_K replicas,
one per K slice. With `t[M][out] = f` (f dividing s_K), f of those cores each
hold an M/f piece of the tile; in every iteration a core adds its K slice's
contribution to the piece it holds, then passes the piece on. After f
iterations each piece has visited all f cores and holds their whole sum (a
reduce-scatter done in the compute loop), so s_K / f replicas of M/f pieces are
left to reduce spatially. The cost model charges exactly that: f iterations of
an (M/f, K, N) matmul, f - 1 shifts of the M/f piece, and the reduction of
s_K / f replicas of M/f x N elements (`_shuffle_cycles`). A hand-worked case is
`tests/test_plans.py::test_partial_sums_carried_in_time_by_hand`.

The published search also yields, through its temporal-sort quirk (ELK_REFERENCE
7.1), an output factor on K itself: f iterations over a K/f slice, the whole
M x N tile shifted f - 1 times, and s_K / f replicas reduced. That execution
does not exist: while f whole-tile accumulators rotate, each collects a K/f
slice from every core, so after the rotation the f cores still hold f partial
sums of the whole tile and the reduction the cost drops is still owed. These
plans are not in elkopt's space; under `conventions.published_plans` the
published tables keep them, as published. `experiments/batch1_bound.py` shows
what they would buy: a batch-1 Llama2-13B step's fastest plans sum to 1.63x its
HBM time with them, 1.90x without, against 1.45x for the matmuls alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.ir import OpKind, Operator
from elkopt.plans import cycles as cyc

#: Core-use and padding floors of the reference pruning (spec section 4).
CORE_USE_FLOOR = 0.9
PADDING_FLOOR = 0.9
#: The plan spaces: "reference" keeps the reference pruning's core-use floor, "full" drops
#: it (a split may use any number of cores; the padding floor stays).
PLAN_SPACES = ("reference", "full")
#: Above this many temporal combinations per split, the rarest are thinned.
MAX_TEMPORAL_COMBOS = 4096


def check_plan_space(plan_space: str) -> None:
    """ValueError naming planning.plan_space unless it is one of `PLAN_SPACES`."""
    if plan_space not in PLAN_SPACES:
        raise ValueError(f"planning.plan_space must be one of {', '.join(PLAN_SPACES)}, got {plan_space!r}")


@dataclass(frozen=True)
class OpShape:
    """What the cost model needs of an operator: no names, only structure."""

    kind: OpKind
    lengths: tuple[int, ...]
    uses: tuple[tuple[bool, ...], ...]  # uses[v][d]; operand 0 is the output
    hbm: tuple[bool, ...]  # per operand: read from HBM
    reduce: str | None = None
    # `Operator.load_factor`: no cost depends on it, but operators with different factors
    # read different HBM bytes and so must not share a table object. Left out of the repr,
    # which names cache files (`table_key` adds it when it is not 1).
    load_factor: float = field(default=1.0, repr=False)

    @classmethod
    def of(cls, op: Operator) -> "OpShape":
        names = [d.name for d in op.dims]
        operands = (op.output, *op.inputs)
        uses = tuple(tuple(n in o.dims for n in names) for o in operands)
        hbm = tuple(str(o.storage) == "hbm" for o in operands)
        return cls(op.kind, tuple(d.length for d in op.dims), uses, hbm, op.reduce, float(op.load_factor))

    @property
    def n_dims(self) -> int:
        return len(self.lengths)

    @property
    def uses_array(self) -> np.ndarray:
        return np.array(self.uses, dtype=bool)  # (V, D)

    @property
    def hbm_operands(self) -> tuple[int, ...]:
        return tuple(v for v, h in enumerate(self.hbm) if h)


def pruning_floors(shape: OpShape, cores: int) -> tuple[float, float]:
    """(minimum fraction of cores used, minimum padding efficiency)."""
    volume = float(np.prod(np.array(shape.lengths, dtype=np.float64)))
    spread = max(shape.lengths) * shape.n_dims / 220
    core_use = CORE_USE_FLOOR * min(volume / (volume + 2 * cores), spread)
    padding = PADDING_FLOOR * min(volume / (volume + cores), spread)
    return core_use, padding


def _padding(lengths: np.ndarray, splits: np.ndarray) -> np.ndarray:
    return lengths / (np.ceil(lengths / splits) * splits)


def enumerate_spatial(shape: OpShape, cores: int, max_split_dims: int | None = None,
                      plan_space: str = "full") -> np.ndarray:
    """All spatial splits (n, D) passing the pruning floors, as int64.

    `plan_space` "full" drops the core-use floor: every split of 1 to `cores` cores within
    the padding floor (and the dim limit), a superset of the reference space. The rest of
    this doc is the reference rule.

    A split uses at most `cores` cores, keeps the padding floor and, on a mesh
    or torus, partitions at most `max_split_dims` dims (spec section 6). The
    core-use floor is a fraction of the cores a split could reach: the chip's
    cores, or on a mesh the product of the widest dims if smaller (the
    reference rule). If no split reaches that within the padding floor (a
    small operator whose dims divide badly on a mesh: Llama2-70B's rotary
    [32, 1, 64, 128] on 5888 cores), the space widens once, deterministically:
    the floor becomes the same fraction of the most cores any allowed split
    uses within the padding floor. The padding floor never moves, and an
    operator with splits under the reference rule keeps exactly those, so the
    widened space is never empty (one core is always a split) and never
    changes an operator that already had plans.
    """
    check_plan_space(plan_space)
    lengths = np.array(shape.lengths, dtype=np.int64)
    core_use, pad_floor = pruning_floors(shape, cores)
    if plan_space == "full":
        core_use = 0.0
    reachable = cores
    if max_split_dims is not None:
        # On a mesh a small operator may not reach the floor with its few
        # widest dims; the floor then applies to what those dims can reach.
        widest = sorted(shape.lengths, reverse=True)[:max_split_dims]
        reachable = min(cores, math.prod(widest))
    partial, last, last_cands = _partial_splits(lengths, cores, pad_floor, max_split_dims)
    rows = _complete_splits(
        partial, last, last_cands, lengths, cores, _min_cores(core_use, reachable), pad_floor, max_split_dims
    )
    if len(rows) == 0:
        reachable = _most_cores(partial, last, last_cands, lengths, cores, pad_floor, max_split_dims)
        rows = _complete_splits(
            partial, last, last_cands, lengths, cores, _min_cores(core_use, reachable), pad_floor, max_split_dims
        )
    return rows


def _min_cores(core_use: float, reachable: int) -> int:
    return max(1, math.ceil(core_use * reachable - 1e-9))


def _partial_splits(
    lengths: np.ndarray, cores: int, pad_floor: float, max_split_dims: int | None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Splits of every dim but the one with most candidates (`last`), and that dim's
    candidates: (partial rows (n, D) with 1 at `last`, last, candidates ascending)."""
    cands = []
    for length in lengths:
        s = np.arange(1, min(int(length), cores) + 1, dtype=np.int64)
        cands.append(s[_padding(float(length), s) >= pad_floor - 1e-12])
    order = sorted(range(len(lengths)), key=lambda d: len(cands[d]))
    last = order[-1]

    partial = np.ones((1, len(lengths)), dtype=np.int64)
    for d in order[:-1]:
        c = cands[d]
        rows = np.repeat(partial, len(c), axis=0)
        rows[:, d] = np.tile(c, len(partial))
        keep = rows.prod(axis=1) <= cores
        rows = rows[keep]
        pad = np.prod(_padding(lengths, rows), axis=1)
        rows = rows[pad >= pad_floor - 1e-12]
        if max_split_dims is not None:
            rows = rows[(rows > 1).sum(axis=1) <= max_split_dims]
        partial = rows
    return partial, last, cands[last]


def _complete_splits(
    partial: np.ndarray,
    last: int,
    c: np.ndarray,
    lengths: np.ndarray,
    cores: int,
    min_cores: int,
    pad_floor: float,
    max_split_dims: int | None,
) -> np.ndarray:
    """The partial splits completed with every candidate of the last dim that
    brings them into [min_cores, cores] cores, within the padding floor and
    the dim limit."""
    p = partial.prod(axis=1)
    lo = np.searchsorted(c, -(-min_cores // p), side="left")
    hi = np.searchsorted(c, cores // p, side="right")
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(partial, counts, axis=0)
    starts = np.repeat(lo, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows[:, last] = c[starts + offsets]
    pad = np.prod(_padding(lengths, rows), axis=1)
    rows = rows[pad >= pad_floor - 1e-12]
    if max_split_dims is not None:
        rows = rows[(rows > 1).sum(axis=1) <= max_split_dims]
    return rows


#: Rows materialised at once while searching for the most cores a split can use.
_CHUNK_ROWS = 1 << 20


def _most_cores(
    partial: np.ndarray,
    last: int,
    c: np.ndarray,
    lengths: np.ndarray,
    cores: int,
    pad_floor: float,
    max_split_dims: int | None,
) -> int:
    """The most cores any split within the padding floor and the dim limit uses
    (at least 1: no split at all always qualifies). Partial rows are completed
    in chunks, so memory stays bounded even with no core-use floor."""
    counts = np.searchsorted(c, cores // partial.prod(axis=1), side="right")
    ends = np.cumsum(counts)
    best, start = 1, 0
    while start < len(partial):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + _CHUNK_ROWS, side="right")))
        rows = _complete_splits(partial[start:stop], last, c, lengths, cores, 1, pad_floor, max_split_dims)
        if len(rows):
            best = max(best, int(rows.prod(axis=1).max()))
        start = stop
    return best


@lru_cache(maxsize=4096)
def divisors(n: int) -> tuple[int, ...]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


@lru_cache(maxsize=65536)
def _factorisations(replicas: int, caps: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Per-dim factor tuples with product dividing `replicas`, factor <= cap."""
    out: list[tuple[int, ...]] = [()]
    for cap in caps:
        nxt = []
        for prefix in out:
            used = math.prod(prefix)
            for f in divisors(replicas // used):
                if f <= cap:
                    nxt.append(prefix + (f,))
        out = nxt
    return tuple(out)


@dataclass
class CostedPlans:
    """Plans of one operator with their costs; arrays share the first axis."""

    spatial: np.ndarray  # (n, D) int64
    temporal: np.ndarray  # (n, D, V) int64
    hot_bytes: np.ndarray  # (n,) int64
    exec_cycles: np.ndarray  # (n,) float64
    exchange_cycles: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return len(self.hot_bytes)

    def subset(self, index: np.ndarray) -> CostedPlans:
        """The plans at `index` (positions along the first axis)."""
        return CostedPlans(self.spatial[index], self.temporal[index], self.hot_bytes[index],
                           self.exec_cycles[index], self.exchange_cycles[index])


def cost_plans(
    shape: OpShape, spatial: np.ndarray, temporal: np.ndarray, chip: Chip, elem_bytes: int
) -> CostedPlans:
    """Cost plans: spatial (n, D) with temporal (n, D, V) factors."""
    uses = shape.uses_array  # (V, D)
    lengths = np.array(shape.lengths, dtype=np.int64)
    tile = -(-lengths // spatial)  # (n, D) per-core tile
    tmax = temporal.max(axis=2)  # (n, D)
    sub = -(-tile // tmax)  # per-iteration sub-shape
    iterations = tmax.prod(axis=1).astype(np.float64)
    p = sub.prod(axis=1).astype(np.float64)
    # per-iteration piece of every operand, cut by its own temporal factors
    own = -(-tile[:, :, None] // temporal)  # (n, D, V)
    piece = np.where(uses.T[None, :, :], own, 1).prod(axis=1).astype(np.float64)  # (n, V)
    rotating = (temporal > 1).any(axis=1)  # (n, V)
    hot_bytes = ((piece * (1 + rotating)).sum(axis=1) * elem_bytes).astype(np.int64)

    compute = _compute_cycles(shape, sub, p) * iterations / chip.compute_scale
    per_byte = chip.shift_cycles_per_byte
    shifts = _rotation_cycles(temporal, piece, elem_bytes, per_byte)
    shuffle = _shuffle_cycles(shape, spatial, temporal, sub, piece, elem_bytes, per_byte)
    cores_used = spatial.prod(axis=1)
    factor = np.where(
        (chip.n_chips > 1) & (cores_used > chip.cores_per_chip), chip.inter_chip_exchange_factor, 1.0
    )
    exchange = (shifts + shuffle) * factor
    return CostedPlans(spatial, temporal, hot_bytes, compute + exchange, exchange)


def _compute_cycles(shape: OpShape, sub: np.ndarray, p: np.ndarray) -> np.ndarray:
    uses = shape.uses_array
    kind = shape.kind
    if kind is OpKind.MATMUL:
        out, a, b = uses[0], uses[1], uses[2]
        sel = {
            "b": out & a & b,
            "m": out & a & ~b,
            "n": out & b & ~a,
            "k": a & b & ~out,
        }
        prod = {k: np.where(mask[None, :], sub, 1).prod(axis=1) for k, mask in sel.items()}
        return cyc.matmul_cycles(prod["b"], prod["m"], prod["k"], prod["n"])
    if kind is OpKind.BINARY:
        return cyc.binary_cycles(p)
    if kind is OpKind.UNARY:
        return cyc.unary_cycles(p)
    if kind is OpKind.REDUCE:
        o = np.where(uses[0][None, :], sub, 1).prod(axis=1)
        return cyc.reduce_cycles(o, p / o)
    if kind is OpKind.GATHER:
        idx = np.where(uses[-1][None, :], sub, 1).prod(axis=1)
        return cyc.gather_cycles(p, idx)
    if kind is OpKind.SLICE:
        return np.zeros_like(p)  # its whole cost is the re-layout in the shuffle
    raise ValueError(f"no cycle formula for operator kind {kind!r}")


def _rotation_cycles(
    temporal: np.ndarray, piece: np.ndarray, elem_bytes: int, per_byte: float
) -> np.ndarray:
    """Shift rounds of the rotation schedule (spec section 4), all plans at once.

    Per dim, the sorted distinct factors c1 | c2 | ... give rounds of
    g = c_j / c_{j-1} - 1 shifts of every operand with factor >= c_j. Rounds
    are nested with the biggest shifted piece outermost.
    """
    n, n_dims, n_ops = temporal.shape
    if not (temporal > 1).any():  # no rotation (stage 1 costs every split so): no shift
        return np.zeros(n)
    levels = np.sort(temporal, axis=2)  # (n, D, V) ascending
    prev = np.concatenate([np.ones((n, n_dims, 1), dtype=levels.dtype), levels[:, :, :-1]], axis=2)
    g = levels // prev  # 1 where no new level
    # operands shifted in the round of level j: those with factor >= level j
    shifted = temporal[:, :, None, :] >= levels[:, :, :, None]  # (n, D, J, V)
    size = (shifted * piece[:, None, None, :]).sum(axis=3)  # (n, D, J)
    count = shifted.sum(axis=3)
    g = g.reshape(n, -1).astype(np.float64)
    size = size.reshape(n, -1)
    count = count.reshape(n, -1).astype(np.float64)
    size = np.where(g > 1, size, 0.0)
    order = np.argsort(-size, axis=1, kind="stable")
    g = np.take_along_axis(g, order, axis=1)
    size = np.take_along_axis(size, order, axis=1)
    count = np.take_along_axis(count, order, axis=1)
    outer = np.cumprod(np.concatenate([np.ones((n, 1)), g[:, :-1]], axis=1), axis=1)
    volume = (outer * (g - 1) * size).sum(axis=1)
    n_shifts = (outer * (g - 1) * count).sum(axis=1)
    return 2 * cyc.SYNC_CYCLES * n_shifts + cyc.shift_cycles(volume, elem_bytes, per_byte)


def _shuffle_cycles(
    shape: OpShape,
    spatial: np.ndarray,
    temporal: np.ndarray,
    sub: np.ndarray,
    piece: np.ndarray,
    elem_bytes: int,
    per_byte: float,
) -> np.ndarray:
    """After the op: one sync for element-wise ops; otherwise re-layout the
    output piece and reduce partial sums held by several cores."""
    if shape.kind in (OpKind.BINARY, OpKind.UNARY):
        return np.full(len(spatial), cyc.SYNC_CYCLES)
    out_uses = shape.uses_array[0]
    out_replicas = np.where(out_uses[None, :], 1, spatial).prod(axis=1)
    replicas = np.maximum(np.rint(out_replicas / temporal[:, :, 0].prod(axis=1)), 1)
    out_sub = np.where(out_uses[None, :], sub, 1).prod(axis=1).astype(np.float64)
    relayout = cyc.shift_cycles(piece[:, 0], elem_bytes, per_byte) + 6 * cyc.SYNC_CYCLES
    return relayout + cyc.output_reduction_cycles(out_sub, replicas, elem_bytes, per_byte)


def replicas(shape: OpShape, spatial: np.ndarray) -> np.ndarray:
    """(n, V): cores holding the same tile of each operand."""
    uses = shape.uses_array
    return np.stack([np.where(u[None, :], 1, spatial).prod(axis=1) for u in uses], axis=1)


def no_temporal(shape: OpShape, n: int) -> np.ndarray:
    return np.ones((n, shape.n_dims, len(shape.uses)), dtype=np.int64)


def enumerate_temporal(shape: OpShape, split: np.ndarray, pad_floor: float) -> np.ndarray:
    """All temporal factor sets (m, D, V) for one spatial split.

    Rules: a factor only on dims the operand uses; per operand the product of
    its factors divides its replica count; per dim the factors of all
    operands divide each other in a chain; the padded sub-tile keeps the
    padding floor.
    """
    uses = shape.uses
    n_dims, n_ops = shape.n_dims, len(uses)
    tile = [-(-length // int(s)) for length, s in zip(shape.lengths, split)]
    reps = replicas(shape, split[None, :])[0]
    per_operand = []
    for v in range(n_ops):
        dims = [d for d in range(n_dims) if uses[v][d]]
        opts = _factorisations(int(reps[v]), tuple(tile[d] for d in dims))
        full = np.ones((len(opts), n_dims), dtype=np.int64)
        if dims:
            full[:, dims] = np.array(opts, dtype=np.int64).reshape(len(opts), len(dims))
        per_operand.append(full)
    per_operand = _thin(per_operand)
    grids = np.meshgrid(*[np.arange(len(o)) for o in per_operand], indexing="ij")
    combos = np.stack([o[g.ravel()] for o, g in zip(per_operand, grids)], axis=2)  # (m, D, V)
    srt = np.sort(combos, axis=2)
    chain = (srt[:, :, 1:] % srt[:, :, :-1] == 0).all(axis=(1, 2))
    combos = combos[chain]
    tile_arr = np.array(tile, dtype=np.int64)
    tmax = combos.max(axis=2)
    padded = -(-tile_arr // tmax) * tmax
    pad = np.prod(tile_arr / padded, axis=1)
    return combos[pad >= pad_floor - 1e-12]


def _thin(per_operand: list[np.ndarray]) -> list[np.ndarray]:
    """Keep the cross product under MAX_TEMPORAL_COMBOS by dropping, from the
    operand with most options, those with the largest factor products
    (deep temporal splits of one operand, rarely on the Pareto front)."""
    per_operand = list(per_operand)
    while math.prod(len(o) for o in per_operand) > MAX_TEMPORAL_COMBOS:
        v = max(range(len(per_operand)), key=lambda i: len(per_operand[i]))
        opts = per_operand[v]
        order = np.argsort(opts.prod(axis=1), kind="stable")
        per_operand[v] = opts[np.sort(order[: max(1, len(opts) * 3 // 4)])]
    return per_operand


def select_splits(shape: OpShape, costed: CostedPlans, limit: int, ranking: np.ndarray | None = None) -> np.ndarray:
    """Indices of the spatial splits worth a temporal enumeration.

    Half the budget goes to the fastest splits (by `ranking`, cycles per split, if
    given; by `costed.exec_cycles` otherwise); the rest to the splits on the
    front of (smallest footprint reachable by temporal splitting, cycles).
    """
    n = len(costed)
    if n <= limit:
        return np.arange(n)
    fastest = np.argsort(costed.exec_cycles if ranking is None else ranking, kind="stable")[: limit // 2]
    reps = replicas(shape, costed.spatial)
    lengths = np.array(shape.lengths, dtype=np.int64)
    tile = -(-lengths // costed.spatial)
    uses = shape.uses_array
    sizes = np.stack([np.where(u[None, :], tile, 1).prod(axis=1) for u in uses], axis=1)
    floor = np.where(reps > 1, 2 * np.ceil(sizes / reps), sizes).sum(axis=1)
    front = pareto_2d(floor, costed.exec_cycles)
    front = front[np.argsort(floor[front], kind="stable")]
    rest = limit - len(fastest)
    if len(front) > rest:
        front = front[np.linspace(0, len(front) - 1, rest).round().astype(int)]
    return np.unique(np.concatenate([fastest, front]))


#: Splits costed at a time by `fit_ranking`, at most so many times (where no split fits with
#: one factor, a scan of every split would find nothing: 8.4 s for OPT-30B's training LM head),
#: and the temporal factors it tries.
_RANK_CHUNK = 4096
_RANK_MAX_CHUNKS = 8
_RANK_FACTORS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)


def fit_ranking(shape: OpShape, spatial: np.ndarray, stage1: CostedPlans, chip: Chip, elem_bytes: int,
                want: int) -> np.ndarray | None:
    """Cycles per split to rank "the fastest" by (module doc), or None when the
    `want` fastest splits without temporal factors include one that fits as it is.

    Splits not evaluated (past the `_RANK_MAX_CHUNKS` chunks, or once no chunk can enter),
    and splits with no fitting plan of at most one temporal factor, rank after the others in
    the order of their cost without temporal factors.
    """
    order = np.argsort(stage1.exec_cycles, kind="stable")
    if (stage1.hot_bytes[order[:want]] <= chip.usable_sram_bytes_per_core).any():
        return None
    fits = np.full(len(spatial), np.inf)
    for lo in range(0, min(len(order), _RANK_CHUNK * _RANK_MAX_CHUNKS), _RANK_CHUNK):
        chunk = order[lo:lo + _RANK_CHUNK]
        found = np.sort(fits[np.isfinite(fits)])
        if len(found) >= want and stage1.exec_cycles[chunk[0]] >= found[want - 1]:
            break
        fits[chunk] = _one_factor_fits(shape, spatial[chunk], chip, elem_bytes)
    unranked = np.max(fits[np.isfinite(fits)], initial=0.0) + 1.0
    # after every split with a fitting estimate, in the order of the cost without factors
    return np.where(np.isfinite(fits), fits, unranked + np.argsort(order).astype(np.float64))


def _one_factor_fits(shape: OpShape, spatial: np.ndarray, chip: Chip, elem_bytes: int) -> np.ndarray:
    """Per split, the fastest plan that fits the SRAM with no temporal factor or with one
    (one operand, one dim it indexes, a factor of `_RANK_FACTORS` dividing the operand's
    replicas and at most its tile); inf where none does."""
    n, n_dims, n_operands = len(spatial), shape.n_dims, len(shape.uses)
    reps = replicas(shape, spatial)
    tile = -(-np.array(shape.lengths, dtype=np.int64) // spatial)
    rows, temporal = [np.arange(n)], [np.ones((n, n_dims, n_operands), dtype=np.int64)]
    for v in range(n_operands):
        for d in range(n_dims):
            if not shape.uses[v][d]:
                continue
            for f in _RANK_FACTORS:
                index = np.nonzero((reps[:, v] % f == 0) & (tile[:, d] >= f))[0]
                t = np.ones((len(index), n_dims, n_operands), dtype=np.int64)
                t[:, d, v] = f
                rows.append(index)
                temporal.append(t)
    at = np.concatenate(rows)
    costed = cost_plans(shape, spatial[at], np.concatenate(temporal), chip, elem_bytes)
    fits = costed.hot_bytes <= chip.usable_sram_bytes_per_core
    best = np.full(n, np.inf)
    np.minimum.at(best, at[fits], costed.exec_cycles[fits])
    return best


def pareto_2d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of points not dominated in (x, y), both minimised; ties keep one."""
    order = np.lexsort((y, x))
    best = np.minimum.accumulate(y[order])
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = y[order][1:] < best[:-1]
    return order[keep]


def _row_positions(rows: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Positions in `rows` of the rows of `subset`, every one of which `rows` holds."""
    def keys(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.int64)
        return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()

    row_keys = keys(rows)
    order = np.argsort(row_keys, kind="stable")
    return order[np.searchsorted(row_keys[order], keys(subset))]


def min_hot_bytes(shape: OpShape, cores: int, elem_bytes: int) -> int:
    """A lower bound on any plan's per-core footprint (`CostedPlans.hot_bytes`): every operand
    spread evenly over all cores, no replica, no rotation buffer. A plan's piece of operand v
    is its tile cut by the temporal factors, and the tiles times their pieces cover v on at
    most `cores` cores, so no piece is smaller than v / cores."""
    sizes = [int(np.prod([n for n, used in zip(shape.lengths, uses) if used], dtype=np.float64))
             for uses in shape.uses]
    return sum(-(-size // cores) for size in sizes) * elem_bytes


def enumerate_plans(shape: OpShape, chip: Chip, elem_bytes: int, max_splits: int,
                    plan_space: str = "full") -> CostedPlans:
    """Every plan worth keeping for one operator, costed (`plan_space`: `PLAN_SPACES`)."""
    spatial = enumerate_spatial(shape, chip.cores, chip.max_partitioned_dims, plan_space)
    if len(spatial) == 0:
        return CostedPlans(
            np.zeros((0, shape.n_dims), np.int64),
            np.zeros((0, shape.n_dims, len(shape.uses)), np.int64),
            np.zeros(0, np.int64),
            np.zeros(0),
            np.zeros(0),
        )
    stage1 = cost_plans(shape, spatial, no_temporal(shape, len(spatial)), chip, elem_bytes)
    ranking = None
    if plan_space == "full" and len(spatial) > max_splits:
        ranking = fit_ranking(shape, spatial, stage1, chip, elem_bytes, max_splits // 2)
    chosen = select_splits(shape, stage1, max_splits, ranking)
    if plan_space == "full" and len(chosen) < len(spatial):
        # the splits the reference space would choose are chosen too: its selection samples a
        # front that the full space lengthens, so it could otherwise drop a split the reference
        # keeps (a forward pass's context BatchMatMul lost its fastest plan, 190,144 -> 322,118
        # cycles); with them the full table holds every plan of the reference table
        reference = enumerate_spatial(shape, chip.cores, chip.max_partitioned_dims, "reference")
        inside = _row_positions(spatial, reference)
        kept = inside[select_splits(shape, stage1.subset(inside), max_splits)]
        chosen = np.union1d(chosen, kept)
    _, pad_floor = pruning_floors(shape, chip.cores)
    spat, temp = [], []
    for i in chosen:
        combos = enumerate_temporal(shape, spatial[i], pad_floor)
        spat.append(np.repeat(spatial[i][None, :], len(combos), axis=0))
        temp.append(combos)
    return cost_plans(shape, np.concatenate(spat), np.concatenate(temp), chip, elem_bytes)


__all__ = [
    "PLAN_SPACES",
    "check_plan_space",
    "OpShape",
    "CostedPlans",
    "enumerate_plans",
    "fit_ranking",
    "min_hot_bytes",
    "enumerate_spatial",
    "enumerate_temporal",
    "cost_plans",
    "pareto_2d",
    "replicas",
    "pruning_floors",
    "divisors",
]
