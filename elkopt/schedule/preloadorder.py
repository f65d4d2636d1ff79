"""The preload order of a layer's heavy loads, searched by pairwise swaps,
each order timed exactly by the shortest path of `elkopt.schedule.loadtiming`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from elkopt.progress import Ticker
from elkopt.schedule.loadtiming import LayerLoads, best_offsets


#: The preload-order search swaps at most this many loads: the longest ones,
#: which carry almost all HBM bytes of a layer (six in a Llama layer).
MAX_REORDERED_LOADS = 8


def heavy_loads(layer: LayerLoads) -> list[int]:
    """The loads whose order is searched: each at least 1% of the layer's
    execution, the MAX_REORDERED_LOADS longest (indices into the loads)."""
    long_enough = layer.duration >= 0.01 * float(layer.nominal.sum())
    longest = np.argsort(-layer.duration, kind="stable")[:MAX_REORDERED_LOADS]
    return sorted(int(h) for h in longest if long_enough[h])


def search_order(
    layer: LayerLoads, cut: int, rounds: int = 3, progress: Callable[[str], None] | None = None
) -> tuple[LayerLoads, int, int]:
    """Swap pairs of the layer's heavy loads (each at least 1% of the layer's
    execution; the MAX_REORDERED_LOADS longest) in its issue order, keeping a
    swap when the exact timing (cut at `cut`) gets shorter; up to `rounds`
    passes. Returns the layer in the best order found, the swaps tried and
    the swaps kept. progress: where to say how far the search is."""
    heavy = heavy_loads(layer)
    found = best_offsets(layer, [cut])
    if found is None:
        return layer, 0, 0
    period, tried, kept = found.period, 0, 0
    # counted against every pass: a pass that keeps no swap ends the search sooner
    pairs = len(heavy) * (len(heavy) - 1) // 2
    ticker = Ticker(progress, "elkopt: preload orders", rounds * pairs)
    for _ in range(rounds):
        improved = False
        for a, b in itertools.combinations(heavy, 2):
            order = np.arange(layer.n_loads)
            order[[a, b]] = order[[b, a]]
            trial = layer.reordered(order)
            tried += 1
            timing = best_offsets(trial, [cut])
            if timing is not None and timing.period < period - 1e-6:
                layer, period = trial, timing.period
                kept += 1
                improved = True
            ticker.update(tried, f"best layer {period:.0f} cycles")
        if not improved:
            break
    ticker.finish(f"{kept} swaps kept; best layer {period:.0f} cycles")
    return layer, tried, kept


__all__ = ["MAX_REORDERED_LOADS", "heavy_loads", "search_order"]
