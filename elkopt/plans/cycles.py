"""The reference cycle model (IPU MK2 fits, spec section 4), vectorised.

Every function takes numpy arrays (one entry per plan) and returns cycles as
float64 arrays. The constants are the published fits; they are not ours to
tune, so they stay literal here with the formula they belong to.
"""

from __future__ import annotations

import numpy as np

#: Cycles of one exchange synchronisation.
SYNC_CYCLES = 118.0


def matmul_cycles(b: np.ndarray, m: np.ndarray, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """One per-core (b, m, k, n) matmul iteration.

    The kernel prefers the longer free dim as m (6-row blocks) unless both
    are short (m <= 16 after the swap), where it swaps back.
    """
    m = np.asarray(m, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    m, n = np.maximum(m, n), np.minimum(m, n)
    short = m <= 16
    m, n = np.where(short, n, m), np.where(short, m, n)
    k16 = np.ceil(np.asarray(k, dtype=np.float64) / 16)
    n16 = np.ceil(n / 16)
    per = 2 * 12 * np.ceil(m / 6) * k16 * n16 + 514 * k16 * n16 + 113 * n16 + 173
    return np.asarray(b, dtype=np.float64) * per


def binary_cycles(p: np.ndarray) -> np.ndarray:
    """Element-wise op with two inputs over p elements per core."""
    p = np.asarray(p, dtype=np.float64)
    small = np.minimum(16434 * 0.5 + 300, 0.75 * p + 290)
    return np.where(p <= 16432, small, 0.5 * p + 300)


def unary_cycles(p: np.ndarray) -> np.ndarray:
    """Element-wise op with one input over p elements per core."""
    return 0.5 * np.asarray(p, dtype=np.float64) + 200


def aligned_output(o: np.ndarray) -> np.ndarray:
    """Round an output size up to 1, 2, 4, 8, 12, 16, 24 or a multiple of 48."""
    o = np.asarray(o, dtype=np.float64)
    steps = np.array([1, 2, 4, 8, 12, 16, 24], dtype=np.float64)
    idx = np.searchsorted(steps, o, side="left")
    stepped = steps[np.minimum(idx, len(steps) - 1)]
    return np.where(o > 24, np.ceil(o / 48) * 48, np.where(o <= 1, 1.0, stepped))


def reduce_cycles(o: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Reduce r elements into each of o outputs (o rounded up, see aligned_output)."""
    work = aligned_output(o) * np.asarray(r, dtype=np.float64)
    small = np.minimum(481 * 0.25 + 175, 1.5 * work + 175)
    return np.where(work <= 480, small, 0.25 * work + 175)


def gather_cycles(p: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Gather `indices` rows out of a p-element per-core piece."""
    p = np.asarray(p, dtype=np.float64)
    idx = np.maximum(np.asarray(indices, dtype=np.float64), 1)
    return 300 + np.ceil(p / idx / 2) * idx + idx


def shift_cycles(elements: np.ndarray, elem_bytes: int, cycles_per_byte: float) -> np.ndarray:
    """Moving `elements` per core between cores, all cores in parallel
    (0.56 cycles per 2-byte element at the reference 5.5 GB/s per core)."""
    return np.asarray(elements, dtype=np.float64) * (elem_bytes * cycles_per_byte)


def output_reduction_cycles(
    piece: np.ndarray, replicas: np.ndarray, elem_bytes: int, cycles_per_byte: float
) -> np.ndarray:
    """Combine output partial sums held by `replicas` cores (1: nothing).

    piece: per-core output elements before the reduction.
    """
    piece = np.asarray(piece, dtype=np.float64)
    r = np.asarray(replicas, dtype=np.float64)
    reduced = piece / np.maximum(r, 1)
    two = 2 * SYNC_CYCLES + shift_cycles(piece // 2, elem_bytes, cycles_per_byte) + binary_cycles(reduced)
    many = (
        r * SYNC_CYCLES
        + shift_cycles(piece, elem_bytes, cycles_per_byte)
        + reduce_cycles(reduced, r)
    )
    return np.where(r <= 1, 0.0, np.where(r == 2, two, many))
