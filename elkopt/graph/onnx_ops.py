"""The per-op-type translation of the ONNX import, for `elkopt.graph.onnx_graph` (whose
module doc has the rules): which op types are element-wise, reductions, pools or folded,
which inputs are data, the walk over the nodes and one handler per op type.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable

import onnx

from elkopt.graph.arch import Architecture
from elkopt.graph.builders import _GraphBuilder, _Step, chip, norm_operators, softmax_operators
from elkopt.graph.ir import Graph, Operand, OpKind, Store
from elkopt.graph.moe import add_moe_mlp
from elkopt.graph.onnx_attention import _AttentionOps
from elkopt.graph.onnx_importer import (
    _COMPUTED, _CONSTANT, _HBM, _INPUT, _attribute, _axes, _Builder, _ImporterBase, _optional_input, _Source,
)
from elkopt.graph.onnx_moe import attributes_of
from elkopt.graph.onnx_shapes import OnnxImportError
from elkopt.graph.onnx_views import _broadcast_view, _expanded, _plain, _regrouped

_UNARY = {"Neg": "Negative", **{op: op for op in (
    "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Abs",
    "Softplus", "Softsign", "Elu", "Selu", "Celu", "LeakyRelu", "ThresholdedRelu", "HardSigmoid",
    "HardSwish", "Mish", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf",
    "Clip")}}
_BINARY = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Div": "Divide", "Pow": "Power",
           "Max": "Maximum", "Min": "Minimum", "Sum": "Add", **{op: op for op in (
               "Mod", "PRelu", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And",
               "Or", "Xor", "BitShift")}}
_REDUCE = {**{op: "sum" for op in ("ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2",
                                    "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd")},
           **{op: "max" for op in ("ReduceMax", "ReduceMin", "ArgMax", "ArgMin")}}
_POOL = {"MaxPool": "max", "AveragePool": "sum", "GlobalAveragePool": "sum", "GlobalMaxPool": "max"}
_FOLDED = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast",
                     "CastLike", "Expand", "Tile", "Pad", "Dropout"})
_SAME_SHAPE = frozenset({"Identity", "Cast", "CastLike", "Dropout"})  # the view is kept
_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})  # the view is regrouped
_SHAPE_SOURCES = frozenset({"Constant", "Shape", "Size", "ConstantOfShape", "Range", "EyeLike"})
#: Inputs read as data, by position (all of them for op types not listed).
_DATA_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: () for op in _SHAPE_SOURCES},
    **{op: (0,) for op in ("Reshape", "Expand", "Squeeze", "Unsqueeze", "Slice", "Split", "Tile",
                           "Pad", "Dropout", "CastLike", "Clip", *_REDUCE)},
    # com.microsoft attention: not seqlens_k, total_sequence_length, position_ids
    "GroupQueryAttention": (0, 1, 2, 3, 4, 7, 8), "RotaryEmbedding": (0, 2, 3),
}
#: (output, kernel) dim names of the spatial axes of a 1-D, 2-D or 3-D Conv / pool.
_SPATIAL = {1: (("WO",), ("KW",)), 2: (("HO", "WO"), ("KH", "KW")),
            3: (("DO", "HO", "WO"), ("KD", "KH", "KW"))}


# -- helpers on nodes --------------------------------------------------------------------
def _where(node: onnx.NodeProto, index: int) -> str:
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    return f"node {node.name!r} ({op})" if node.name else f"node {index} ({op})"


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    """The node's inputs read as data (not shapes, axes, pads ...), omitted ones skipped."""
    positions = _DATA_INPUTS.get(node.op_type, range(len(node.input)))
    return [node.input[i] for i in positions if i < len(node.input) and node.input[i]]


