"""An elkopt operator as the published compiler describes it (its "TExpr" entry).

The published compiler reads each operator as a type id, dim lengths, variables (the
output, then the inputs; each a list of dimension slots, each slot a list of dim indices)
and, per input, whether it is already on chip ("ignored") or loaded from HBM
(ELK_REFERENCE section 2.3). `texpr_entry` writes an `elkopt.graph.ir.Operator` that way:
the dims in the operator's order, one single-dim slot per operand axis, an input on chip
when its storage is CHIP. Under `drop_scalar_operands`, operands without dims are left out,
as the published parser deletes broadcast scalars.

The type comes from the node type where the published parser has one (a SoftmaxBasic
node is element-wise even when its statement reduces), else from the operator's kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from elkopt.graph.ir import Operator, OpKind, Storage

#: Published type ids.
REDUCE, UNARY, ELEMENT, POOL, CONV, MATMUL, GATHER, SLICE = 0, 1, 2, 3, 4, 5, 6, 8
#: The published parser's type of a node type (its OP_TYPE_TO_TYPE_ID table, as documented).
NODE_TYPES = {
    "Dot": MATMUL, "BatchMatMul": MATMUL, "Convolution": CONV, "MaxPool": POOL,
    "Relu": UNARY, "Negative": UNARY, "Sigmoid": UNARY, "Sqrt": UNARY, "Tanh": UNARY, "Erf": UNARY,
    "Add": ELEMENT, "Divide": ELEMENT, "Multiply": ELEMENT, "Power": ELEMENT, "Subtract": ELEMENT,
    "Maximum": ELEMENT, "SoftmaxBasic": ELEMENT, "Sum": REDUCE, "GatherV2": GATHER, "Slice": SLICE,
}
_KINDS = {OpKind.MATMUL: MATMUL, OpKind.BINARY: ELEMENT, OpKind.UNARY: UNARY, OpKind.REDUCE: REDUCE,
          OpKind.SLICE: SLICE, OpKind.GATHER: GATHER}


@dataclass(frozen=True)
class TExprEntry:
    """One operator in the published form: type id, dim lengths, variables, ignore flags."""

    op_type: int
    dims: tuple[int, ...]
    variables: tuple[tuple[tuple[int, ...], ...], ...]
    ignore: tuple[bool, ...]

    @property
    def key(self) -> tuple:
        """Operators with equal keys share one published table (its unique expressions)."""
        return (self.op_type, self.dims, self.variables, self.ignore)


def published_type(op: Operator) -> int:
    """The published type id of `op`: by node type (its label), else by kind."""
    return NODE_TYPES.get(op.label, _KINDS[op.kind])


def texpr_entry(op: Operator, drop_scalar_operands: bool = True) -> TExprEntry:
    """`op` as the published compiler reads it (module doc)."""
    names = [d.name for d in op.dims]
    inputs = [x for x in op.inputs if x.dims or not drop_scalar_operands]
    variables = tuple(tuple((names.index(d),) for d in x.dims) for x in (op.output, *inputs))
    return TExprEntry(published_type(op), op.dim_lengths, variables,
                      tuple(x.storage == Storage.CHIP for x in inputs))
