"""Where an operator's cores sit on a grid, and which links its exchange uses.

Two mappings (`MAPPINGS`):

- **serpentine**: a plan on n cores takes the first n cores of `Network.placement`
  (serpentine rows) and exchanges over one ring folded over them (`Network.ring`),
  whatever dims it splits.
- **dims** (the default of `python -m elkopt.run`): a plan that splits exactly two dims of
  its operator lays them onto the two grid dims from the grid's north-west corner, within
  the first chip when the grid is several (`band_layout`): the inner dim along the
  rows (in serpentine bands of several rows when its split exceeds the columns), the outer
  dim down the columns, one band per index (the other way round if that does not fit;
  the serpentine if neither does, or if it splits one dim or more than two). Its exchange becomes rings along both: a rotation of operand v moves v's pieces
  among v's replicas, the cores that differ only in the split dims v does not index, so
  its traffic runs along those dims' grid axes; the reduction of the output's partial sums
  runs along the split dims the output does not index; the output's re-layout and the
  cold-to-hot distribution, whose destinations depend on the next layout, are spread over
  both axes. Each axis gets its share of the op's exchange volume (`axis_shares`), every
  core sends its ring neighbours on each axis (each ring folded: one or two hops, no link
  carrying two transfers), and the bytes are scaled so that the exchange alone still
  takes the cost model's exchange cycles: the mapping decides which links the exchange
  holds, not how long it lasts alone.

On all-to-all every core has its own links into one switch, so there is nothing to map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elkopt.chip import Topology
from elkopt.plans.option import Plan
from elkopt.plans.space import OpShape
from elkopt.sim.flows import csr, longest_route
from elkopt.sim.network import Network, folded_ring

MAPPINGS = ("serpentine", "dims")


def axis_shares(shape: OpShape, plan: Plan) -> np.ndarray:
    """Per dim of the operator, the share of its exchange volume that moves along it (0
    on dims it does not split; the shares sum to 1 when it splits any)."""
    spatial = np.array(plan.spatial, dtype=np.int64)
    temporal = np.array(plan.temporal, dtype=np.int64)  # (D, V)
    uses = shape.uses_array  # (V, D)
    split = spatial > 1
    share = np.zeros(len(spatial))
    if not split.any():
        return share
    tile = -(-np.array(shape.lengths, dtype=np.int64) // spatial)
    own = -(-tile[:, None] // temporal)  # per-iteration piece of each operand along each dim
    piece = np.where(uses.T, own, 1).prod(axis=0).astype(np.float64)  # (V,)

    def spread(volume: float, dims: np.ndarray) -> None:
        dims = dims & split
        if not dims.any():
            dims = split
        share[dims] += volume / dims.sum()

    for v in range(len(piece)):
        rotations = temporal[:, v].prod() - 1  # pieces of v that pass each core
        if rotations > 0:
            spread(rotations * piece[v], ~uses[v])
    if spatial[~uses[0]].prod() > temporal[:, 0].prod():  # partial sums on several cores
        spread(piece[0], ~uses[0])
    spread(piece[0], split)  # re-layout of the output
    return share / share.sum()


@dataclass(frozen=True, eq=False)
class OpPlacement:
    """An operator's physical cores and its exchange: the links it uses, the bytes each
    carries per unit of exchange (the busiest on-chip core link carrying 1), and the
    longest route's latency."""

    cores: np.ndarray
    links: np.ndarray
    weight: np.ndarray
    latency: float


