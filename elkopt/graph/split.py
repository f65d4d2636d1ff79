"""Split operators whose HBM data is large against the chip's SRAM into copies.

An operator that reads a large share of the chip's SRAM from HBM (a KV-cache BatchMatMul
at large batch and context, a huge LM head) is hard to schedule whole: its load can
overlap only earlier operators, and its footprint may not fit beside its neighbour's. The
published pipeline cut such operators into 2 to 4 copies before planning. Here the rule is
explicit: an operator whose HBM bytes exceed `fraction` of the chip's total SRAM is cut
into the fewest copies (at most `max_copies`) that bring each copy below it.

A copy computes one slice of the output along one dim that indexes the output and every
HBM operand (so each copy loads its own slice and the HBM bytes are unchanged); on-chip
inputs are read whole or sliced as they index that dim. The dim matters: cutting the
context BatchMatMul of Llama2-13B (batch 32, KV 4096) in two along the KV heads or the
batch costs 4% more execution than the whole operator, along the head dim D 52%
(experiments/split_dims.py). Given a cost (the fastest plan's cycles, from the plan
tables), the dim with the cheapest copies wins; without one, the longest qualifying dim.
Copies of equal size share a signature and so a plan table. Consumers read the output
once all copies have run (`Operator.part`); the copies follow each other in program order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

from .ir import Dim, Graph, Operand, Operator, Storage


@dataclass(frozen=True)
class SplitReport:
    """What `split_large_operators` did: operator name -> (split dim, number of copies)."""

    splits: dict[str, tuple[str, int]]

    @property
    def added_ops(self) -> int:
        """Operators added to the graph (copies beyond the first)."""
        return sum(k - 1 for _dim, k in self.splits.values())


def split_dims(op: Operator, copies: int) -> list[str]:
    """Dims `op` can be cut along into `copies`: they index the output and every HBM
    operand and are at least `copies` long. Longest first, preferring dims that `copies`
    divides (equal copies share a plan table), then in output order."""
    hbm = [x for x in op.inputs if x.storage == Storage.HBM]
    if not hbm:
        return []
    lengths = {d.name: d.length for d in op.dims}
    candidates = [
        d for d in op.output.dims
        if all(d in x.dims for x in hbm) and lengths[d] >= copies
    ]
    return sorted(candidates, key=lambda d: (lengths[d] % copies != 0, -lengths[d],
                                             op.output.dims.index(d)))


def split_dim(op: Operator, copies: int, cost: Callable[[Operator], float] | None = None) -> str | None:
    """The dim to cut `op` along into `copies`, or None if none qualifies (`split_dims`).

    cost: cycles of an operator's fastest plan (inf if it has none); the dim whose copies
    cost least in total wins, ties to the `split_dims` order. Without it, the first of
    `split_dims`.
    """
    candidates = split_dims(op, copies)
    if not candidates or cost is None:
        return candidates[0] if candidates else None
    totals = [sum(cost(part) for part in split_operator(op, d, copies)) for d in candidates]
    best = min(range(len(candidates)), key=lambda i: (totals[i], i))
    return candidates[best] if math.isfinite(totals[best]) else None


def split_operator(op: Operator, dim: str, copies: int) -> tuple[Operator, ...]:
    """`op` as `copies` operators, each computing a slice of its output along `dim`.

    Slices are as even as possible (the first `length % copies` are one longer). Copy j is
    named `<op>.part<j>` and reads HBM tensors renamed `<tensor>.part<j>`.
    """
    if op.part is not None:
        raise ValueError(f"operator {op.name!r} is already a part of a split operator")
    length = next(d.length for d in op.dims if d.name == dim)
    if not 2 <= copies <= length:
        raise ValueError(f"operator {op.name!r}: cannot cut dim {dim!r} of length {length} "
                         f"into {copies} copies")
    base, extra = divmod(length, copies)
    parts = []
    for j in range(copies):
        dims = tuple(Dim(d.name, base + (j < extra)) if d.name == dim else d for d in op.dims)
        inputs = tuple(
            Operand(f"{x.tensor}.part{j}", x.dims, x.storage) if x.storage == Storage.HBM else x
            for x in op.inputs
        )
        parts.append(replace(op, name=f"{op.name}.part{j}", dims=dims, inputs=inputs,
                             part=(j, copies)))
    return tuple(parts)


def split_large_operators(
    graph: Graph,
    total_sram_bytes: int,
    fraction: float,
    max_copies: int,
    cost: Callable[[Operator], float] | None = None,
) -> tuple[Graph, SplitReport]:
    """Cut every operator whose HBM bytes exceed `fraction * total_sram_bytes` into copies.

    cost: as for `split_dim` (memoised here on operator signatures). An operator with no
    dim to cut along stays whole.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"split fraction must be in (0, 1], got {fraction}")
    if max_copies < 2:
        raise ValueError(f"max_copies must be >= 2, got {max_copies}")
    limit = fraction * total_sram_bytes
    memo: dict[Hashable, float] = {}

    def cached(op: Operator) -> float:
        if op.signature not in memo:
            memo[op.signature] = cost(op)
        return memo[op.signature]

    ops: list[Operator] = []
    splits: dict[str, tuple[str, int]] = {}
    for op in graph.ops:
        size = op.hbm_bytes(graph.elem_bytes)
        copies = min(max_copies, math.ceil(size / limit)) if size > limit else 1
        dim = None
        if copies > 1 and op.part is None:
            dim = split_dim(op, copies, cached if cost is not None else None)
        if dim is None:
            ops.append(op)
            continue
        ops.extend(split_operator(op, dim, copies))
        splits[op.name] = (dim, copies)
    if not splits:
        return graph, SplitReport({})
    return replace(graph, ops=tuple(ops)), SplitReport(splits)
