"""The chip: cores, SRAM, clock, interconnect and HBM, in SI units.

A `Chip` is problem data: frozen, validated, free of Hydra and Pyomo. Every
quantity carries its unit in its name. The IPU-POD4 reference (spec section 1)
uses the published unit conventions: "16 TB/s" of HBM is 16000 x 2**20 bytes
per millisecond, and the per-core exchange "5.5 GB/s" is 5.5 x 2**30 bytes/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

#: One published "TB/s" of HBM bandwidth in bytes per second (2**20 B per us).
PUBLISHED_TB_PER_S = 1000 * 2**20 * 1000.0
#: One published "GB/s" of per-core exchange bandwidth in bytes per second.
PUBLISHED_GB_PER_S = float(2**30)
#: Per-core exchange bandwidth the reference cycle model was fitted on.
REFERENCE_CORE_LINK_BYTES_PER_S = 5.5 * PUBLISHED_GB_PER_S


#: Grid edges that may hold HBM controllers (mesh and torus).
HBM_SIDES = ("west", "east", "north", "south")
#: Limits of what elkopt plans: beyond them, plan enumeration and the SRAM sweeps would
#: run out of memory or time long before they said so.
MAX_CORES = 2**20
MAX_SRAM_BYTES_PER_CORE = 2**30


#: Chip fields that are not hardware and never come from configs (set by elkopt.sim.calibrate).
CALIBRATION_FIELDS = ("load_time_scale", "delivery_link_loads")


class Topology(StrEnum):
    ALL_TO_ALL = "all_to_all"
    MESH = "mesh"
    TORUS = "torus"


@dataclass(frozen=True)
class Chip:
    """An inter-core connected AI chip (or a system of several, joined).

    Cores are numbered 0..cores-1; on a mesh or torus they form a
    `mesh_rows` x `mesh_cols` grid (row-major) with HBM controllers on the
    edges.
    """

    name: str
    topology: Topology = Topology.ALL_TO_ALL
    n_chips: int = 1
    cores_per_chip: int = 1472
    sram_bytes_per_core: int = 638_976
    reserved_sram_bytes_per_core: int = 0
    clock_hz: float = 1.325e9
    core_link_bytes_per_s: float = REFERENCE_CORE_LINK_BYTES_PER_S
    hbm_bytes_per_s: float = 16 * PUBLISHED_TB_PER_S
    inter_chip_exchange_factor: float = 1.25
    compute_scale: float = 1.0
    mesh_rows: int = 0
    mesh_cols: int = 0
    mesh_link_bytes_per_s: float = 0.0
    # The network simulator's view (elkopt.sim); the plans and the timeline ignore these.
    link_latency_cycles: float = 0.0
    hbm_controllers_per_chip: int = 4
    hbm_sides: tuple[str, ...] = HBM_SIDES
    inter_chip_bytes_per_s: float = 640 * PUBLISHED_GB_PER_S
    # Not hardware: the planner's calibration from simulation (elkopt.sim.calibrate). Per
    # operator of the graph being planned (by index), a factor on its load's analytic
    # duration; empty: 1 for every operator. Never set in configs.
    load_time_scale: tuple[float, ...] = ()
    # Not hardware either: routed delivery costs from the network (elkopt.sim.preload.
    # LoadRoutes.link_loads). Entry n-1: of the deliveries of a load to n cores, the most
    # that cross one link; empty: the analytic aggregate (`noc_bytes_per_cycle`).
    delivery_link_loads: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "n_chips": self.n_chips,
            "cores_per_chip": self.cores_per_chip,
            "sram_bytes_per_core": self.sram_bytes_per_core,
            "clock_hz": self.clock_hz,
            "core_link_bytes_per_s": self.core_link_bytes_per_s,
            "hbm_bytes_per_s": self.hbm_bytes_per_s,
            "inter_chip_exchange_factor": self.inter_chip_exchange_factor,
            "compute_scale": self.compute_scale,
            "hbm_controllers_per_chip": self.hbm_controllers_per_chip,
            "inter_chip_bytes_per_s": self.inter_chip_bytes_per_s,
        }
        for field, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"chip {self.name!r}: {field} must be a finite number > 0, got {value}")
        for field in ("n_chips", "cores_per_chip", "hbm_controllers_per_chip"):
            if getattr(self, field) != int(getattr(self, field)):
                raise ValueError(f"chip {self.name!r}: {field} must be a whole number, got {getattr(self, field)}")
        if self.cores > MAX_CORES:
            raise ValueError(f"chip {self.name!r}: n_chips x cores_per_chip = {self.cores:,} cores; elkopt plans "
                             f"at most {MAX_CORES:,}")
        if self.sram_bytes_per_core > MAX_SRAM_BYTES_PER_CORE:
            raise ValueError(f"chip {self.name!r}: sram_bytes_per_core must be at most "
                             f"{MAX_SRAM_BYTES_PER_CORE:,} B (1 GiB), got {self.sram_bytes_per_core:,}")
        if not 0 <= self.reserved_sram_bytes_per_core < self.sram_bytes_per_core:
            raise ValueError(
                f"chip {self.name!r}: reserved_sram_bytes_per_core must be in "
                f"[0, sram_bytes_per_core), got {self.reserved_sram_bytes_per_core}"
            )
        if not (self.link_latency_cycles >= 0 and math.isfinite(self.link_latency_cycles)):
            raise ValueError(f"chip {self.name!r}: link_latency_cycles must be >= 0, "
                             f"got {self.link_latency_cycles}")
        object.__setattr__(self, "hbm_sides", tuple(self.hbm_sides))
        object.__setattr__(self, "load_time_scale", tuple(float(x) for x in self.load_time_scale))
        object.__setattr__(self, "delivery_link_loads", tuple(int(x) for x in self.delivery_link_loads))
        if self.delivery_link_loads and len(self.delivery_link_loads) != self.cores:
            raise ValueError(f"chip {self.name!r}: delivery_link_loads needs one entry per core count "
                             f"(1..{self.cores}), got {len(self.delivery_link_loads)}")
        if not all(x > 0 for x in self.load_time_scale):
            raise ValueError(f"chip {self.name!r}: load_time_scale factors must be > 0")
        unknown = [side for side in self.hbm_sides if side not in HBM_SIDES]
        if unknown or not self.hbm_sides or len(set(self.hbm_sides)) != len(self.hbm_sides):
            raise ValueError(f"chip {self.name!r}: hbm_sides must be distinct sides out of "
                             f"{list(HBM_SIDES)}, at least one, got {list(self.hbm_sides)}")
        object.__setattr__(self, "topology", Topology(self.topology))
        if self.topology is not Topology.ALL_TO_ALL:
            if not (self.mesh_rows > 0 and self.mesh_cols > 0):
                raise ValueError(f"chip {self.name!r}: a {self.topology} needs mesh_rows and mesh_cols > 0, "
                                 f"got {self.mesh_rows} x {self.mesh_cols}")
            if self.mesh_rows * self.mesh_cols != self.cores:
                raise ValueError(
                    f"chip {self.name!r}: a {self.topology} needs mesh_rows x mesh_cols = cores "
                    f"({self.cores}), got {self.mesh_rows} x {self.mesh_cols}; "
                    "set chip.mesh_rows and chip.mesh_cols"
                )
            if not (self.mesh_link_bytes_per_s > 0 and math.isfinite(self.mesh_link_bytes_per_s)):
                raise ValueError(
                    f"chip {self.name!r}: a {self.topology} needs mesh_link_bytes_per_s > 0"
                )

    # -- derived quantities -------------------------------------------------
    def delivery_cycles(self, cold_bytes, cores_used):
        """Cycles the interconnect needs to deliver `cold_bytes` to each of `cores_used`
        cores (scalars or arrays): the analytic aggregate, `cold x cores /
        noc_bytes_per_cycle`, or with `delivery_link_loads` the busiest link's share,
        `cold x loads[cores - 1] / link rate`."""
        if not self.delivery_link_loads:
            return cold_bytes * cores_used / self.noc_bytes_per_cycle
        loads = np.asarray(self.delivery_link_loads)[np.asarray(cores_used, dtype=np.int64) - 1]
        rate = self.core_link_bytes_per_s if self.topology is Topology.ALL_TO_ALL else self.mesh_link_bytes_per_s
        return cold_bytes * loads / (rate / self.clock_hz)

    def load_scale_of(self, op: int) -> float:
        """The calibration factor on op `op`'s load duration (1 without calibration)."""
        return self.load_time_scale[op] if self.load_time_scale else 1.0

    @property
    def cores(self) -> int:
        return self.n_chips * self.cores_per_chip

    @property
    def usable_sram_bytes_per_core(self) -> int:
        return self.sram_bytes_per_core - self.reserved_sram_bytes_per_core

    @property
    def total_sram_bytes(self) -> int:
        return self.usable_sram_bytes_per_core * self.cores

    @property
    def hbm_bytes_per_cycle(self) -> float:
        """HBM delivery into the chip per clock cycle, all controllers together."""
        return self.hbm_delivery_bytes_per_s / self.clock_hz

    @property
    def hbm_delivery_bytes_per_s(self) -> float:
        """HBM bandwidth the interconnect can take in.

        All-to-all: the controllers are network nodes with their own ports, so
        HBM bandwidth is the limit. Mesh and torus: controllers sit on the
        edges, one per boundary link, so the edge links cap the delivery
        (an analytic estimate; the routed simulator refines it).
        """
        if self.topology is Topology.ALL_TO_ALL:
            return self.hbm_bytes_per_s
        return min(self.hbm_bytes_per_s, self.edge_links * self.mesh_link_bytes_per_s)

    @property
    def edge_links(self) -> int:
        """Links from edge HBM controllers into the grid: one per boundary core side of
        the sides in `hbm_sides` (west and east: one per row; north and south: one per
        column)."""
        if self.topology is Topology.ALL_TO_ALL:
            return 0
        per_side = {"west": self.mesh_rows, "east": self.mesh_rows,
                    "north": self.mesh_cols, "south": self.mesh_cols}
        return sum(per_side[side] for side in self.hbm_sides)

    @property
    def noc_bytes_per_cycle(self) -> float:
        """Aggregate interconnect bandwidth for delivering preloads, per cycle.

        All-to-all: every core receives at its link rate. Mesh/torus: a core
        has 4 links but each byte crosses several of them; we charge the
        average hop count of an edge-to-core route (rows/2 + cols/2 on a mesh,
        half that on a torus) against 4 links per core.
        """
        if self.topology is Topology.ALL_TO_ALL:
            return self.cores * self.core_link_bytes_per_s / self.clock_hz
        hops = (self.mesh_rows + self.mesh_cols) / 2
        if self.topology is Topology.TORUS:
            hops /= 2
        link_capacity = 4 * self.cores * self.mesh_link_bytes_per_s
        return link_capacity / max(hops, 1.0) / self.clock_hz

    @property
    def max_partitioned_dims(self) -> int | None:
        """How many dims a plan may split spatially: None = no limit."""
        return None if self.topology is Topology.ALL_TO_ALL else 2

    @property
    def shift_cycles_per_byte(self) -> float:
        """Cycles to shift one byte between cores, all cores in parallel.

        The reference fit is 0.56 cycles per 2-byte element at 5.5 GB/s per
        core; other link rates scale it. On a mesh a shift round is a ring
        embedded in a line of cores (a folded ring: two hops per step), on a
        torus a real ring (one hop).
        """
        if self.topology is Topology.ALL_TO_ALL:
            link = self.core_link_bytes_per_s
            hops = 1.0
        else:
            link = self.mesh_link_bytes_per_s
            hops = 2.0 if self.topology is Topology.MESH else 1.0
        return 0.28 * hops * REFERENCE_CORE_LINK_BYTES_PER_S / link

    def exchange_factor(self, cores_used: int) -> float:
        """Multiplier on exchange time when a plan spans more than one chip."""
        spans_chips = self.n_chips > 1 and cores_used > self.cores_per_chip
        return self.inter_chip_exchange_factor if spans_chips else 1.0

    def cycles_to_s(self, cycles: float) -> float:
        return cycles / self.clock_hz
