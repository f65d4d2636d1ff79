"""Einstein-expression graph dumps: export the zoo's graphs, import dumps as graphs.

A dump (the format of the Antares / NNFusion tool chain and of the published Elk model
graphs) is a JSON list with one entry per node::

    [node_id, ' - einstein_v2("output0[B, N] +=! input0[B, K] * input1[K, N]", input_dict={...}) ',
     "Dot", [[producer_id, output_port], ...]]

`elkopt.graph.einstein` parses the node text; this module maps nodes to the operator IR.

What the exporter writes, and the importer reads back to the same operators:

- Every tensor no operator produces gets a source node first: ``Constant`` for data in HBM
  (weights, the KV cache), ``Parameter`` for on-chip graph inputs (token embeddings,
  masks, scalar constants).
- Every operator becomes one node whose type is its label (``Dot``, ``Add``, ...), whose
  statement indexes its operands with the operator's own dim names, and whose
  ``input_dict`` gives each input's shape; dims that index no input are bounded by a
  ``where`` clause. A gather reads its table at the index tensor's value
  (``input0[input1[N], D]``). The edge list names each input's producer, in input order.

Import rules (for what the exporter writes and for the published graphs' constructs; one
hand-written sample per construct is in ``tests/dumps/``):

- **Inputs.** Edges feed ``input0``, ``input1``, ... in order. An input of ``input_dict``
  that no edge feeds is a weight in HBM, and so is one fed by a ``Constant`` node. One fed
  by a ``Parameter`` node is an on-chip graph input, except when a ``BatchMatMul`` reads
  it as its second operand (through folded nodes): that is a decode step's KV cache (the
  keys of q x K^T, the values of P x V), read from HBM.
- **Sizes.** Placeholders (`Placeholders`: 99 for the batch, 66 for the sequence or KV
  length, and products such as 99 x 66 or 40 x 99) are replaced in shapes, ``where``
  bounds and index constants.
- **Statements.** Each statement of a node is one operator (a ``SoftmaxBasic`` of four
  statements is four; intermediate tensors such as ``mediate0`` are named after the node).
  The kind comes from the statement:
  - a reduction over a product of two inputs (``+=! a * b``) contracts (``Dot``,
    ``BatchMatMul``, ``Convolution``); over one input it reduces (``Sum``, ``Max``,
    ``MaxPool``; a min-reduction costs as a max);
  - an input indexed by another tensor's value (``input0[input1[N], D]``) is a gather;
  - a bare input (``output0[N] = input0[N + 5120]``, casts allowed) re-lays out, as a
    ``Slice`` does;
  - otherwise one input makes a unary and two a binary element-wise operator. Three or
    more make a chain of binary operators, and none makes a constant fill (an on-chip
    graph input).
  The label is the node type, or for a statement of a multi-statement node its
  reduction, arithmetic operator or function (``Max``, ``Subtract``, ``Exp``).
- **Dims and lengths.** The dims are the output's indices, then the others in order of
  first use. An input is indexed by every name in its index expressions
  (``input0[N, HO + KH]`` reads N, HO and KH, so a convolution is the matmul it lowers to,
  the window positions counted). Lengths come from ``where`` bounds, then plain indices of
  the input shapes, which must agree, then single-index affine expressions: ``N1 - 5120``
  on a 5120-long axis runs to 10240, ``N0 / 40`` on a 3-long one to 120.
- **Data movement.** ``Reshape``, ``Broadcast``, ``Convert`` and ``Result`` nodes are
  folded away: their consumers read what they read. So is a ``Concat``, as in the zoo and
  the published pipeline: its consumers read its input from HBM or a ``Parameter`` (the
  KV cache with the new token appended), else its first input.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elkopt.graph import einstein as ein
from elkopt.graph.ir import BINARY_SYMBOLS, Dim, Graph, Operand, Operator, OpKind, Storage

_FOLDED = frozenset({"Reshape", "Broadcast", "Convert", "Result"})
_SOURCES = frozenset({"Constant", "Parameter"})
_DTYPES = {2: "float16", 4: "float32", 1: "int8", 8: "float64"}


class DumpError(ValueError):
    """A node of a dump that cannot be read, naming the node and what was expected."""


# -- export ------------------------------------------------------------------------------
def export_einstein(graph: Graph) -> list[list[Any]]:
    """The graph as an einstein dump (a JSON-ready list of nodes)."""
    dtype = _DTYPES.get(graph.elem_bytes, "float16")
    nodes: list[list[Any]] = []
    producer: dict[str, int] = {}

    def source(tensor: str, storage: Storage) -> int:
        if tensor not in producer:
            producer[tensor] = len(nodes)
            kind = "Constant" if storage == Storage.HBM else "Parameter"
            nodes.append([len(nodes), f" - {kind} {tensor} ", kind, []])
        return producer[tensor]

    for op in graph.ops:
        if op.part is not None:
            raise ValueError(f"operator {op.name!r} computes a part of {op.output.tensor!r}: export the "
                             "graph before cutting operators into copies")
        edges = []
        for x in op.inputs:
            edges.append([producer[x.tensor] if x.tensor in producer else source(x.tensor, x.storage), 0])
        lengths = {d.name: d.length for d in op.dims}
        input_dict = {f"input{k}": {"dtype": dtype, "shape": [lengths[d] for d in x.dims]}
                      for k, x in enumerate(op.inputs)}
        text = (f' - einstein_v2({json.dumps(_statement(op))}, '
                f'input_dict={json.dumps(input_dict)}) ')
        producer[op.output.tensor] = len(nodes)
        nodes.append([len(nodes), text, op.label, edges])
    return nodes


def _ref(name: str, dims: tuple[str, ...]) -> str:
    return f"{name}[{', '.join(dims)}]"


def _gather_ref(table: Operand, index: Operand) -> str:
    """``input0[input1[N], D]``: the table's dims the index tensor indexes are read at the
    index tensor's value (in the place of the first of them)."""
    picked = [d for d in table.dims if d in index.dims]
    if not picked:
        return _ref("input0", table.dims)
    looked_up = _ref("input1", index.dims)
    parts = [looked_up if d == picked[0] else d for d in table.dims if d == picked[0] or d not in index.dims]
    return f"input0[{', '.join(parts)}]"


