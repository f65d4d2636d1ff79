"""One row of an operator's plan table: a preload layout paired with an executing plan."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """How an operator's iteration space is split over cores.

    spatial[d]: number of core groups along dim d (product = cores used).
    temporal[d][v]: pieces the per-core tile of operand v (0 = output, then
    inputs) is cut into along dim d; the pieces rotate among replicas.
    """

    spatial: tuple[int, ...]
    temporal: tuple[tuple[int, ...], ...]

    @property
    def cores_used(self) -> int:
        n = 1
        for s in self.spatial:
            n *= s
        return n


@dataclass(frozen=True)
class PlanOption:
    """A (cold layout, hot plan) pair and what it costs, per core.

    cold_bytes: bytes per core of the operator's HBM operands while parked in
        the preload space (0 for an operator without HBM data).
    hot_bytes: bytes per core while executing (rotating pieces double-buffered).
    exec_cycles: compute + shift + output re-layout/reduction of the hot plan.
    exchange_cycles: the part of exec_cycles that occupies the interconnect.
    distribution_cycles: turning the cold layout into the hot one at start.
    cold_split: per HBM operand, how many pieces its per-core tile was cut into
        in the preload layout (the cold temporal product); () if none.
    """

    plan: Plan
    cold_bytes: int
    hot_bytes: int
    exec_cycles: float
    exchange_cycles: float
    distribution_cycles: float
    cold_split: tuple[int, ...] = ()

    @property
    def cores_used(self) -> int:
        return self.plan.cores_used

    @property
    def total_cycles(self) -> float:
        """Execution including distribution, without interconnect stalls."""
        return self.exec_cycles + self.distribution_cycles

    @property
    def load_noc_bytes(self) -> int:
        """Bytes the interconnect delivers for this layout (replicas included)."""
        return self.cold_bytes * self.cores_used
