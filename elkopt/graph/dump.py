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
  ``where`` clause. The edge list names each input's producer, in input order.

Import rules (this increment reads what the exporter writes; the published graphs' affine
indices, ``.when`` concatenations, placeholders and gathers come next):

- the kind comes from the node type: ``Dot`` and ``BatchMatMul`` contract (``+=!``),
  ``Sum`` and ``Max`` reduce, ``Slice`` re-lays out; otherwise two input tensors make an
  element-wise binary operator and one a unary one;
- the dims are the output's indices, then the reduced ones in order of first use; their
  lengths come from the input shapes and ``where`` bounds;
- an input fed by a ``Constant`` node, or by no node at all, is read from HBM; one fed by
  a ``Parameter`` node is an on-chip graph input;
- data-movement nodes (``Reshape``, ``Broadcast``, ``Convert``, ``Result``) are folded
  away: their consumers read what they read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from elkopt.graph import einstein as ein
from elkopt.graph.ir import Dim, Graph, Operand, Operator, OpKind, Storage

#: Binary labels written as an infix operator; others as ``.call(`name`, [...])``.
_INFIX = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/"}
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


def _statement(op: Operator) -> str:
    """One operator as an einstein statement over its own dim names."""
    refs = [_ref(f"input{k}", x.dims) for k, x in enumerate(op.inputs)]
    out = _ref("output0", op.output.dims)
    if op.kind == OpKind.MATMUL:
        body = f"{out} +=! {refs[0]} * {refs[1]}"
    elif op.kind == OpKind.REDUCE:
        body = f"{out} {'+=!' if op.reduce == 'sum' else '>=!'} {refs[0]}"
    elif op.kind == OpKind.BINARY:
        if op.label in _INFIX:
            body = f"{out} = {refs[0]} {_INFIX[op.label]} {refs[1]}"
        else:
            body = f"{out} = {refs[0]}.call(`{op.label.lower()}`, [{refs[1]}])"
    elif op.kind == OpKind.UNARY:
        body = f"{out} = -{refs[0]}" if op.label == "Negative" else f"{out} = {refs[0]}.call(`{op.label.lower()}`)"
    elif op.kind == OpKind.SLICE:
        body = f"{out} = {refs[0]}"
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
def read_einstein(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None) -> Graph:
    """The graph of the dump at `path`; element size from the caller (a dump's dtypes say
    nothing about the study's element size)."""
    path = Path(path)
    try:
        nodes = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DumpError(f"{path}: not JSON ({error})") from None
    return import_einstein(nodes, name or path.stem, elem_bytes)


def import_einstein(nodes: list, name: str, elem_bytes: int = 2) -> Graph:
    """The operator graph of a dump's node list (see the module doc for the rules)."""
    if not isinstance(nodes, list):
        raise DumpError(f"a dump is a JSON list of nodes, got {type(nodes).__name__}")
    tensor_of: dict[int, str] = {}  # node id -> the tensor its output is
    kind_of: dict[int, str] = {}  # node id -> its type
    ops: list[Operator] = []
    graph_inputs: set[str] = set()
    for position, node in enumerate(nodes):
        node_id, text, node_type, edges = _fields(node, position)
        where = f"node {node_id} ({node_type})"
        sources = []
        for k, edge in enumerate(edges):
            if not (isinstance(edge, list) and edge and isinstance(edge[0], int)):
                raise DumpError(f"{where}: edge {k} must be [producer_id, port], got {edge!r}")
            if edge[0] not in tensor_of:
                raise DumpError(f"{where}: input {k} comes from node {edge[0]}, which is not listed "
                                "before it (a dump lists nodes in topological order)")
            sources.append(edge[0])
        kind_of[node_id] = node_type
        if node_type in _SOURCES:
            tensor_of[node_id] = f"n{node_id}"
            if node_type == "Parameter":
                graph_inputs.add(tensor_of[node_id])
            continue
        if node_type in _FOLDED:
            if len(sources) != 1:
                raise DumpError(f"{where}: a {node_type} is folded into its consumers and needs "
                                f"exactly one input, got {len(sources)}")
            tensor_of[node_id] = tensor_of[sources[0]]
            continue
        try:
            parsed = ein.parse_node_text(text)
            statements = parsed.statements()
        except ein.EinsteinSyntaxError as error:
            raise DumpError(f"{where}: {error}") from None
        except ValueError as error:
            raise DumpError(f"{where}: {error}") from None
        if len(statements) != 1:
            raise DumpError(f"{where}: expected one statement, got {len(statements)} "
                            "(multi-statement nodes are not imported yet)")
        op = _operator(statements[0], parsed.input_dict, node_id, node_type, sources,
                       tensor_of, kind_of, where)
        tensor_of[node_id] = op.output.tensor
        ops.append(op)
    if not ops:
        raise DumpError("the dump holds no operator node")
    return Graph(name, ops, elem_bytes=elem_bytes, graph_inputs=graph_inputs)