def _statement(op: Operator) -> str:
    """One operator as an einstein statement over its own dim names."""
    refs = [_ref(f"input{k}", x.dims) for k, x in enumerate(op.inputs)]
    out = _ref("output0", op.output.dims)
    if op.kind == OpKind.MATMUL:
        body = f"{out} +=! {refs[0]} * {refs[1]}"
    elif op.kind == OpKind.REDUCE:
        body = f"{out} {'+=!' if op.reduce == 'sum' else '>=!'} {refs[0]}"
    elif op.kind == OpKind.BINARY:
        if op.label in BINARY_SYMBOLS:
            body = f"{out} = {refs[0]} {BINARY_SYMBOLS[op.label]} {refs[1]}"
        else:
            body = f"{out} = {refs[0]}.call(`{op.label.lower()}`, [{refs[1]}])"
    elif op.kind == OpKind.UNARY:
        body = f"{out} = -{refs[0]}" if op.label == "Negative" else f"{out} = {refs[0]}.call(`{op.label.lower()}`)"
    elif op.kind == OpKind.SLICE:
        body = f"{out} = {refs[0]}"
    elif op.kind == OpKind.GATHER and len(op.inputs) == 2:
        body = f"{out} = {_gather_ref(*op.inputs)}"
    else:
        raise ValueError(f"operator {op.name!r}: {op.kind} operators are not exported yet")
    read = {d for x in op.inputs for d in x.dims}
    bounds = [f"{d.name} in {d.length}" for d in op.dims if d.name not in read]
    return body + (f" where {', '.join(bounds)}" if bounds else "")


