"""Flows over a network: max-min fair bandwidth sharing, and when each flow finishes.

A flow moves `size` bytes along a route (link ids) from its release time on. At every
moment the active flows share the links max-min fairly (progressive filling: all flows
grow at the same rate until a link is full; the flows crossing it keep that rate, the
others go on growing), so no link carries more than its bandwidth and no flow can go
faster without slowing one that is no faster. Rates change only when a flow is released or
finishes; between those events every flow moves at a constant rate, so the simulation
jumps from event to event. A flow's bytes arrive `latency` cycles after they leave: its
finish time is the end of its transfer plus the sum of its links' latencies (a
store-and-forward pipeline of fixed depth, not a per-packet model).

Routes are stored flat (CSR): the links of flow f are `links[ptr[f]:ptr[f + 1]]`; all
arithmetic is vectorised over flows and links.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A link whose spare capacity falls below this fraction of its bandwidth counts as full.
_FULL = 1e-12


@dataclass(frozen=True, eq=False)
class Flows:
    """Flows in CSR form; sizes in bytes, release times in cycles."""

    ptr: np.ndarray  # (n + 1,) offsets into links
    links: np.ndarray  # link ids of all routes, concatenated
    size: np.ndarray  # (n,) bytes
    release: np.ndarray  # (n,) cycles

    def __post_init__(self) -> None:
        n = len(self.size)
        if len(self.ptr) != n + 1 or len(self.release) != n:
            raise ValueError(f"flows: ptr needs {n + 1} entries and release {n}, got "
                             f"{len(self.ptr)} and {len(self.release)}")
        if self.ptr[0] != 0 or self.ptr[-1] != len(self.links) or (np.diff(self.ptr) < 0).any():
            raise ValueError("flows: ptr must rise from 0 to len(links)")
        if (self.size < 0).any():
            raise ValueError("flows: sizes must be >= 0 bytes")

    @property
    def n(self) -> int:
        return len(self.size)

    @functools.cached_property
    def owner(self) -> np.ndarray:
        """The flow of each entry of `links`."""
        return np.repeat(np.arange(self.n), np.diff(self.ptr))


def csr(routes: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, links) of a list of routes: route f is links[ptr[f]:ptr[f + 1]]."""
    lengths = np.array([len(r) for r in routes], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    links = np.fromiter((link for r in routes for link in r), dtype=np.int64, count=int(ptr[-1]))
    return ptr, links


def longest_route(ptr: np.ndarray, links: np.ndarray, latency: np.ndarray) -> float:
    """The largest sum of link latencies over the routes of a CSR list (0 without routes)."""
    if not len(links):
        return 0.0
    owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return float(np.bincount(owner, weights=latency[links], minlength=len(ptr) - 1).max())


def make_flows(routes: Sequence[Sequence[int]], sizes: Sequence[float],
               release: Sequence[float] | None = None) -> Flows:
    """Flows from a list of routes (link ids), their sizes and release times (default 0)."""
    if len(routes) != len(sizes):
        raise ValueError(f"flows: {len(routes)} routes but {len(sizes)} sizes")
    ptr, links = csr(routes)
    size = np.asarray(sizes, dtype=np.float64)
    start = np.zeros(len(routes)) if release is None else np.asarray(release, dtype=np.float64)
    return Flows(ptr, links, size, start)


def max_min_rates(
    flows: Flows, active: np.ndarray, bandwidth: np.ndarray, priority: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Max-min fair rates (bytes per cycle) of the `active` flows; 0 for the others.

    priority: per flow, a class (lower first): each class shares max-min fairly what the
    classes before it left of every link. Active flows without links get an infinite rate
    (they move nothing through the network).
    weight: per entry of `flows.links`, the load a unit of the flow's rate puts on that
    link (default 1: a flow of rate r loads each link of its route by r)."""
    if priority is not None:
        rate = np.zeros(flows.n)
        spare = bandwidth.astype(np.float64).copy()
        for level in np.unique(priority[active]):
            mine = active & (priority == level)
            rate[mine] = max_min_rates(flows, mine, spare, weight=weight)[mine]
            load = np.where(mine, rate, 0.0)[flows.owner]
            used = np.bincount(flows.links, weights=load if weight is None else load * weight,
                               minlength=len(spare))
            spare = np.maximum(spare - used, 0.0)
        return rate
    rate = np.zeros(flows.n)
    owner = flows.owner
    loads = np.ones(len(flows.links), dtype=bool) if weight is None else np.asarray(weight) > 0
    has_links = np.bincount(owner[loads], minlength=flows.n) > 0
    rate[active & ~has_links] = np.inf
    growing = active & has_links
    spare = bandwidth.astype(np.float64).copy()
    # The entries (flow, link) of the flows still growing; they all have rate `level`.
    keep = growing[owner] & loads
    links, own = flows.links[keep], owner[keep]
    unit = None if weight is None else np.asarray(weight, dtype=np.float64)[keep]
    level = 0.0
    while len(links):
        count = np.bincount(links, weights=unit, minlength=len(spare))
        used = np.flatnonzero(count)
        delta = float((spare[used] / count[used]).min())
        level += delta
        spare[used] -= delta * count[used]
        full = used[spare[used] <= _FULL * bandwidth[used]]
        spare[full] = 0.0
        is_full = np.zeros(len(spare), dtype=bool)
        is_full[full] = True
        frozen = np.unique(own[is_full[links]])
        rate[frozen] = level
        growing[frozen] = False
        keep = growing[own]
        links, own = links[keep], own[keep]
        if unit is not None:
            unit = unit[keep]
    return rate


@dataclass(frozen=True, eq=False)
class FlowResult:
    """When each flow finished, and what the links carried."""

    transfer_end: np.ndarray  # cycles: the last byte left the source
    finish: np.ndarray  # cycles: transfer_end + route latency (release time for empty flows)
    link_bytes: np.ndarray  # bytes carried per link over the whole simulation
    peak_utilisation: float  # highest load / bandwidth of any link at any moment
    events: int  # rate recomputations

    @property
    def makespan(self) -> float:
        return float(self.finish.max()) if len(self.finish) else 0.0


def simulate_flows(flows: Flows, bandwidth: np.ndarray, latency: np.ndarray | None = None) -> FlowResult:
    """Run every flow to completion under max-min fair sharing (module docs)."""
    bandwidth = np.asarray(bandwidth, dtype=np.float64)
    if flows.n and len(flows.links) and flows.links.max() >= len(bandwidth):
        raise ValueError(f"flows use link {int(flows.links.max())}, the network has {len(bandwidth)} links")
    owner = flows.owner
    left = flows.size.copy()
    done = np.zeros(flows.n, dtype=bool)
    end = np.zeros(flows.n)
    empty = np.diff(flows.ptr) == 0
    finished_now = empty | (left <= 0)
    done[finished_now] = True
    end[finished_now] = flows.release[finished_now]
    link_bytes = np.zeros(len(bandwidth))
    peak, events, t = 0.0, 0, 0.0
    while not done.all():
        pending = ~done & (flows.release > t)
        active = ~done & ~pending
        if not active.any():
            t = float(flows.release[pending].min())
            continue
        rate = max_min_rates(flows, active, bandwidth)
        events += 1
        load = np.bincount(flows.links, weights=rate[owner], minlength=len(bandwidth))
        peak = max(peak, float((load / bandwidth).max()))
        to_finish = np.divide(left, rate, out=np.full(flows.n, np.inf), where=active)
        step = float(to_finish.min())
        if pending.any():
            step = min(step, float(flows.release[pending].min()) - t)
        moved = np.where(active, rate * step, 0.0)
        left -= moved
        link_bytes += load * step
        t += step
        finishing = active & ((to_finish <= step) | (left <= 1e-9 * np.maximum(flows.size, 1.0)))
        left[finishing] = 0.0
        done[finishing] = True
        end[finishing] = t
    route_latency = np.zeros(flows.n)
    if latency is not None and len(flows.links):
        route_latency = np.bincount(owner, weights=np.asarray(latency, dtype=np.float64)[flows.links],
                                    minlength=flows.n)
    finish = np.where(empty, end, end + route_latency)
    return FlowResult(end, finish, link_bytes, peak, events)


__all__ = ["FlowResult", "Flows", "csr", "longest_route", "make_flows", "max_min_rates", "simulate_flows"]
