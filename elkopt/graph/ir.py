"""Operator-graph IR: operators as iteration spaces over named dims, linked by tensor names.

An operator is a loop nest over its dims (`Dim`); each operand indexes a subset of those
dims. Element-wise broadcasting falls out of that: a bias vector indexes only the feature
dim. Tensors are global names: the producer's output and every consumer's input share
the name, so the graph needs no separate edge list.

Example, a Dot of a [B, K] activation with a [K, N] weight from HBM::

    Operator("l0.fc", "Dot", OpKind.MATMUL,
             dims=(Dim("B", 32), Dim("N", 4096), Dim("K", 1024)),
             output=Operand("l0.fc", ("B", "N"), Storage.CHIP),
             inputs=(Operand("x", ("B", "K"), Storage.CHIP),
                     Operand("l0.fc.weight", ("K", "N"), Storage.HBM)),
             reduce="sum")
    # expression "y[b,n] += x[b,k] * w[k,n]", flops 2 * 32 * 4096 * 1024
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class OpKind(StrEnum):
    """Operator class; selects the cycle formula of the cost model."""

    MATMUL = "matmul"  # Dot / BatchMatMul: one or more contracted dims
    BINARY = "binary"  # element-wise with two inputs
    UNARY = "unary"  # element-wise with one input
    REDUCE = "reduce"  # Sum / Max over the dims missing from the output
    SLICE = "slice"  # kept as an operator: cost = re-layout of its output
    GATHER = "gather"  # embedding lookup


class Storage(StrEnum):
    """Where an operand lives before the operator runs."""

    HBM = "hbm"  # weights, KV cache: preloaded from HBM before the op runs
    CHIP = "chip"  # activations produced and consumed on chip


_INPUT_COUNTS = {
    OpKind.MATMUL: (2,),
    OpKind.BINARY: (2,),
    OpKind.UNARY: (1,),
    OpKind.REDUCE: (1,),
    OpKind.SLICE: (1,),
    OpKind.GATHER: (1, 2),
}
_REDUCTIONS = ("sum", "max")
#: The largest iteration space an operator may have: plan costs and footprints are
#: computed in float64 and int64, exact up to here.
MAX_ITERATIONS = 2**53
#: Labels of binary operators written as an infix symbol (in `Operator.expression`, in dumps).
BINARY_SYMBOLS = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/"}


@dataclass(frozen=True)
class Dim:
    """One loop of an operator's iteration space; `length` in elements (> 0)."""

    name: str
    length: int


@dataclass(frozen=True)
class Operand:
    """A tensor as seen by one operator.

    `dims` names the operator dims indexing the tensor, in the tensor's axis order; the
    tensor's element count in this operator is the product of their lengths.
    """

    tensor: str
    dims: tuple[str, ...]
    storage: Storage