def _axis(axis: int, rank: int, where: str) -> int:
    if not -rank <= axis < rank:
        raise OnnxImportError(f"{where}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def _data_values(graph: onnx.GraphProto) -> set[str]:
    """Values read as data on the way to a graph output (nodes are in topological order)."""
    data = {value.name for value in graph.output}
    for node in reversed(graph.node):
        if any(out in data for out in node.output):
            data.update(_data_inputs(node))
    return data


# -- the walk and the handlers -----------------------------------------------------------
class _Importer(_AttentionOps, _ImporterBase):
    """Walks the nodes in order, mapping each ONNX value to a `_Source` and emitting operators
    (one handler per op type)."""

    def __init__(self, model: onnx.ModelProto, hbm_inputs: tuple[str, ...], routing: str | None = None) -> None:
        super().__init__(model, hbm_inputs)
        self.routing = routing  # of mixture-of-experts layers (`elkopt.graph.moe.parse_routing`)
        self.handlers: dict[str, Callable[[onnx.NodeProto, str, str], None]] = {
            **{op: self._fold for op in _FOLDED},
            **{op: self._unary for op in _UNARY},
            **{op: self._binary for op in _BINARY},
            **{op: self._reduction for op in _REDUCE},
            **{op: self._pool for op in _POOL},
            "MatMul": self._matmul, "Gemm": self._gemm, "Conv": self._conv,
            "Softmax": self._softmax, "LogSoftmax": self._softmax,
            "LayerNormalization": self._norm, "SimplifiedLayerNormalization": self._norm,
            "RMSNormalization": self._norm, "Gather": self._gather, "Concat": self._concat,
            "Split": self._split, "Slice": self._slice, "Where": self._select, "Gelu": self._gelu,
            "MixtureOfExperts": self._moe, "GroupQueryAttention": self._group_query_attention,
            "MultiHeadAttention": self._multi_head_attention, "RotaryEmbedding": self._rotary_embedding,
        }

    def run(self, name: str, elem_bytes: int) -> Graph:
        data = _data_values(self.graph)
        for index, node in enumerate(self.graph.node):
            if any(out in data for out in node.output):
                self._node(node, index)
        if not self.ops:
            raise OnnxImportError(f"model {name!r} imports to no operator (every node is data "
                                  "movement or a shape computation)")
        try:
            return Graph(name, self.ops, elem_bytes, self.graph_inputs, self._stores())
        except ValueError as error:
            raise OnnxImportError(str(error)) from None

    def _stores(self) -> tuple[Store, ...]:
        """A computed graph output named like ``*present*`` (a prefill's K and V for the KV
        cache) is written to HBM as the zoo's prefill writes them; a decode step's present,
        the past cache with the new entries appended, is the HBM cache itself (no write)."""
        stores = []
        for value in self.graph.output:
            source = self.sources.get(value.name)
            if source is not None and source.origin == _COMPUTED and fnmatch.fnmatchcase(value.name, "*present*"):
                stores.append(Store(source.tensor, value.name))
        return tuple(stores)

    def _node(self, node: onnx.NodeProto, index: int) -> None:
        where = _where(node, index)
        sources = [self._source(v, where) for v in _data_inputs(node)]
        if all(s.origin == _CONSTANT for s in sources):  # shape computations, Constant nodes
            for out in node.output:
                if out:
                    self.sources[out] = _Source(self._claim(out), _CONSTANT)
            return
        handler = self.handlers.get(node.op_type)
        if handler is None:
            supported = ", ".join(sorted({*self.handlers, *_SHAPE_SOURCES}))
            raise OnnxImportError(f"{where}: op type {node.op_type!r} is not supported; "
                                  f"supported: {supported}")
        handler(node, where, node.name or f"{node.op_type}_{index}")
        for k, out in enumerate(node.output):
            if out and out not in self.sources:
                self.unmapped[out] = f"output {k} of {where}"

    # -- handlers: (node, where, base name) -------------------------------------------
    def _fold(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """Readers read the input's tensor; an Expand's broadcast is kept as a view through
        same-shape nodes, Transpose and reshapes (Tile and Pad read plainly)."""
        x, out = node.input[0], node.output[0]
        source = self._source(x, where)
        view = None
        if node.op_type == "Expand":
            shapes = self.shapes.get(x), self.shapes.get(out)
            if all(shape is not None and None not in shape for shape in shapes):
                view = _broadcast_view(_expanded(source.view or _plain(shapes[0]), shapes[1]))
        elif source.view is None or node.op_type in _SAME_SHAPE:
            view = source.view
        elif node.op_type == "Transpose":
            perm = _attribute(node, "perm") or range(len(source.view) - 1, -1, -1)
            view = tuple(source.view[p] for p in perm)
        elif node.op_type in _RESHAPES:
            shape = self.shapes.get(out)
            if shape is not None and None not in shape:
                view = _broadcast_view(_regrouped(source.view, shape) or ())
        self._alias(out, source, view)

    def _split(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """One SLICE per output, as ``Slice`` (folded for an HBM input)."""
        x = node.input[0]
        source = self._source(x, where)
        for k, out in enumerate(node.output):
            if not out:
                continue
            if source.origin == _HBM:
                self._alias(out, source)
                continue
            shape = self._shape(out, where)
            names = _axes(len(shape))
            tensor = self._emit(self._claim(f"{base}.{k}"), "Slice", OpKind.SLICE, dict(zip(names, shape)), names,
                                (self._read(x, names, where),), where)
            self._computed(out, tensor)

    def _moe(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """An exported mixture-of-experts block (`elkopt.graph.onnx_moe`): the zoo's layer
        (`elkopt.graph.moe.add_moe_mlp`) over the router input's rows, one token each."""
        values = attributes_of(node)
        x, out = node.input[0], node.output[0]
        shape = self._shape(x, where)
        hidden, rows = shape[-1], math.prod(shape[:-1])
        arch = Architecture(f"{base}.arch", n_layers=1, hidden=hidden, n_heads=1, n_kv_heads=1, head_dim=2,
                            ffn=values["expert_ffn"], gated=bool(values["gated"]), activation=values["activation"],
                            norm="rmsnorm", positional="rotary", n_experts=values["experts"],
                            experts_per_token=values["top_k"], expert_ffn=values["expert_ffn"],
                            renormalize_gates=bool(values["renormalize"]))
        builder = _GraphBuilder()
        tensor = self._read(x, ("B", "H"), where).tensor  # as the zoo's layer reads it
        y = add_moe_mlp(builder, arch, _Step(batch=rows, tokens=1, keys=1, decode=True), self._claim(base),
                        tensor, self.routing)
        for op in builder.ops:
            self.taken.add(op.name)
        self.ops.extend(builder.ops)
        self.graph_inputs.update(builder.graph_inputs)
        self._computed(out, y)

    def _gelu(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """The zoo's GELU: x * sigmoid(1.702 x), a Sigmoid and a Multiply (exact or tanh)."""
        out = node.output[0]
        gate = self._elementwise(self._claim(f"{base}.sigmoid"), "Sigmoid", OpKind.UNARY, out, node.input[:1], where)
        self._computed(f"{out}.sigmoid", gate)
        self.shapes[f"{out}.sigmoid"] = self._shape(out, where)
        tensor = self._elementwise(self._claim(base), "Multiply", OpKind.BINARY, out,
                                   [node.input[0], f"{out}.sigmoid"], where)
        self._computed(out, tensor)

    def _unary(self, node: onnx.NodeProto, where: str, base: str) -> None:
        tensor = self._elementwise(self._claim(base), _UNARY[node.op_type], OpKind.UNARY,
                                   node.output[0], node.input[:1], where)
        self._computed(node.output[0], tensor)

    def _binary(self, node: onnx.NodeProto, where: str, base: str) -> None:
        inputs = [v for v in node.input if v]
        if len(inputs) == 1:  # a one-input Max / Min / Sum is the identity
            source = self._source(inputs[0], where)
            self._alias(node.output[0], source, source.view)
            return
        if len(inputs) != 2:
            raise OnnxImportError(f"{where}: expected 2 inputs, got {len(inputs)} (longer chains "
                                  "are not imported)")
        tensor = self._elementwise(self._claim(base), _BINARY[node.op_type], OpKind.BINARY,
                                   node.output[0], inputs, where)
        self._computed(node.output[0], tensor)

    def _select(self, node: onnx.NodeProto, where: str, base: str) -> None:
        values, out = list(node.input[:3]), node.output[0]
        shape = self._shape(out, where)
        names = _axes(len(shape))
        dims = dict(zip(names, shape))

        def select(name: str, *inputs: int | Operand) -> str:  # input positions or operands
            splits: dict[str, tuple[int, ...]] = {}
            operands = [self._broadcast(values[x], names, shape, where, splits)
                        if isinstance(x, int) else x for x in inputs]
            space, out_dims, operands = self._split_dims(splits, dims, names, operands)
            return self._emit(self._claim(name), "Where", OpKind.BINARY, space, out_dims, operands,
                              where)

        varying = [i for i, v in enumerate(values) if self._source(v, where).origin != _CONSTANT]
        if len(varying) == 3:
            then = select(f"{base}.then", 0, 1)
            tensor = select(f"{base}.else", chip(then, *names), 2)
        else:  # two inputs: the non-constant ones, then constants in input order
            constants = [i for i in range(3) if i not in varying]
            tensor = select(base, *sorted(varying + constants[:2 - len(varying)]))
        self._computed(out, tensor)

    def _matmul(self, node: onnx.NodeProto, where: str, base: str) -> None:
        a, b = node.input[:2]
        a_shape, b_shape = self._shape(a, where), self._shape(b, where)
        out_shape = self._shape(node.output[0], where)
        if not a_shape or not b_shape:
            raise OnnxImportError(f"{where}: expected operands of rank >= 1, got shapes "
                                  f"{list(a_shape)} and {list(b_shape)}")
        k = a_shape[-1]
        m = a_shape[-2:-1]  # () for a 1-D left operand
        n = b_shape[-1:] if len(b_shape) >= 2 else ()
        batch = out_shape[:len(out_shape) - len(m) - len(n)]
        batch_names = tuple(f"B{i}" for i in range(len(batch)))
        m_names, n_names = ("M",) * len(m), ("N",) * len(n)
        splits: dict[str, tuple[int, ...]] = {"K": ()}  # both inputs index the contracted dim
        left = self._broadcast(a, (*batch_names, *m_names, "K"), (*batch, *m, k), where, splits)
        right = self._broadcast(b, (*batch_names, "K", *n_names), (*batch, k, *n), where, splits)
        out_names = (*batch_names, *m_names, *n_names)
        dims, out_names, (left, right) = self._split_dims(
            splits, dict(zip((*out_names, "K"), (*batch, *m, *n, k))), out_names, (left, right))
        both = all(any(d.startswith("B") for d in x.dims) for x in (left, right))  # B0, B1_0 ...
        tensor = self._emit(self._claim(base), "BatchMatMul" if both else "Dot", OpKind.MATMUL,
                            dims, out_names, (left, right), where, reduce="sum")
        self._computed(node.output[0], tensor)

    def _add_bias(self, name: str, value: str, tensor: str, bias: Operand, where: str) -> str:
        """`tensor` (output `value` of a Gemm / Conv) plus a bias, as the zoo's `<op>.add_bias`."""
        shape = self._shape(value, where)
        names = _axes(len(shape))
        return self._emit(self._claim(f"{name}.add_bias"), "Add", OpKind.BINARY,
                          dict(zip(names, shape)), names, (chip(tensor, *names), bias), where)

    def _gemm(self, node: onnx.NodeProto, where: str, base: str) -> None:
        a, b, out = node.input[0], node.input[1], node.output[0]
        trans_a, trans_b = _attribute(node, "transA", 0), _attribute(node, "transB", 0)
        m, n = self._shape(out, where)
        k = self._shape(a, where)[0 if trans_a else 1]
        left = self._read(a, ("K", "M") if trans_a else ("M", "K"), where)
        right = self._read(b, ("N", "K") if trans_b else ("K", "N"), where)
        name = self._claim(base)
        tensor = self._emit(name, "Dot", OpKind.MATMUL, {"M": m, "N": n, "K": k}, ("M", "N"),
                            (left, right), where, reduce="sum")
        c = _optional_input(node, 2)
        if c is not None:
            tensor = self._add_bias(name, out, tensor, self._broadcast(c, ("D0", "D1"), (m, n), where),
                                    where)
        self._computed(out, tensor)

    def _spatial(self, x_shape: tuple[int, ...], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if len(x_shape) - 2 not in _SPATIAL:
            raise OnnxImportError(f"{where}: expected an input [N, C, spatial...] with 1 to 3 "
                                  f"spatial axes, got shape {list(x_shape)}")
        return _SPATIAL[len(x_shape) - 2]

    def _conv(self, node: onnx.NodeProto, where: str, base: str) -> None:
        x, w, out = node.input[0], node.input[1], node.output[0]
        x_shape, w_shape, y_shape = (self._shape(v, where) for v in (x, w, out))
        outputs, kernels = self._spatial(x_shape, where)
        group = _attribute(node, "group", 1)
        if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
            raise OnnxImportError(f"{where}: expected input channels {x_shape[1]} = weight channels "
                                  f"{w_shape[1]} x group {group}, and filters {w_shape[0]} divisible "
                                  "by the group")
        g = ("G",) if group > 1 else ()
        window = tuple(d for pair in zip(outputs, kernels) for d in pair)  # HO, KH, WO, KW
        dims = {"N": x_shape[0], **({"G": group} if g else {}), "F": w_shape[0] // group,
                **dict(zip(outputs, y_shape[2:])), "C": w_shape[1], **dict(zip(kernels, w_shape[2:]))}
        name = self._claim(base)
        tensor = self._emit(name, "Conv", OpKind.MATMUL, dims, ("N", *g, "F", *outputs),
                            (self._read(x, ("N", *g, "C", *window), where),
                             self._read(w, (*g, "F", "C", *kernels), where)), where, reduce="sum")
        bias = _optional_input(node, 2)
        if bias is not None:
            tensor = self._add_bias(name, out, tensor, self._read(bias, ("D1",), where), where)
        self._computed(out, tensor)

    def _pool(self, node: onnx.NodeProto, where: str, base: str) -> None:
        x, out = node.input[0], node.output[0]
        x_shape, y_shape = self._shape(x, where), self._shape(out, where)
        outputs, kernels = self._spatial(x_shape, where)
        kernel = x_shape[2:] if node.op_type.startswith("Global") else _attribute(node, "kernel_shape")
        if kernel is None or len(kernel) != len(kernels):
            raise OnnxImportError(f"{where}: expected a kernel_shape of {len(kernels)} ints, got {kernel!r}")
        window = tuple(d for pair in zip(outputs, kernels) for d in pair)
        dims = {"N": x_shape[0], "C": x_shape[1], **dict(zip(outputs, y_shape[2:])),
                **dict(zip(kernels, kernel))}
        tensor = self._emit(self._claim(base), node.op_type, OpKind.REDUCE, dims, ("N", "C", *outputs),
                            (self._read(x, ("N", "C", *window), where),), where,
                            reduce=_POOL[node.op_type])
        self._computed(out, tensor)

    def _reduced_axes(self, node: onnx.NodeProto, rank: int, where: str) -> tuple[int, ...]:
        """The axes a reduction reduces; () when it is the identity."""
        if node.op_type in ("ArgMax", "ArgMin"):
            return (_axis(_attribute(node, "axis", 0), rank, where),) if rank else ()
        axes = _attribute(node, "axes")
        if axes is None and _optional_input(node, 1) is not None:
            axes = self._value(node.input[1], where).reshape(-1).tolist()
        if not axes:
            return () if _attribute(node, "noop_with_empty_axes", 0) else tuple(range(rank))
        return tuple(sorted({_axis(int(a), rank, where) for a in axes}))

    def _reduction(self, node: onnx.NodeProto, where: str, base: str) -> None:
        x, out = node.input[0], node.output[0]
        shape = self._shape(x, where)
        reduced = self._reduced_axes(node, len(shape), where)
        if not reduced:
            source = self._source(x, where)
            self._alias(out, source, source.view)
            return
        names = _axes(len(shape))
        kept = tuple(d for i, d in enumerate(names) if i not in reduced)
        tensor = self._emit(self._claim(base), node.op_type, OpKind.REDUCE, dict(zip(names, shape)),
                            kept, (self._read(x, names, where),), where, reduce=_REDUCE[node.op_type])
        self._computed(out, tensor)

    def _softmax(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """The zoo's softmax (`builders.softmax_operators`), or its log softmax."""
        x, out = node.input[0], node.output[0]
        shape = self._shape(x, where)
        axis = _axis(_attribute(node, "axis", -1 if self.opset >= 13 else 1), len(shape), where)
        names = _axes(len(shape))
        reduced = {axis} if self.opset >= 13 else set(range(axis, len(shape)))
        rows = tuple(d for i, d in enumerate(names) if i not in reduced)
        tensor = softmax_operators(_Builder(self, where), base, dict(zip(names, shape)), rows,
                                   self._read(x, names, where), log=node.op_type == "LogSoftmax")
        self._computed(out, tensor)

    def _norm(self, node: onnx.NodeProto, where: str, base: str) -> None:
        """The zoo's LayerNorm (LayerNormalization) or RMSNorm decomposition
        (`builders.norm_operators`) over the axes from `axis` on."""
        x, out = node.input[0], node.output[0]
        shape = self._shape(x, where)
        self.shapes[out] = shape  # contrib norms have no shape inference; the shape is kept
        axis = _axis(_attribute(node, "axis", -1), len(shape), where)
        names = _axes(len(shape))
        layer = node.op_type == "LayerNormalization"
        bias = _optional_input(node, 2) if layer else None
        tensor = norm_operators(
            _Builder(self, where), base, dict(zip(names[:axis], shape[:axis])),
            dict(zip(names[axis:], shape[axis:])), self._read(x, names, where),
            "layernorm" if layer else "rmsnorm", self._scalar(f"{base}.count"),
            self._scalar(f"{base}.epsilon"), self._broadcast(node.input[1], names, shape, where),
            None if bias is None else self._broadcast(bias, names, shape, where))
        self._computed(out, tensor)

    def _gather(self, node: onnx.NodeProto, where: str, base: str) -> None:
        data, indices, out = node.input[0], node.input[1], node.output[0]
        d_shape, i_shape = self._shape(data, where), self._shape(indices, where)
        axis = _axis(_attribute(node, "axis", 0), len(d_shape), where)
        shape = (*d_shape[:axis], *i_shape, *d_shape[axis + 1:])
        names = _axes(len(shape))
        # the data is read where the indices point: their dims replace the gathered axis
        operands = (self._read(data, names, where),
                    self._read(indices, names[axis:axis + len(i_shape)], where))
        tensor = self._emit(self._claim(base), "Gather", OpKind.GATHER, dict(zip(names, shape)),
                            names, operands, where)
        self._computed(out, tensor)

    def _concat(self, node: onnx.NodeProto, where: str, base: str) -> None:
        values, out = [v for v in node.input if v], node.output[0]
        sources = [self._source(v, where) for v in values]
        hbm = {s.tensor: s for s in sources if s.origin == _HBM}
        computed = [v for v, s in zip(values, sources) if s.origin == _COMPUTED]
        if len(hbm) == 1:  # the KV cache: read from HBM at the concatenated length
            self._alias(out, next(iter(hbm.values())))
        elif hbm:
            self.sources[out] = _Source(self._claim(out), _HBM)
        elif not computed:
            self.sources[out] = _Source(self._claim(out), _INPUT)
        else:  # folded, as the zoo's rotate_half: readers read the first computed input
            self._alias(out, self._source(computed[0], where))

    def _slice(self, node: onnx.NodeProto, where: str, base: str) -> None:
        x, out = node.input[0], node.output[0]
        source = self._source(x, where)
        if source.origin == _HBM:
            self._alias(out, source)
            return
        shape = self._shape(out, where)
        names = _axes(len(shape))
        tensor = self._emit(self._claim(base), "Slice", OpKind.SLICE, dict(zip(names, shape)), names,
                            (self._read(x, names, where),), where)
        self._computed(out, tensor)