def _fields(node: Any, position: int) -> tuple[int, str, str, list]:
    if not (isinstance(node, list) and len(node) == 4 and isinstance(node[0], int)
            and isinstance(node[1], str) and isinstance(node[2], str) and isinstance(node[3], list)):
        raise DumpError(f"entry {position}: a node is [id, text, type, [[producer, port], ...]], "
                        f"got {str(node)[:120]}")
    return node[0], node[1], node[2], node[3]


def _operator(statement: ein.Statement, input_dict: dict, node_id: int, node_type: str,
              sources: list[int], tensor_of: dict[int, str], kind_of: dict[int, str],
              where: str) -> Operator:
    """One operator node as an Operator."""
    refs = ein.tensors(statement.rhs)
    for ref in (statement.output, *refs):
        bad = [ein.to_source(i) for i in ref.indices if not isinstance(i, ein.Index)]
        if bad:
            raise DumpError(f"{where}: {ref.name} is indexed by {', '.join(bad)}; only plain index "
                            "names are imported yet")
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise DumpError(f"{where}: expected each input once in the expression, got {names}")
    expected = [f"input{k}" for k in range(len(sources))]
    if set(names) != set(expected):  # each name once (checked above)
        raise DumpError(f"{where}: the expression reads {names}, the edges give {len(sources)} "
                        f"inputs ({', '.join(expected) or 'none'})")
    lengths = dict(statement.bounds)
    for ref in refs:
        entry = input_dict.get(ref.name)
        if entry is None:
            raise DumpError(f"{where}: {ref.name} has no shape in input_dict")
        shape = entry["shape"]
        if len(shape) != len(ref.indices) and not (shape in ([], [1]) and not ref.indices):
            raise DumpError(f"{where}: {ref.name} has shape {shape} but {len(ref.indices)} indices")
        for index, length in zip(ref.indices, shape):
            if lengths.setdefault(index.name, int(length)) != int(length):
                raise DumpError(f"{where}: index {index.name} has length {lengths[index.name]} in one "
                                f"place and {length} in {ref.name}")
    out_dims = tuple(i.name for i in statement.output.indices)
    missing = [d for d in out_dims if d not in lengths]
    if missing:
        raise DumpError(f"{where}: output indices {missing} have no length (no input indexes them "
                        "and no `where` bounds them)")
    dims = (*out_dims, *(d for d in ein.reduced_indices(statement) if d not in out_dims))
    kind, reduce = _kind(statement, node_type, len(refs), where)
    by_name = {r.name: r for r in refs}
    inputs = []
    for k, source in enumerate(sources):
        ref = by_name[f"input{k}"]
        storage = Storage.HBM if kind_of[source] == "Constant" else Storage.CHIP
        inputs.append(Operand(tensor_of[source], tuple(i.name for i in ref.indices), storage))
    try:
        return Operator(f"n{node_id}.{node_type}", node_type, kind,
                        dims=tuple(Dim(d, lengths[d]) for d in dims),
                        output=Operand(f"n{node_id}", out_dims, Storage.CHIP),
                        inputs=tuple(inputs), reduce=reduce)
    except ValueError as error:
        raise DumpError(f"{where}: {error}") from None


def _kind(statement: ein.Statement, node_type: str, n_inputs: int, where: str) -> tuple[OpKind, str | None]:
    reduction = statement.reduction
    if node_type in ("Dot", "BatchMatMul"):
        if reduction != "sum" or n_inputs != 2:
            raise DumpError(f"{where}: expected `output +=! a * b` for a {node_type}")
        return OpKind.MATMUL, "sum"
    if reduction is not None:
        if n_inputs != 1:
            raise DumpError(f"{where}: expected one input to a {reduction} reduction, got {n_inputs}")
        if reduction not in ("sum", "max"):
            raise DumpError(f"{where}: {reduction} reductions are not supported (sum and max are)")
        return OpKind.REDUCE, reduction
    if node_type == "Slice":
        return OpKind.SLICE, None
    if n_inputs == 2:
        return OpKind.BINARY, None
    if n_inputs == 1:
        return OpKind.UNARY, None
    raise DumpError(f"{where}: expected one or two inputs to an element-wise {node_type}, got {n_inputs}")


__all__ = ["DumpError", "export_einstein", "import_einstein", "read_einstein", "write_einstein"]