@dataclass(frozen=True)
class Operator:
    """One node of the graph: an iteration space, its output and its inputs.

    `part` marks one of several operators that together produce one tensor, each a slice
    of it along one dim (an operator split into copies, `elkopt.graph.split`); the
    signature ignores it, so equal slices share plan tables.

    `load_factor` (> 0, default 1) scales the bytes the operator is expected to read from
    HBM in one step, not its SRAM footprints: a mixture-of-experts operator holds the
    weights of the experts it may run in its HBM operands, and only the experts the batch
    routes to are read (`elkopt.graph.moe`), so `hbm_bytes` is the expected value,
    rounded to the byte. `routed_by` names the tensor holding the routing decision
    (top-k selection) that decides which of this operator's HBM data is needed: its load
    cannot start before that tensor's producer has run, unless preloaded speculatively.
    Both survive `split` and `dataclasses.replace`; the signature includes a factor other
    than 1, so operators with different factors never share plan tables.
    """

    name: str
    label: str
    kind: OpKind
    dims: tuple[Dim, ...]
    output: Operand
    inputs: tuple[Operand, ...]
    reduce: str | None = None
    part: tuple[int, int] | None = None  # (index, count): computes one slice of its output
    load_factor: float = 1.0  # expected HBM bytes read / HBM operand bytes (mixture of experts)
    routed_by: str | None = None  # the routing tensor this operator's HBM loads depend on

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))  # lists in, hashable record out
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.part is not None:
            object.__setattr__(self, "part", tuple(self.part))
        problems = self._problems()
        if problems:
            raise ValueError(f"operator {self.name!r} ({self.label}): " + "; ".join(problems))

    def _problems(self) -> list[str]:
        names = [d.name for d in self.dims]
        if not self.dims:
            return ["has no dims"]
        if self.part is not None:
            index, count = self.part
            if not (isinstance(count, int) and count >= 2 and isinstance(index, int)
                    and 0 <= index < count):
                return [f"part must be (index, count) with count >= 2 and 0 <= index < count, "
                        f"got {self.part!r}"]
        if len(set(names)) != len(names):
            return [f"duplicate dim names {names}"]
        if (isinstance(self.load_factor, bool) or not isinstance(self.load_factor, (int, float))
                or not math.isfinite(self.load_factor) or self.load_factor <= 0):
            return [f"load_factor must be a finite number > 0, got {self.load_factor!r}"]
        if self.load_factor != 1 and not any(x.storage == Storage.HBM for x in self.inputs):
            return [f"load_factor {self.load_factor} scales HBM reads, but no input is in HBM"]
        if self.routed_by is not None and not (isinstance(self.routed_by, str) and self.routed_by):
            return [f"routed_by must be a tensor name or None, got {self.routed_by!r}"]
        problems = [
            f"dim {d.name!r} has length {d.length!r}, must be a positive int"
            for d in self.dims
            if not isinstance(d.length, int) or d.length <= 0
        ]
        if not problems and math.prod(d.length for d in self.dims) > MAX_ITERATIONS:
            problems.append(f"its iteration space of {math.prod(d.length for d in self.dims):.3g} points "
                            f"is beyond what the cost model computes exactly (at most 2**53, {MAX_ITERATIONS:.3g})")
        for operand in self.operands:
            unknown = [d for d in operand.dims if d not in names]
            if unknown:
                problems.append(f"operand {operand.tensor!r} uses unknown dims {unknown}")
            if len(set(operand.dims)) != len(operand.dims):
                problems.append(f"operand {operand.tensor!r} repeats a dim: {operand.dims}")
        if self.output.storage != Storage.CHIP:
            problems.append("output storage must be CHIP")
        if len(self.inputs) not in _INPUT_COUNTS[self.kind]:
            expected = " or ".join(map(str, _INPUT_COUNTS[self.kind]))
            problems.append(f"{self.kind} needs {expected} inputs, got {len(self.inputs)}")
        if self.kind in (OpKind.MATMUL, OpKind.REDUCE):
            if self.reduce not in _REDUCTIONS:
                problems.append(f"{self.kind} needs reduce in {_REDUCTIONS}, got {self.reduce!r}")
        elif self.reduce is not None:
            problems.append(f"{self.kind} takes no reduce, got {self.reduce!r}")
        if problems:
            return problems
        used = {d for operand in self.operands for d in operand.dims}
        unused = [n for n in names if n not in used]
        if unused:
            problems.append(f"dims {unused} index no operand")
        out = set(self.output.dims)
        if self.kind == OpKind.MATMUL:
            a, b = (set(x.dims) for x in self.inputs)
            if not self.contracted_dims:
                problems.append("MATMUL needs a contracted dim (in both inputs, not in the output)")
            lonely = [n for n in names if n not in out and not (n in a and n in b)]
            if lonely:
                problems.append(f"dims {lonely} are neither in the output nor contracted")
        elif self.kind == OpKind.REDUCE:
            if not out < set(self.inputs[0].dims):
                problems.append("REDUCE output dims must be a strict subset of the input dims")
        elif out != set(names):
            problems.append(f"{self.kind} output must index every dim {names}, "
                            f"got {self.output.dims}")
        return problems

    @property
    def dim_lengths(self) -> tuple[int, ...]:
        """Lengths of the iteration-space dims, in order (elements)."""
        return tuple(d.length for d in self.dims)

    @property
    def operands(self) -> tuple[Operand, ...]:
        """The output first, then the inputs."""
        return (self.output, *self.inputs)

    @cached_property
    def _lengths(self) -> dict[str, int]:
        return {d.name: d.length for d in self.dims}

    @property
    def contracted_dims(self) -> tuple[str, ...]:
        """Dims read by both inputs of a MATMUL and absent from its output."""
        if self.kind != OpKind.MATMUL or len(self.inputs) != 2:
            return ()
        a, b = self.inputs
        return tuple(d.name for d in self.dims
                     if d.name in a.dims and d.name in b.dims and d.name not in self.output.dims)

    def elements(self, operand: Operand) -> int:
        """Element count of `operand` in this operator (product of its dim lengths)."""
        return math.prod(self._lengths[d] for d in operand.dims)

    @property
    def iterations(self) -> int:
        """Product of all dim lengths (points of the iteration space)."""
        return math.prod(self.dim_lengths)

    @property
    def flops(self) -> int:
        """Floating-point operations: 2 per point for MATMUL, 1 for element-wise and reduce."""
        if self.kind == OpKind.MATMUL:
            return 2 * self.iterations
        if self.kind in (OpKind.BINARY, OpKind.UNARY, OpKind.REDUCE):
            return self.iterations
        return 0

    @cached_property
    def hbm_elements(self) -> int:
        """Elements of this operator's HBM operands (sum over them; what it holds on chip,
        whatever its `load_factor`)."""
        return sum(self.elements(x) for x in self.inputs if x.storage == Storage.HBM)

    def hbm_bytes(self, elem_bytes: int) -> int:
        """Bytes this operator reads from HBM, at `elem_bytes` bytes per element: its HBM
        elements x `elem_bytes`, times `load_factor` rounded to the nearest byte."""
        if self.load_factor == 1:
            return self.hbm_elements * elem_bytes
        return round(self.hbm_elements * elem_bytes * self.load_factor)

    @cached_property
    def signature(self) -> Hashable:
        """Name-free cost key: equal for identical operators in different layers.

        (kind, reduce, dim lengths, ((dim positions, storage) per operand, output first)),
        then the load factor when it is not 1.
        """
        position = {d.name: i for i, d in enumerate(self.dims)}
        operands = tuple((tuple(position[d] for d in x.dims), x.storage) for x in self.operands)
        factor = () if self.load_factor == 1 else (float(self.load_factor),)
        return (self.kind, self.reduce, self.dim_lengths, operands, *factor)

    @property
    def expression(self) -> str:
        """Einsum-like text, e.g. ``y[b,n] += x[b,k] * w[k,n]``."""

        def ref(letter: str, operand: Operand) -> str:
            return f"{letter}[{','.join(d.lower() for d in operand.dims)}]"

        # x: first input; the second is w when it comes from HBM (a weight, a cache), else z
        y = ref("y", self.output)
        xs = [ref("x" if i == 0 else "w" if x.storage == Storage.HBM else "z", x)
              for i, x in enumerate(self.inputs)]
        if self.kind == OpKind.MATMUL:
            op = "+=" if self.reduce == "sum" else "max="
            return f"{y} {op} {xs[0]} * {xs[1]}"
        if self.kind == OpKind.REDUCE:
            op = "+=" if self.reduce == "sum" else "max="
            return f"{y} {op} {xs[0]}"
        if self.kind == OpKind.BINARY:
            symbol = BINARY_SYMBOLS.get(self.label)
            if symbol:
                return f"{y} = {xs[0]} {symbol} {xs[1]}"
            return f"{y} = {self.label.lower()}({xs[0]}, {xs[1]})"
        if self.kind == OpKind.UNARY:
            return f"{y} = {self.label.lower()}({xs[0]})"
        return f"{y} = {', '.join(xs)}"


