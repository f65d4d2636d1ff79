"""The ONNX importer's state, for `elkopt.graph.onnx_graph`: what each ONNX value is in the IR
(a `_Source`), unique names, reading values as operands (numpy broadcasting, Expand views) and
emitting operators. `elkopt.graph.onnx_ops` adds the walk over the nodes and the per-op-type
handlers on top.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from elkopt.graph.builders import chip
from elkopt.graph.ir import Dim, Operand, Operator, OpKind, Storage
from elkopt.graph.onnx_shapes import OnnxImportError, _opset, _shapes
from elkopt.graph.onnx_views import _plain, _View

#: Where a value comes from (`_Source.origin`).
_INPUT, _CONSTANT, _COMPUTED, _HBM = "input", "constant", "computed", "hbm"


def _optional_input(node: onnx.NodeProto, position: int) -> str | None:
    return node.input[position] if len(node.input) > position and node.input[position] else None


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _axes(rank: int) -> tuple[str, ...]:
    return tuple(f"D{i}" for i in range(rank))


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

    def __init__(self, importer: _ImporterBase, where: str) -> None:
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


# -- the importer's state -----------------------------------------------------------------
class _ImporterBase:
    """Maps each ONNX value to a `_Source` and emits operators; `onnx_ops._Importer` walks
    the nodes and translates each op type."""

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

    def _scalar(self, name: str, *dims: str) -> Operand:
        """A new on-chip graph input: a scalar constant (an element count, an epsilon), or one
        indexed by `dims` (the mask a fused attention builds internally)."""
        tensor = self._claim(name)
        self.graph_inputs.add(tensor)
        return chip(tensor, *dims)

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
