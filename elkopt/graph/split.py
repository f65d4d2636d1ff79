"""Cut operators into copies before planning: which, into how many and along which dim,
decided per operator.

An operator that reads a large share of the chip's SRAM from HBM (a KV-cache BatchMatMul
at large batch and context, a huge LM head) is hard to schedule whole: its load can
overlap only earlier operators, and its footprint may not fit beside its neighbour's; on
a small chip it may fit in no plan at all. Cut into copies, each copy loads and runs a
slice, and the load of one copy overlaps the execution of the one before.

**Copies.** `split_operator(op, dim, k)` cuts `op` along `dim` into k copies, as even as
possible (the first `length % k` one longer). `dim` must index every HBM operand, so each
copy loads its own slice (`<tensor>.part<j>`) and the graph's HBM bytes stay the same.

- A dim the output indexes (`plain`): copy j computes slice j of the output
  (`Operator.part`); consumers read the output once every copy has run. FLOPs unchanged.
- A dim the operator sums over (`contracted`: a MatMul's contracted dim, as the KV length S
  of the context BatchMatMul; a Sum's reduced dim): copy j computes a partial result of the
  output's full shape, tensor `<op>.part<j>`, and k - 1 binary element-wise operators add
  them up in a chain, `<op>.add<j>` = partial sums 0..j, placed right after copy j; the
  last writes the operator's output tensor. (For a max reduction the combining operator is
  a Maximum.) Their cost is the reference model's binary element-wise formula; FLOPs grow
  by (k - 1) x the output's elements.

On-chip inputs are read whole or sliced as they index the dim. Copies of equal size share
a signature and so a plan table.

**Which operators** (`choose_cuts`). The candidates are the operators that fit in no plan
whole (they must be cut) and those whose HBM data exceeds `fraction` of the chip's SRAM
(they may be); every other operator stays whole. Operators with one signature (the same
operator in every layer) share one decision, so their copies share plan tables and the
layers stay alike. A candidate's options are whole (if it has a plan) and, for each
k = 2..max_copies, k copies along its cheapest dim for k (and for a candidate too large
for that range, streamed copies: below):

- **the dim** by execution alone, `cost` (cycles of an operator's fastest plan): the sum
  over the copies and the adds. Every dim moves the same HBM bytes in k loads of the same
  size (the smallest preload footprint is the operator's unique bytes over the cores,
  whatever the dim), so only the execution tells dims apart. Ties go to a plain dim, then
  to one k divides, then to the longer, then to the first in the operator's dims.
- **whole or how many copies** by `evaluate`, a latency of the whole graph the caller
  supplies, the same for every option. That is where the HBM load time and what a cut
  buys for overlap are accounted. `elkopt.pipeline.choose_split` gives the latency of
  Elk-Dyn's schedule (`elkopt.elk.convert.elk_dyn_start`: backward induction over preload
  numbers, loads in program order, each operator in the fastest plan that fits beside
  the preloads it waits with) timed on elkopt's timeline (loads one after another at the
  HBM bandwidth and the interconnect's delivery rate, their contention with the running
  operator's exchange as stall): a whole operator whose load fills most of the SRAM either
  slows the operators it waits beside or waits for the data before it to be consumed, and
  its load is exposed; its copies load one behind the other, under the copy before. The
  copies' slower execution and the adds count too. (Ideal, `planning.split_estimate=ideal`,
  is 4 to 6 times faster to compute but blind to interconnect contention and to the
  executing operator's SRAM: on Llama2-13B decode at 736 cores, 16 TB/s, it rates the KV
  BatchMatMuls in 3 copies along the heads 1.6% faster than in 4, where elkopt schedules
  them 5.8% slower; on six such graphs Elk-Dyn's latencies were within 1.3% of elkopt's.)
  The candidates are decided by coordinate descent: starting from every optional candidate
  whole and every compulsory one in its cheapest option, each candidate in program order
  takes the option with the lowest latency, the others as they stand (ties: less
  execution, then fewer copies), until a pass changes nothing (at most `MAX_PASSES`). So
  an operator is cut only if its own cut pays, never because another operator needs
  cutting.

**Streaming** (`copy_counts`). An operator whose HBM data exceeds `max_copies x fraction` of
the SRAM (a long-context KV-cache BatchMatMul: Llama3-8B's K cache at batch 32, KV 128k,
is 8.6 GB, 2.3 times an IPU-POD4's SRAM) would, in at most `max_copies` copies, load
copies that each fill most of the SRAM, so no copy's load can overlap the execution of
the one before. Its options also hold the fewest copies that bring each copy within
`fraction` of the SRAM, `ceil(bytes / (fraction x SRAM))` (on average: copies are as even
as the dim allows), which stream: each copy loads while the one before runs (Llama3-8B
decode at batch 32, KV 128k on IPU-POD4: 47.5 ms in 3 copies, 33.7 ms, within 0.3% of the
HBM bound, in 10; 20 or 40 copies gain nothing more). Copies whose tensors alone exceed the
chip's SRAM are known to have no plan without enumerating any (`operand_bytes`). And an
operator that fits in no plan whole and in no plan as any of those copies gets as many
copies as it needs: the fewest with a plan, found by doubling and bisection
(`fewest_copies_with_plan`). An operator whose on-chip tensors alone exceed the SRAM (`on_chip_bytes`)
is not cut at all: cutting streams HBM data, and its copies would slice tensors held whole. Operators within `max_copies x fraction` are weighed exactly
as before. The chosen counts are in `CandidateChoice.label` (metrics.json
`stats.split_choices`, "(streamed)" beyond max_copies) and `SplitReport.max_copies`.

`choose_cuts` also names a runner-up graph. An optional decision is close when the best
option of the other kind (whole against cut) came within `margin` of the chosen option's
latency; the runner-up takes the close decisions the other way, all towards whole or all
towards a cut, whichever direction the estimate rates better (alike decisions, as a
layer's two KV BatchMatMuls, tend to share the estimate's error, so a mixed flip is the
least likely to be right); a decision turned to a cut takes, of the cuts within `margin`
of the best cut, the one with the least execution. The estimate ranks cut against whole
well where the difference is large, not always where it is a few percent: Llama2-13B at
batch 32, KV 4096 on IPU-POD4 is 4.6% faster whole in Elk-Dyn's schedule (0.9% in
Ideal's) and 1.7% faster cut in elkopt's. So under `planning.split_policy=if_faster`
`elkopt.pipeline.compile_model` plans the runner-up too and keeps the faster; without a
close decision it plans one graph.

`split_large_operators` is the capacity rule of earlier versions (every operator above
the threshold cut into the fewest copies that bring each below it, dim by `cost`), kept
for `planning.split_policy=always`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from elkopt.progress import Ticker

from .ir import Dim, Graph, Operand, OpKind, Operator, Storage

#: At most this many coordinate-descent passes over the candidates (`choose_cuts`).
MAX_PASSES = 4

#: A cut: (dim, copies); None = whole.
Cut = tuple[str, int]
#: Labels of the binary operator that combines two partial results, by reduction.
COMBINE_LABELS = {"sum": "Add", "max": "Maximum"}


@dataclass(frozen=True)
class SplitReport:
    """What was cut: operator name -> (dim, number of copies); `adds`: operators added to
    combine partial results (contracted cuts); `must`: the cut operators that fit in no
    plan whole."""

    splits: dict[str, tuple[str, int]]
    adds: int = 0
    must: frozenset[str] = frozenset()

    @property
    def added_ops(self) -> int:
        """Operators added to the graph (copies beyond the first, and the adds)."""
        return sum(k - 1 for _dim, k in self.splits.values()) + self.adds

    @property
    def max_copies(self) -> int:
        """The most copies any operator was cut into (1 when nothing was cut)."""
        return max((k for _dim, k in self.splits.values()), default=1)


def contracted(op: Operator, dim: str) -> bool:
    """True when `op` sums (or maximises) over `dim`: a dim of its iteration space that its
    output does not index."""
    return dim not in op.output.dims


def split_dims(op: Operator, copies: int) -> list[str]:
    """Dims `op` can be cut along into `copies`: at least `copies` long and indexing every
    HBM operand; the output's dims, and for a MatMul or reduction the dims it sums over
    (copies of partial results, then adds). Plain dims first, then those `copies` divides
    (equal copies share a plan table), then the longest, then in the operator's order."""
    hbm = [x for x in op.inputs if x.storage == Storage.HBM]
    if not hbm:
        return []
    order = [d.name for d in op.dims]
    lengths = {d.name: d.length for d in op.dims}
    summed = op.kind in (OpKind.MATMUL, OpKind.REDUCE) and op.reduce in COMBINE_LABELS
    candidates = [
        d for d in order
        if all(d in x.dims for x in hbm) and lengths[d] >= copies and (summed or not contracted(op, d))
    ]
    return sorted(candidates, key=lambda d: (contracted(op, d), lengths[d] % copies != 0, -lengths[d],
                                             order.index(d)))


