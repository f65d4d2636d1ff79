"""Rewrites that make an exported ONNX graph cost what its architecture costs, for
`elkopt.graph.onnx_graph`: applied to a shape-inferred model before the import.

Exporters write a transformer with work that the architecture does not need at run time, or
that a compiler for it would never materialise. `rewrite_exported` changes a model in place,
each rule only where its pattern matches exactly, and returns how often each rule applied:

- ``side_inputs``: every value is tagged with what it depends on: ``data`` (a graph input
  that is not a mask or a position, such as the token ids or a KV cache), ``mask`` (graph
  inputs named like ``*mask*``), ``position`` (``*position*``) and ``weight`` (an initializer
  or a ``Constant`` node with more than one element: TorchScript writes ``inv_freq`` so);
  shapes (``Shape``, ``Size``) and one-element constants tag
  nothing. A value without ``data`` that a data computation reads is folded where it enters:
  with ``mask``, it becomes an on-chip graph input of its own shape (the padding and causal
  masks, however an exporter builds them - ``GatherND``, a flattened ``Gather`` over a
  ``Range``, ``Where``, ``And``, ``Expand`` - are the zoo's mask input, read by one ``Add`` or
  ``Where`` per layer); with ``position`` or ``weight``, it is a table read from HBM at its own
  shape (the rotary cos/sin that exporters compute from ``inv_freq`` and the positions are
  the zoo's ``rope.cos``/``rope.sin`` rows; a transposed or cast weight is the weight). A
  table computed from [batch, tokens] positions is read once for the batch (its batch axis
  becomes 1): every request of a step is at the same positions, as the workload has one KV
  length for all of them.
  The nodes that computed it are no longer imported.
- ``embedding``: a ``Gather`` of a weight (a rank-2 initializer) by the token ids or the
  positions (an integer graph input named like ``*input_ids*`` or ``*position*``, perhaps
  reshaped) is folded as the zoo and the published graphs fold the token and learned
  position embeddings: its rows are an on-chip graph input, the table is not read. Other
  lookups (by other indices) stay gathers.
- ``nan_guard``: ``Where(IsNaN(x), c, x)`` with a constant ``c`` (torch's export of
  scaled-dot-product attention guards fully masked rows so) is ``x``.
- ``gelu``: GELU written out in element-wise nodes (GPT-2's tanh form
  ``0.5 x (1 + tanh(c (x + 0.044715 x^3)))``, or the exact ``0.5 x (1 + erf(x / sqrt 2))``)
  is one ``Gelu`` node: what remains around a ``Tanh`` or ``Erf`` whose input is computed
  from one value x and constants, and whose output, after constant shifts and scales, is
  multiplied by x (or a constant multiple of x). The import reads ``Gelu`` as the zoo does.
- ``scale``: a ``Mul`` by a one-element constant on a ``MatMul`` operand, read only through
  folded data movement (``Transpose``, ``Reshape``, ``Expand``, ...), is moved to the
  ``MatMul``'s output as one ``Mul`` (both operands' scales become one), where the output is
  smaller than the operands scaled: torch's export of scaled-dot-product attention scales q
  and the repeated K by sqrt(scale) each, which would scale an on-chip copy of the cache per
  query head; the zoo scales the scores once. A scale on q alone (OPT's) stays.
- ``siblings``: ``MatMul`` nodes that multiply one input by different rank-2 weights
  (Hugging Face's separate q/k/v and gate/up projections) become one ``MatMul`` by a weight
  of the concatenated columns (an initializer named ``<first weight>.fused``, shapes only),
  then one ``Slice`` per original output, as the zoo's fused ``qkv`` and ``gate_up``.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from elkopt.graph.onnx_importer import _attribute
from elkopt.graph.onnx_ops import _data_inputs, _data_values
from elkopt.graph.onnx_shapes import _static_shape, _value_infos

DEFAULT_MASK_INPUTS = ("*mask*",)
DEFAULT_POSITION_INPUTS = ("*position*",)
DEFAULT_TOKEN_INPUTS = ("*input_ids*",)
#: Data movement the importer folds, through which a scale may travel to its MatMul.
_VIEWS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Flatten"})
_DATA, _MASK, _POSITION, _WEIGHT = "data", "mask", "position", "weight"


def rewrite_exported(model: onnx.ModelProto, mask_inputs: Sequence[str] = DEFAULT_MASK_INPUTS,
                     position_inputs: Sequence[str] = DEFAULT_POSITION_INPUTS,
                     token_inputs: Sequence[str] = DEFAULT_TOKEN_INPUTS) -> Counter:
    """Apply the module's rules to `model` (shape-inferred) in place; how often each applied.
    The patterns (fnmatch, on graph input names) pick the masks, positions and token ids."""
    applied: Counter = Counter()
    graph = model.graph
    applied["embedding"] = _fold_embeddings(graph, (*token_inputs, *position_inputs))
    applied["side_inputs"] = _fold_side_inputs(graph, tuple(mask_inputs), tuple(position_inputs))
    scalars = _scalar_constants(graph)  # the rules below keep every one of them
    applied["nan_guard"] = _drop_nan_guards(graph, scalars)
    applied["gelu"] = _fuse_gelu(graph, scalars)
    applied["scale"] = _move_scales(graph, scalars)
    applied["siblings"] = _fuse_siblings(graph)
    return +applied


# -- helpers ------------------------------------------------------------------------------
def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Value name -> the node computing it."""
    return {out: node for node in graph.node for out in node.output if out}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                readers[name].append(node)
    return readers


