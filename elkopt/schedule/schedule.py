"""A schedule: per operator its plan option and when its preload is issued."""

from __future__ import annotations

from dataclasses import dataclass

from elkopt.plans.option import PlanOption

#: preload_window value for loads issued before the first operator starts.
PROLOGUE = -1


@dataclass(frozen=True)
class OpSchedule:
    """Decisions for one operator.

    option: its preload layout and executing plan.
    preload_window: index of the operator during whose execution this
        operator's load is issued (PROLOGUE for before the first operator);
        the op's own index means the load is issued when the previous op
        ends and overlaps no execution (its data fits beside nothing else).
        Ignored for an operator without HBM data.
    hbm_bytes: the operator's unique HBM bytes (0 if it has none).
    write_bytes: bytes written to HBM once the operator ends (`Graph.stores`:
        the KV cache of a prefill step; 0 for most operators).
    load_after: operators whose end the load waits for (besides its window):
        the router of a routed-expert operator (`elkopt.graph.moe`), whose
        decision says which experts to read; () for every other operator.
    """

    op: int
    option: PlanOption
    preload_window: int
    hbm_bytes: int
    write_bytes: int = 0
    load_after: tuple[int, ...] = ()

    @property
    def has_load(self) -> bool:
        return self.hbm_bytes > 0

    @property
    def has_write(self) -> bool:
        return self.write_bytes > 0


@dataclass(frozen=True)
class Schedule:
    """All decisions for a graph. ops[i].op == i; loads issued one after
    another in preload_order (indices of ops with HBM data)."""

    ops: tuple[OpSchedule, ...]
    preload_order: tuple[int, ...]
    scheduler: str = ""
