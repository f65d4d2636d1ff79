"""What bounds each part of a step: compute, interconnect or HBM, read off the timeline.

Two views, both from the timeline's intervals and costs only (no new physics):

- the critical path (`attribute_bound`): the latency split over the operators and, within
  each, over three causes: what the step was doing or waiting for, moment by moment.
  It sums to the latency, but a load hidden under execution is charged nothing.
- the resource demand (`estimate_demand`): for each operator, how long each resource
  works for it (its compute, its exchange plus the delivery of its loads and writes, the
  HBM time of its loads and writes), overlapped or not. Summed over a part, each is a
  floor on that part's time, and the largest names the resource bounding it: a roofline
  per part, the answer to "would a faster HBM speed this part up".

`step_part` names the part of a transformer step an operator belongs to, `bound_metrics`
sums both views by part for metrics.json (`bound`, `bound_by_part`; `demand`,
`demand_by_part`) and `format_bound_table` prints them as one table under the summary.

The critical path, in detail:

The rule, per operator i in program order (times in cycles): operator i is charged the
interval from the end of operator i-1 (0 for the first) to its own end. These intervals
tile [0, latency] exactly, so the charges of all operators sum to the latency.

- Waiting, from the end of op i-1 to the start of op i (only an operator with a load can
  wait: it starts when op i-1 has ended and its load has arrived). Loads and HBM writes
  share one HBM channel and run one after another, so during the wait the channel carries
  op i's load or the transfers queued before it (other operators' loads, a prefill's KV
  writes). Each moment of the wait is charged by the transfer in flight then: to **HBM**
  when that transfer is HBM-bound (its HBM cycles >= its interconnect delivery cycles),
  else to **interconnect**. A moment with no transfer in flight (not produced by
  `compute_timeline`; possible in timelines made elsewhere) is charged by op i's own
  load, HBM-bound or not, or to HBM for an operator without a load.
- Executing, from its start to its end: the stall (`Timeline.stall`, interconnect
  contention with loads and writes) and the exchange and distribution cycles of its plan
  (`Timeline.exchange_cycles`) go to **interconnect**; the rest of the nominal execution
  (exec cycles minus exchange) to **compute**.

The wait is charged to the operator that waits, whichever operator's data was in flight:
it answers "where does the step lose its time", not "whose bytes were slow". A routed
expert's load starts after its router has run (`OpSchedule.load_after`), so an expert that
was not preloaded speculatively waits for it in full: that wait shows up here as HBM or
interconnect time of the experts. HBM writes that end after the last operator are outside
the latency (`Timeline.latency_cycles` ends at the last operator) and are charged nothing.
Operators without loads never wait.

Read it with the utilisations: a load hidden under execution is charged nothing, so a step
whose HBM is busy all along (`Timeline.hbm_util` near 1) but whose operators never wait
shows as compute and interconnect. There the planner has traded execution speed for
preload room; the attribution says what the operators on the critical path were doing,
not which resource would speed the step up if it were faster: the demand view says that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from elkopt.graph.ir import Operator, OpKind, Storage
from elkopt.schedule.timeline import Timeline

#: The three causes, in the order of metrics.json and of the printed columns.
CAUSES = ("compute", "interconnect", "hbm")


@dataclass(frozen=True)
class _PerCause:
    """Per-operator cycles of each cause (arrays indexed by op)."""

    compute: np.ndarray
    interconnect: np.ndarray
    hbm: np.ndarray

    def totals(self) -> dict[str, float]:
        """Cycles per cause over the whole step."""
        return {cause: float(getattr(self, cause).sum()) for cause in CAUSES}

    def by_part(self, parts: Sequence[str]) -> dict[str, dict[str, float]]:
        """Cycles per cause summed over the operators of each part (`parts[i]` names op i's
        part), parts in order of first appearance."""
        if len(parts) != len(self.compute):
            raise ValueError(f"{len(parts)} part names for {len(self.compute)} operators")
        out: dict[str, dict[str, float]] = {}
        for i, part in enumerate(parts):
            row = out.setdefault(part, dict.fromkeys(CAUSES, 0.0))
            for cause in CAUSES:
                row[cause] += float(getattr(self, cause)[i])
        return out


@dataclass(frozen=True)
class BoundAttribution(_PerCause):
    """Per-operator cycles charged to each cause on the critical path; they sum over
    causes and operators to `latency_cycles`."""

    latency_cycles: float = 0.0


@dataclass(frozen=True)
class ResourceDemand(_PerCause):
    """Per-operator cycles each resource works for the operator, overlapped or not
    (`estimate_demand`); each cause's sum is a lower bound on the time of any set of
    operators, so the largest names what bounds them (a roofline)."""


def estimate_demand(timeline: Timeline) -> ResourceDemand:
    """The resource demand view, per operator (cycles):

    - compute: its nominal execution minus its exchange and distribution (execution
      cycles less exchange: `end - start - stall - exchange_cycles`);
    - interconnect: its exchange and distribution, plus the interconnect delivery of its
      load (`Timeline.noc_cycles`) and of its HBM write (`write_noc_cycles`);
    - hbm: the HBM time of its load (`hbm_cycles`) and of its write (`write_hbm_cycles`).

    Unlike `attribute_bound`, a load hidden under another operator's execution counts in
    full for the operator that owns it, and the causes overlap in time, so the three sums
    of a step are each at most its latency (up to the stall model's slack on interconnect,
    see `Timeline.noc_util`), not equal to it. The sums over all operators are the step's
    demand: the HBM one is every byte read and written over the HBM rate.

    The largest of the three is a roofline, not the whole story: within an operator the
    plan's compute and exchange phases alternate (the chip's bulk-synchronous model), so a
    part whose compute and interconnect demands are close takes about their sum (Llama2-13B
    prefill: compute 76 ms, interconnect 50 ms of a 126 ms step).
    """
    nominal = np.asarray(timeline.exec_end, float) - np.asarray(timeline.exec_start, float) - timeline.stall
    exchange = np.asarray(timeline.exchange_cycles, float)
    compute = np.clip(nominal - exchange, 0.0, None)
    interconnect = exchange + timeline.noc_cycles
    hbm = np.asarray(timeline.hbm_cycles, float).copy()
    if timeline.write_noc_cycles is not None:
        interconnect = interconnect + timeline.write_noc_cycles
    if timeline.write_hbm_cycles is not None:
        hbm += timeline.write_hbm_cycles
    return ResourceDemand(compute, interconnect, hbm)


def bound_of(demand: dict[str, float]) -> str:
    """The cause with the largest demand in `demand` ({cause: cycles or ms}, causes it
    lacks left out); ties go to the first in `CAUSES`."""
    return max((cause for cause in CAUSES if cause in demand), key=lambda cause: (demand[cause], -CAUSES.index(cause)))


def attribute_bound(timeline: Timeline) -> BoundAttribution:
    """Charge every cycle of [0, latency] to one operator and one cause (module docstring).

    Operators must run in program order, one after another (as every scheduler's do).
    """
    n = timeline.n_ops
    zeros = np.zeros(n)
    if n == 0:
        return BoundAttribution(zeros, zeros.copy(), zeros.copy(), latency_cycles=0.0)
    start, end = np.asarray(timeline.exec_start, float), np.asarray(timeline.exec_end, float)
    previous_end = np.concatenate([[0.0], end[:-1]])
    if np.any(end < previous_end):
        raise ValueError("operators do not end in program order: the timeline is not one operator at a time")
    begin = np.maximum(start, previous_end)  # an overlap (none in a valid timeline) is not waiting
    executing = end - begin
    stall = np.minimum(timeline.stall, executing)
    exchange = np.clip(executing - stall, 0.0, timeline.exchange_cycles)
    compute = executing - stall - exchange
    interconnect = stall + exchange
    hbm = np.zeros(n)
    own_noc_bound = timeline.has_load & (timeline.noc_cycles > timeline.hbm_cycles)
    transfers = _transfers(timeline)
    for i in np.flatnonzero(begin > previous_end):
        to_hbm, to_noc = _wait_by_transfer(transfers, previous_end[i], begin[i])
        uncovered = (begin[i] - previous_end[i]) - to_hbm - to_noc
        if own_noc_bound[i]:
            to_noc += uncovered
        else:
            to_hbm += uncovered
        hbm[i] += to_hbm
        interconnect[i] += to_noc
    return BoundAttribution(compute, interconnect, hbm, latency_cycles=float(end[-1]))


def _transfers(timeline: Timeline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every HBM transfer (loads, then writes) as (start, end, interconnect-bound), by start."""
    loaded, written = timeline.has_load, timeline.has_write
    starts = [timeline.load_start[loaded]]
    ends = [timeline.load_end[loaded]]
    noc_bound = [timeline.noc_cycles[loaded] > timeline.hbm_cycles[loaded]]
    if written.any():
        starts.append(timeline.write_start[written])
        ends.append(timeline.write_end[written])
        noc_bound.append(timeline.write_noc_cycles[written] > timeline.write_hbm_cycles[written])
    start, stop, bound = (np.concatenate(a) for a in (starts, ends, noc_bound))
    order = np.argsort(start, kind="stable")
    return start[order], stop[order], bound[order]


def _wait_by_transfer(transfers: tuple[np.ndarray, np.ndarray, np.ndarray], t0: float,
                      t1: float) -> tuple[float, float]:
    """Cycles of [t0, t1] covered by HBM-bound and by interconnect-bound `transfers`
    (`_transfers`)."""
    start, stop, noc_bound = transfers
    # one channel: transfers are disjoint, so their ends are sorted too (else scan from the first)
    sorted_ends = bool(np.all(np.diff(stop) >= 0))
    first = max(int(np.searchsorted(stop, t0, side="right")) - 1, 0) if sorted_ends else 0
    last = int(np.searchsorted(start, t1, side="left"))
    overlap = np.clip(np.minimum(stop[first:last], t1) - np.maximum(start[first:last], t0), 0.0, None)
    # transfers on one channel are disjoint; clip the sum all the same (timelines made elsewhere)
    to_noc = float(overlap[noc_bound[first:last]].sum())
    to_hbm = float(overlap[~noc_bound[first:last]].sum())
    scale = min(1.0, (t1 - t0) / (to_noc + to_hbm)) if to_noc + to_hbm > 0 else 1.0
    return to_hbm * scale, to_noc * scale


# ---------------------------------------------------------------- parts of the step

#: Substrings of an HBM tensor's name that mark it as KV cache (as `elkopt.app.kv_cache_bytes`).
KV_NAMES = ("cache", "past")
#: Names, after ``.attn.``, of the attention operators that apply weights (and their biases and
#: the slices of their outputs): the projections; the rest of attention is "attention".
PROJECTIONS = ("qkv", "out", "q", "k", "v", "kv_a", "kv_b", "q_a", "q_b", "q_absorb", "v_absorb",
               "q_nope", "q_rope", "k_rope", "latent", "latent_cache")
#: Label of an operator of unknown role, by its kind (Dot and BatchMatMul keep their own label).
KIND_PARTS = {OpKind.BINARY: "element-wise", OpKind.UNARY: "element-wise", OpKind.REDUCE: "reduce",
              OpKind.SLICE: "slice", OpKind.GATHER: "gather"}
#: Order of the parts in the printed table (kind labels of unknown operators follow).
PART_ORDER = ("embedding", "norm", "projections", "attention", "kv_cache", "mlp", "router", "experts",
              "modulation", "residual", "lm_head")


def named_kv_cache(tensor: str) -> bool:
    """Whether a tensor's name marks it as KV cache (contains one of `KV_NAMES`)."""
    name = tensor.lower()
    return any(word in name for word in KV_NAMES)


def reads_kv_cache(op: Operator) -> bool:
    """Whether `op` reads KV cache from HBM (an HBM input named like a cache)."""
    return any(x.storage is Storage.HBM and named_kv_cache(x.tensor) for x in op.inputs)


def step_part(op: Operator) -> str:
    """The part of a transformer step `op` belongs to, from the zoo's operator names.

    kv_cache: any operator reading KV cache from HBM (the attention products of a decode
    step or of a chunk's cached keys). lm_head; experts (``.experts.``), router
    (``.router``, ``.topk.``), mlp (the rest of ``.mlp.``, shared experts included); norm
    (a name part ending in ``norm``); projections (``.attn.`` + one of `PROJECTIONS`);
    attention (the rest of ``.attn.``: scores, softmax, rotary, context); residual;
    embedding (``embed.``); modulation (a DiT's adaLN). Any other name (a graph file's) takes
    its operator's label for a MatMul (Dot, BatchMatMul, ...) or its kind (element-wise,
    reduce, slice, gather).
    """
    if reads_kv_cache(op):
        return "kv_cache"
    pieces = op.name.split(".")
    if pieces[0] == "lm_head":
        return "lm_head"
    if "experts" in pieces:
        return "experts"
    if "router" in pieces or "topk" in pieces or any(p.startswith("router_") for p in pieces):
        return "router"
    if any(p.endswith("norm") for p in pieces):
        return "norm"
    if "mlp" in pieces:
        return "mlp"
    if "attn" in pieces:
        after = pieces[pieces.index("attn") + 1] if pieces.index("attn") + 1 < len(pieces) else ""
        return "projections" if after in PROJECTIONS else "attention"
    if any(p.endswith("_residual") or p == "residual" for p in pieces):
        return "residual"
    if pieces[0] == "embed":
        return "embedding"
    if "ada" in pieces or any(p.endswith("_modulate") or p == "modulate" or p.endswith("_gate") for p in pieces):
        return "modulation"
    if op.kind is OpKind.MATMUL:
        return op.label
    return KIND_PARTS.get(op.kind, op.label)


def scheduled_operators(result: Any) -> list[Operator]:
    """The graph operator behind each operator of `result.timeline`: the planned graph's
    (`elkopt.pipeline.RunResult`), or for a published design (`ElkRun`) the source of each
    scheduled copy."""
    problem = getattr(result, "problem", None)
    if problem is not None:
        return [result.graph.ops[op.source] for op in problem.ops]
    return list(result.graph.ops)


def bound_metrics(timeline: Timeline, ops: Sequence[Operator]) -> dict[str, Any]:
    """metrics.json, both views by part (`ops[i]` is the graph operator of timeline op i):

    - `bound` ({compute_ms, interconnect_ms, hbm_ms}, summing to the latency) and
      `bound_by_part` ({part: the same three}): the critical path (`attribute_bound`);
    - `demand_by_part` ({part: {compute_ms, interconnect_ms, hbm_ms, bound}}) and `demand`
      (the same over the whole step, plus `pct_of_latency`: the bound resource's demand /
      latency x 100): the resource demand (`estimate_demand`), `bound` naming the largest.
    """
    if len(ops) != timeline.n_ops:
        raise ValueError(f"{len(ops)} operators for a timeline of {timeline.n_ops}")
    ms = 1e3 / timeline.clock_hz
    parts = [step_part(op) for op in ops]
    attribution = attribute_bound(timeline)
    demand = estimate_demand(timeline)

    def in_ms(row: dict[str, float], with_bound: bool) -> dict[str, Any]:
        out: dict[str, Any] = {f"{cause}_ms": cycles * ms for cause, cycles in row.items()}
        return {**out, "bound": bound_of(row)} if with_bound else out

    totals = demand.totals()
    latency = timeline.latency_cycles
    return {
        "bound": in_ms(attribution.totals(), False),
        "bound_by_part": {part: in_ms(row, False) for part, row in _ordered(attribution.by_part(parts)).items()},
        "demand": {**in_ms(totals, True),
                   "pct_of_latency": 100.0 * totals[bound_of(totals)] / latency if latency > 0 else None},
        "demand_by_part": {part: in_ms(row, True) for part, row in _ordered(demand.by_part(parts)).items()},
    }


def sum_demand(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json `demand` and `demand_by_part` of several steps run one after another (a
    chunked prompt's, `elkopt.prefill_run`) from the steps' metrics: the ms summed per part
    and resource, `bound` and `pct_of_latency` (of the summed `latency_ms`) recomputed;
    empty when a step has no `demand` (older runs)."""
    if not steps or any(not step.get("demand") for step in steps):
        return {}

    def summed(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        cycles = {cause: sum(row.get(f"{cause}_ms") or 0.0 for row in rows)
                  for cause in CAUSES if any(f"{cause}_ms" in row for row in rows)}
        return {**{f"{cause}_ms": value for cause, value in cycles.items()}, "bound": bound_of(cycles)}

    parts = list(_ordered({part: None for step in steps for part in step.get("demand_by_part") or {}}))
    demand = summed([step["demand"] for step in steps])
    latency = sum(step.get("latency_ms") or 0.0 for step in steps)
    bound_ms = demand[f"{demand['bound']}_ms"]
    return {
        "demand": {**demand, "pct_of_latency": 100.0 * bound_ms / latency if latency > 0 else None},
        "demand_by_part": {part: summed([step["demand_by_part"][part] for step in steps
                                         if part in (step.get("demand_by_part") or {})]) for part in parts},
    }


def _ordered(by_part: dict[str, Any]) -> dict[str, Any]:
    rank = {part: k for k, part in enumerate(PART_ORDER)}
    return dict(sorted(by_part.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


#: Printed names of the causes.
CAUSE_LABELS = {"compute": "compute", "interconnect": "interconnect", "hbm": "HBM"}


def format_bound_table(metrics: dict[str, Any]) -> list[str]:
    """The summary's lines for both views by part: one row per part, the critical path's ms
    of compute, interconnect and HBM (`bound_by_part`), the resource demand's (`demand_by_part`)
    and the resource that bounds the part, then the total (its bound with the % of the latency
    its demand takes). Runs from before `demand` existed show the critical path alone, runs
    from before `bound` no lines."""
    by_part, total = metrics.get("bound_by_part"), metrics.get("bound")
    if not by_part or not total:
        return []
    demand_by_part, demand = metrics.get("demand_by_part") or {}, metrics.get("demand") or {}
    columns = [f"{cause}_ms" for cause in CAUSES]
    width, label = 11, 14  # columns of ms, part names
    head = f"  {'bound by (ms)':<{label}}{'---- critical path ----':>{3 * width}}"
    short = ("compute", "interconn.", "HBM")
    names = f"  {'part':<{label}}" + "".join(f"{name:>{width}}" for name in short)
    if demand_by_part:
        head += f"  {'------- demand -------':>{3 * width}}"
        names += "  " + "".join(f"{name:>{width}}" for name in short) + "  bound"
    lines = [head, names]
    for part, row in list(by_part.items()) + [("total", total)]:
        line = f"  {part.replace('_', ' '):<{label}}" + "".join(f"{row.get(c) or 0.0:>{width}.3f}" for c in columns)
        need = demand if part == "total" else demand_by_part.get(part)
        if need:
            line += "  " + "".join(f"{need.get(c) or 0.0:>{width}.3f}" for c in columns)
            line += f"  {CAUSE_LABELS.get(need.get('bound'), need.get('bound'))}"
            if part == "total" and need.get("pct_of_latency") is not None:
                line += f" {need['pct_of_latency']:.0f}%"
        lines.append(line)
    if demand_by_part:
        lines.append("  critical path: what the step waits for (sums to the latency); demand: each resource's")
        lines.append("  busy time for the part, overlapped or not; bound: the largest demand (total: % of latency)")
    return lines