@dataclass(frozen=True)
class Store:
    """An on-chip tensor written to HBM as `hbm_tensor` (the K or V of a prefill step
    appended to the KV cache). The write starts once the operator producing `tensor` ends
    (the last of its parts, for a split one) and moves the whole tensor: its producers'
    output elements x the graph's `elem_bytes`."""

    tensor: str
    hbm_tensor: str


@dataclass(frozen=True)
class Graph:
    """Operators in program order; `elem_bytes` bytes per element (2 for fp16).

    `graph_inputs` names the on-chip tensors no operator produces (token embeddings,
    attention masks, scalar constants). `stores` are the tensors written to HBM
    (`Store`); none in a decode step or a forward pass.
    """

    name: str
    ops: tuple[Operator, ...]
    elem_bytes: int = 2
    graph_inputs: frozenset[str] = field(default_factory=frozenset)
    stores: tuple[Store, ...] = ()

    def __post_init__(self) -> None:
        # accept any iterables, keep the dataclass hashable
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "graph_inputs", frozenset(self.graph_inputs))
        object.__setattr__(self, "stores", tuple(self.stores))
        if not isinstance(self.elem_bytes, int) or self.elem_bytes <= 0:
            raise ValueError(f"graph {self.name!r}: elem_bytes must be a positive int, "
                             f"got {self.elem_bytes!r}")
        seen: set[str] = set()
        produced: set[str] = set()
        hbm: set[str] = set()
        parts: dict[str, tuple[int, set[int]]] = {}  # tensor -> (count, indices produced so far)
        for op in self.ops:
            if op.name in seen:
                raise ValueError(f"graph {self.name!r}: duplicate operator name {op.name!r}")
            seen.add(op.name)
            for x in op.inputs:
                if x.storage == Storage.HBM:
                    if x.tensor in produced or x.tensor in parts or x.tensor in self.graph_inputs:
                        raise ValueError(f"operator {op.name!r}: HBM input {x.tensor!r} "
                                         "is an on-chip tensor")
                    hbm.add(x.tensor)
                elif x.tensor in parts:
                    count, done = parts[x.tensor]
                    raise ValueError(
                        f"operator {op.name!r}: input tensor {x.tensor!r} is read before all its "
                        f"parts are produced ({len(done)} of {count})")
                elif x.tensor not in produced and x.tensor not in self.graph_inputs:
                    raise ValueError(
                        f"operator {op.name!r}: input tensor {x.tensor!r} is neither produced by "
                        "an earlier operator nor a graph input")
            out = op.output.tensor
            if out in produced or out in self.graph_inputs or out in hbm:
                raise ValueError(f"operator {op.name!r}: output tensor {out!r} is already defined")
            if op.part is None:
                if out in parts:
                    raise ValueError(f"operator {op.name!r}: output tensor {out!r} is already "
                                     "partly produced by parts of another operator")
                produced.add(out)
                continue
            index, count = op.part
            expected, done = parts.setdefault(out, (count, set()))
            if count != expected or index in done:
                raise ValueError(f"operator {op.name!r}: part {op.part} of {out!r} clashes with "
                                 f"the parts already produced ({sorted(done)} of {expected})")
            done.add(index)
            if len(done) == count:
                del parts[out]
                produced.add(out)
        if parts:
            missing = ", ".join(f"{t!r} ({len(done)} of {count})" for t, (count, done) in parts.items())
            raise ValueError(f"graph {self.name!r}: tensors with missing parts: {missing}")
        self._check_stores(produced, hbm)

    def _check_stores(self, produced: set[str], hbm: set[str]) -> None:
        written: set[str] = set()
        for store in self.stores:
            if not isinstance(store, Store):
                raise ValueError(f"graph {self.name!r}: stores must be Store records, got {store!r}")
            if store.tensor not in produced:
                raise ValueError(f"graph {self.name!r}: store of {store.tensor!r}: no operator produces it")
            if store.hbm_tensor in written or store.hbm_tensor in hbm or store.hbm_tensor in produced:
                raise ValueError(f"graph {self.name!r}: store of {store.tensor!r}: HBM tensor "
                                 f"{store.hbm_tensor!r} is already written, read from HBM or on chip")
            written.add(store.hbm_tensor)

    @property
    def n_ops(self) -> int:
        """Number of operators."""
        return len(self.ops)

    @property
    def total_flops(self) -> int:
        """Sum of operator FLOPs."""
        return sum(op.flops for op in self.ops)

    @property
    def hbm_bytes(self) -> int:
        """Bytes read from HBM, each HBM tensor counted once per operator reading it (the
        expected bytes of operators with a `load_factor`)."""
        return sum(op.hbm_bytes(self.elem_bytes) for op in self.ops)

    @property
    def hbm_bytes_written(self) -> int:
        """Bytes written to HBM (`stores`)."""
        return sum(self.write_bytes_per_op())

    def write_bytes_per_op(self) -> tuple[int, ...]:
        """Per operator, the bytes written to HBM once it ends (0 for most): each store's
        bytes go to the last operator producing its tensor."""
        written = [0] * len(self.ops)
        for store in self.stores:
            producers = self._producer_index[store.tensor]
            elements = sum(self.ops[j].elements(self.ops[j].output) for j in producers)
            written[producers[-1]] += elements * self.elem_bytes
        return tuple(written)

    @cached_property
    def _producer_index(self) -> dict[str, tuple[int, ...]]:
        index: dict[str, tuple[int, ...]] = {}
        for i, op in enumerate(self.ops):
            index[op.output.tensor] = (*index.get(op.output.tensor, ()), i)
        return index

    def producers(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> indices of the operators producing it (several for a split one)."""
        return dict(self._producer_index)

    def dependencies(self, i: int) -> tuple[int, ...]:
        """Indices of the operators whose outputs operator `i` reads, ascending, no repeats."""
        index = self._producer_index
        return tuple(sorted({j for x in self.ops[i].inputs for j in index.get(x.tensor, ())}))

    def unique_signatures(self) -> dict[Hashable, list[int]]:
        """Signature -> indices of the operators sharing it, in first-seen order."""
        groups: dict[Hashable, list[int]] = {}
        for i, op in enumerate(self.ops):
            groups.setdefault(op.signature, []).append(i)
        return groups
