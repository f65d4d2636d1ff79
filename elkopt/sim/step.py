"""A whole schedule over the network, phase by phase: operators' exchanges and the preloads.

The schedule's decisions (plans, preload layouts, load windows and preload order) are
kept; the times are the simulator's own, event to event:

- Operators run one after another in program order; op i starts once op i-1 has ended
  and its own load has arrived.
- Op i computes for `total_cycles - exchange_cycles - distribution_cycles` without the
  network, then exchanges: every core of its plan sends its neighbour in a ring of the
  plan's cores (`Network.ring`: folded, so that on a mesh every transfer is one or two
  hops; with `mapping="dims"`, rings along the grid rows and columns its split dims are
  laid on, `elkopt.sim.mapping`) as many bytes as a link carries in the op's exchange
  and distribution cycles.
  Alone on the network (and with links of no latency) that phase lasts exactly those
  cycles, so an operator with nothing in flight takes its `total_cycles`, as in the
  analytic timeline.
- Loads are issued one after another in `preload_order`, each once the previous one has
  arrived and its window operator has started (`Schedule`; a routed-expert load,
  `OpSchedule.load_after`, also once its routers have ended). A load is two phases that
  run at the same time and end when both have: its HBM reads (the controller ports'
  flows of `elkopt.sim.preload`) and its deliveries (one route per core it fills); the
  last bytes read still cross the longest delivery route.
- HBM writes (`OpSchedule.write_bytes`, a prefill step's KV cache) share the one HBM
  queue with the loads, ordered as in the analytic timeline: the write of op i joins the
  queue when op i ends, behind the loads whose windows have opened by then, and ahead of
  every load that becomes ready later (those wait for it to end). A write is a load in
  reverse, two phases at the same time: its collections (each of op i's cores sends
  `write_bytes / cores_used` bytes to its nearest controller, `LoadRoutes.write_flows`)
  and its HBM writes through the controller ports (which carry reads and writes alike);
  the last bytes written still cross the longest collection route. A write after the
  last operator still runs (its bytes count in `link_bytes`), but the step's latency is
  the end of the last operator, as in the analytic timeline.

A *phase* is data that moves as one: all its flows progress at the same fraction of
their bytes, so it ends when its busiest link has carried its share, and alone it takes
exactly `max over its links of bytes / bandwidth` (a phase ends with its slowest flow;
pacing the others to match never makes it later), plus the latency of its longest route
(links' `latency`, a pipeline of fixed depth as in `elkopt.sim.flows`). Phases in flight share the links:
with `exchange_first` (the default) the running operator's exchange takes what it needs
and the load's phases share what it leaves (a load it meets slows or pauses, instead of
the analytic model's stall formula); otherwise every phase is slowed by the same factor
on a shared bottleneck (max-min fair on each phase's speed alone, `elkopt.sim.flows`).
Rates change only when a phase starts or ends, so the work per event is a sparse
max-min over the few phases in flight and the links they use, whatever the core count.

Link traffic is recorded per link and per time bin (`SimulatedRun.link_bins`) for
utilisation pictures; ring and delivery routes are built once per network and reused.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from elkopt.chip import Chip
from elkopt.schedule.schedule import PROLOGUE, Schedule
from elkopt.plans.space import OpShape
from elkopt.progress import Ticker
from elkopt.sim.flows import Flows, longest_route, max_min_rates
from elkopt.sim.mapping import Mapper, OpPlacement
from elkopt.sim.network import Network, network_from_chip
from elkopt.sim.preload import load_routes


#: The phases of an HBM transfer: (its HBM port phase, its network phase).
_KINDS = {"load": ("hbm", "delivery"), "write": ("write hbm", "collection")}


@dataclass(frozen=True, eq=False)
class SimulatedRun:
    """When every operator, load and HBM write ran in the simulation (cycles).

    write_start/write_end: the HBM write after each op (nan for ops without one, and in
    runs made without them)."""

    exec_start: np.ndarray
    exec_end: np.ndarray
    exchange_start: np.ndarray  # when the op's exchange began (nan: it had none on the network)
    load_start: np.ndarray  # nan for ops without a load
    load_end: np.ndarray
    link_bytes: np.ndarray  # bytes each link carried
    events: int
    link_bins: np.ndarray  # (bins, links) bytes each link carried in each time bin
    bin_cycles: float  # width of a time bin; bin k covers [k, k + 1) * bin_cycles
    write_start: np.ndarray | None = None
    write_end: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("write_start", "write_end"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(len(self.exec_start), np.nan))

    @property
    def latency_cycles(self) -> float:
        return float(self.exec_end[-1]) if len(self.exec_end) else 0.0


class _LinkBins:
    """Bytes per link per time bin, for a fixed number of bins: when the run outgrows
    them, neighbouring bins merge (the width doubles)."""

    def __init__(self, n_links: int, bins: int, horizon: float) -> None:
        self.data = np.zeros((bins, n_links), dtype=np.float32)
        self.width = max(horizon, 1.0) / bins

    def add(self, t0: float, t1: float, per_link: np.ndarray) -> None:
        """`per_link` bytes moved at a constant rate over [t0, t1)."""
        bins = len(self.data)
        while t1 > bins * self.width:
            self.data = self.data.reshape(bins // 2, 2, -1).sum(axis=1)
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
            self.width *= 2
        first, last = min(int(t0 // self.width), bins - 1), min(int(t1 // self.width), bins - 1)
        if first == last or t1 <= t0:
            self.data[first] += per_link
            return
        for k in range(first, last + 1):
            overlap = min(t1, (k + 1) * self.width) - max(t0, k * self.width)
            if overlap > 0:
                self.data[k] += per_link * (overlap / (t1 - t0))


class _Phase:
    """Data that moves as one (an op's exchange; a load's HBM reads; a load's deliveries;
    a write's collections to the controllers; a write's HBM writes):
    the bytes it puts on each of its links, and the fraction of them still to move."""

    _serials = itertools.count()

    def __init__(self, kind: str, op: int, links: np.ndarray, size: np.ndarray, bandwidth: np.ndarray,
                 latency: float = 0.0) -> None:
        keep = size > 0
        self.serial = next(self._serials)  # unlike id(), never reused
        self.kind, self.op = kind, op
        self.links, self.size = links[keep], size[keep].astype(np.float64)
        # its rate alone on the network, in fractions of itself per cycle
        self.alone = float((bandwidth[self.links] / self.size).min()) if len(self.links) else np.inf
        self.left = 1.0 if len(self.links) else 0.0
        self.tail = latency if len(self.links) else 0.0  # cycles from the last byte sent to its arrival

    @property
    def done(self) -> bool:
        return self.left <= 0 and self.tail <= 0


def _per_link(flows: Flows) -> tuple[np.ndarray, np.ndarray]:
    """(links, bytes): what all of `flows` put on each link they cross."""
    per_link = np.bincount(flows.links, weights=flows.size[flows.owner])
    links = np.flatnonzero(per_link)
    return links, per_link[links]


def _phase_of(kind: str, op: int, flows: Flows, network: Network) -> _Phase:
    """The phase of `flows`: what they put on each link, and their longest route's latency."""
    latency = longest_route(flows.ptr, flows.links, network.latency) if network.latency.any() else 0.0
    return _Phase(kind, op, *_per_link(flows), network.bandwidth, latency)


