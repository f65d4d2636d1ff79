"""Memory and cycles of published plans (ELK_REFERENCE section 3.2), one array entry per plan.

The published compiler evaluates each plan in Python; here every plan of an operator is
costed at once. Floating-point operations follow the published order, so the cycles
agree to the last bit and the strict comparisons of the hot set and the cold-hot table
break ties as the published ones do. Compute fits that agree with elkopt's reference
model are taken from `elkopt.plans.cycles`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elkopt.elk.enumerate import (CHIP_CORES, ELEMENTWISE, GATHER, MATMUL, REDUCE, SLICE, UNARY, ElkExpr,
                                  PlanSpace)
from elkopt.plans import cycles as cyc

SYNC_CYCLES = 118
#: A temporally split variable is double-buffered; every shift round synchronises twice.
BUFFER_ITERS = 2
INTER_CHIP_FACTOR = 1.25
#: Plans costed per batch (bounds the temporaries to some hundred MB).
CHUNK = 100_000


@dataclass(frozen=True)
class PlanCosts:
    """Per plan: `sizes` (N, V) elements of each variable per core and iteration,
    `hot_mem` / `cold_mem` bytes per core, and cycles `exe = comp + sss`
    (`sss`: synchronisation, shifts and the shuffle after the operator)."""

    sizes: np.ndarray
    hot_mem: np.ndarray
    cold_mem: np.ndarray
    exe: np.ndarray
    comp: np.ndarray
    sss: np.ndarray


def shift_time(elements: np.ndarray, elem_bytes: int) -> np.ndarray:
    """Cycles to move `elements` per core (0.56 cycles per 2 bytes; exactly 0 for none)."""
    elements = np.asarray(elements)
    return np.where(elements != 0, elements * elem_bytes / 2 * 0.56, 0.0)


def align_output(x: np.ndarray) -> np.ndarray:
    """The published alignment ladder: above 2, round up to 4, 8, 12, 16, 24, then to a
    multiple of 48. Values up to 2 pass unchanged, fractions included."""
    a = np.asarray(x, dtype=np.float64)
    for step, floor in ((2, 4), (4, 8), (8, 12), (12, 16), (16, 24)):
        a = np.where(a > step, np.maximum(floor, a), a)
    return np.where(a > 24, np.ceil(a / 48) * 48, a)


def reduce_work_cycles(work: np.ndarray) -> np.ndarray:
    """A reduce of `work` = aligned outputs x batch elements."""
    return np.where(work <= 480, np.minimum(481 * 0.25 + 175, work * 1.5 + 175), work * 0.25 + 175)


def matmul_roles(expr: ElkExpr) -> tuple[int, int, int]:
    """(m, k, n) dims of a matmul: k is shared by the inputs' last two slots and not in the
    output's; m and n are the inputs' other last-slot dims (lowest index first)."""
    out, a, b = (var[-2:] for var in expr.slots)
    k = sorted(set(a) & set(b) - set(out))
    if not k:
        raise ValueError("published tables: a matmul needs a reduced dim in both inputs' last two slots")
    m = sorted(set(a) - {k[0]})
    n = sorted(set(b) - {k[0]})
    if not m or not n:
        raise ValueError("published tables: a matmul needs a free dim in each input's last two slots")
    return m[0], k[0], n[0]


def comp_per_iter(expr: ElkExpr, sub: np.ndarray) -> np.ndarray:
    """Compute cycles of one per-core iteration of sub-shape `sub` (N, D)."""
    p = sub.prod(axis=1)
    kind = expr.op_type
    if kind == MATMUL:
        m_dim, k_dim, n_dim = matmul_roles(expr)
        m, k, n = (sub[:, i].astype(np.float64) for i in (m_dim, k_dim, n_dim))
        big, small = np.where(n > m, n, m), np.where(n > m, m, n)
        m, n = np.where(big <= 16, small, big), np.where(big <= 16, big, small)
        batch = sub[:, : max(expr.n_dims - 3, 0)].prod(axis=1)  # all but the last three dims
        k16 = np.ceil(k / (32 / expr.elem_bytes))
        n16 = np.ceil(n / 16)
        per = expr.elem_bytes * 12 * np.ceil(m / 6) * k16 * n16 + 514 * k16 * n16 + 113 * n16 + 173
        return batch * per
    if kind == ELEMENTWISE:
        return cyc.binary_cycles(p)
    if kind == UNARY:
        return cyc.unary_cycles(p)
    out = sub[:, list(expr.slots[0])].prod(axis=1)
    if kind == REDUCE:
        return cyc.reduce_cycles(out, p / out)
    if kind == GATHER:
        indices = sub[:, list(expr.slots[2])].prod(axis=1)
        return cyc.gather_cycles(sub[:, :-1].prod(axis=1), indices)
    if kind == SLICE:
        if not expr.rules.slice_compute:
            return np.zeros(len(sub))
        return shift_time(out, expr.elem_bytes) + SYNC_CYCLES
    raise ValueError(f"published tables: unknown operator type {kind}")


def var_sizes(expr: ElkExpr, tile: np.ndarray, temporal: np.ndarray) -> np.ndarray:
    """(N, V) elements per core and iteration: a variable's slot lengths cut by its own
    temporal factor along that slot's dim (entries for dims it lacks do not count)."""
    sizes = np.ones((len(temporal), expr.n_vars), dtype=np.int64)
    for v, var in enumerate(expr.slots):
        for d in var:
            sizes[:, v] *= -(-tile[:, d] // temporal[:, d, v])
    return sizes


def candidate_levels(candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotation levels of each per-dim temporal tuple (M, V).

    A dim rotates in one level per distinct factor u above 1, ascending: the variables
    whose factor is at least u shift g - 1 times, g = u / the next smaller factor (the
    published gcd loop; factors form a divisibility chain). Level j belongs to variable j
    when it is the first with factor u. Returns per level g (M, V), 1 for no level; the
    shifted variables as a bit mask (M, V); and its rank among the dim's levels (M, V).
    """
    c = candidates
    g = np.ones(c.shape, dtype=np.int64)
    mask = np.zeros(c.shape, dtype=np.int64)
    rank = np.zeros(c.shape, dtype=np.int64)
    bits = 1 << np.arange(c.shape[1])
    for j in range(c.shape[1]):
        u = c[:, j : j + 1]
        first = (u[:, 0] > 1) & np.all(c[:, :j] != u, axis=1)
        below = np.where(c < u, c, 1).max(axis=1)
        g[:, j] = np.where(first, u[:, 0] // below, 1)
        mask[:, j] = np.where(first, ((c >= u) * bits).sum(axis=1), 0)
        rank[:, j] = ((c > 1) & (c < u)).sum(axis=1)
    return g, mask, rank


def sync_shift_cycles(expr: ElkExpr, choice: np.ndarray, levels, sizes: np.ndarray) -> np.ndarray:
    """Rotation cycles of plans choosing candidate rows `choice` (n, D): the levels of all
    dims nest with the biggest shifted volume outermost, ties in dim-major, ascending
    order (the published stable sort), and level i shifts prod_{j<i} g_j x (g_i - 1) times.

    The published code sorts with numpy's default argsort, which is stable up to 17
    entries: always so when dims x variables <= 17 (every operator but conv and pool).
    """
    g_of, mask_of, rank_of = levels
    n, n_dims = choice.shape
    n_vars = sizes.shape[1]
    width = n_dims * n_vars
    subsets = (np.arange(1 << n_vars)[:, None] >> np.arange(n_vars)) & 1  # (2^V, V)
    g = g_of[choice].reshape(n, width)
    mask = mask_of[choice].reshape(n, width)
    size = np.take_along_axis(sizes @ subsets.T, mask, axis=1)
    count = subsets.sum(axis=1)[mask]
    slot = (np.arange(n_dims)[:, None] * n_vars + rank_of[choice]).reshape(n, width)
    # One int64 key per level sorts the levels and carries (size, g, count) along:
    # key = ((-size * (width + 1) + slot) * g_base + g) * count_base + count.
    g_base, count_base = int(g_of.max()) + 1, n_vars + 1
    real = g > 1
    absent = np.iinfo(np.int64).max // (4 * g_base * count_base)
    key = (np.where(real, -size * (width + 1) + slot, absent) * g_base + np.where(real, g, 1)) * count_base
    key = np.sort(key + np.where(real, count, 0), axis=1)[:, : max(int(real.sum(axis=1).max(initial=0)), 1)]
    count = key % count_base
    key //= count_base
    g = key % g_base
    size = np.where(g > 1, -(key // g_base // (width + 1)), 0)
    outer = np.cumprod(g, axis=1) // g
    volume = (outer * (g - 1) * size).sum(axis=1)
    shifts = (outer * (g - 1) * count).sum(axis=1)
    return SYNC_CYCLES * BUFFER_ITERS * shifts + shift_time(volume, expr.elem_bytes)


def shuffle_cycles(
    expr: ElkExpr, replicas: np.ndarray, temporal: np.ndarray, sub: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Re-layout after the operator, plus the reduction of output partial sums (held by
    `replicas[:, 0]` / output temporal product cores), for plans with sub-shape `sub`."""
    if expr.op_type in (ELEMENTWISE, UNARY):
        return np.full(len(sub), float(SYNC_CYCLES))
    partial = replicas[:, 0] // temporal[:, :, 0].prod(axis=1)
    out = sub[:, list(expr.slots[0])].prod(axis=1)
    reduced = out / partial
    eb = expr.elem_bytes
    align = align_output if expr.rules.reduce_ladder else cyc.aligned_output
    pair = 2 * SYNC_CYCLES + shift_time(out // 2, eb)
    gather = np.where(partial == 1, 0.0, np.where(partial == 2, pair, partial * SYNC_CYCLES + shift_time(out, eb)))
    reduce = np.where(
        partial == 1,
        0.0,
        np.where(partial == 2, cyc.binary_cycles(reduced), reduce_work_cycles(align(reduced) * partial)),
    )
    return shift_time(sizes[:, 0], eb) + BUFFER_ITERS * SYNC_CYCLES + SYNC_CYCLES * 4 + gather + reduce


def evaluate_plans(expr: ElkExpr, plans: PlanSpace) -> PlanCosts:
    """Memory and cycles of every plan of `plans`, in order."""
    levels = candidate_levels(plans.candidates)
    parts = [_evaluate(expr, plans, levels, slice(i, i + CHUNK)) for i in range(0, max(len(plans), 1), CHUNK)]
    return PlanCosts(*(np.concatenate([getattr(p, f) for p in parts]) for f in PlanCosts.__dataclass_fields__))


def _evaluate(expr: ElkExpr, plans: PlanSpace, levels, rows: slice) -> PlanCosts:
    temporal = plans.temporal(rows)
    split = plans.split[rows]
    tile, replicas = plans.tile[split], plans.replicas[split]
    sizes = var_sizes(expr, tile, temporal)
    buffered = np.any(temporal > 1, axis=1)  # any dim, even one the variable lacks (quirk 7.1)
    hot_mem = (sizes * (1 + buffered)).sum(axis=1) * expr.elem_bytes
    cold_mem = (sizes * ~np.array(expr.ignore)).sum(axis=1) * expr.elem_bytes
    top = temporal.max(axis=2)
    sub = -(-tile // top)
    comp = comp_per_iter(expr, sub) * top.prod(axis=1)
    sync_shift = sync_shift_cycles(expr, plans.choice[rows], levels, sizes)
    shuffle = shuffle_cycles(expr, replicas, temporal, sub, sizes)
    if expr.inter_chip:
        factor = INTER_CHIP_FACTOR
        if not expr.rules.inter_chip_always:  # only plans that span chips
            factor = np.where(plans.spatial[split].prod(axis=1) > CHIP_CORES, INTER_CHIP_FACTOR, 1.0)
        sync_shift = sync_shift * factor
        shuffle = shuffle * factor
    return PlanCosts(sizes, hot_mem, cold_mem, comp + sync_shift + shuffle, comp, sync_shift + shuffle)