def split_operator(op: Operator, dim: str, copies: int) -> tuple[Operator, ...]:
    """`op` as `copies` operators along `dim` (module docs), in program order: the copies,
    and for a contracted dim the adds after them.

    Copy j is named `<op>.part<j>` and reads HBM tensors renamed `<tensor>.part<j>`.
    """
    if op.part is not None:
        raise ValueError(f"operator {op.name!r} is already a part of a split operator")
    lengths = {d.name: d.length for d in op.dims}
    if dim not in lengths:
        raise ValueError(f"operator {op.name!r} has no dim {dim!r} (dims {list(lengths)})")
    length = lengths[dim]
    if not 2 <= copies <= length:
        raise ValueError(f"operator {op.name!r}: cannot cut dim {dim!r} of length {length} "
                         f"into {copies} copies")
    hbm = [x for x in op.inputs if x.storage == Storage.HBM]
    if any(dim not in x.dims for x in hbm):
        raise ValueError(f"operator {op.name!r}: dim {dim!r} does not index every HBM operand, so "
                         "copies would load some HBM data twice")
    summed = contracted(op, dim)
    if summed and (op.kind not in (OpKind.MATMUL, OpKind.REDUCE) or op.reduce not in COMBINE_LABELS):
        raise ValueError(f"operator {op.name!r} ({op.kind}): its output does not index {dim!r} and it "
                         "sums over nothing there")
    base, extra = divmod(length, copies)
    out = op.output
    parts: list[Operator] = []
    for j in range(copies):
        dims = tuple(Dim(d.name, base + (j < extra)) if d.name == dim else d for d in op.dims)
        inputs = tuple(
            Operand(f"{x.tensor}.part{j}", x.dims, x.storage) if x.storage == Storage.HBM else x
            for x in op.inputs
        )
        if not summed:
            parts.append(replace(op, name=f"{op.name}.part{j}", dims=dims, inputs=inputs, part=(j, copies)))
            continue
        partial = Operand(f"{op.name}.part{j}", out.dims, Storage.CHIP)
        parts.append(replace(op, name=f"{op.name}.part{j}", dims=dims, inputs=inputs, output=partial))
        if j:
            parts.append(_combine(op, j, copies))
    return tuple(parts)


