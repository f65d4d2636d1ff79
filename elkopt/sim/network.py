"""Networks as data: nodes, directed links with a bandwidth and a latency, and routes.

Nodes 0..cores-1 are the cores; HBM controllers follow them. Every link is directed and
has its own bandwidth (bytes per cycle) and latency (cycles). A route is the list of link
ids a flow crosses, from its source node to its destination.

- **all-to-all** (the IPU exchange): every core has an injection link into a non-blocking
  switch and an ejection link out of it, each at the core's link rate; a core-to-core route
  is [injection of the source, ejection of the destination]. HBM controllers are nodes of
  their own, each with one injection link carrying its share of the HBM bandwidth.
- **mesh** and **torus** (`rows` x `cols`, cores row-major): a link each way between grid
  neighbours (and, on a torus, around each row and column). Dimension-order routing: along
  the row to the destination's column first, then along the column; on a torus each ring
  the shorter way round (ties: towards higher indices). HBM controllers sit on the edges,
  one per boundary core side (west and east of every row, north and south of every
  column), each joined to its core by a link each way; a controller's route enters the
  grid at its core and continues by dimension-order routing.
- **several chips**: all-to-all chips are joined by a gateway link each way per chip
  (`inter_chip_bytes_per_s`); mesh and torus chips sit side by side as bands of columns,
  and the links across each boundary share `inter_chip_bytes_per_s` each way.

Every controller also owns a *port* link (a link with no grid position) that carries its
share of the HBM bandwidth: every flow leaving the controller crosses it first, so the
controllers together never deliver more than the HBM can.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from elkopt.chip import HBM_SIDES, Chip, Topology

# Mesh link directions, in the order of their ids per core.
EAST, WEST, SOUTH, NORTH = range(4)


@dataclass(frozen=True, eq=False)
class Network:
    """Directed links between nodes (cores first, then HBM controllers).

    link_src, link_dst: node ids (-1: the switch of an all-to-all network, or the HBM side
        of a controller's port). bandwidth: bytes per cycle. latency: cycles.
    controller_core: the core each controller is attached to (-1 on all-to-all).
    """

    topology: Topology
    cores: int
    rows: int
    cols: int
    link_src: np.ndarray
    link_dst: np.ndarray
    bandwidth: np.ndarray
    latency: np.ndarray
    controller_port: np.ndarray  # per controller: its port link (HBM bandwidth share)
    controller_link: np.ndarray  # per controller: its link into the network
    controller_core: np.ndarray
    n_chips: int = 1  # all-to-all: cores and controllers split evenly, in order, over chips
    gateway_out: tuple[int, ...] = ()  # per chip: its link to the other chips
    gateway_in: tuple[int, ...] = ()  # per chip: its link from the other chips

    def __post_init__(self) -> None:
        n = len(self.link_src)
        for name in ("link_dst", "bandwidth", "latency"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"network: {name} has {len(getattr(self, name))} entries for {n} links")
        if n and not (self.bandwidth > 0).all():
            raise ValueError("network: every link needs a bandwidth > 0 bytes per cycle")
        if n and not (self.latency >= 0).all():
            raise ValueError("network: link latencies must be >= 0 cycles")

    @property
    def n_links(self) -> int:
        return len(self.link_src)

    @property
    def n_core_links(self) -> int:
        """Links 0..n_core_links-1 are the cores' own: injection and ejection on
        all-to-all, the four directions of every core on a grid."""
        return (2 if self.topology is Topology.ALL_TO_ALL else 4) * self.cores

    @property
    def n_controllers(self) -> int:
        return len(self.controller_port)

    @functools.cached_property
    def placement(self) -> np.ndarray:
        """The physical core of each logical core: a plan on n cores uses logical cores
        0..n-1. All-to-all: the identity. Mesh and torus: the serpentine order (row 0 west
        to east, row 1 east to west, ...), so that consecutive logical cores are grid
        neighbours and every prefix is a compact band of rows; over several chips (bands of
        columns) the serpentine runs down and up the columns instead, so that a plan fills
        one chip before it spills onto the next."""
        if self.topology is Topology.ALL_TO_ALL:
            return np.arange(self.cores)
        order = np.arange(self.cores).reshape(self.rows, self.cols)
        if self.n_chips > 1:
            order = order.T.copy()  # column by column
        order[1::2] = order[1::2, ::-1]
        return order.reshape(-1)

    def controller_node(self, c: int) -> int:
        """Node id of controller `c`."""
        return self.cores + c

    def link_name(self, link: int) -> str:
        """What link `link` is, for people: "core 3 (0, 3) east", "HBM controller 2 port"."""
        if not 0 <= link < self.n_links:
            raise ValueError(f"link {link} is not in 0..{self.n_links - 1}")
        ports = {int(p): k for k, p in enumerate(self.controller_port)}
        inward = {int(p): k for k, p in enumerate(self.controller_link)}
        if link in ports:
            return f"HBM controller {ports[link]} port"
        if link in inward:
            where = "switch" if self.topology is Topology.ALL_TO_ALL else f"core {self.controller_core[inward[link]]}"
            return f"HBM controller {inward[link]} -> {where}"
        if link in self.gateway_out:
            return f"chip {self.gateway_out.index(link)} gateway out"
        if link in self.gateway_in:
            return f"chip {self.gateway_in.index(link)} gateway in"
        if self.topology is Topology.ALL_TO_ALL:
            return f"core {link % self.cores} {'injection' if link < self.cores else 'ejection'}"
        if link < 4 * self.cores:
            core, direction = divmod(link, 4)
            r, c = divmod(core, self.cols)
            return f"core {core} ({r}, {c}) {('east', 'west', 'south', 'north')[direction]}"
        k = link - 4 * self.cores - 2 * self.n_controllers  # a controller's link back out
        return f"core {self.controller_core[k]} -> HBM controller {k}"

    # -- routes --------------------------------------------------------------------------

    def ring(self, n: int) -> list[tuple[int, int]]:
        """(source, destination) physical cores of a ring over logical cores 0..n-1, folded
        so that no transfer is long: 0 -> 2 -> 4 -> ... -> the odd ones downwards -> 1 -> 0.
        On a grid, with the serpentine placement, every transfer is at most 2 hops and the
        two directions of the fold use opposite links."""
        if not 1 <= n <= self.cores:
            raise ValueError(f"a ring needs 1..{self.cores} cores, got {n}")
        place = self.placement
        return [(int(place[a]), int(place[b])) for a, b in folded_ring(n)]

    def chip_of(self, core: int) -> int:
        """The chip of a core: all-to-all, cores split evenly in order; grids, column bands."""
        if self.topology is Topology.ALL_TO_ALL:
            return core * self.n_chips // self.cores
        return (core % self.cols) * self.n_chips // self.cols

    def core_route(self, src: int, dst: int) -> list[int]:
        """Links from core `src` to core `dst` ([] when they are the same core)."""
        self._check_core(src)
        self._check_core(dst)
        if src == dst:
            return []
        if self.topology is Topology.ALL_TO_ALL:  # injection of src, ejection of dst
            return [src, *self._between_chips(self.chip_of(src), self.chip_of(dst)), self.cores + dst]
        return self._grid_route(src, dst)

    def _between_chips(self, a: int, b: int) -> list[int]:
        return [] if a == b else [self.gateway_out[a], self.gateway_in[b]]

    def controller_route(self, c: int, dst: int, port: bool = True) -> list[int]:
        """Links from controller `c` to core `dst`: its port (unless `port` is False),
        its link, then the network."""
        if not 0 <= c < self.n_controllers:
            raise ValueError(f"controller {c} is not in 0..{self.n_controllers - 1}")
        self._check_core(dst)
        route = ([int(self.controller_port[c])] if port else []) + [int(self.controller_link[c])]
        if self.topology is Topology.ALL_TO_ALL:
            chip = c * self.n_chips // self.n_controllers
            return route + self._between_chips(chip, self.chip_of(dst)) + [self.cores + dst]
        return route + self._grid_route(int(self.controller_core[c]), dst)

    def route_to_controller(self, src: int, c: int, port: bool = True) -> list[int]:
        """Links from core `src` to controller `c` and into HBM (an HBM write's data), the
        reverse direction of `controller_route`: on a mesh or torus, dimension-order routing
        from `src` to the controller's core, then its link back out to the controller; on
        all-to-all, the injection link of `src` (the switch hands the data to the controller,
        as it takes a load's data from it, on no link of its own) and the gateways between
        chips, if any; then the controller's port (unless `port` is False)."""
        if not 0 <= c < self.n_controllers:
            raise ValueError(f"controller {c} is not in 0..{self.n_controllers - 1}")
        self._check_core(src)
        if self.topology is Topology.ALL_TO_ALL:
            chip = c * self.n_chips // self.n_controllers
            route = [src, *self._between_chips(self.chip_of(src), chip)]
        else:  # per controller: its port, its link in, its link out (`grid`)
            out = int(self.controller_link[c]) + self.n_controllers
            if self.link_src[out] != self.controller_core[c] or self.link_dst[out] != self.controller_node(c):
                raise ValueError(f"network: link {out} is not core {self.controller_core[c]} -> controller {c}")
            route = [*self._grid_route(src, int(self.controller_core[c])), out]
        return route + ([int(self.controller_port[c])] if port else [])

    def nearest_controller(self, core: int) -> int:
        """The controller with the fewest grid hops to `core` (ties: the lowest id) among
        those of the core's chip (all of them if its chip has none); on all-to-all, the
        controllers of the core's chip take its cores in turn."""
        self._check_core(core)
        if self.topology is Topology.ALL_TO_ALL:
            per_chip = self.n_controllers // self.n_chips
            return self.chip_of(core) * per_chip + core % per_chip
        r, c = divmod(core, self.cols)
        rr, cc = np.divmod(self.controller_core, self.cols)
        dr, dc = np.abs(rr - r), np.abs(cc - c)
        if self.topology is Topology.TORUS:
            dr, dc = np.minimum(dr, self.rows - dr), np.minimum(dc, self.cols - dc)
        hops = (dr + dc).astype(np.float64)
        if self.n_chips > 1:
            own = cc * self.n_chips // self.cols == self.chip_of(core)
            if own.any():
                hops[~own] = np.inf
        return int(np.argmin(hops))

    def _check_core(self, core: int) -> None:
        if not 0 <= core < self.cores:
            raise ValueError(f"core {core} is not in 0..{self.cores - 1}")

    def _grid_route(self, src: int, dst: int) -> list[int]:
        r, c = divmod(src, self.cols)
        r1, c1 = divmod(dst, self.cols)
        route = []
        for step, direction, axis in ((self._step(c, c1, self.cols), (EAST, WEST), 1),
                                      (self._step(r, r1, self.rows), (SOUTH, NORTH), 0)):
            target = c1 if axis == 1 else r1
            size = self.cols if axis == 1 else self.rows
            while (c if axis == 1 else r) != target:
                link = (r * self.cols + c) * 4 + (direction[0] if step > 0 else direction[1])
                route.append(link)
                if axis == 1:
                    c = (c + step) % size
                else:
                    r = (r + step) % size
        return route

    def _step(self, a: int, b: int, size: int) -> int:
        """+1 or -1: the direction from position a to b along one ring or line."""
        if a == b:
            return 0
        if self.topology is Topology.TORUS:
            forward = (b - a) % size
            return 1 if forward <= size - forward else -1
        return 1 if b > a else -1


def folded_ring(n: int) -> list[tuple[int, int]]:
    """(from, to) positions of a ring over 0..n-1 folded so that no step is longer than
    two positions: 0 -> 2 -> 4 -> ... -> the odd ones downwards -> 1 -> 0 ([] for n < 2)."""
    if n < 2:
        return []
    order = [*range(0, n, 2), *range(n - 1 - (n % 2 == 1), 0, -2)]
    return list(zip(order, order[1:] + order[:1]))


def network_from_chip(chip: Chip) -> Network:
    """The network of `chip`: its topology, link rates, latency per hop and HBM controllers
    (module docs).

    Link rates: all-to-all, the per-core exchange rate; mesh and torus,
    mesh_link_bytes_per_s. HBM: all-to-all, `hbm_controllers_per_chip` controllers on each
    chip, each a node with a port of an equal share of the HBM bandwidth and a link of that
    rate into its chip's switch; chips joined by a gateway link each way of
    `inter_chip_bytes_per_s`. Mesh and torus (one chip): a controller per boundary core
    side of `hbm_sides`, the HBM bandwidth shared equally among their ports.
    """
    per_cycle = 1.0 / chip.clock_hz
    latency = chip.link_latency_cycles
    if chip.topology is Topology.ALL_TO_ALL:
        return all_to_all(chip.cores, chip.core_link_bytes_per_s * per_cycle,
                          controllers=chip.hbm_controllers_per_chip * chip.n_chips,
                          hbm_bytes_per_cycle=chip.hbm_bytes_per_s * per_cycle, latency=latency,
                          n_chips=chip.n_chips,
                          inter_chip_bytes_per_cycle=chip.inter_chip_bytes_per_s * per_cycle)
    if chip.mesh_cols % chip.n_chips:
        raise ValueError(f"chip {chip.name!r}: {chip.n_chips} chips side by side need mesh_cols "
                         f"divisible by n_chips, got {chip.mesh_cols}")
    return grid(chip.mesh_rows, chip.mesh_cols, chip.mesh_link_bytes_per_s * per_cycle,
                hbm_bytes_per_cycle=chip.hbm_bytes_per_s * per_cycle,
                torus=chip.topology is Topology.TORUS, latency=latency, sides=chip.hbm_sides,
                n_chips=chip.n_chips, inter_chip_bytes_per_cycle=chip.inter_chip_bytes_per_s * per_cycle)


def all_to_all(
    cores: int, link_bytes_per_cycle: float, controllers: int, hbm_bytes_per_cycle: float,
    latency: float = 0.0, n_chips: int = 1, inter_chip_bytes_per_cycle: float = 0.0,
) -> Network:
    """Links 0..cores-1: injection; cores..2*cores-1: ejection; then per controller its
    port and its link into its chip's switch; then, with several chips, per chip its
    gateway out and its gateway in (`inter_chip_bytes_per_cycle` each). Cores and
    controllers are split evenly, in order, over the chips."""
    if cores < 1 or controllers < 1 or n_chips < 1:
        raise ValueError(f"all-to-all needs cores, controllers and chips >= 1, got "
                         f"{cores}, {controllers}, {n_chips}")
    if cores % n_chips or controllers % n_chips:
        raise ValueError(f"all-to-all: {cores} cores and {controllers} controllers do not split "
                         f"evenly over {n_chips} chips")
    if n_chips > 1 and not inter_chip_bytes_per_cycle > 0:
        raise ValueError("all-to-all over several chips needs inter_chip_bytes_per_cycle > 0")
    share = hbm_bytes_per_cycle / controllers
    ids = np.arange(cores)
    ctrl = cores + np.arange(controllers)
    gates = n_chips if n_chips > 1 else 0
    src = np.concatenate([ids, np.full(cores, -1), np.full(controllers, -1), ctrl, np.full(2 * gates, -1)])
    dst = np.concatenate([np.full(cores, -1), ids, ctrl, np.full(controllers, -1), np.full(2 * gates, -1)])
    bandwidth = np.concatenate([np.full(2 * cores, link_bytes_per_cycle), np.full(2 * controllers, share),
                                np.full(2 * gates, inter_chip_bytes_per_cycle)])
    latencies = np.concatenate([np.full(2 * cores, latency), np.zeros(controllers),
                                np.full(controllers, latency), np.full(2 * gates, latency)])
    ports = 2 * cores + np.arange(controllers)
    first_gate = 2 * cores + 2 * controllers
    return Network(Topology.ALL_TO_ALL, cores, 0, 0, src, dst, bandwidth, latencies,
                   controller_port=ports, controller_link=ports + controllers,
                   controller_core=np.full(controllers, -1), n_chips=n_chips,
                   gateway_out=tuple(range(first_gate, first_gate + gates)),
                   gateway_in=tuple(range(first_gate + gates, first_gate + 2 * gates)))


def grid(
    rows: int, cols: int, link_bytes_per_cycle: float, hbm_bytes_per_cycle: float,
    torus: bool = False, latency: float = 0.0, sides: tuple[str, ...] = HBM_SIDES,
    n_chips: int = 1, inter_chip_bytes_per_cycle: float = 0.0,
) -> Network:
    """Link (core * 4 + direction) leaves a core towards its east, west, south or north
    neighbour (on a mesh, the links off the grid exist but no route uses them); then per
    controller its port, its link into its core and its link back out. Controllers sit on
    `sides`: west and east of every row, north and south of every column.

    n_chips > 1: the grid is that many chips side by side, each a band of cols / n_chips
    columns; the east and west links across a boundary between two chips (on a torus, also
    the wrap-around) share `inter_chip_bytes_per_cycle` each way, rows of them, so each
    carries a rows-th of it (or the on-chip rate, if lower)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"a grid needs rows >= 1 and cols >= 1, got {rows} x {cols}")
    if n_chips < 1 or cols % n_chips:
        raise ValueError(f"a grid of {cols} columns cannot be {n_chips} chips side by side")
    if n_chips > 1 and not inter_chip_bytes_per_cycle > 0:
        raise ValueError("a grid over several chips needs inter_chip_bytes_per_cycle > 0")
    cores = rows * cols
    r, c = np.divmod(np.arange(cores), cols)
    neighbour = {
        EAST: r * cols + (c + 1) % cols,
        WEST: r * cols + (c - 1) % cols,
        SOUTH: ((r + 1) % rows) * cols + c,
        NORTH: ((r - 1) % rows) * cols + c,
    }
    src = np.repeat(np.arange(cores), 4)
    dst = np.stack([neighbour[d] for d in range(4)], axis=1).reshape(-1)
    if not torus:  # links off the edge of a mesh lead nowhere
        off = np.stack([c == cols - 1, c == 0, r == rows - 1, r == 0], axis=1).reshape(-1)
        dst = np.where(off, -1, dst)
    on_side = {"west": np.arange(rows) * cols, "east": np.arange(rows) * cols + cols - 1,
               "north": np.arange(cols), "south": (rows - 1) * cols + np.arange(cols)}
    unknown = [side for side in sides if side not in on_side]
    if unknown or not sides:
        raise ValueError(f"HBM controller sides must be among {list(HBM_SIDES)}, got {list(sides)}")
    attached = np.concatenate([on_side[side] for side in HBM_SIDES if side in sides])
    k = len(attached)
    nodes = cores + np.arange(k)
    first_port = 4 * cores
    src = np.concatenate([src, np.full(k, -1), nodes, attached])
    dst = np.concatenate([dst, nodes, attached, nodes])
    core_links = np.full((cores, 4), link_bytes_per_cycle)
    if n_chips > 1:  # links between column bands
        band = cols // n_chips
        crossing = np.stack([(c + 1) % band == 0, c % band == 0], axis=1)  # east, west
        if not torus:
            crossing &= np.stack([c < cols - 1, c > 0], axis=1)
        core_links[:, :2][crossing] = min(link_bytes_per_cycle, inter_chip_bytes_per_cycle / rows)
    bandwidth = np.concatenate([core_links.reshape(-1), np.full(k, hbm_bytes_per_cycle / k),
                                np.full(2 * k, link_bytes_per_cycle)])
    lat = np.concatenate([np.full(4 * cores, latency), np.zeros(k), np.full(2 * k, latency)])
    return Network(Topology.TORUS if torus else Topology.MESH, cores, rows, cols, src, dst, bandwidth, lat,
                   controller_port=first_port + np.arange(k), controller_link=first_port + k + np.arange(k),
                   controller_core=attached, n_chips=n_chips)


__all__ = ["EAST", "NORTH", "Network", "SOUTH", "WEST", "all_to_all", "folded_ring", "grid",
           "network_from_chip"]
