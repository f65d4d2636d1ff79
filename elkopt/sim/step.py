"""A whole schedule over the network: operators, their shift traffic and the preloads, as flows.

The schedule's decisions (plans, preload layouts, load windows and preload order) are
kept; the times are the simulator's own, event to event (first version, issue 4):

- Operators run one after another in program order; op i starts once op i-1 has ended
  and its own load has arrived.
- Op i computes for `total_cycles - exchange_cycles - distribution_cycles` without the
  network, then exchanges: every core of its plan sends its neighbour in a ring of the
  plan's cores (core c to core c + 1, the last to the first) as many bytes as its link
  carries in the op's exchange and distribution cycles. Alone on the network that phase
  lasts exactly those cycles, so an operator with nothing in flight takes its
  `total_cycles`, as in the analytic timeline.
- Loads are issued one after another in `preload_order`, each once the previous one has
  arrived and its window operator has started (`Schedule`), and move as the flows of
  `elkopt.sim.preload` (HBM ports plus per-core deliveries).
- Flows in flight share the links max-min fairly (`elkopt.sim.flows`), with operators'
  exchanges first by default (loads take what they leave): an exchange then runs at full
  speed and a load it meets pauses, instead of the analytic model's stall formula.
  `exchange_first=False` shares every link fairly among all flows.

Routes are built once per network (deliveries) or per number of cores (rings) and reused
(CSR arrays).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from elkopt.chip import Chip
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.sim.flows import Flows, csr, max_min_rates
from elkopt.sim.network import Network, network_from_chip
from elkopt.sim.preload import load_routes


@dataclass(frozen=True, eq=False)
class SimulatedRun:
    """When every operator and load ran in the simulation (cycles)."""

    exec_start: np.ndarray
    exec_end: np.ndarray
    load_start: np.ndarray  # nan for ops without a load
    load_end: np.ndarray
    link_bytes: np.ndarray  # bytes each link carried
    events: int

    @property
    def latency_cycles(self) -> float:
        return float(self.exec_end[-1]) if len(self.exec_end) else 0.0


class _Rings:
    """CSR routes of the exchange ring, per number of cores."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._rings: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def ring(self, cores: int) -> tuple[np.ndarray, np.ndarray]:
        if cores not in self._rings:
            self._rings[cores] = csr([self.network.core_route(c, (c + 1) % cores) for c in range(cores)])
        return self._rings[cores]


class _Group:
    """Flows that finish together as one piece of work (a load, an op's exchange)."""

    _serials = itertools.count()

    def __init__(self, kind: str, op: int, ptr: np.ndarray, links: np.ndarray, size: np.ndarray) -> None:
        self.serial = next(self._serials)  # unlike id(), never reused
        self.kind, self.op = kind, op
        self.ptr, self.links = ptr, links
        self.left = size.astype(np.float64).copy()

    @property
    def done(self) -> bool:
        return bool((self.left <= 0).all())


