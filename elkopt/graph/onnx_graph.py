"""ONNX models as operator graphs: `read_onnx` (a file) and `import_onnx` (a ModelProto).

The sibling of `elkopt.graph.dump` for models exported to ONNX. Only shapes matter: a file is
read without its external weight files, the caller gives the symbolic dims (`sizes`, e.g.
``{"batch": 4, "seq": 128}``, substituted on the graph inputs, outputs and value_info) and
ONNX shape inference fills in the rest. The element size comes from the caller, never from
the ONNX dtypes.

Tensors and storage:

- initializers with more than one element are weights, read from HBM; one-element
  initializers, ``Constant`` nodes (whatever their size) and values computed only from
  constants and shapes (``Shape``, ``Size``, ``ConstantOfShape``, ``Range``, ``EyeLike``,
  and any node whose data inputs are all constants) are constants: no operator, read as
  on-chip graph inputs like the zoo's scalar constants;
- a graph input that is not an initializer is an on-chip graph input, unless its name
  matches an fnmatch pattern of `hbm_inputs` (by default ``*past*`` and ``*cache*``: a
  decode model's KV cache), then it is read from HBM;
- only values that reach a graph output through data inputs are imported: the shape,
  axes and pads inputs of ``Reshape``, ``Expand``, ``Slice``, reductions ... are not data,
  so the shape computations feeding them produce nothing.

Operators are named after their node (``<op_type>_<index>`` for a node without a name), with
a suffix when one node becomes several; an operator's output tensor is named after it, and
names are made unique against each other and against graph inputs and initializers.
Dims are ``D0, D1, ...`` over an output's axes unless said otherwise.

- ``MatMul`` (numpy semantics, 1-D operands included): one MATMUL over dims ``B0...``
  (batch), ``M``, ``N``, ``K``, reduce "sum"; labelled ``BatchMatMul`` when both operands
  index a batch dim, else ``Dot``. ``Gemm``: a Dot over ``M, N, K`` (transA/transB pick the
  operands' axis order; alpha and beta cost nothing), then C as an ``Add`` named
  ``<node>.add_bias``, like the zoo's linear layers.
- ``Conv`` (1-D to 3-D): the matmul it lowers to (im2col), labelled ``Conv``, dims ``N, [G,]
  F, [DO,] [HO,] WO, C, [KD,] [KH,] KW``: the image is read once per window position, indexed
  ``(N, [G,] C, HO, KH, WO, KW)``; the weight ``([G,] F, C, KH, KW)``; ``group > 1`` adds the
  group dim ``G`` to all three operands. Strides, pads and dilations act through the
  inferred output size. A bias is a separate ``Add`` (``<node>.add_bias``).
- ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``GlobalMaxPool``: a REDUCE (max /
  sum) labelled with the op type, dims ``N, C, HO, WO, KH, KW``, the input indexed
  ``(N, C, HO, KH, WO, KW)`` (a global pool's window is the whole image, its HO = WO = 1).
- Element-wise nodes (``Add``, ``Sub``, ``Mul``, ``Div``, ``Pow``, ``Max``, ``Min``,
  comparisons; ``Relu``, ``Sigmoid``, ``Exp``, ``Sqrt``, ``Neg``, ``Clip``, ...): one BINARY or
  UNARY over the output's axes, labelled as the zoo does (``Subtract``, ``Multiply``,
  ``Negative``, ...; the op type otherwise). An input of size 1 or missing on an axis
  does not index it (numpy broadcasting); a scalar is an operand with no dims; nor does
  an axis an ``Expand`` broadcast (below), so an expanded mask costs its own size. A
  one-input ``Max``/``Min``/``Sum`` is folded; more than two inputs are refused.
- ``Where`` (a select): one BINARY ``Where`` over its two non-constant inputs, so a masked
  fill ``where(mask, scores, -inf)`` reads the mask and the scores, like the zoo's mask
  ``Add``; with one non-constant input it reads that and the first constant one; with
  three, two chained operators: ``<node>.then`` (condition, X), ``<node>.else`` (that, Y).
- ``ReduceSum``, ``ReduceMean``, ``ReduceL1``, ``ReduceL2``, ``ReduceSumSquare``,
  ``ReduceLogSumExp``, ``ReduceProd`` (reduce "sum"), ``ReduceMax``, ``ReduceMin``,
  ``ArgMax``, ``ArgMin`` ("max"): one REDUCE labelled with the op type, the output indexing
  the kept axes (keepdims adds nothing: a kept axis has size 1). Axes come from the
  attribute or, from opset 18 (13 for ReduceSum), from an initializer or ``Constant``
  input; no axes reduce everything (the output is then a scalar, an operand with no dims),
  unless ``noop_with_empty_axes``, which folds the node. The mean's division and the L2's
  root are not separate operators.
- ``Softmax`` (opset 13: one axis; before: the axes from ``axis`` on): the zoo's four
  operators ``<node>.max`` (Max), ``.exp`` (Subtract: exp(x - max) is one operator),
  ``.sum`` (Sum), ``.divide`` (Divide). ``LogSoftmax``: the same max, exp and sum, then
  ``.log`` (Log), ``.shift`` (Add of the max) and ``.subtract`` (x minus that).
- ``LayerNormalization``: the zoo's LayerNorm decomposition (11 operators, 10 without
  bias) over the axes from ``axis`` on; ``SimplifiedLayerNormalization`` and
  ``RMSNormalization``: the zoo's RMSNorm (7). The element count and epsilon are scalar
  graph inputs ``<node>.count`` and ``<node>.epsilon``.
- ``Gather``: a GATHER reading (data, indices); the data operand is indexed by the
  indices' dims in place of the gathered axis, so an embedding lookup reads batch x hidden
  elements of its table.
- ``Concat``: with an HBM input (a decode model's ``concat(past_key, new_key)``), consumers
  read that HBM tensor at the concatenated length and the new entries are the folded
  cache write (with several, a new HBM tensor named after the output). Otherwise, with no
  input computed by an operator, the output is an on-chip graph input; with one or more,
  the concat is folded like the zoo's (rotate_half's ``concat(-x2, x1)`` is its sin
  Multiply's input): consumers read the first computed input's tensor at their own view
  of the shape. The other inputs' producers still run, in program order, but nothing
  reads them through the concat (constants and graph inputs are dropped).
- ``Slice`` of an HBM tensor is folded (consumers read the slice from HBM, as the zoo's
  rotary tables); of an on-chip tensor, a SLICE over the output's axes, as the zoo's
  q/k/v and rotary halves.
- Folded data movement (consumers read the producer's tensor, at their own view of its
  shape): ``Reshape``, ``Transpose``, ``Flatten``, ``Squeeze``, ``Unsqueeze``, ``Identity``,
  ``Cast``, ``CastLike``, ``Expand``, ``Tile``, ``Pad``, ``Dropout`` (inference), ``Split``
  (every output reads the input tensor).
- ``Expand`` is a broadcast, not a copy: its output's axes are remembered as factors of
  the tensor read and factors broadcast (a new axis, or one of size 1 in its input).
  Identity, Cast, CastLike, Dropout, Transpose (permuted) and the reshapes (``Reshape``,
  ``Flatten``, ``Squeeze``, ``Unsqueeze``: factors regrouped row-major onto the new axes,
  splitting one where an axis ends inside it) keep that; Tile, Pad, Split, Slice, Concat
  and any reshape that would split a factor unevenly drop it. ``MatMul``, element-wise
  ops and ``Where`` index an axis of such an input only through its read factors (other
  readers - reductions, Softmax, Gather ... - read the whole shape): an all-broadcast
  axis indexes nothing; a partly broadcast one - HF's ``repeat_kv``: past_key [B, Hkv,
  S, D] unsqueezed, expanded to [B, Hkv, G, S, D] and reshaped to [B, Hq, S, D] has heads
  Hq = (Hkv read, G broadcast) - splits that operator dim into one sub-dim per factor,
  ``<dim>_0, <dim>_1, ...`` (major first), which the other operands and the output index
  in its place, while that input indexes only the read ones. So the scores MatMul of q
  [B, Hq, 1, D] with that cache runs over ``B0, B1_0 (Hkv), B1_1 (G), M, N, K``, reads the
  cache once (B x Hkv x S x D) and keeps the FLOPs and the q and output volumes: the
  zoo's grouped attention. A MatMul's contracted K is not split (an input broadcast
  along it reads it whole, so both inputs index it), and the first input to split a dim sets its factors (another input with
  other factors on that dim reads it whole).

Not imported: control flow (``If``, ``Loop``, ``Scan``), local functions, ``ConvTranspose``,
``Resize``, ``GatherElements``/``GatherND``/``ScatterND``, ``TopK``, fused contrib operators
(``Attention``, ``SkipLayerNormalization``, ...) and the secondary outputs of a node
(``MaxPool`` indices, ``LayerNormalization`` mean, a ``Dropout`` mask): an ``OnnxImportError``
names the node and what was expected.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from elkopt.graph.builders import chip, norm_operators, softmax_operators
from elkopt.graph.ir import Dim, Graph, Operand, Operator, OpKind, Storage

DEFAULT_HBM_INPUTS = ("*past*", "*cache*")

_UNARY = {"Neg": "Negative", **{op: op for op in (
    "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Gelu",
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
}
#: (output, kernel) dim names of the spatial axes of a 1-D, 2-D or 3-D Conv / pool.
_SPATIAL = {1: (("WO",), ("KW",)), 2: (("HO", "WO"), ("KH", "KW")),
            3: (("DO", "HO", "WO"), ("KD", "KH", "KW"))}
_INPUT, _CONSTANT, _COMPUTED, _HBM = "input", "constant", "computed", "hbm"


class OnnxImportError(ValueError):
    """A model that cannot be imported, naming the node (name, op type or index) or value
    and what was expected."""


def read_onnx(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None,
              sizes: Mapping[str, int] | None = None,
              hbm_inputs: Sequence[str] = DEFAULT_HBM_INPUTS) -> Graph:
    """The operator graph of the ONNX file at `path` (named after the file unless `name`).

    External weight files are not read (only shapes matter); see `import_onnx`.
    """
    return import_onnx(load_onnx(path), name or Path(path).stem, elem_bytes, sizes, hbm_inputs)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """The ONNX model at `path`, without its external weight files."""
    try:
        return onnx.load(Path(path), load_external_data=False)
    except OSError as error:
        raise OnnxImportError(f"{path}: cannot read ({error})") from None
    except DecodeError as error:
        raise OnnxImportError(f"{path}: not an ONNX model ({error})") from None


def symbolic_dims(model: onnx.ModelProto) -> list[str]:
    """The symbolic dims (``dim_param``) of the model's graph inputs, first seen first:
    the names `import_onnx` needs sizes for."""
    initializers = {t.name for t in model.graph.initializer}
    names = (dim.dim_param for value in model.graph.input if value.name not in initializers
             for dim in _tensor_dims(value) or () if dim.HasField("dim_param") and dim.dim_param)
    return list(dict.fromkeys(names))


def import_onnx(model: onnx.ModelProto, name: str, elem_bytes: int = 2,
                sizes: Mapping[str, int] | None = None,
                hbm_inputs: Sequence[str] = DEFAULT_HBM_INPUTS) -> Graph:
    """The operator graph of `model` (see the module doc for the rules); `model` is not changed.

    sizes: symbolic dim name (``dim_param``) -> length; every symbolic dim of a graph
    input needs one. hbm_inputs: fnmatch patterns of graph inputs read from HBM.
    """
    if not isinstance(model, onnx.ModelProto):
        raise OnnxImportError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    _substitute(model_copy.graph, _checked_sizes(sizes or {}))
    try:
        inferred = onnx.shape_inference.infer_shapes(model_copy, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise OnnxImportError(f"shape inference failed: {error}") from None
    patterns = (hbm_inputs,) if isinstance(hbm_inputs, str) else tuple(hbm_inputs)
    return _Importer(inferred, patterns).run(name, elem_bytes)


# -- symbolic dims -----------------------------------------------------------------------
def _checked_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    for dim, length in sizes.items():
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise OnnxImportError(f"size of symbolic dim {dim!r} must be a positive int, got {length!r}")
    return dict(sizes)


def _tensor_dims(value: onnx.ValueInfoProto) -> Sequence[onnx.TensorShapeProto.Dimension] | None:
    """The dims of a tensor value; None if its shape (even its rank) is unknown."""
    kind = value.type
    if kind.HasField("tensor_type") and kind.tensor_type.HasField("shape"):
        return kind.tensor_type.shape.dim
    return None


def _substitute(graph: onnx.GraphProto, sizes: dict[str, int]) -> None:
    """Give symbolic dims their sizes: required on graph inputs; on outputs and value_info
    an unknown one is cleared for shape inference to compute."""
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(_tensor_dims(value) or ()):
            if dim.HasField("dim_value"):
                continue
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
            elif dim.dim_param:
                raise OnnxImportError(
                    f"graph input {value.name!r}: symbolic dim {dim.dim_param!r} (axis {axis}) has "
                    f"no size; set it with +model.placeholders.{dim.dim_param}=<n>")
            else:
                raise OnnxImportError(f"graph input {value.name!r}: axis {axis} has no size; "
                                      "export the model with static shapes")
    for value in (*graph.output, *graph.value_info):
        for dim in _tensor_dims(value) or ():
            if dim.HasField("dim_param"):
                if dim.dim_param in sizes:
                    dim.dim_value = sizes[dim.dim_param]
                else:
                    dim.Clear()


# -- helpers on nodes --------------------------------------------------------------------
def _where(node: onnx.NodeProto, index: int) -> str:
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    return f"node {node.name!r} ({op})" if node.name else f"node {index} ({op})"


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    """The node's inputs read as data (not shapes, axes, pads ...), omitted ones skipped."""
    positions = _DATA_INPUTS.get(node.op_type, range(len(node.input)))
    return [node.input[i] for i in positions if i < len(node.input) and node.input[i]]