def simulate_schedule(
    schedule: Schedule, chip: Chip, network: Network | None = None,
    progress: Callable[[str], None] | None = None, exchange_first: bool = True, bins: int = 256,
    shapes: Sequence[OpShape] | None = None, mapping: str = "serpentine",
) -> SimulatedRun:
    """Run `schedule` on `chip`'s network (module docs).

    exchange_first: operators' exchanges take the links first and loads share what they
    leave, as a compiler would order an operator's synchronised exchange before
    background loads; False: every phase in flight is slowed by the same factor on a
    shared bottleneck (max-min fair on each phase's fraction of its own speed alone).
    bins: time bins of the per-link traffic record (`SimulatedRun.link_bins`), an even
    number; their width adapts to the run's length.
    mapping: where each operator's cores sit on a grid and which links its exchange
    uses (`elkopt.sim.mapping`); "dims" needs the operators' `shapes`.
    """
    if bins < 2 or bins % 2:
        raise ValueError(f"bins must be an even number >= 2, got {bins}")
    if mapping == "dims" and (shapes is None or len(shapes) != len(schedule.ops)):
        raise ValueError("mapping 'dims' needs one operator shape per scheduled op")
    net = network or network_from_chip(chip)
    bandwidth = net.bandwidth
    ops = schedule.ops
    n = len(ops)
    mapper, loads = Mapper(net, mapping), load_routes(net)
    placed: dict[int, OpPlacement] = {}

    def placement(i: int) -> OpPlacement:
        if i not in placed:
            placed[i] = mapper.place(ops[i].option.plan, shapes[i] if shapes is not None else None)
        return placed[i]

    link_rate = float(bandwidth[0])  # core 0's injection (all-to-all) or east link (grid)
    k = net.n_controllers
    exec_start = np.full(n, np.nan)
    exec_end = np.full(n, np.nan)
    exchange_start = np.full(n, np.nan)
    load_start = np.full(n, np.nan)
    load_end = np.full(n, np.nan)
    write_start = np.full(n, np.nan)
    write_end = np.full(n, np.nan)
    link_bytes = np.zeros(net.n_links)
    record = _LinkBins(net.n_links, bins, sum(op.option.total_cycles for op in ops))
    order = list(schedule.preload_order)
    phases: list[_Phase] = []
    t, events, next_op, next_load = 0.0, 0, 0, 0
    running: int | None = None  # the op computing or exchanging
    compute_end = np.inf
    queue: collections.deque[tuple[str, int]] = collections.deque()  # HBM transfers ready, in order
    in_flight: tuple[str, int] | None = None  # ("load" or "write", op)
    rated: tuple = ()  # the phases the current rates were computed for
    rate = np.zeros(0)

    def window_open(j: int) -> bool:
        w = ops[j].preload_window
        if w == PROLOGUE or (w == j == 0):
            return True
        if w == j:
            return not np.isnan(exec_end[j - 1])
        return not np.isnan(exec_start[w])

    def enqueue_loads() -> None:
        """Queue, in preload_order, the loads whose windows (and routers) let them go."""
        nonlocal next_load
        while next_load < len(order) and window_open(order[next_load]) and all(
                not np.isnan(exec_end[r]) for r in ops[order[next_load]].load_after):
            queue.append(("load", order[next_load]))
            next_load += 1

    def op_ended(i: int) -> None:
        """Op i has ended: the loads it lets go queue first, then its write (module docs)."""
        enqueue_loads()
        if ops[i].write_bytes > 0:
            queue.append(("write", i))

    def issue_transfers() -> None:
        """Start the HBM transfers (loads and writes) at the head of the queue, one at a time."""
        nonlocal in_flight
        enqueue_loads()
        while in_flight is None and queue:
            kind, j = queue.popleft()
            option = ops[j].option
            if kind == "load":
                flows = loads.flows(ops[j].hbm_bytes, option.cores_used, option.cold_bytes, placement(j).cores)
                load_start[j] = t
            else:
                flows = loads.write_flows(ops[j].write_bytes, option.cores_used, placement(j).cores)
                write_start[j] = t
            ports = Flows(flows.ptr[:k + 1], flows.links[:k], flows.size[:k], flows.release[:k])
            routed = Flows(flows.ptr[k:] - flows.ptr[k], flows.links[flows.ptr[k]:], flows.size[k:],
                           flows.release[k:])
            network_phase = _phase_of(_KINDS[kind][1], j, routed, net)
            # the last bytes read still have to be delivered (the last bytes written, to reach
            # their controller): the HBM phase carries that latency too
            started = [_Phase(_KINDS[kind][0], j, *_per_link(ports), bandwidth, network_phase.tail),
                       network_phase]
            started = [phase for phase in started if phase.left > 0]
            if not started:
                (load_end if kind == "load" else write_end)[j] = t
                continue
            phases.extend(started)
            in_flight = (kind, j)

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

    ticker = Ticker(progress, "simulation: operators started", n)
    while next_op < n or running is not None or in_flight is not None or queue:
        issue_transfers()
        start_ops()
        issue_transfers()  # the new op may open a window
        if running is not None and compute_end <= t:  # compute done: exchange, or end
            option = ops[running].option
            exchange = option.exchange_cycles + option.distribution_cycles
            compute_end = np.inf
            if exchange > 0 and option.cores_used > 1:
                where = placement(running)
                exchange_start[running] = t
                phases.append(_Phase("exchange", running, where.links, where.weight * (exchange * link_rate),
                                     bandwidth, where.latency))
            else:
                t += exchange
                exec_end[running] = t
                op_ended(running)
                running = None
            continue
        if not phases and compute_end == np.inf:
            if running is None and next_op < n:  # nothing moves and the next op cannot start
                raise ValueError(f"deadlock: op {next_op} waits for its load, which is queued "
                                 f"behind a load whose window never opens")
            continue
        step = compute_end - t
        moving = [p for p in phases if p.left > 0]
        arriving = [p for p in phases if p.left <= 0]  # sent; their last bytes are on the way
        if arriving:
            step = min(step, min(p.tail for p in arriving))
        if moving:
            key = tuple(p.serial for p in moving)
            if key != rated:  # phases came or went: share the links anew
                rate = _phase_rates(moving, bandwidth, exchange_first)
                rated = key
                events += 1
            left = np.array([p.left for p in moving])
            with np.errstate(divide="ignore"):  # a paused phase (rate 0) does not end
                step = min(step, float((left / rate).min()))
            per_link = np.zeros(net.n_links)
            for p, r in zip(moving, rate):
                moved = min(r * step, p.left)
                per_link[p.links] += moved * p.size
                p.left = 0.0 if r * step >= p.left * (1 - 1e-12) else p.left - moved
            link_bytes += per_link
            record.add(t, t + step, per_link)
        for p in arriving:
            p.tail = 0.0 if p.tail <= step * (1 + 1e-12) else p.tail - step
        t += step
        still = []
        for p in phases:
            if not p.done:
                still.append(p)
            elif p.kind == "exchange":
                exec_end[p.op] = t
                op_ended(p.op)
                running = None
        phases = still
        if in_flight is not None:
            kind, j = in_flight
            if not any(p.op == j and p.kind in _KINDS[kind] for p in phases):
                (load_end if kind == "load" else write_end)[j] = t
                in_flight = None
        ticker.update(next_op)
    ticker.finish()
    return SimulatedRun(exec_start, exec_end, exchange_start, load_start, load_end, link_bytes, events,
                        record.data, record.width, write_start, write_end)


def _phase_rates(phases: list[_Phase], bandwidth: np.ndarray, exchange_first: bool) -> np.ndarray:
    """Each phase's rate (fraction of itself per cycle): max-min fair on the fraction of
    its speed alone, by priority class (exchanges first) when `exchange_first`."""
    ptr = np.concatenate([[0], np.cumsum([len(p.links) for p in phases])]).astype(np.int64)
    flows = Flows(ptr, np.concatenate([p.links for p in phases]), np.ones(len(phases)), np.zeros(len(phases)))
    weight = np.concatenate([p.size * p.alone for p in phases])  # load per unit of slowdown
    priority = np.array([0 if p.kind == "exchange" else 1 for p in phases]) if exchange_first else None
    share = max_min_rates(flows, np.ones(len(phases), dtype=bool), bandwidth, priority, weight)
    return share * np.array([p.alone for p in phases])


__all__ = ["SimulatedRun", "simulate_schedule"]