class Mapper:
    """Places operators on one network (module docs); layouts and rings are built once
    per shape of split."""

    def __init__(self, network: Network, mapping: str = "serpentine") -> None:
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
        self.network = network
        self.mapping = mapping
        self._rings: dict[tuple, tuple[np.ndarray, np.ndarray, float]] = {}
        self._placements: dict[tuple, OpPlacement] = {}  # shared by the ops that place alike

    def place(self, plan: Plan, shape: OpShape | None = None) -> OpPlacement:
        net = self.network
        split = [d for d, s in enumerate(plan.spatial) if s > 1]
        if self.mapping == "dims" and shape is not None and net.topology is not Topology.ALL_TO_ALL \
                and len(split) == 2:
            width = net.cols // net.n_chips  # within one chip (a band of columns) of several
            for outer, inner in (split, split[::-1]):
                layout = band_layout(plan.spatial[outer], plan.spatial[inner], net.rows, width, stride=net.cols)
                if layout is not None:
                    share = axis_shares(shape, plan)[[outer, inner]]
                    key = ("grid", *layout.shape, round(float(share[0]), 12))
                    if key not in self._placements:
                        self._placements[key] = self._on_grid(layout, share)
                    return self._placements[key]
        n = plan.cores_used
        if ("prefix", n) not in self._placements:
            links, count, latency = self._ring(("prefix", n))
            self._placements[("prefix", n)] = OpPlacement(net.placement[:n], links,
                                                          self._per_unit(links, count), latency)
        return self._placements[("prefix", n)]

    def _on_grid(self, layout: np.ndarray, share: np.ndarray) -> OpPlacement:
        """An op on `layout` (outer x inner physical cores), `share` = (outer, inner)."""
        key = layout.shape
        outer_links, outer_count, outer_latency = self._ring(("outer", *key), layout)
        inner_links, inner_count, inner_latency = self._ring(("inner", *key), layout)
        links, inverse = np.unique(np.concatenate([outer_links, inner_links]), return_inverse=True)
        weight = np.bincount(inverse, weights=np.concatenate([outer_count * share[0], inner_count * share[1]]))
        keep = weight > 0
        latency = max(outer_latency if share[0] > 0 else 0.0, inner_latency if share[1] > 0 else 0.0)
        return OpPlacement(layout.reshape(-1), links[keep], self._per_unit(links[keep], weight[keep]), latency)

    def _per_unit(self, links: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """`weight` scaled so that the busiest on-chip core link carries 1: the exchange
        alone then lasts the cost model's cycles, however many transfers slower links
        (gateways, chip boundaries) carry."""
        net = self.network
        reference = (links < net.n_core_links) & (net.bandwidth[links] >= net.bandwidth[0])
        unit = weight[reference].max() if reference.any() else weight.max() if len(weight) else 1.0
        return weight / unit

    def _ring(self, key: tuple, layout: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Links (unique), transfers per link and the longest route's latency of: a folded
        ring over the first n placed cores (("prefix", n)), or one folded ring along every
        row ("inner") or every column ("outer") of a layout."""
        if key not in self._rings:
            net = self.network
            if key[0] == "prefix":
                pairs = net.ring(key[1])
            else:
                lines = layout if key[0] == "inner" else layout.T
                pairs = [(int(line[a]), int(line[b])) for line in lines for a, b in folded_ring(len(line))]
            ptr, links = csr([net.core_route(a, b) for a, b in pairs])
            unique, count = np.unique(links, return_counts=True)
            self._rings[key] = unique, count.astype(np.float64), longest_route(ptr, links, net.latency)
        return self._rings[key]


def band_layout(outer: int, inner: int, rows: int, cols: int, stride: int | None = None) -> np.ndarray | None:
    """(outer, inner) physical core ids of a split laid on a rows x cols grid from its
    north-west corner: each index of the outer dim gets a band of ceil(inner / cols) rows,
    the inner dim runs along it in serpentine rows (consecutive indices are neighbours;
    the same inner index sits in the same column of every band); None if it does not fit.
    stride: cores per physical row (default cols; wider when the grid is a chip's band of a
    larger one)."""
    height = -(-inner // cols)
    if outer * height > rows:
        return None
    j = np.arange(inner)
    row, col = np.divmod(j, cols)
    col = np.where(row % 2 == 1, cols - 1 - col, col)
    return (np.arange(outer)[:, None] * height + row[None, :]) * (stride or cols) + col[None, :]


__all__ = ["MAPPINGS", "Mapper", "OpPlacement", "axis_shares", "band_layout"]