def _optional_input(node: onnx.NodeProto, position: int) -> str | None:
    return node.input[position] if len(node.input) > position and node.input[position] else None


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _axis(axis: int, rank: int, where: str) -> int:
    if not -rank <= axis < rank:
        raise OnnxImportError(f"{where}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def _axes(rank: int) -> tuple[str, ...]:
    return tuple(f"D{i}" for i in range(rank))


def _data_values(graph: onnx.GraphProto) -> set[str]:
    """Values read as data on the way to a graph output (nodes are in topological order)."""
    data = {value.name for value in graph.output}
    for node in reversed(graph.node):
        if any(out in data for out in node.output):
            data.update(_data_inputs(node))
    return data


def _shapes(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    """Value name -> shape after inference, None where a dim is unknown or symbolic (left
    symbolic by inference: the graph inputs' symbols are substituted before it)."""
    shapes: dict[str, tuple[int | None, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = _tensor_dims(value)
        if dims is not None:
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else onnx.defs.onnx_opset_version()


#: How a value's axes lie on its tensor once broadcast by an Expand: per axis, major first,
#: factors (length, read) whose lengths multiply to the axis length; a factor not read is
#: broadcast (a new or size-1 axis of the Expand's input). Factors have length > 1.
_View = tuple[tuple[tuple[int, bool], ...], ...]


def _plain(shape: Sequence[int]) -> _View:
    """The view of a tensor read at its own shape."""
    return tuple(((n, True),) if n > 1 else () for n in shape)


def _merged(factors: Sequence[tuple[int, bool]]) -> tuple[tuple[int, bool], ...]:
    """Adjacent factors both read or both broadcast as one."""
    axis: list[tuple[int, bool]] = []
    for length, read in factors:
        if axis and axis[-1][1] == read:
            axis[-1] = (axis[-1][0] * length, read)
        else:
            axis.append((length, read))
    return tuple(axis)


def _broadcast_view(view: _View) -> _View | None:
    """`view` if some factor is broadcast, else None (the value reads its tensor plainly)."""
    return view if any(not read for axis in view for _, read in axis) else None


def _expanded(view: _View, shape: Sequence[int]) -> _View:
    """`view` expanded to `shape` (numpy broadcasting, aligned right)."""
    offset = len(shape) - len(view)
    axes = [() if n == 1 else ((n, False),) for n in shape[:offset]]
    for factors, n in zip(view, shape[offset:]):
        axes.append(factors if math.prod(f for f, _ in factors) == n else ((n, False),))
    return tuple(axes)


def _regrouped(view: _View, shape: Sequence[int]) -> _View | None:
    """`view` reshaped (row-major) to `shape`, splitting factors where an axis ends inside one;
    None if a factor does not divide evenly (the reshape then reads the tensor plainly)."""
    factors = [f for axis in view for f in axis]
    axes = []
    for n in shape:
        axis = []
        while n > 1:
            if not factors:
                return None
            length, read = factors.pop(0)
            if n % length == 0:
                axis.append((length, read))
                n //= length
            elif length % n == 0:  # the axis ends inside this factor: its major part
                axis.append((n, read))
                factors.insert(0, (length // n, read))
                n = 1
            else:
                return None
        axes.append(_merged(axis))
    return None if factors else tuple(axes)


@dataclass(frozen=True)
class _Source:
    """What an ONNX value is in the IR: the tensor its readers read, and where it comes from."""

    tensor: str
    origin: str  # _COMPUTED (an operator's output), _INPUT (on-chip graph input), _HBM, _CONSTANT
    view: _View | None = None  # set when broadcast by an Expand: readers skip the broadcast factors

    @property
    def storage(self) -> Storage:
        return Storage.HBM if self.origin == _HBM else Storage.CHIP


class _Builder:
    """The zoo's builder interface (`builders.Builder`) over an importer's operators, so
    softmax and normalisations decompose as the zoo's do; names are claimed unique."""

    def __init__(self, importer: _Importer, where: str) -> None:
        self.importer, self.where = importer, where

    def binary(self, name: str, label: str, dims: dict[str, int], a: Operand, b: Operand) -> str:
        return self._emit(name, label, OpKind.BINARY, dims, tuple(dims), (a, b))

    def unary(self, name: str, label: str, dims: dict[str, int], x: Operand) -> str:
        return self._emit(name, label, OpKind.UNARY, dims, tuple(dims), (x,))

    def reduce(self, name: str, how: str, dims: dict[str, int], x: Operand, out: tuple[str, ...]) -> str:
        return self._emit(name, how.capitalize(), OpKind.REDUCE, dims, out, (x,), how)

    def _emit(self, name: str, label: str, kind: OpKind, dims: dict[str, int], out: tuple[str, ...],
              inputs: tuple[Operand, ...], reduce: str | None = None) -> str:
        importer = self.importer
        return importer._emit(importer._claim(name), label, kind, dims, out, inputs, self.where, reduce)


# -- the importer ------------------------------------------------------------------------
class _Importer:
    """Walks the nodes in order, mapping each ONNX value to a `_Source` and emitting operators."""

    def __init__(self, model: onnx.ModelProto, hbm_inputs: tuple[str, ...]) -> None:
        self.graph = model.graph
        self.opset = _opset(model)
        self.shapes = _shapes(self.graph)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.constant_nodes = {n.output[0]: n for n in self.graph.node if n.op_type == "Constant"}
        self.sources: dict[str, _Source] = {}
        self.unmapped: dict[str, str] = {}  # value -> which node output it is
        self.ops: list[Operator] = []
        self.graph_inputs: set[str] = set()
        self.taken: set[str] = set()
        for t in self.graph.initializer:
            self.sources[t.name] = _Source(t.name, _HBM if math.prod(t.dims) > 1 else _CONSTANT)
            self.taken.add(t.name)
        for value in self.graph.input:
            if value.name not in self.sources:
                hbm = any(fnmatch.fnmatchcase(value.name, p) for p in hbm_inputs)
                self.sources[value.name] = _Source(value.name, _HBM if hbm else _INPUT)
                self.taken.add(value.name)
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
            "Split": self._split, "Slice": self._slice, "Where": self._select,
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
            return Graph(name, self.ops, elem_bytes, self.graph_inputs)
        except ValueError as error:
            raise OnnxImportError(str(error)) from None

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

    # -- values, names, operators ------------------------------------------------------
    def _source(self, value: str, where: str) -> _Source:
        if value in self.sources:
            return self.sources[value]
        if value in self.unmapped:
            raise OnnxImportError(f"{where}: reads {value!r}, {self.unmapped[value]}, which is not "
                                  "imported (only the outputs the importer maps are)")
        raise OnnxImportError(f"{where}: input {value!r} is neither a graph input, an initializer "
                              "nor the output of an earlier node")

    def _shape(self, value: str, where: str) -> tuple[int, ...]:
        shape = self.shapes.get(value)
        if shape is not None and None not in shape:
            return shape  # type: ignore[return-value]
        shown = "unknown" if shape is None else f"[{', '.join('?' if d is None else str(d) for d in shape)}]"
        raise OnnxImportError(f"{where}: value {value!r} has shape {shown} after shape inference; "
                              "expected a static shape: set model.placeholders.<dim> for each symbolic "
                              "dim of the model, or export the model with static shapes")

    def _value(self, value: str, where: str) -> np.ndarray:
        """The contents of an initializer or Constant output (axes of a reduction)."""
        if value in self.initializers:
            tensor = self.initializers[value]
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise OnnxImportError(f"{where}: needs the value of {value!r}, which is stored "
                                      "in an external file")
            return numpy_helper.to_array(tensor)
        if value in self.constant_nodes:
            content = onnx.helper.get_attribute_value(self.constant_nodes[value].attribute[0])
            if isinstance(content, onnx.TensorProto):
                return numpy_helper.to_array(content)
            return np.array(content)
        raise OnnxImportError(f"{where}: expected {value!r} to be an initializer or the output of "
                              "a Constant node (its value is needed)")

    def _claim(self, name: str) -> str:
        """`name`, or `name_<k>` if taken: operator, graph input and weight names are unique."""
        unique, k = name, 1
        while unique in self.taken:
            unique, k = f"{name}_{k}", k + 1
        self.taken.add(unique)
        return unique

    def _alias(self, value: str, source: _Source, view: _View | None = None) -> None:
        """A folded node's output: its readers read `source`'s tensor (through `view`)."""
        self.sources[value] = _Source(source.tensor, source.origin, view)

    def _computed(self, value: str, tensor: str) -> None:
        self.sources[value] = _Source(tensor, _COMPUTED)

    def _read(self, value: str, dims: Sequence[str], where: str) -> Operand:
        """`value` as an operand indexed by `dims` (graph inputs and constants registered)."""
        source = self._source(value, where)
        if source.origin in (_INPUT, _CONSTANT):
            self.graph_inputs.add(source.tensor)
        return Operand(source.tensor, tuple(dims), source.storage)

    def _broadcast(self, value: str, names: Sequence[str], lengths: Sequence[int], where: str,
                   splits: dict[str, tuple[int, ...]] | None = None) -> Operand:
        """`value` read within axes `names` of `lengths`, aligned right (numpy broadcasting):
        an axis of size 1 where the space is longer, or missing, indexes nothing; nor does
        an axis an Expand broadcast (its view's factors all broadcast).

        An axis partly broadcast (an expanded axis merged with a read one by a Reshape: HF's
        repeat_kv) splits its dim into one sub-dim ``<dim>_<i>`` per factor, of which the
        operand indexes the read ones, when `splits` is given: the split is recorded there
        (dim -> factor lengths) for `_split_dims`; the first operand to split a dim decides
        its factors, and a dim recorded with no factors (``()``: a MatMul's contracted K) is
        read whole, even where broadcast. Without `splits` a partly broadcast axis indexes
        its whole dim (the tensor read at the broadcast size)."""
        source = self._source(value, where)
        shape = self._shape(value, where)
        offset = len(names) - len(shape)
        if offset < 0:
            raise OnnxImportError(f"{where}: input {value!r} of shape {list(shape)} has more axes "
                                  f"than {list(lengths)}")
        view = source.view or _plain(shape)
        dims = []
        for axis, (size, factors) in enumerate(zip(shape, view)):
            name, length = names[offset + axis], lengths[offset + axis]
            if size not in (1, length):
                raise OnnxImportError(f"{where}: input {value!r} of shape {list(shape)} does not "
                                      f"broadcast to {list(lengths)}")
            read = [r for _, r in factors]
            if all(read) or splits is not None and splits.get(name) == ():  # () : read whole
                dims += [name] if size == length else []
            elif any(read):
                parts = tuple(f for f, _ in factors)
                if splits is not None and splits.setdefault(name, parts) == parts:
                    dims += [f"{name}_{i}" for i, r in enumerate(read) if r]
                else:
                    dims.append(name)
        return self._read(value, dims, where)

    def _scalar(self, name: str) -> Operand:
        """A new scalar constant (an element count, an epsilon) as an on-chip graph input."""
        tensor = self._claim(name)
        self.graph_inputs.add(tensor)
        return chip(tensor)

    def _emit(self, name: str, label: str, kind: OpKind, dims: Mapping[str, int],
              out: Sequence[str], inputs: Sequence[Operand], where: str,
              reduce: str | None = None) -> str:
        """Append an operator writing the tensor named after it; the tensor's name.

        An element-wise operator over a scalar gets one dim of length 1 (operators need dims).
        """
        if not dims:
            dims, out = {"S": 1}, ("S",)
        try:
            op = Operator(name, label, kind, tuple(Dim(n, length) for n, length in dims.items()),
                          Operand(name, tuple(out), Storage.CHIP), tuple(inputs), reduce)
        except ValueError as error:
            raise OnnxImportError(f"{where}: {error}") from None
        self.ops.append(op)
        return name

    @staticmethod
    def _split_dims(splits: Mapping[str, tuple[int, ...]], dims: Mapping[str, int],
                    out: Sequence[str], inputs: Sequence[Operand]
                    ) -> tuple[dict[str, int], tuple[str, ...], tuple[Operand, ...]]:
        """The space, output dims and inputs with each dim of `splits` replaced by its sub-dims
        ``<dim>_0, <dim>_1, ...`` (major first) wherever it is indexed whole (`_broadcast`)."""

        def sub(name: str) -> tuple[str, ...]:
            parts = splits.get(name)
            return tuple(f"{name}_{i}" for i in range(len(parts))) if parts else (name,)

        space = {s: n for name, length in dims.items()
                 for s, n in zip(sub(name), splits.get(name) or (length,))}
        return (space, tuple(s for d in out for s in sub(d)),
                tuple(Operand(x.tensor, tuple(s for d in x.dims for s in sub(d)), x.storage)
                      for x in inputs))

    def _elementwise(self, name: str, label: str, kind: OpKind, value: str, inputs: Sequence[str],
                     where: str) -> str:
        """One element-wise operator over the axes of output `value`, inputs broadcast."""
        shape = self._shape(value, where)
        names = _axes(len(shape))
        splits: dict[str, tuple[int, ...]] = {}
        operands = [self._broadcast(v, names, shape, where, splits) for v in inputs]
        dims, out, operands = self._split_dims(splits, dict(zip(names, shape)), names, operands)
        return self._emit(name, label, kind, dims, out, operands, where)

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
        source = self._source(node.input[0], where)
        for out in node.output:
            if out:
                self._alias(out, source)

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


__all__ = ["DEFAULT_HBM_INPUTS", "OnnxImportError", "import_onnx", "load_onnx", "read_onnx", "symbolic_dims"]