def simulate_schedule(
    schedule: Schedule, chip: Chip, network: Network | None = None,
    progress: Callable[[str], None] | None = None, exchange_first: bool = True,
    refresh: float = 0.0,
) -> SimulatedRun:
    """Run `schedule` on `chip`'s network (module docs).

    exchange_first: operators' exchanges take the links first and loads share what they
    leave (max-min within each class), as a compiler would order an operator's
    synchronised exchange before background loads; False: all flows share max-min fairly.
    refresh: when flows end, the others keep their rates until more than this fraction of
    the flows in flight have ended (or work starts or ends); 0 recomputes rates at every
    ending (exact max-min). Keeping rates never overloads a link; the capacity of ended
    flows waits for the next recomputation. It bounds the number of recomputations when
    thousands of flows end at thousands of different times (a mesh's deliveries).
    """
    if not 0 <= refresh < 1:
        raise ValueError(f"refresh must be in [0, 1), got {refresh}")
    net = network or network_from_chip(chip)
    ops = schedule.ops
    n = len(ops)
    rings, loads = _Rings(net), load_routes(net)
    link_rate = float(net.bandwidth[0])  # core 0's injection (all-to-all) or east link (grid)
    exec_start = np.full(n, np.nan)
    exec_end = np.full(n, np.nan)
    load_start = np.full(n, np.nan)
    load_end = np.full(n, np.nan)
    link_bytes = np.zeros(net.n_links)
    order = list(schedule.preload_order)
    groups: list[_Group] = []
    t, events, next_op, next_load = 0.0, 0, 0, 0
    running: int | None = None  # the op computing or exchanging
    compute_end = np.inf
    load_in_flight = False
    rated: tuple = ()  # the groups the current rates were computed for
    rate = np.zeros(0)
    ended_at_rating = 0

    def window_open(j: int) -> bool:
        w = ops[j].preload_window
        if w == PROLOGUE or (w == j == 0):
            return True
        if w == j:
            return not np.isnan(exec_end[j - 1])
        return not np.isnan(exec_start[w])

    def issue_loads() -> None:
        nonlocal next_load, load_in_flight
        while not load_in_flight and next_load < len(order) and window_open(order[next_load]):
            j = order[next_load]
            option = ops[j].option
            flows = loads.flows(ops[j].hbm_bytes, option.cores_used, option.cold_bytes)
            group = _Group("load", j, flows.ptr, flows.links, flows.size)
            load_start[j] = t
            next_load += 1
            if group.done:
                load_end[j] = t
                continue
            groups.append(group)
            load_in_flight = True

    def start_ops() -> None:
        nonlocal running, next_op, compute_end
        if running is None and next_op < n:
            i = next_op
            if ops[i].has_load and np.isnan(load_end[i]):
                return
            exec_start[i] = t
            option = ops[i].option
            compute_end = t + option.total_cycles - option.exchange_cycles - option.distribution_cycles
            running, next_op = i, i + 1

    def finish_op(i: int) -> None:
        nonlocal running
        exec_end[i] = t
        running = None

    while next_op < n or running is not None:
        issue_loads()
        start_ops()
        issue_loads()  # the new op may open a window
        if running is not None and compute_end <= t:  # compute done: exchange, or end
            option = ops[running].option
            exchange = option.exchange_cycles + option.distribution_cycles
            compute_end = np.inf
            if exchange > 0 and option.cores_used > 1:
                ptr, links = rings.ring(option.cores_used)
                groups.append(_Group("exchange", running, ptr, links,
                                     np.full(option.cores_used, exchange * link_rate)))
            else:
                t += exchange
                finish_op(running)
            continue
        if not groups and compute_end == np.inf:
            if running is None and next_op < n:  # nothing moves and the next op cannot start
                raise ValueError(f"deadlock: op {next_op} waits for its load, which is queued "
                                 f"behind a load whose window never opens")
            continue
        step = compute_end - t
        if groups:
            flows = Flows(
                np.concatenate([[0], np.cumsum(np.concatenate([np.diff(g.ptr) for g in groups]))]).astype(np.int64),
                np.concatenate([g.links for g in groups]),
                np.concatenate([g.left for g in groups]),
                np.zeros(sum(len(g.left) for g in groups)),
            )
            active = flows.size > 0
            ended = int((~active).sum())
            key = tuple(g.serial for g in groups)
            if key != rated or ended - ended_at_rating > refresh * flows.n:
                priority = None
                if exchange_first:
                    priority = np.concatenate([np.full(len(g.left), 0 if g.kind == "exchange" else 1)
                                               for g in groups])
                rate = max_min_rates(flows, active, net.bandwidth, priority)
                rated, ended_at_rating = key, ended
                events += 1
            else:  # the same flows, fewer of them: keep the rates
                rate = np.where(active, rate, 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                to_finish = np.where(active, flows.size / rate, np.inf)
            step = min(step, float(to_finish.min()))
            moved = np.where(active, rate * step, 0.0)
            link_bytes += np.bincount(flows.links, weights=moved[flows.owner], minlength=net.n_links)
            offset = 0
            for g in groups:
                m = len(g.left)
                left = g.left - moved[offset:offset + m]
                g.left = np.where((to_finish[offset:offset + m] <= step) | (left < 1e-6), 0.0, left)
                offset += m
        t += step
        still = []
        for g in groups:
            if not g.done:
                still.append(g)
            elif g.kind == "load":
                load_end[g.op] = t
                load_in_flight = False
            else:
                finish_op(g.op)
        groups = still
        if progress and running is None and next_op % 500 == 0 and next_op:
            progress(f"simulated {next_op}/{n} operators")
    return SimulatedRun(exec_start, exec_end, load_start, load_end, link_bytes, events)


__all__ = ["SimulatedRun", "simulate_schedule"]
