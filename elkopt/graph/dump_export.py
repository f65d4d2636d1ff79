"""Write the zoo's graphs as einstein-expression dumps (`elkopt.graph.dump` reads them back).

What the exporter writes:

- Every tensor no operator produces gets a source node first, named after the tensor:
  ``Constant`` for data in HBM (weights, the KV cache), ``Parameter`` for on-chip graph
  inputs (token embeddings, masks, scalar constants).
- Every operator becomes one node whose type is its label (``Dot``, ``Add``, ...), whose
  statement indexes its operands with the operator's own dim names, and whose
  ``input_dict`` gives each input's shape; dims that index no input are bounded by a
  ``where`` clause. A gather reads its table at the index tensor's value
  (``input0[input1[N], D]``). The edge list names each input's producer, in input order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from elkopt.graph.ir import BINARY_SYMBOLS, Graph, Operand, Operator, OpKind, Storage

_DTYPES = {2: "float16", 4: "float32", 1: "int8", 8: "float64"}


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


__all__ = ["export_einstein", "write_einstein"]