def _combine(op: Operator, j: int, copies: int) -> Operator:
    """`<op>.add<j>`: the partial results 0..j of `op`, from the sum of 0..j-1 and part j."""
    out = op.output
    lengths = {d.name: d.length for d in op.dims}
    before = f"{op.name}.part0" if j == 1 else f"{op.name}.sum{j - 1}"
    result = out.tensor if j == copies - 1 else f"{op.name}.sum{j}"
    return Operator(
        f"{op.name}.add{j}", COMBINE_LABELS[op.reduce], OpKind.BINARY,
        dims=tuple(Dim(d, lengths[d]) for d in out.dims),
        output=Operand(result, out.dims, Storage.CHIP),
        inputs=(Operand(before, out.dims, Storage.CHIP), Operand(f"{op.name}.part{j}", out.dims, Storage.CHIP)),
    )


def cut_cost(op: Operator, dim: str, copies: int, cost: Callable[[Operator], float]) -> float:
    """Cycles of `op` cut along `dim` into `copies`: the fastest plans of the copies and of
    the adds, summed (`cost`: an operator's fastest plan, inf when it has none). Stops at
    the first part without a plan (the first copy is the longest): the others need not be
    planned to know the cut has none."""
    total = 0.0
    for part in split_operator(op, dim, copies):
        total += cost(part)
        if not math.isfinite(total):
            return math.inf
    return total


