"""When to issue a repeating layer's loads: an exact shortest path.

With every operator's plan and preload layout fixed, the cost of a layer
depends only on when its loads run, and under the timeline's rules the HBM
works in *busy periods*: a period starts when an operator starts (the first
load's window), runs loads back to back in preload order, and ends when a
load ends; the HBM then idles until another operator start. An operator
overlapped by loads stalls by max(0, exchange + interconnect use of the
loads - nominal); an operator whose data is not loaded yet waits.

So a layer in steady state is a path through states (k, g): "operator k is
about to start, the HBM is idle, and g is the next load to issue". From a
state, either op k runs with the HBM idle (k+1, g), or a period starts at op
k and carries loads g..g1 (the state after it: the op after the one during
which load g1 ends, and g1+1). Each transition is simulated exactly
(operator starts, waits, stalls), SRAM is checked at every operator (hot
bytes plus every load issued and not yet consumed), and a load may be issued
at most `max_offset` operators ahead of its own. Loads are numbered over two
layers (g >= H: the next layer's), so a cycle from (0, g0) to (K, g0 + H)
is one steady-state layer; its length is the period. The shortest cycle over
g0, and over a few rotations of the layer (the HBM must be idle where the
cycle is cut), is the answer.

`best_offsets` returns, per load of the layer, how many operators before its
own it is issued (0: when the operator before it ends), and the period.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerLoads:
    """One layer: per op nominal cycles, exchange cycles, hot bytes; per load
    (in program order) its op position, duration, interconnect rate, cold bytes."""

    nominal: np.ndarray
    exchange: np.ndarray
    hot: np.ndarray
    load_op: np.ndarray
    duration: np.ndarray
    rate: np.ndarray
    cold: np.ndarray
    sram: float
    max_offset: int

    @property
    def n_ops(self) -> int:
        return len(self.nominal)

    @property
    def n_loads(self) -> int:
        return len(self.load_op)

    def reordered(self, order: np.ndarray) -> "LayerLoads":
        """The same layer with its loads issued in `order` (indices into the loads)."""
        return LayerLoads(self.nominal, self.exchange, self.hot, self.load_op[order], self.duration[order],
                          self.rate[order], self.cold[order], self.sram, self.max_offset)

    def rotated(self, cut: int) -> tuple["LayerLoads", np.ndarray]:
        """The layer started at op `cut`; also the original index of each
        rotated load. The loads keep their cyclic issue order, starting with
        the first whose op is at or after the cut: for loads in program order
        that is the same sequence of loads over the whole graph. (A reordered
        layer is searched and unrolled in its own, already rotated, frame:
        cut 0 leaves a layer as it is.)"""
        if cut == 0:
            return self, np.arange(self.n_loads)
        K = self.n_ops
        position = (self.load_op - cut) % K
        first = int(np.argmin(position))
        order = np.roll(np.arange(self.n_loads), -first)
        ops = (np.arange(K) + cut) % K
        return (
            LayerLoads(self.nominal[ops], self.exchange[ops], self.hot[ops], position[order],
                       self.duration[order], self.rate[order], self.cold[order], self.sram,
                       self.max_offset),
            order,
        )


@dataclass(frozen=True)
class Timing:
    period: float  # cycles of one layer in steady state
    offsets: np.ndarray  # per load (program order): ops between its window and its own op
    cut: int  # the op at which the HBM is idle in every layer


def best_offsets(
    layer: LayerLoads, cuts: list[int] | None = None, tick: Callable[[], None] | None = None
) -> Timing | None:
    """The shortest steady-state layer over the given cuts (default: the
    layer start and the op that can least afford a load); None if no
    schedule keeps SRAM within bounds. tick(): called after each cut."""
    if cuts is None:
        ratio = np.divide(layer.exchange, layer.nominal, out=np.zeros(layer.n_ops), where=layer.nominal > 0)
        cuts = sorted({0, int(np.argmax(ratio * layer.nominal))})
    best: Timing | None = None
    for cut in cuts:
        rotated, order = layer.rotated(cut)
        found = _shortest_cycle(rotated)
        if tick:
            tick()
        if found is None:
            continue
        period, offsets = found
        if best is None or period < best.period - 1e-6:
            original = np.empty(layer.n_loads, dtype=np.int64)
            original[order] = offsets
            best = Timing(period, original, cut)
    return best


def _shortest_cycle(layer: LayerLoads) -> tuple[float, np.ndarray] | None:
    H = layer.n_loads
    if H == 0:
        return float(layer.nominal.sum()), np.zeros(0, dtype=np.int64)
    best: tuple[float, np.ndarray] | None = None
    for g0 in range(H + 1):
        found = _cycle_from(layer, g0)
        if found is not None and (best is None or found[0] < best[0] - 1e-6):
            best = found
    return best


def best_path(ops: LayerLoads, tick: Callable[[], None] | None = None, issued: int = 0) -> Timing | None:
    """The same shortest path over a whole sequence of ops, not a cycle: from
    (0, issued) (the HBM idle at time 0, the first `issued` loads already in
    SRAM) to (K, H) (every op run, every load issued, the HBM idle). Exact for
    the fixed plans; `offsets` as in `best_offsets` (0 for the loads already
    issued); None if SRAM cannot hold what the ops need. tick(): called after
    each op's states are expanded (K times; over a whole graph of thousands of
    ops this path takes a minute or more)."""
    found = _cycle_from(ops, issued, periodic=False, tick=tick)
    if found is None:
        return None
    return Timing(found[0], found[1], 0)


def _cycle_from(
    layer: LayerLoads, g0: int, periodic: bool = True, tick: Callable[[], None] | None = None
) -> tuple[float, np.ndarray] | None:
    """Shortest path (0, g0) -> (K, g0 + H), loads numbered over two layers
    (periodic), or (0, g0) -> (K, H) over one sequence whose loads < g0 are
    issued before it; tick() after each op."""
    K, H = layer.n_ops, layer.n_loads
    nominal = layer.nominal.tolist()
    exchange = layer.exchange.tolist()
    hot = layer.hot.tolist()
    copies = 2 if periodic else 1
    op_of = [int(k) + c * K for c in range(copies) for k in layer.load_op]
    duration = layer.duration.tolist() * copies
    rate = layer.rate.tolist() * copies
    cold = layer.cold.tolist() * copies
    own = {int(k): h for h, k in enumerate(layer.load_op)}  # op -> its load (this layer)
    last = g0 + H if periodic else H  # first load that must not start in this layer
    # held[m][u]: cold bytes resident during op m once loads < u are issued:
    # those issued in the previous layer (< g0) and this layer's, until their op
    held_table = []
    for m in range(K):
        carried = sum(cold[g] for g in range(g0) if op_of[g] > m)
        row = [carried]
        for g in range(g0, last):
            row.append(row[-1] + (cold[g] if op_of[g] > m else 0.0))
        held_table.append(row)

    def held(m: int, issued_upto: int) -> float:
        return held_table[m][issued_upto - g0]

    dist: dict[tuple[int, int], float] = {(0, g0): 0.0}
    back: dict[tuple[int, int], tuple] = {}
    for k in range(K):
        for g in range(g0, last + 1):
            here = dist.get((k, g))
            if here is None:
                continue
            waiting = own.get(k)
            loaded = waiting is None or waiting < g
            # 1. op k runs with the HBM idle
            if loaded and hot[k] + held(k, g) <= layer.sram:
                _relax(dist, back, (k + 1, g), here + nominal[k], ((k, g), "idle", None))
            # 2. a busy period starts at op k with loads g, g+1, ...
            if g < last:
                for target, cost, issued in _periods(
                    k, g, last, K, nominal, exchange, hot, op_of, duration, rate,
                    held, layer.sram, layer.max_offset, own,
                ):
                    _relax(dist, back, target, here + cost, ((k, g), "period", issued))
        if tick:
            tick()
    end = (K, last)
    if end not in dist:
        return None
    offsets = np.zeros(H, dtype=np.int64)
    state = end
    while state != (0, g0):
        previous, kind, issued = back[state]
        if kind == "period":
            for g, window in issued:
                offsets[g if g < H else g - H] = op_of[g] - window
        state = previous
    return dist[end], offsets


def _relax(dist, back, state, value, how) -> None:
    if value < dist.get(state, math.inf) - 1e-9:
        dist[state] = value
        back[state] = how


def _periods(k, g, last, K, nominal, exchange, hot, op_of, duration, rate, held, sram,
             max_offset, own):
    """Every busy period that starts at op k with load g, in one pass.

    The loads g, g+1, ... run back to back from time 0 (when op k may start).
    Ops are simulated in order; a period of n loads ends at tau_n. Op m's
    nominal interval sees the same loads for every period that ends after
    op m does, so one simulation serves all of them; a period that ends
    during op m is emitted there, with op m's stall from its own loads.
    Yields (next state, cycles from time 0 to the end of the last op it
    spans, [(load, window op)]).
    """
    starts: list[float] = []  # of loads g, g+1, ..., filled as far as needed
    ends: list[float] = []
    total = last - g

    def reach(time: float = -1.0, index: int = -1) -> None:
        """Lay out loads until one starts at or after `time` and `index` exists."""
        while len(starts) < total and (len(starts) <= index or not starts or starts[-1] < time):
            t = ends[-1] if ends else 0.0
            starts.append(t)
            ends.append(t + duration[g + len(ends)])

    previous_end = 0.0
    issued: list[tuple[int, int]] = []
    n_done = 1  # smallest period length not yet emitted
    m = k
    while n_done <= total and m < K:
        waiting = own.get(m)
        start = previous_end
        if waiting is not None and waiting >= g:
            if waiting >= last:
                return  # op m needs a load beyond this layer's: no period passes it
            reach(index=waiting - g)
            start = max(start, ends[waiting - g])
        nominal_end = start + nominal[m]
        reach(time=nominal_end)

        first = bisect.bisect_right(ends, start)  # loads still running when op m starts

        def op_end(n: int) -> float:
            busy = 0.0
            for i in range(first, min(n, len(starts))):
                if starts[i] >= nominal_end:
                    break
                busy += (min(ends[i], nominal_end) - max(starts[i], start)) * rate[g + i]
            return nominal_end + max(0.0, exchange[m] + busy - nominal[m])

        full_end = op_end(total)
        reach(time=full_end)
        # loads issued by the end of op m (in the longest period)
        while len(issued) < total and starts[len(issued)] < full_end - 1e-9:
            j = g + len(issued)
            if op_of[j] < m or op_of[j] - m > max_offset:
                break  # issued too late for its op, or too early
            window = m
            if starts[len(issued)] < start - 1e-9 and op_of[j] != m:
                # starts while op m waits for its own load: issued during op
                # m-1 (it runs once the load before it ends); at the start of
                # the period that would start it too early
                if m == k:
                    break
                window = m - 1
            issued.append((j, window))
        blocked = len(issued) < total and starts[len(issued)] < full_end - 1e-9
        # periods whose last load ends during op m (or during its wait)
        while n_done <= total and n_done <= len(ends) and ends[n_done - 1] < full_end - 1e-9:
            n = n_done
            n_done += 1
            if waiting is not None and g <= waiting < last and waiting >= g + n:
                continue  # op m would wait for a load this period does not carry
            if n > len(issued):
                return  # this period would issue a load it may not
            end = op_end(n)
            if hot[m] + held(m, g + n) > sram:
                continue
            yield (m + 1, g + n), end, issued[:n]
        if blocked or hot[m] + held(m, g + len(issued)) > sram:
            return
        previous_end = full_end
        m += 1


__all__ = ["LayerLoads", "Timing", "best_offsets", "best_path"]
