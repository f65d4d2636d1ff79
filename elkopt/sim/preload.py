"""One preload (an operator's HBM data loaded into the cores that will hold it) as flows.

A load reads `hbm_bytes` of unique data from HBM and delivers `cold_bytes` to each of the
`cores_used` cores of its preload layout (replicas included, as the cost model counts
them). Two kinds of flows, running at the same time (HBM and delivery are pipelined):

- per controller, a *port* flow of its share of the unique bytes over its port link (the
  HBM bandwidth share);
- per core, a *delivery* flow of its cold bytes from its nearest controller (fewest grid
  hops, ties to the lowest id). On all-to-all
  the switch replicates data for several cores, so a delivery crosses only the receiving
  core's ejection link; on a mesh or torus every replica is routed hop by hop from the
  controller's link into the grid (dimension-order routing, no multicast trees).

The load lasts until the last flow ends. An HBM write (`LoadRoutes.write_flows`) is the
same in reverse: per core of the writing operator a flow of its share of the bytes to its
nearest controller (dimension-order routing from the core on a mesh or torus, its
injection link on all-to-all), and the port flows of the controllers into HBM.

A plan on n cores uses logical cores 0..n-1, placed on the grid by `Network.placement`
(serpentine rows).
"""

from __future__ import annotations

import functools

import numpy as np

from elkopt.chip import Topology
from elkopt.sim.flows import FlowResult, Flows, csr, simulate_flows
from elkopt.sim.network import Network


class LoadRoutes:
    """Builds loads' and HBM writes' flows on one network; every core's delivery route (and
    route to its controller) is computed once."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._deliveries: tuple[np.ndarray, np.ndarray] | None = None  # CSR by physical core
        self._collections: tuple[np.ndarray, np.ndarray] | None = None  # the same, for writes

    def flows(self, hbm_bytes: float, cores_used: int, cold_bytes: float,
              cores: np.ndarray | None = None) -> Flows:
        """Port flows (one per controller) then delivery flows (one per core used): to the
        physical `cores`, by default the first `cores_used` of `Network.placement`."""
        return self._flows(self.deliveries(), hbm_bytes, cores_used, float(cold_bytes), cores)

    def write_flows(self, write_bytes: float, cores_used: int, cores: np.ndarray | None = None) -> Flows:
        """An HBM write of `write_bytes` from the physical `cores` (default as `flows`), each
        sending `write_bytes / cores_used` bytes: port flows (one per controller, its share
        of the bytes into HBM) then per core a flow to its nearest controller
        (`Network.route_to_controller`, without the port), the reverse of a load."""
        return self._flows(self.collections(), write_bytes, cores_used, write_bytes / cores_used, cores)

    def _flows(self, routes: tuple[np.ndarray, np.ndarray], hbm_bytes: float, cores_used: int,
               per_core: float, cores: np.ndarray | None) -> Flows:
        net = self.network
        if not 1 <= cores_used <= net.cores:
            raise ValueError(f"cores_used must be in 1..{net.cores}, got {cores_used}")
        if cores is None:
            cores = net.placement[:cores_used]
        if len(cores) != cores_used:
            raise ValueError(f"{len(cores)} cores given for a transfer with {cores_used}")
        ptr, links = routes
        start, length = ptr[cores], ptr[np.asarray(cores) + 1] - ptr[cores]
        offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
        # entries start[i] .. start[i] + length[i] of every chosen core, in order
        gathered = links[np.repeat(start - offsets[:-1], length) + np.arange(offsets[-1])]
        k = net.n_controllers
        return Flows(
            np.concatenate([np.arange(k), k + offsets]).astype(np.int64),
            np.concatenate([np.asarray(net.controller_port, dtype=np.int64), gathered]),
            np.concatenate([np.full(k, hbm_bytes / k), np.full(cores_used, per_core)]),
            np.zeros(k + cores_used),
        )

    def deliveries(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (ptr, links) of every physical core's delivery route, built once."""
        if self._deliveries is None:
            net = self.network
            if net.topology is Topology.ALL_TO_ALL:  # the ejection link of the core
                routes = [[net.cores + c] for c in range(net.cores)]
            else:
                routes = [net.controller_route(net.nearest_controller(c), c, port=False)
                          for c in range(net.cores)]
            self._deliveries = csr(routes)
        return self._deliveries

    def collections(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (ptr, links) of every physical core's route to its nearest controller (an
        HBM write's data; all-to-all: the core's injection link), built once."""
        if self._collections is None:
            net = self.network
            self._collections = csr([net.route_to_controller(c, net.nearest_controller(c), port=False)
                                     for c in range(net.cores)])
        return self._collections

    def link_loads(self) -> np.ndarray:
        """Entry n-1: of the deliveries of one load to the first n cores of
        `Network.placement`, the most that cross any one link: alone on the network such
        a load's deliveries of `cold` bytes per core last `cold x entry / link rate`
        (`Chip.delivery_link_loads`)."""
        ptr, links = self.deliveries()
        count = np.zeros(self.network.n_links, dtype=np.int64)
        out = np.empty(self.network.cores, dtype=np.int64)
        busiest = 0
        for n, core in enumerate(self.network.placement.tolist()):
            route = links[ptr[core]:ptr[core + 1]]
            count[route] += 1
            busiest = max(busiest, int(count[route].max()))
            out[n] = busiest
        return out


@functools.lru_cache(maxsize=4)
def load_routes(network: Network) -> LoadRoutes:
    """The LoadRoutes of `network`, kept for the next loads on the same network."""
    return LoadRoutes(network)


def preload_flows(network: Network, hbm_bytes: float, cores_used: int, cold_bytes: float) -> Flows:
    """Port flows (one per controller) then delivery flows (one per core used)."""
    return load_routes(network).flows(hbm_bytes, cores_used, cold_bytes)


def simulate_preload(network: Network, hbm_bytes: float, cores_used: int, cold_bytes: float) -> FlowResult:
    """The load's flows run to completion; its duration is the result's makespan."""
    flows = preload_flows(network, hbm_bytes, cores_used, cold_bytes)
    return simulate_flows(flows, network.bandwidth, network.latency)


def analytic_preload_cycles(network: Network, hbm_bytes: float, cores_used: int, cold_bytes: float) -> float:
    """What the same load would take on an ideal network: the HBM ports and the busiest
    link each at full rate (a lower bound on the simulated duration)."""
    flows = preload_flows(network, hbm_bytes, cores_used, cold_bytes)
    per_link = np.bincount(flows.links, weights=flows.size[flows.owner], minlength=network.n_links)
    return float((per_link / network.bandwidth).max())


__all__ = ["LoadRoutes", "analytic_preload_cycles", "load_routes", "preload_flows", "simulate_preload"]