def split_dim(op: Operator, copies: int, cost: Callable[[Operator], float] | None = None) -> str | None:
    """The dim to cut `op` along into `copies`, or None if none qualifies (`split_dims`).

    cost: cycles of an operator's fastest plan (inf if it has none); the dim whose copies
    and adds cost least in total wins, ties to the `split_dims` order. Without it, the
    first of `split_dims`.
    """
    if cost is None:
        candidates = split_dims(op, copies)
        return candidates[0] if candidates else None
    cheapest = cheapest_cut(op, copies, cost)
    return cheapest[0] if cheapest is not None else None


def cheapest_cut(op: Operator, copies: int, cost: Callable[[Operator], float]) -> tuple[str, float] | None:
    """(dim, cycles) of the cheapest cut of `op` into `copies` (`cut_cost`), ties to the
    `split_dims` order; None if no dim qualifies or no cut has a plan."""
    candidates = split_dims(op, copies)
    if not candidates:
        return None
    totals = [cut_cost(op, d, copies, cost) for d in candidates]
    best = min(range(len(candidates)), key=lambda i: (totals[i], i))
    return (candidates[best], totals[best]) if math.isfinite(totals[best]) else None


def copy_counts(hbm_bytes: int, limit: float, max_copies: int) -> list[int]:
    """The copy counts weighed for an operator reading `hbm_bytes` from HBM (module docs,
    "Streaming"): 2..max_copies, and when even `max_copies` copies would each read more than
    `limit` bytes, also the fewest copies that bring each within it.

    >>> copy_counts(8_600, 1_000, 4), copy_counts(4_000, 1_000, 4)
    ([2, 3, 4, 9], [2, 3, 4])
    """
    counts = list(range(2, max_copies + 1))
    if math.isfinite(limit) and hbm_bytes > max_copies * limit:
        counts.append(math.ceil(hbm_bytes / limit))
    return counts


def operand_bytes(op: Operator, elem_bytes: int) -> int:
    """Bytes of all of `op`'s tensors (output and inputs, each once): every plan holds them
    all on chip while it runs, so an operator whose `operand_bytes` exceed the chip's SRAM
    fits in no plan."""
    tensors = {x.tensor: op.elements(x) for x in op.operands}
    return sum(tensors.values()) * elem_bytes


def on_chip_bytes(op: Operator, elem_bytes: int) -> int:
    """Bytes of `op`'s on-chip tensors (its output and its inputs not in HBM, each once).
    Cutting an operator streams its HBM data, not these: its copies slice tensors that are
    on chip whole (produced before it, or read whole after it), so an operator whose
    on-chip tensors exceed the chip's SRAM has no plan in any number of copies."""
    tensors = {x.tensor: op.elements(x) for x in op.operands if x.storage != Storage.HBM}
    return sum(tensors.values()) * elem_bytes


def fewest_copies_with_plan(op: Operator, start: int, cost: Callable[[Operator], float]) -> tuple[Cut, float] | None:
    """((dim, copies), cycles) of the cheapest cut of `op` into the fewest copies, `start`
    or more, whose copies and adds all have a plan (`cheapest_cut`); None when no count up
    to the longest dim it can be cut along has one.

    Copies only get smaller as their count grows, so a plan is assumed to stay once found:
    the count is doubled until one is found, then bisected between the last count without
    and the first with.
    """
    cuttable = split_dims(op, 2)
    if not cuttable:
        return None
    longest = max(d.length for d in op.dims if d.name in cuttable)
    low, high = start - 1, max(start, 2)  # low: the largest count known to have no plan
    found = None
    while found is None:
        if low >= longest:
            return None
        high = min(high, longest)
        found = cheapest_cut(op, high, cost)
        if found is None:
            low, high = high, 2 * high
    best = ((found[0], high), found[1])
    while high - low > 1:
        middle = (low + high) // 2
        trial = cheapest_cut(op, middle, cost)
        if trial is None:
            low = middle
        else:
            high, best = middle, ((trial[0], middle), trial[1])
    return best