def _rename_reads(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Nodes read `renamed[v]` where they read v (one pass)."""
    if renamed:
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name in renamed:
                    node.input[k] = renamed[name]


def _insert_after(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], after: dict[int, list[onnx.NodeProto]],
                  before: dict[int, list[onnx.NodeProto]] | None = None) -> None:
    """Rebuild the node list once: `after[i]` follows `nodes[i]`, `before[i]` precedes it."""
    before = before or {}
    ordered = []
    for i, node in enumerate(nodes):
        ordered.extend(before.get(i, ()))
        ordered.append(node)
        ordered.extend(after.get(i, ()))
    del graph.node[:]
    graph.node.extend(ordered)


def _scalar_constants(graph: onnx.GraphProto) -> set[str]:
    """One-element values computed from constants and shapes only (one-element initializers,
    Constant nodes, and what is computed from them, such as torch's sqrt of a scale)."""
    tags = _tags(graph, (), ())
    infos = _value_infos(graph)
    scalars = {t.name for t in graph.initializer if math.prod(t.dims) == 1}
    for node in graph.node:
        for out in node.output:
            shape = _static_shape(infos.get(out))
            constant = node.op_type == "Constant" or (shape is not None and math.prod(shape) == 1)
            if out and not tags.get(out) and constant and (shape is None or math.prod(shape) == 1):
                scalars.add(out)
    return scalars


def _external(name: str, dims: Sequence[int], data_type: int) -> onnx.TensorProto:
    """An initializer with shape and dtype only (its data would be external, and is absent)."""
    tensor = onnx.TensorProto(name=name, dims=list(dims), data_type=data_type)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "elkopt-rewrite"
    return tensor


def _move_to_inputs(graph: onnx.GraphProto, moved: dict[str, bool], infos: dict[str, onnx.ValueInfoProto]) -> None:
    """Make each value of `moved` a graph input (on chip) or, where `moved[v]`, an HBM
    initializer; its producer's output is renamed so nothing reads it (one pass)."""
    if not moved:
        return
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name in moved:
                node.output[k] = f"{name}.folded"
    kept = [v for v in graph.value_info if v.name not in moved]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for value, hbm in moved.items():
        info = infos[value]
        if hbm:
            graph.initializer.append(_external(value, _static_shape(info), info.type.tensor_type.elem_type))
        else:
            graph.input.append(info)


# -- the rules -------------------------------------------------------------------------------
def _fold_embeddings(graph: onnx.GraphProto, tokens: tuple[str, ...]) -> int:
    initializers = {t.name: t for t in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in initializers
              and any(fnmatch.fnmatchcase(v.name, p) for p in tokens)}
    producers = _producers(graph)
    infos = _value_infos(graph)
    integer = {onnx.TensorProto.INT32, onnx.TensorProto.INT64}
    folded: dict[str, bool] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) != 2:
            continue
        ids = node.input[1]  # a graph input, perhaps reshaped
        while ids in producers and producers[ids].op_type in _VIEWS:
            ids = producers[ids].input[0]
        table, ids = initializers.get(node.input[0]), inputs.get(ids)
        info = infos.get(node.output[0])
        if (table is None or len(table.dims) != 2 or ids is None or _static_shape(info) is None
                or ids.type.tensor_type.elem_type not in integer or _attribute(node, "axis", 0) != 0):
            continue
        folded[node.output[0]] = False
    _move_to_inputs(graph, folded, infos)
    return len(folded)


def _tags(graph: onnx.GraphProto, masks: tuple[str, ...], positions: tuple[str, ...]) -> dict[str, frozenset]:
    """What each value depends on (see the module doc)."""
    tags: dict[str, frozenset] = {}
    for tensor in graph.initializer:
        tags[tensor.name] = frozenset({_WEIGHT}) if math.prod(tensor.dims) > 1 else frozenset()
    for value in graph.input:
        if value.name in tags:
            continue
        if any(fnmatch.fnmatchcase(value.name, p) for p in masks):
            tags[value.name] = frozenset({_MASK})
        elif any(fnmatch.fnmatchcase(value.name, p) for p in positions):
            tags[value.name] = frozenset({_POSITION})
        else:
            tags[value.name] = frozenset({_DATA})
    for node in graph.node:
        if node.op_type == "Constant":  # a tensor in the file, as an initializer is
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            tags[node.output[0]] = frozenset({_WEIGHT}) if value is not None and math.prod(value.dims) > 1 \
                else frozenset()
            continue
        found = frozenset().union(*(tags.get(name, frozenset()) for name in _data_inputs(node)))
        for out in node.output:
            if out:
                tags[out] = found
    return tags


def _fold_side_inputs(graph: onnx.GraphProto, masks: tuple[str, ...], positions: tuple[str, ...]) -> int:
    tags = _tags(graph, masks, positions)
    data = _data_values(graph)
    infos = _value_infos(graph)
    producers = _producers(graph)
    # the batch, from the positions' leading axis ([batch, tokens] in Hugging Face's exports)
    batch = next((shape[0] for v in graph.input if any(fnmatch.fnmatchcase(v.name, p) for p in positions)
                  and (shape := _static_shape(v)) and len(shape) == 2), 0)
    boundary: dict[str, bool] = {}  # value -> read from HBM (else an on-chip input)
    for node in graph.node:
        if not any(_DATA in tags.get(out, ()) for out in node.output if out):
            continue
        for name in _data_inputs(node):
            found = tags.get(name, frozenset())
            if not found or _DATA in found:
                continue
            hbm = _MASK not in found
            shape = _static_shape(infos.get(name))
            if hbm and _POSITION in found and batch > 1 and shape and shape[0] == batch and name in producers:
                boundary[name], infos[name] = True, _shared_rows(infos[name])  # read as it enters
                continue
            followed = _VIEWS | {"Slice"} if hbm else _VIEWS  # the import follows views, and slices of HBM
            while name in producers and producers[name].op_type in followed:
                name = producers[name].input[0]
            if name in producers and name in data and _static_shape(infos.get(name)):
                boundary[name] = hbm
    _move_to_inputs(graph, boundary, infos)
    return len(boundary)


def _shared_rows(info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """`info` with a leading (batch) axis of 1: every request of a step is at the same positions."""
    shared = onnx.ValueInfoProto()
    shared.CopyFrom(info)
    shared.type.tensor_type.shape.dim[0].dim_value = 1
    return shared


def _drop_nan_guards(graph: onnx.GraphProto, scalars: set[str]) -> int:
    producers = _producers(graph)
    outputs = {v.name for v in graph.output}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3 or node.output[0] in outputs:
            continue
        test = producers.get(node.input[0])
        if test is None or test.op_type != "IsNaN":
            continue
        guarded = test.input[0]
        if node.input[2] == guarded and node.input[1] in scalars:
            kept = node.input[2]
        elif node.input[1] == guarded and node.input[2] in scalars:
            kept = node.input[1]
        else:
            continue
        renamed[node.output[0]] = kept
    _rename_reads(graph, renamed)
    return len(renamed)


_ELEMENTWISE = frozenset({"Mul", "Add", "Sub", "Div", "Pow"})


def _fuse_gelu(graph: onnx.GraphProto, scalars: set[str]) -> int:
    producers = _producers(graph)
    readers = _consumers(graph)
    outputs = {v.name for v in graph.output}

    def leaves(value: str, seen: set[str]) -> set[str]:
        """The non-constant values `value` is computed from through element-wise nodes."""
        node = producers.get(value)
        if value in scalars or value in seen:
            return set()
        if node is None or node.op_type not in _ELEMENTWISE:
            return {value}
        seen.add(value)
        return set().union(*(leaves(name, seen) for name in node.input))

    def scaled(value: str, x: str) -> bool:
        """`value` is x or x times a constant."""
        node = producers.get(value)
        return value == x or (node is not None and node.op_type == "Mul" and x in node.input
                              and all(name == x or name in scalars for name in node.input))

    count = 0
    for core in [n for n in graph.node if n.op_type in ("Tanh", "Erf")]:
        sources = leaves(core.input[0], set())
        if len(sources) != 1:
            continue
        (x,) = sources
        current, final = core.output[0], None
        while final is None and len(readers[current]) == 1 and current not in outputs:
            node = readers[current][0]
            others = [name for name in node.input if name != current]
            if node.op_type not in _ELEMENTWISE or len(others) != 1:
                break
            if others[0] in scalars:
                current = node.output[0]
            elif node.op_type == "Mul" and scaled(others[0], x):
                final = node
            else:
                break
        if final is None:
            continue
        tail = readers[final.output[0]]  # a last halving: 0.5 * (x * (1 + erf(...)))
        if (len(tail) == 1 and tail[0].op_type == "Mul" and final.output[0] not in outputs
                and all(name == final.output[0] or name in scalars for name in tail[0].input)):
            final = tail[0]
        approximate = "tanh" if core.op_type == "Tanh" else "none"
        final.CopyFrom(onnx.helper.make_node("Gelu", [x], list(final.output), name=final.name or None,
                                             approximate=approximate))
        count += 1
    return count


def _move_scales(graph: onnx.GraphProto, scalars: set[str]) -> int:
    producers = _producers(graph)
    readers = _consumers(graph)
    infos = _value_infos(graph)
    outputs = {v.name for v in graph.output}
    nodes = list(graph.node)
    after: dict[int, list[onnx.NodeProto]] = {}
    count = 0
    for position, matmul in enumerate(nodes):
        if matmul.op_type != "MatMul":
            continue
        found = []  # (Mul, its data input, its scalar), one per scaled operand
        for operand in matmul.input:
            current = operand
            while (current in producers and producers[current].op_type in _VIEWS
                   and len(readers[current]) == 1 and current not in outputs):
                current = producers[current].input[0]
            mul = producers.get(current)
            if mul is None or mul.op_type != "Mul" or len(readers[current]) != 1 or current in outputs:
                continue
            kept = [name for name in mul.input if name not in scalars]
            factors = [name for name in mul.input if name in scalars]
            if len(kept) == 1 and len(factors) == 1:
                found.append((mul, kept[0], factors[0]))
        # moved only where scaling the output is less work than scaling the operands
        sizes = [_static_shape(infos.get(mul.output[0])) for mul, _, _ in found]
        out_shape = _static_shape(infos.get(matmul.output[0]))
        if not found or None in sizes or out_shape is None or math.prod(out_shape) >= sum(map(math.prod, sizes)):
            continue
        for mul, kept, _ in found:
            mul.op_type, mul.input[:] = "Identity", [kept]  # the operand is read unscaled
        count += len(found)
        out = matmul.output[0]
        unscaled = f"{out}.unscaled"
        matmul.output[0] = unscaled
        info = onnx.ValueInfoProto()
        info.CopyFrom(infos[out])
        info.name = unscaled
        graph.value_info.append(info)
        after[position] = [onnx.helper.make_node("Mul", [unscaled, found[0][2]], [out],
                                                 name=f"{matmul.name or out}.scale")]
    if after:
        _insert_after(graph, nodes, after)
    return count


def _fuse_siblings(graph: onnx.GraphProto) -> int:
    initializers = {t.name: t for t in graph.initializer}
    readers = _consumers(graph)
    infos = _value_infos(graph)
    nodes = list(graph.node)
    groups: dict[tuple[str, int, int], list[int]] = defaultdict(list)  # (input, rows, dtype) -> positions
    for position, node in enumerate(nodes):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        weight = initializers.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or len(readers[weight.name]) != 1 or not _static_shape(
                infos.get(node.output[0])):
            continue
        groups[(node.input[0], weight.dims[0], weight.data_type)].append(position)
    before: dict[int, list[onnx.NodeProto]] = {}
    fused = 0
    for (_, rows, data_type), positions in groups.items():
        if len(positions) > 1:
            members = [nodes[p] for p in positions]
            before[positions[0]] = [_fuse(graph, members, rows, data_type, initializers, infos)]
            fused += len(members)
    if before:
        _insert_after(graph, nodes, {}, before)
    return fused


def _fuse(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], rows: int, data_type: int,
          initializers: dict[str, onnx.TensorProto], infos: dict[str, onnx.ValueInfoProto]) -> onnx.NodeProto:
    """Turn `nodes` (MatMuls of one input by [rows, N_i] weights) into Slices of one fused
    MatMul, which is returned for the caller to place before the first of them."""
    widths = [initializers[n.input[1]].dims[1] for n in nodes]
    first = nodes[0]
    weight_name = f"{first.input[1]}.fused"
    graph.initializer.append(_external(weight_name, (rows, sum(widths)), data_type))
    out = f"{first.output[0]}.fused"
    info = onnx.ValueInfoProto()
    info.CopyFrom(infos[first.output[0]])
    info.name = out
    info.type.tensor_type.shape.dim[-1].dim_value = sum(widths)
    graph.value_info.append(info)
    matmul = onnx.helper.make_node("MatMul", [first.input[0], weight_name], [out], name=f"{first.name or out}.fused")
    start = 0
    for node, width in zip(nodes, widths):
        bounds = []
        for kind, number in (("start", start), ("end", start + width), ("axis", -1)):
            name = f"{node.output[0]}.{kind}"
            graph.initializer.append(numpy_helper.from_array(np.array([number], np.int64), name))
            bounds.append(name)
        slice_node = onnx.helper.make_node("Slice", [out, *bounds], [node.output[0]], name=node.name or None)
        start += width
        node.CopyFrom(slice_node)
    return matmul
