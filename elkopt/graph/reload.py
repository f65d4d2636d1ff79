"""The published parser's reload rule as a graph transform (`Conventions.reload_activations`).

The published compiler keeps an operator's input on chip only when it is the previous
operator's output or one of the previous operator's inputs; every other input is loaded
from HBM, activations included (the residual stream, a Slice of an output computed two
operators back). The importer applies the rule while it reads a dump, where it knows the
nodes (a folded Concat is a tensor of its own, a dropped gather still an operator); this
transform applies it to any graph, operator by operator.
"""

from __future__ import annotations

from dataclasses import replace

from elkopt.graph.ir import Graph, Operand, Storage

#: The suffix of the HBM tensor an activation is reloaded as.
RELOAD = ".reload"


def reload_activations(graph: Graph) -> Graph:
    """`graph` with every on-chip input that is neither the previous operator's output nor
    one of its inputs read from HBM instead (as ``<tensor>.reload``). Scalar operands are
    never reloaded (the published parser deletes broadcast scalars)."""
    ops = []
    previous: set[str] = set()
    for op in graph.ops:
        inputs = tuple(
            Operand(f"{x.tensor}{RELOAD}", x.dims, Storage.HBM)
            if x.storage == Storage.CHIP and x.dims and x.tensor not in previous else x
            for x in op.inputs)
        ops.append(replace(op, inputs=inputs) if inputs != op.inputs else op)
        previous = {op.output.tensor} | {x.tensor for x in op.inputs}
    return replace(graph, ops=tuple(ops))  # the same graph inputs and stores