def apply_cuts(graph: Graph, cuts: Mapping[str, Cut], must: frozenset[str] = frozenset()) -> tuple[Graph, SplitReport]:
    """`graph` with the operators named in `cuts` cut (`split_operator`); the graph itself
    when `cuts` is empty. `must`: names to report as cut because they fit in no plan whole."""
    if not cuts:
        return graph, SplitReport({})
    ops: list[Operator] = []
    adds = 0
    for op in graph.ops:
        if op.name not in cuts:
            ops.append(op)
            continue
        dim, copies = cuts[op.name]
        ops.extend(split_operator(op, dim, copies))
        adds += (copies - 1) if contracted(op, dim) else 0
    report = SplitReport({name: tuple(cut) for name, cut in cuts.items()}, adds, frozenset(must) & set(cuts))
    return replace(graph, ops=tuple(ops)), report


def _memoised(cost: Callable[[Operator], float]) -> Callable[[Operator], float]:
    memo: dict[Hashable, float] = {}

    def cached(op: Operator) -> float:
        if op.signature not in memo:
            memo[op.signature] = cost(op)
        return memo[op.signature]

    return cached


def split_large_operators(
    graph: Graph,
    total_sram_bytes: int,
    fraction: float,
    max_copies: int,
    cost: Callable[[Operator], float] | None = None,
) -> tuple[Graph, SplitReport]:
    """The capacity rule: cut every operator whose HBM bytes exceed `fraction *
    total_sram_bytes` into the fewest copies (at most `max_copies`) that bring each below
    it, along `split_dim`'s dim.

    cost: as for `split_dim` (memoised here on operator signatures). An operator with no
    dim to cut along stays whole.
    """
    _check(fraction, max_copies)
    limit = fraction * total_sram_bytes
    cached = _memoised(cost) if cost is not None else None
    cuts: dict[str, Cut] = {}
    for op in graph.ops:
        size = op.hbm_bytes(graph.elem_bytes)
        copies = min(max_copies, math.ceil(size / limit)) if size > limit else 1
        dim = split_dim(op, copies, cached) if copies > 1 and op.part is None else None
        if dim is not None:
            cuts[op.name] = (dim, copies)
    return apply_cuts(graph, cuts)


def _check(fraction: float | None, max_copies: int) -> None:
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"split fraction must be in (0, 1], got {fraction}")
    if max_copies < 2:
        raise ValueError(f"max_copies must be >= 2, got {max_copies}")


# ------------------------------------------------------------ the per-operator decision


@dataclass(frozen=True)
class CandidateChoice:
    """One decision of `choose_cuts`: the operators sharing a signature, the options
    weighed, and the one taken.

    names: the operators (program order). must: they fit in no plan whole. options: per
    option (None = whole, else (dim, copies)), its execution cycles (`cost`: the whole
    operator's fastest plan, or the copies' and adds' summed) and the graph latency
    `evaluate` gave with it in the last pass (the other candidates as chosen). chosen: the
    option taken.
    """

    names: tuple[str, ...]
    must: bool
    options: tuple[tuple[Cut | None, float, float], ...]
    chosen: Cut | None
    max_copies: int = 0  # planning.max_copies in force (0: not recorded)

    @property
    def label(self) -> str:
        """"layer0.attn.scores (x40): 4 copies along Hkv" and the like; "(streamed)" when the
        copies are more than max_copies (module docs, "Streaming")."""
        what = "whole" if self.chosen is None else f"{self.chosen[1]} copies along {self.chosen[0]}"
        alike = f" (x{len(self.names)})" if len(self.names) > 1 else ""
        streamed = self.chosen is not None and 0 < self.max_copies < self.chosen[1]
        return (f"{self.names[0]}{alike}: {what}" + (" (streamed)" if streamed else "")
                + (" (fits in no plan whole)" if self.must else ""))

    @property
    def latency(self) -> float:
        """The graph latency with the chosen option (the last pass's)."""
        return next(latency for option, _e, latency in self.options if option == self.chosen)

    def alternative(self, margin: float = 0.0) -> tuple[Cut | None, float] | None:
        """The runner-up's option: one of the other kind than the chosen (a cut if whole
        was chosen, whole if a cut was), and how close the other kind came, (its best
        latency - the chosen's) / the chosen's. Of the other kind's options within `margin`
        of its best, the one with the least execution (then fewer copies): latencies that
        close are not told apart. None for a compulsory cut, or when the other kind has no
        finite latency."""
        other = [(latency, execution, 1 if o is None else o[1], o) for o, execution, latency in self.options
                 if (o is None) != (self.chosen is None) and math.isfinite(latency)]
        if self.must or not other or not math.isfinite(self.latency):
            return None
        best = min(t[0] for t in other)
        option = min((t for t in other if t[0] <= best * (1 + margin)), key=lambda t: t[1:3])[3]
        return option, (best - self.latency) / self.latency


