"""All five published designs, run as the published launch script runs them.

Its printed names map to the paper's: naive -> Basic, base_min_cold / base_max_cold ->
Static (the faster of the two), icbm_ordered -> Elk-Dyn, ideal -> Ideal, icbm -> Elk-Full.

    >>> res = run_published(ops, hbm_GBps=16000, cores=5888, sram_bytes=624 * 1024, layers=40)
    >>> res.latency_ms()["Elk-Full"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from elkopt.elk.coldhot import ElkOp
from elkopt.elk.lookup import ALL_TO_ALL, Interconnect
from elkopt.elk.schedulers import (BasicResult, ElkDynResult, ElkFullResult, ElkSchedule,
                                   Problem, StaticResult, schedule_basic, schedule_elk_dyn,
                                   schedule_elk_full, schedule_ideal, schedule_static)

#: The published launch script's printed latency names -> the paper's design names.
PRINTED_NAMES = {
    "naive_ms": "Basic",
    "base_min_cold_ms": "Static",
    "base_max_cold_ms": "Static",
    "icbm_ordered_ms": "Elk-Dyn",
    "ideal_ms": "Ideal",
    "icbm_ms": "Elk-Full",
}


@dataclass(frozen=True)
class PublishedResults:
    """The five designs' results (`elk_full` None when it was not run)."""

    basic: BasicResult
    static: StaticResult
    elk_dyn: ElkDynResult
    ideal: ElkSchedule
    elk_full: ElkFullResult | None

    def latency_ms(self) -> dict[str, float]:
        """Per paper name, the latency in ms (Static: the faster variant; Elk-Dyn: the
        fastest threshold, not the printed one)."""
        out = {
            "Basic": self.basic.schedule.latency_ms,
            "Static": self.static.schedule.latency_ms,
            "Elk-Dyn": self.elk_dyn.schedule.latency_ms,
            "Ideal": self.ideal.latency_ms,
        }
        if self.elk_full is not None:
            out["Elk-Full"] = self.elk_full.schedule.latency_ms
        return out

    def printed_ms(self) -> dict[str, float]:
        """What the published launch script prints, under its names (Elk-Dyn with the
        tie-break quirk)."""
        out = {
            "naive_ms": self.basic.schedule.latency_ms,
            "base_min_cold_ms": self.static.min_cold.latency_ms,
            "base_max_cold_ms": self.static.max_cold.latency_ms,
            "icbm_ordered_ms": self.elk_dyn.printed_ms,
            "ideal_ms": self.ideal.latency_ms,
        }
        if self.elk_full is not None:
            out["icbm_ms"] = self.elk_full.schedule.latency_ms
        return out


def run_published(ops: Sequence[ElkOp], hbm_GBps: float, cores: int, sram_bytes: int,
                  layers: int, interconnect: Interconnect = ALL_TO_ALL,
                  orders: Sequence[Sequence[int]] | None = None,
                  elk_full: bool = True) -> PublishedResults:
    """Basic, Static, Elk-Dyn, Ideal and (if `elk_full`) Elk-Full over `orders` (default:
    the published candidates), sharing one table index."""
    pb = Problem(list(ops), hbm_GBps, cores, sram_bytes, layers, interconnect)
    full = schedule_elk_full(pb, orders=orders) if elk_full else None
    return PublishedResults(schedule_basic(pb), schedule_static(pb), schedule_elk_dyn(pb),
                            schedule_ideal(pb), full)
