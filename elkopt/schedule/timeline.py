"""The analytic timeline of a schedule: when every load and every operator runs.

All times are in clock cycles (float). One forward, event-driven pass in program
order:

- The load of op j lasts ``max(hbm_cycles, noc_cycles)`` with
  ``hbm_cycles = hbm_bytes / chip.hbm_bytes_per_cycle`` and
  ``noc_cycles = option.load_noc_bytes / chip.noc_bytes_per_cycle`` (or, with routed
  delivery costs, `Chip.delivery_cycles`), both times the chip's calibration factor of
  the op (`Chip.load_time_scale`, 1 unless simulation set it).
- Loads are issued one after another in ``preload_order``: load k starts at
  ``max(end of load k-1, exec start of its preload_window op)`` (0 for PROLOGUE;
  the end of the previous op when the window is the op itself: a load that
  overlaps no execution).
- A routed-expert load (`OpSchedule.load_after`: its router, `elkopt.graph.moe`)
  also starts no earlier than the end of those operators: which experts to
  read is known once the router has run. While it waits, the loads behind it
  in preload_order wait too (one queue). A schedule that preloads experts
  speculatively has them in operators without `load_after`
  (`elkopt.graph.moe.speculate`).
- Op i starts at ``max(end of op i-1, end of its own load)`` and lasts
  ``option.total_cycles + stall_i``.
- Interconnect stall: a load in flight occupies the interconnect at rate
  ``noc_cycles / load duration`` (<= 1). Over op i's nominal interval
  ``[start_i, start_i + total_cycles]`` the loads use
  ``busy_i = sum(overlap * rate)`` cycles of it, and the op needs
  ``exchange_i = exchange_cycles + distribution_cycles``; whatever does not fit,
  ``stall_i = max(0, exchange_i + busy_i - total_cycles)``, extends the op.
  This is one pass, not a fixed point: the stall does not push back the loads
  that overlapped the nominal interval, and loads that overlap only the stall
  are not charged again.
- HBM writes (`OpSchedule.write_bytes`: the KV cache a prefill step appends)
  share the one HBM channel with the loads. The write of op i joins the HBM
  queue when op i ends, right after the loads issued by then (those whose
  window op has started, and a load issued as op i ends), and before every
  load issued later: it starts at ``max(end of the HBM transfer before it,
  end of op i)`` and lasts ``max(hbm, noc)`` cycles at the loads' per-byte
  costs (``write_bytes / chip.hbm_bytes_per_cycle`` and the delivery of
  ``write_bytes / cores_used`` bytes from each of the op's cores), so it delays
  the loads behind it and, like a load, takes its share of the interconnect
  from the operators it overlaps (the stall rule above counts it). No
  calibration factor applies to writes.

A load depends only on operator *starts* (a routed-expert load also on its
router's end, and routers come before their experts), and a load issued during op w starts
no earlier than op w, so once start_i is fixed every load that can overlap
op i's nominal interval is known. A load that waits (through preload_order) on
an operator that itself waits on that load is a deadlock: `ScheduleError`.
Writes add no deadlock: the write of op i waits only for op i's end and for
transfers already queued, and every load queued behind it belongs to an
operator after i (the loads of ops up to i were issued before those ops
started, so before op i ended); a write only ever delays later operators.
Transfers on the channel keep their queue order, so the transfers that can
overlap op i are, as for loads alone, a contiguous run of that queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from elkopt.chip import Chip
from elkopt.schedule.schedule import PROLOGUE, Schedule


class ScheduleError(ValueError):
    """A schedule that cannot run or breaks a rule."""


@dataclass(frozen=True, eq=False)
class Timeline:
    """Per-operator intervals of a schedule, in cycles (arrays indexed by op).

    load_start/load_end are nan for ops without HBM data; hbm_cycles and
    noc_cycles are 0 for them. exchange_cycles = exchange + distribution cycles
    of the chosen option. hot_bytes/cold_bytes are per core (cold is 0 for ops
    without a load). total_flops is None when no FLOP counts were given.
    write_start/write_end are the HBM write after each op (nan without one),
    write_hbm_cycles/write_noc_cycles its HBM and interconnect time (0 without);
    None in timelines made elsewhere (the published designs' model), which
    have no writes.
    """

    clock_hz: float
    exec_start: np.ndarray
    exec_end: np.ndarray
    stall: np.ndarray
    load_start: np.ndarray
    load_end: np.ndarray
    hbm_cycles: np.ndarray
    noc_cycles: np.ndarray
    exchange_cycles: np.ndarray
    hot_bytes: np.ndarray
    cold_bytes: np.ndarray
    total_flops: float | None = None
    write_start: np.ndarray | None = None
    write_end: np.ndarray | None = None
    write_hbm_cycles: np.ndarray | None = None
    write_noc_cycles: np.ndarray | None = None

    @property
    def n_ops(self) -> int:
        return len(self.exec_start)

    @property
    def latency_cycles(self) -> float:
        """End of the last operator (loads start at >= 0, so this is the makespan)."""
        return float(self.exec_end.max()) if self.n_ops else 0.0

    @property
    def latency_s(self) -> float:
        return self.latency_cycles / self.clock_hz

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1e3

    @property
    def has_load(self) -> np.ndarray:
        return ~np.isnan(self.load_start)

    @property
    def has_write(self) -> np.ndarray:
        """Per op, whether an HBM write follows it."""
        if self.write_start is None:
            return np.zeros(self.n_ops, dtype=bool)
        return ~np.isnan(self.write_start)

    def _write_total(self, cycles: np.ndarray | None) -> float:
        return float(cycles.sum()) if cycles is not None else 0.0

    @property
    def hbm_util(self) -> float:
        """Fraction of [0, latency] HBM would need at full rate to move all bytes, read
        and written."""
        latency = self.latency_cycles
        busy = self.hbm_cycles.sum() + self._write_total(self.write_hbm_cycles)
        return float(busy / latency) if latency > 0 else 0.0

    @property
    def noc_util(self) -> float:
        """(load delivery + write delivery + exchange + distribution cycles) / latency.

        A plain sum of demand, not capped moment by moment: contended moments
        show up as stalls, not as a utilisation above 1.
        """
        latency = self.latency_cycles
        if latency <= 0:
            return 0.0
        busy = self.noc_cycles.sum() + self.exchange_cycles.sum() + self._write_total(self.write_noc_cycles)
        return float(busy / latency)

    @property
    def tflops(self) -> float | None:
        """Achieved TFLOP/s (1e12 FLOP/s, decimal), or None without FLOP counts."""
        if self.total_flops is None or self.latency_s <= 0:
            return None
        return self.total_flops / self.latency_s / 1e12

    def breakdown(self) -> dict[str, float]:
        """Cycles of [0, latency] in each state; the values sum to latency.

        The stall of an op is placed at the end of its interval and counts as
        "interconnect_stall" whether or not a load overlaps it; the rest of
        the op counts as "overlapped" when a load or an HBM write is in
        flight, else "execute_only". Outside execution: "preload_only" (a load
        or a write in flight) or "idle".
        """
        parts = dict.fromkeys(
            ("preload_only", "execute_only", "overlapped", "interconnect_stall", "idle"), 0.0
        )
        latency = self.latency_cycles
        if latency <= 0:
            return parts
        loaded = self.has_load
        nominal_end = self.exec_end - self.stall
        # HBM transfers, loads then writes: one channel, so disjoint once sorted
        written = self.has_write
        transfer_start = self.load_start[loaded]
        transfer_end = self.load_end[loaded]
        if written.any():
            transfer_start = np.concatenate([transfer_start, self.write_start[written]])
            transfer_end = np.concatenate([transfer_end, self.write_end[written]])
        points = np.unique(np.concatenate([
            [0.0, latency], self.exec_start, nominal_end, self.exec_end, transfer_start, transfer_end,
        ]))
        lengths = np.diff(points)
        mid = (points[:-1] + points[1:]) / 2
        executing, idx = _inside(self.exec_start, self.exec_end, mid)
        stalled = executing & (mid >= nominal_end[idx])
        load_order = np.argsort(transfer_start, kind="stable")
        loading, _ = _inside(transfer_start[load_order], transfer_end[load_order], mid)
        working = executing & ~stalled
        parts["interconnect_stall"] = float(lengths[stalled].sum())
        parts["overlapped"] = float(lengths[working & loading].sum())
        parts["execute_only"] = float(lengths[working & ~loading].sum())
        parts["preload_only"] = float(lengths[~executing & loading].sum())
        parts["idle"] = float(lengths[~executing & ~loading].sum())
        return parts

    def sram_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-core SRAM bytes in use: (times, bytes), bytes[k] holds on [times[k], times[k+1]).

        In use = hot bytes of the executing op + cold bytes of every op whose
        load has started and whose execution has not (an op's cold bytes end
        when it starts; its hot bytes then apply, until it ends).
        """
        return sram_in_use(self.exec_start, self.exec_end, self.load_start, self.hot_bytes, self.cold_bytes)

    @property
    def peak_sram_bytes(self) -> int:
        """Highest per-core SRAM in use over the run, bytes."""
        return int(self.sram_profile()[1].max())


def sram_in_use(
    exec_start: np.ndarray, exec_end: np.ndarray, load_start: np.ndarray,
    hot_bytes: np.ndarray, cold_bytes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """SRAM bytes in use on one core as a step function (times, bytes) of per-op intervals
    (`Timeline.sram_profile`); ops without a load have a nan load_start; an op that does
    not use the core has 0 hot and cold bytes there."""
    loaded = ~np.isnan(load_start)
    times = np.unique(np.concatenate([[0.0], exec_start, exec_end, load_start[loaded]]))
    executing, idx = _inside(exec_start, exec_end, times)
    hot = np.where(executing, hot_bytes[idx] if len(exec_start) else 0, 0)
    # Cold bytes as a step function: + at load start, - at exec start.
    event_times = np.concatenate([load_start[loaded], exec_start[loaded]])
    deltas = np.concatenate([cold_bytes[loaded], -cold_bytes[loaded]])
    order = np.argsort(event_times, kind="stable")
    steps = np.cumsum(deltas[order])
    applied = np.searchsorted(event_times[order], times, side="right")
    cold = np.where(applied > 0, steps[np.maximum(applied - 1, 0)] if len(steps) else 0, 0)
    return times, (hot + cold).astype(np.int64)


def _inside(starts: np.ndarray, ends: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted disjoint intervals [starts, ends): which t fall inside, and in which."""
    if len(starts) == 0:
        return np.zeros(len(t), dtype=bool), np.zeros(len(t), dtype=np.int64)
    idx = np.searchsorted(starts, t, side="right") - 1
    idx = np.clip(idx, 0, len(starts) - 1)
    inside = (t >= starts[idx]) & (t < ends[idx])
    return inside, idx


def load_cycles(schedule: Schedule, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
    """Per op (hbm_cycles, noc_cycles) of its load; 0 for ops without HBM data. Both are
    multiplied by the chip's calibration factor of the op (`Chip.load_scale_of`)."""
    hbm = np.zeros(len(schedule.ops))
    noc = np.zeros(len(schedule.ops))
    for i, op in enumerate(schedule.ops):
        if op.has_load:
            scale = chip.load_scale_of(i)
            hbm[i] = op.hbm_bytes / chip.hbm_bytes_per_cycle * scale
            noc[i] = chip.delivery_cycles(op.option.cold_bytes, op.option.cores_used) * scale
    return hbm, noc


def write_cycles(schedule: Schedule, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
    """Per op (hbm_cycles, noc_cycles) of its HBM write (0 without one): the bytes over
    the HBM rate, and the delivery of write_bytes / cores_used bytes from each of the
    op's cores (the loads' cost model, `Chip.delivery_cycles`)."""
    hbm = np.zeros(len(schedule.ops))
    noc = np.zeros(len(schedule.ops))
    for i, op in enumerate(schedule.ops):
        if op.has_write:
            cores = op.option.cores_used
            hbm[i] = op.write_bytes / chip.hbm_bytes_per_cycle
            noc[i] = chip.delivery_cycles(op.write_bytes / cores, cores)
    return hbm, noc


def load_duration_and_rate(schedule: Schedule, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
    """Per op: how long its load lasts, max(hbm, noc) cycles, and the share of
    the interconnect it takes meanwhile, noc / duration (both 0 without a load)."""
    return _duration_and_rate(*load_cycles(schedule, chip))


def _duration_and_rate(hbm: np.ndarray, noc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    duration = np.maximum(hbm, noc)
    rate = np.divide(noc, duration, out=np.zeros(len(duration)), where=duration > 0)
    return duration, rate


def _check_preload_order(schedule: Schedule) -> None:
    n = len(schedule.ops)
    seen: set[int] = set()
    for j in schedule.preload_order:
        if not 0 <= j < n:
            raise ScheduleError(f"preload_order names op {j}, outside 0..{n - 1}")
        if j in seen:
            raise ScheduleError(f"op {j} appears twice in preload_order")
        if not schedule.ops[j].has_load:
            raise ScheduleError(f"op {j} is in preload_order but has no HBM data")
        seen.add(j)
    missing = [i for i, op in enumerate(schedule.ops) if op.has_load and i not in seen]
    if missing:
        raise ScheduleError(f"ops {missing} have HBM data but are not in preload_order")


def compute_timeline(
    schedule: Schedule, chip: Chip, flops: Sequence[int] | None = None
) -> Timeline:
    """Simulate `schedule` on `chip` (see the module docstring); times in cycles.

    flops: optional FLOPs per op, for `Timeline.tflops`.
    Raises ScheduleError on a malformed preload_order or a deadlock.
    """
    ops = schedule.ops
    n = len(ops)
    if flops is not None and len(flops) != n:
        raise ValueError(f"flops has {len(flops)} entries for {n} ops")
    _check_preload_order(schedule)
    hbm, noc = load_cycles(schedule, chip)
    load_duration, noc_rate = _duration_and_rate(hbm, noc)
    write_hbm, write_noc = write_cycles(schedule, chip)
    write_duration, write_rate = _duration_and_rate(write_hbm, write_noc)

    exec_start = np.full(n, np.nan)
    exec_end = np.full(n, np.nan)
    stall = np.zeros(n)
    load_start = np.full(n, np.nan)
    load_end = np.full(n, np.nan)
    write_start = np.full(n, np.nan)
    write_end = np.full(n, np.nan)
    order = schedule.preload_order
    next_load = 0
    last_load_end = 0.0  # end of the last HBM transfer queued, load or write
    # (start, end, interconnect rate) of every HBM transfer, in queue order
    channel: list[tuple[float, float, float]] = []

    def queue_write(i: int) -> None:
        nonlocal last_load_end
        if write_duration[i] > 0:
            write_start[i] = max(last_load_end, float(exec_end[i]))
            write_end[i] = last_load_end = write_start[i] + write_duration[i]
            channel.append((write_start[i], write_end[i], write_rate[i]))

    def issue_ready_loads() -> None:
        nonlocal next_load, last_load_end
        while next_load < len(order):
            j = order[next_load]
            window = ops[j].preload_window
            if window == PROLOGUE or window == j == 0:
                window_start = 0.0
            elif window == j:  # issued once the previous op ends: no overlap
                if np.isnan(exec_end[j - 1]):
                    return
                window_start = float(exec_end[j - 1])
            elif 0 <= window < n and not np.isnan(exec_start[window]):
                window_start = float(exec_start[window])
            else:
                return
            routers = ops[j].load_after
            if routers:
                if any(np.isnan(exec_end[r]) for r in routers):
                    return  # the routing decision is not known yet
                window_start = max(window_start, max(float(exec_end[r]) for r in routers))
            load_start[j] = max(last_load_end, window_start)
            load_end[j] = last_load_end = load_start[j] + load_duration[j]
            channel.append((load_start[j], load_end[j], noc_rate[j]))
            next_load += 1

    issue_ready_loads()
    previous_end = 0.0
    # Transfers end in queue order and operators start in program order, so the transfers
    # that can overlap an operator are channel[live:]: those before `live` ended by its
    # start (they overlap no later operator either), those not queued yet start later.
    live = 0
    for i, op in enumerate(ops):
        if op.has_load and np.isnan(load_end[i]):
            blocker = order[next_load]
            window = ops[blocker].preload_window
            after = "itself" if window == i else f"(>= {i}), which cannot start before op {i}"
            routers = [r for r in ops[blocker].load_after if r >= i]
            if routers and window < i:
                after = f"and waiting for its router, op {routers[0]} (>= {i}), which cannot run before op {i}"
            raise ScheduleError(
                f"deadlock: op {i} waits for its load, which is queued in preload_order "
                f"behind the load of op {blocker}, issued during op {window} {after}"
            )
        start = max(previous_end, float(load_end[i])) if op.has_load else previous_end
        exec_start[i] = start
        issue_ready_loads()
        nominal = op.option.total_cycles
        while live < len(channel) and channel[live][1] <= start:
            live += 1
        busy = 0.0
        for begin, end, rate in channel[live:]:
            if begin >= start + nominal:
                break  # queued in order, so every later transfer starts later still
            busy += (min(end, start + nominal) - max(begin, start)) * rate
        exchange = op.option.exchange_cycles + op.option.distribution_cycles
        stall[i] = max(0.0, exchange + busy - nominal)
        exec_end[i] = previous_end = start + nominal + stall[i]
        issue_ready_loads()
        queue_write(i)

    exchange_cycles = np.array(
        [op.option.exchange_cycles + op.option.distribution_cycles for op in ops], dtype=float
    )
    hot = np.array([op.option.hot_bytes for op in ops], dtype=np.int64)
    cold = np.array([op.option.cold_bytes if op.has_load else 0 for op in ops], dtype=np.int64)
    arrays = [exec_start, exec_end, stall, load_start, load_end, hbm, noc, exchange_cycles, hot, cold]
    writes = [write_start, write_end, write_hbm, write_noc]
    for a in arrays + writes:
        a.setflags(write=False)
    return Timeline(
        chip.clock_hz, *arrays,
        total_flops=None if flops is None else float(sum(flops)),
        write_start=write_start, write_end=write_end, write_hbm_cycles=write_hbm, write_noc_cycles=write_noc,
    )