@dataclass(frozen=True)
class CutChoice:
    """What `choose_cuts` decided: the graph and its report, the per-candidate decisions,
    and the runner-up graph (None when no decision was close).

    evaluations: graphs `evaluate` was asked about; latency: its value for `graph`;
    passes: coordinate-descent passes; converged: the last pass changed nothing; choices:
    operator name -> its cut; flipped: the decisions the runner-up takes the other way
    (their first operators' names); seconds: time taken (set by the caller)."""

    graph: Graph
    report: SplitReport
    candidates: tuple[CandidateChoice, ...] = ()
    runner_up: tuple[Graph, SplitReport] | None = None
    evaluations: int = 0
    latency: float = math.nan
    passes: int = 0
    converged: bool = True
    choices: dict[str, Cut] = field(default_factory=dict)
    flipped: tuple[str, ...] = ()
    seconds: float = 0.0


def choose_cuts(
    graph: Graph,
    total_sram_bytes: int,
    fraction: float | None,
    max_copies: int,
    cost: Callable[[Operator], float],
    evaluate: Callable[[Graph], float],
    margin: float = 0.05,
    progress: Callable[[str], None] | None = None,
) -> CutChoice:
    """Decide per operator whether to cut it, into how many copies and along which dim
    (module docs).

    fraction: operators reading more than `fraction * total_sram_bytes` from HBM may be cut;
    None: only those that must be. cost: cycles of an operator's fastest plan (inf when it
    fits in no plan). evaluate: a latency of a whole graph, inf when it cannot be planned
    (lower is better). margin: an optional decision whose best alternative of the other
    kind is within this fraction of its latency is close; the runner-up graph takes the
    close decisions the other way, in one direction (module docs). A compulsory candidate
    gets as many copies as it needs (`fewest_copies_with_plan`); one that no count of copies
    brings into a plan is left whole (planning then names it).
    """
    _check(fraction, max_copies)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    say = progress or (lambda _msg: None)
    planned = cost
    cost = _memoised(lambda op: math.inf if operand_bytes(op, graph.elem_bytes) > total_sram_bytes else planned(op))
    limit = math.inf if fraction is None else fraction * total_sram_bytes
    groups: dict[Hashable, list[Operator]] = {}
    for op in graph.ops:
        if op.part is None and any(x.storage == Storage.HBM for x in op.inputs):
            groups.setdefault(op.signature, []).append(op)
    candidates: list[tuple[list[Operator], bool, list[tuple[Cut | None, float]]]] = []
    for members in groups.values():
        first = members[0]
        whole = cost(first)
        must = not math.isfinite(whole)
        if not must and first.hbm_bytes(graph.elem_bytes) <= limit:
            continue
        options: list[tuple[Cut | None, float]] = [(None, whole)] if not must else []
        if on_chip_bytes(first, graph.elem_bytes) > total_sram_bytes:
            continue  # its on-chip tensors alone overflow the SRAM: no copies help (planning names it)
        counts = copy_counts(first.hbm_bytes(graph.elem_bytes), limit, max_copies)
        for copies in counts:
            cheapest = cheapest_cut(first, copies, cost)
            if cheapest is not None:
                options.append(((cheapest[0], copies), cheapest[1]))
        if must and not options:
            needed = fewest_copies_with_plan(first, max(counts) + 1, cost)  # as many copies as it needs
            if needed is not None:
                options.append(needed)
        if len(options) > (0 if must else 1):
            candidates.append((members, must, options))
    if not candidates:
        return CutChoice(graph, SplitReport({}))
    must_names = frozenset(op.name for members, must, _o in candidates if must for op in members)
    compulsory = sum(1 for _m, must, _o in candidates if must)
    optional = f", {len(candidates) - compulsory} read more than {fraction:g} of the SRAM from HBM" if fraction else ""
    say(f"cutting: {len(candidates)} distinct operators to decide ({compulsory} fit in no plan whole{optional}), "
        f"{sum(len(o) for _m, _must, o in candidates)} options in all")

    # start: optional candidates whole, compulsory ones in their cheapest option
    current: list[Cut | None] = [min(options, key=lambda o: o[1])[0] if must else None
                                 for _m, must, options in candidates]
    seen: dict[tuple[Cut | None, ...], float] = {}
    ticker = Ticker(say, "cutting: graphs weighed", MAX_PASSES * sum(len(o) for _m, _must, o in candidates))

    def latency_of(choice: Sequence[Cut | None]) -> float:
        key = tuple(choice)
        if key not in seen:
            seen[key] = evaluate(_cut_graph(graph, candidates, key, must_names)[0])
            ticker.update(len(seen))
        return seen[key]

    last: list[dict[Cut | None, float]] = [{} for _ in candidates]
    passes, changed = 0, True
    while changed and passes < MAX_PASSES:
        passes, changed = passes + 1, False
        for g, (_members, _must, options) in enumerate(candidates):
            scored = {}
            for option, execution in options:
                trial = [*current[:g], option, *current[g + 1:]]
                scored[option] = (latency_of(trial), execution, 1 if option is None else option[1])
            best = min(options, key=lambda o: scored[o[0]])[0]
            last[g] = {o: s[0] for o, s in scored.items()}
            if best != current[g]:
                current[g], changed = best, True
    ticker.finish()
    decisions = tuple(
        CandidateChoice(tuple(op.name for op in members), must,
                        tuple((o, e, last[g][o]) for o, e in options), current[g], max_copies)
        for g, (members, must, options) in enumerate(candidates)
    )
    cut, report = _cut_graph(graph, candidates, tuple(current), must_names)
    for decision in decisions:
        say(f"cutting: {decision.label}")
    # the runner-up: the close decisions the other way, all towards whole or all towards a
    # cut (an estimate's error tends to be shared by alike decisions), whichever rates better
    directions = []
    for towards_whole in (True, False):
        alternative, turned = list(current), []
        for g, decision in enumerate(decisions):
            other = decision.alternative(margin)
            if other is not None and other[1] <= margin and (other[0] is None) == towards_whole:
                alternative[g] = other[0]
                turned.append(decision.names[0])
        if turned:
            directions.append((latency_of(alternative), not towards_whole, alternative, turned))
    runner_up, flipped = None, []
    if directions:
        _latency, _cut, alternative, flipped = min(directions, key=lambda d: d[:2])
        runner_up = _cut_graph(graph, candidates, alternative, must_names)
    choices = {op.name: c for (members, _must, _o), c in zip(candidates, current) if c is not None
               for op in members}
    return CutChoice(cut, report, decisions, runner_up, len(seen), latency_of(current), passes, not changed,
                     choices, tuple(flipped))


def _cut_graph(graph: Graph, candidates: Sequence[tuple[list[Operator], bool, list]],
               choice: Sequence[Cut | None], must: frozenset[str]) -> tuple[Graph, SplitReport]:
    cuts = {op.name: c for (members, _must, _o), c in zip(candidates, choice) if c is not None for op in members}
    return apply_cuts(graph, cuts, must)


__all__ = [
    "COMBINE_LABELS",
    "CandidateChoice",
    "Cut",
    "CutChoice",
    "SplitReport",
    "apply_cuts",
    "cheapest_cut",
    "choose_cuts",
    "contracted",
    "copy_counts",
    "cut_cost",
    "fewest_copies_with_plan",
    "operand_bytes",
    "split_dim",
    "split_dims",
    "split_large_operators",
    "split_operator",
]