def write_einstein(graph: Graph, path: str | os.PathLike) -> Path:
    """Write the graph's dump to `path` (JSON, one node per line); the path."""
    path = Path(path)
    lines = ",\n".join(json.dumps(node) for node in export_einstein(graph))
    path.write_text(f"[\n{lines}\n]\n")
    return path


# -- import ------------------------------------------------------------------------------
#: The published graphs' size placeholders: 99 stands for the batch, 66 for the sequence
#: length (in a decode step, the KV length).
BATCH_PLACEHOLDER = 99
SEQUENCE_PLACEHOLDER = 66


class Placeholders:
    """Substitutes symbolic sizes in a dump: `values` maps a placeholder to its size.

    A length that is a placeholder, or a product of placeholders and a constant
    (99 x 66, 40 x 99), becomes that product with each placeholder replaced by its value.
    A length that factors in more than one way takes the factorisation leaving the
    smallest constant: 3960 is 40 x 99 (40 heads times the batch), not 60 x 66. A
    placeholder mapped to itself is left alone. `used` collects the placeholders met.
    """

    def __init__(self, values: Mapping[int, int] | None = None) -> None:
        self.values = dict(values or {})
        self.used: set[int] = set()
        for placeholder, value in self.values.items():
            if not (isinstance(placeholder, int) and placeholder > 1):
                raise ValueError(f"a placeholder is a size above 1 that stands for another, got {placeholder!r}")
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"placeholder {placeholder} must stand for a positive int, got {value!r}")

    def __call__(self, length: int) -> int:
        """The size `length` stands for."""
        if length < 2:
            return length
        best: tuple[int, int, list[int]] = (length, length, [])  # leftover, length, placeholders
        for factors in self._factorisations(length, sorted(self.values)):
            leftover = length // math.prod(factors)
            if leftover < best[0]:
                best = (leftover, leftover * math.prod(self.values[p] for p in factors), factors)
        self.used.update(best[2])
        return best[1]

    def _factorisations(self, length: int, placeholders: list[int]) -> Iterator[list[int]]:
        """Every multiset of placeholders whose product divides `length`."""
        if not placeholders:
            yield []
            return
        first, rest = placeholders[0], placeholders[1:]
        power: list[int] = []
        while True:
            for tail in self._factorisations(length // math.prod(power, start=1), rest):
                yield power + tail
            if length % (math.prod(power, start=1) * first):
                return
            power = power + [first]


@dataclass(frozen=True)
class _Entry:
    """One node of a dump: id, text, type and producer ids (one per edge, in input order)."""

    id: int
    text: str
    type: str
    sources: tuple[int, ...]

    @property
    def where(self) -> str:
        return f"node {self.id} ({self.type})"


def read_einstein(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None,
                  placeholders: Mapping[int, int] | Placeholders | None = None) -> Graph:
    """The graph of the dump at `path`; element size from the caller (a dump's dtypes say
    nothing about the study's element size), placeholder sizes as `import_einstein`."""
    path = Path(path)
    try:
        nodes = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DumpError(f"{path}: not JSON ({error})") from None
    return import_einstein(nodes, name or path.stem, elem_bytes, placeholders)


def import_einstein(nodes: list, name: str, elem_bytes: int = 2,
                    placeholders: Mapping[int, int] | Placeholders | None = None) -> Graph:
    """The operator graph of a dump's node list (see the module doc for the rules).

    `placeholders` maps the dump's symbolic sizes to values, e.g. ``{99: 32, 66: 2048}``
    (or is a `Placeholders`, whose `used` then tells which the dump held); without it
    every length is taken as written.
    """
    if not isinstance(nodes, list):
        raise DumpError(f"a dump is a JSON list of nodes, got {type(nodes).__name__}")
    entries = [_entry(node, position) for position, node in enumerate(nodes)]
    if not isinstance(placeholders, Placeholders):
        placeholders = Placeholders(placeholders)
    return _Importer(entries, placeholders).graph(name, elem_bytes)


def _entry(node: Any, position: int) -> _Entry:
    if not (isinstance(node, list) and len(node) == 4 and isinstance(node[0], int)
            and isinstance(node[1], str) and isinstance(node[2], str) and isinstance(node[3], list)):
        raise DumpError(f"entry {position}: a node is [id, text, type, [[producer, port], ...]], "
                        f"got {str(node)[:120]}")
    where = f"node {node[0]} ({node[2]})"
    for k, edge in enumerate(node[3]):
        if not (isinstance(edge, list) and len(edge) == 2 and all(isinstance(v, int) for v in edge)):
            raise DumpError(f"{where}: edge {k} must be [producer_id, port], got {edge!r}")
        if edge[1] != 0:
            raise DumpError(f"{where}: edge {k} reads output {edge[1]} of node {edge[0]}; "
                            "expected output 0 (nodes with several outputs are not imported)")
    return _Entry(node[0], node[1], node[2], tuple(edge[0] for edge in node[3]))


class _Importer:
    """Turns a dump's entries into operators, node by node (`graph`)."""

    def __init__(self, entries: list[_Entry], resolve: Placeholders) -> None:
        self.entries = entries
        self.resolve = resolve
        self.tensor_of: dict[int, str] = {}  # node id -> the tensor its output is
        self.storage: dict[str, Storage] = {}  # tensors in HBM; others are on chip
        self.graph_inputs: set[str] = set()
        self.ops: list[Operator] = []
        self.kv_cache = self._kv_cache()

    def _kv_cache(self) -> set[int]:
        """Parameter nodes a BatchMatMul reads as its second operand (through folded
        nodes): the KV cache (the keys of q x K^T, the values of P x V)."""
        type_of: dict[int, str] = {}
        root: dict[int, int] = {}  # node id -> the node whose tensor it is once folded
        for entry in self.entries:
            if entry.id in type_of:
                raise DumpError(f"{entry.where}: node id {entry.id} is used twice")
            for k, source in enumerate(entry.sources):
                if source not in type_of:
                    raise DumpError(f"{entry.where}: input {k} comes from node {source}, which is not "
                                    "listed before it (a dump lists nodes in topological order)")
            type_of[entry.id] = entry.type
            roots = [root[s] for s in entry.sources]
            if entry.type in _FOLDED:
                root[entry.id] = roots[0] if roots else entry.id
            elif entry.type == "Concat":  # folded, preferring a cache (`concat`)
                sourced = [r for r in roots if type_of[r] in _SOURCES]
                root[entry.id] = (sourced or roots or [entry.id])[0]
            else:
                root[entry.id] = entry.id
        return {root[entry.sources[1]] for entry in self.entries
                if entry.type == "BatchMatMul" and len(entry.sources) > 1
                and type_of[root[entry.sources[1]]] == "Parameter"}

    def graph(self, name: str, elem_bytes: int) -> Graph:
        for entry in self.entries:
            self.node(entry)
        if not self.ops:
            raise DumpError("the dump holds no operator node")
        return Graph(name, self.ops, elem_bytes=elem_bytes, graph_inputs=self.graph_inputs)

    def source(self, tensor: str, hbm: bool) -> str:
        if hbm:
            self.storage[tensor] = Storage.HBM
        else:
            self.graph_inputs.add(tensor)
        return tensor

    def node(self, entry: _Entry) -> None:
        where = entry.where
        if entry.type in _SOURCES:
            hbm = entry.type == "Constant" or entry.id in self.kv_cache
            self.tensor_of[entry.id] = self.source(f"n{entry.id}", hbm)
            return
        if entry.type in _FOLDED:
            if len(entry.sources) > 1:
                raise DumpError(f"{where}: a {entry.type} is folded into its consumers and needs "
                                f"one input, got {len(entry.sources)}")
            self.tensor_of[entry.id] = (self.tensor_of[entry.sources[0]] if entry.sources
                                        else self.source(f"n{entry.id}", hbm=True))
            return
        if entry.type == "Concat" and "einstein_v2" not in entry.text:  # a bare " - Concat "
            self.concat(entry, [self.tensor_of[s] for s in entry.sources])
            return
        try:
            parsed = ein.parse_node_text(entry.text)
            statements = parsed.statements()
        except ValueError as error:  # EinsteinSyntaxError is one
            raise DumpError(f"{where}: {error}") from None
        local = self.inputs(entry, parsed.input_dict)
        if entry.type == "Concat":
            self.concat(entry, [tensor for tensor, _shape in local.values()])
            return
        if not statements:
            raise DumpError(f"{where}: expected an einstein_v2 expression, found none")
        writes = [s.output.name for s in statements]
        if writes.count("output0") != 1:
            raise DumpError(f"{where}: expected one statement writing output0, got {writes}")
        read = {r.name for s in statements for r in ein.tensors(s.rhs)}
        unread = [n for n in local if n not in read and n.startswith("input")]
        if unread:
            raise DumpError(f"{where}: input_dict lists {', '.join(unread)}, which no statement reads")
        made: list[Operator] = []
        for statement in statements:
            out = statement.output.name
            tensor = f"n{entry.id}" if out == "output0" else f"n{entry.id}.{out}"
            label = entry.type if len(statements) == 1 else _label(statement, entry.type)
            local[out] = self.statement(statement, local, tensor, label, entry, made)
        self.ops.extend(made)
        self.tensor_of[entry.id] = f"n{entry.id}"

    def inputs(self, entry: _Entry, input_dict: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Input name -> (tensor, shape): edges feed input0, input1, ... in order; inputs
        without an edge are weights in HBM."""
        local = {}
        for k, source in enumerate(entry.sources):
            if f"input{k}" not in input_dict:
                raise DumpError(f"{entry.where}: edge {k} feeds input{k}, which input_dict does not list "
                                f"(it lists {', '.join(input_dict) or 'nothing'})")
            local[f"input{k}"] = self.tensor_of[source]
        for key in input_dict:
            if key not in local:
                local[key] = self.source(f"n{entry.id}.{key}", hbm=True)
        return {key: (tensor, tuple(self.resolve(int(v)) for v in input_dict[key]["shape"]))
                for key, tensor in local.items()}

    def is_source(self, tensor: str) -> bool:
        """Whether no operator computes `tensor` (a weight, a cache, a graph input)."""
        return tensor in self.storage or tensor in self.graph_inputs

    def concat(self, entry: _Entry, tensors: list[str]) -> None:
        """A Concat is folded into its consumers, as the zoo and the published pipeline do:
        they read an input from HBM or a Parameter if there is one (a KV cache with the new
        token appended), else the first input. The other inputs' producers still run, in
        program order."""
        if not tensors:
            raise DumpError(f"{entry.where}: expected inputs to concatenate, got none")
        sourced = [tensor for tensor in tensors if self.is_source(tensor)]
        self.tensor_of[entry.id] = (sourced or tensors)[0]

    def operand(self, tensor: str, dims: tuple[str, ...]) -> Operand:
        return Operand(tensor, dims, self.storage.get(tensor, Storage.CHIP))

    def operator(self, entry: _Entry, name: str, label: str, kind: OpKind, dims: tuple[Dim, ...],
                 output: Operand, inputs: tuple[Operand, ...], reduce: str | None = None) -> Operator:
        try:
            return Operator(name, label, kind, dims, output, inputs, reduce)
        except ValueError as error:
            raise DumpError(f"{entry.where}: {error}") from None

    def statement(self, statement: ein.Statement, local: dict, tensor: str, label: str,
                  entry: _Entry, made: list[Operator]) -> tuple[str, tuple[int, ...]]:
        """Append the operators of one statement to `made`; the (tensor, shape) it writes."""
        where = entry.where
        refs = ein.tensors(statement.rhs)
        for ref in refs:
            if ref.name not in local:
                raise DumpError(f"{where}: the expression reads {ref.name}, which is neither in "
                                "input_dict nor written by an earlier statement")
        bad = [ein.to_source(i) for i in statement.output.indices if not isinstance(i, ein.Index)]
        if bad:
            raise DumpError(f"{where}: {statement.output.name} is indexed by {', '.join(bad)}; expected "
                            "plain index names on the left-hand side")
        lengths = self.lengths(statement, refs, local, where)
        out_dims = tuple(i.name for i in statement.output.indices)
        operand_dims: dict[str, tuple[str, ...]] = {}
        for ref in refs:  # an input read twice is indexed as it is read first
            operand_dims.setdefault(ref.name, _operand_dims(ref))
        used = {d for dims in operand_dims.values() for d in dims}
        dims = (*out_dims, *(d for d in ein.reduced_indices(statement) if d in used and d not in out_dims))
        iteration = tuple(Dim(d, lengths[d]) for d in dims)
        shape = tuple(lengths[d] for d in out_dims)
        names = list(dict.fromkeys(ref.name for ref in refs))
        nested = [ref.name for ref in refs if any(isinstance(n, ein.TensorRef)
                                                  for i in ref.indices for n in ein.walk(i))]

        def inputs(*keys: str) -> tuple[Operand, ...]:
            return tuple(self.operand(local[k][0], operand_dims[k]) for k in keys)

        def emit(kind: OpKind, ins: tuple[Operand, ...], out: str = tensor, reduce: str | None = None,
                 op_label: str = label) -> None:
            name = f"n{entry.id}.{entry.type}" + (f".{len(made)}" if made else "")
            made.append(self.operator(entry, name, op_label, kind, iteration,
                                      Operand(out, out_dims, Storage.CHIP), ins, reduce))

        body = _strip_casts(statement.rhs)
        reduction = statement.reduction
        if entry.type in ("Dot", "BatchMatMul") and not (
                reduction == "sum" and len(names) == 2 and isinstance(body, ein.Binary) and body.op == "*"):
            raise DumpError(f"{where}: expected `output +=! a * b` for a {entry.type}")
        if reduction is not None:
            if len(names) == 2 and isinstance(body, ein.Binary) and body.op == "*" and reduction == "sum":
                emit(OpKind.MATMUL, inputs(*names), reduce="sum")
            elif len(names) == 1:
                emit(OpKind.REDUCE, inputs(*names), reduce="sum" if reduction == "sum" else "max")
            else:
                raise DumpError(f"{where}: expected a reduction over one input, or a sum of a product "
                                f"of two, got {reduction} over {names}")
        elif nested:
            table = names[0]
            index = [n for n in names if n != table]
            if len(names) != 2 or nested != [table]:
                raise DumpError(f"{where}: expected a gather `table[index[...], ...]` of two inputs, got "
                                f"{ein.to_source(statement.rhs)}")
            emit(OpKind.GATHER, inputs(table, *index))
        elif not names:
            return self.source(tensor, hbm=False), shape  # a constant fill: an on-chip input
        elif isinstance(body, ein.TensorRef):
            emit(OpKind.SLICE, inputs(*names))
        elif len(names) == 1:
            emit(OpKind.UNARY, inputs(*names))
        else:  # two inputs make one binary operator; more, a chain of them
            previous = inputs(names[0])[0]
            for k, key in enumerate(names[1:], start=1):
                out = tensor if k == len(names) - 1 else f"{tensor}.{k}"
                emit(OpKind.BINARY, (previous, *inputs(key)), out)
                previous = Operand(out, out_dims, Storage.CHIP)
        return tensor, shape

    def lengths(self, statement: ein.Statement, refs: list[ein.TensorRef], local: dict,
                where: str) -> dict[str, int]:
        """Index name -> length: `where` bounds first, then plain indices of the inputs (which
        must agree), then what single-index affine expressions allow (the smallest)."""
        lengths = {name: self.resolve(n) for name, n in statement.bounds.items()}
        plain: dict[str, tuple[int, str]] = {}
        inferred: dict[str, int] = {}
        for ref in refs:
            shape = local[ref.name][1]
            if len(shape) != len(ref.indices) and not (shape in ((), (1,)) and not ref.indices):
                raise DumpError(f"{where}: {ref.name} has shape {list(shape)} but {len(ref.indices)} indices")
            for index, length in zip(ref.indices, shape):
                if isinstance(index, ein.Index):
                    seen = plain.setdefault(index.name, (length, ref.name))
                    if seen[0] != length and index.name not in lengths:
                        raise DumpError(f"{where}: index {index.name} has length {seen[0]} in {seen[1]} "
                                        f"and {length} in {ref.name}")
                elif ein.is_affine(index) and len(ein.index_names(index)) == 1:
                    [name] = ein.index_names(index)
                    extent = self.extent(index, length)
                    if extent is not None and extent > 0:
                        inferred[name] = min(extent, inferred.get(name, extent))
        for name, (length, _ref) in plain.items():
            lengths.setdefault(name, length)
        for name, length in inferred.items():
            lengths.setdefault(name, length)
        needed = ein.index_names(statement.output) | {
            n for ref in refs for i in ref.indices for n in ein.index_names(i)}
        missing = sorted(needed - set(lengths))
        if missing:
            raise DumpError(f"{where}: indices {missing} have no length (no input indexes them and no "
                            f"`where` bounds them); expected `where {missing[0]} in <n>`")
        return lengths

    def extent(self, index: ein.Expr, length: int) -> int | None:
        """How far the one index name in `index` runs for `index` to stay within `length`
        (None when the expression does not say)."""
        if isinstance(index, ein.Index):
            return length
        if not isinstance(index, ein.Binary):
            return None
        left, right = index.left, index.right
        if isinstance(left, ein.Number) and index.op == "+":
            left, right = right, left
        if not isinstance(right, ein.Number):
            return None
        c = self.resolve(right.value)
        if index.op == "+":
            inner = length - c
        elif index.op == "-":
            inner = length + c
        elif index.op == "*" and c > 0:
            inner = -(-length // c)
        elif index.op in ("/", "//") and c > 0:
            inner = length * c
        else:
            return None
        return self.extent(left, inner)


def _operand_dims(ref: ein.TensorRef) -> tuple[str, ...]:
    """The dims an input reference reads: every index name in its indices, first use first
    (``input0[N0 / 40, N0 % 40]`` reads N0; ``input0[input1[N], D]`` reads N and D)."""
    names = (n.name for i in ref.indices for n in ein.walk(i) if isinstance(n, ein.Index))
    return tuple(dict.fromkeys(names))


def _strip_casts(expr: ein.Expr) -> ein.Expr:
    while isinstance(expr, ein.Call) and expr.method == "cast":
        expr = expr.receiver
    return expr


_SYMBOL_LABELS = {symbol: label for label, symbol in BINARY_SYMBOLS.items()}
_REDUCTION_LABELS = {"sum": "Sum", "max": "Max", "min": "Min"}


def _label(statement: ein.Statement, node_type: str) -> str:
    """The label of one statement of a multi-statement node: its reduction, its outermost
    arithmetic operator or function (``Exp``), else the node type."""
    if statement.reduction is not None:
        return _REDUCTION_LABELS[statement.reduction]
    body = _strip_casts(statement.rhs)
    if isinstance(body, ein.Binary) and body.op in _SYMBOL_LABELS:
        return _SYMBOL_LABELS[body.op]
    if isinstance(body, ein.Call) and body.method == "call" and body.name:
        return body.name.capitalize()
    return node_type


__all__ = ["BATCH_PLACEHOLDER", "DumpError", "Placeholders", "SEQUENCE_PLACEHOLDER", "export_einstein",
           "import_einstein", "read_einstein", "write_einstein"]
