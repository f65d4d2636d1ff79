"""onnxruntime's fused operators (domain ``com.microsoft``) as standard nodes, for
`elkopt.graph.onnx_graph`: applied to a shape-inferred model before the import, so each is
read as the zoo's decomposition of what it fuses.

- ``SkipLayerNormalization(x, skip, gamma[, beta][, bias])``: ``Add`` x + bias (when given),
  ``Add`` of the skip (the residual sum, the node's fourth output when it is named), then
  ``LayerNormalization`` over the last axis; ``SkipSimplifiedLayerNormalization`` the same
  with ``SimplifiedLayerNormalization`` (an RMS norm). Their mean and inverse-deviation
  outputs are refused.
- ``QuickGelu(x)`` (x * sigmoid(alpha x), which optimum fuses from SiLU), ``FastGelu(x[, bias])``
  and ``BiasGelu(x, bias)``: an ``Add`` of the bias when given, then ``Gelu``, read as the
  zoo's Sigmoid and Multiply (the constant inside the sigmoid costs nothing).

The fused attentions (``GroupQueryAttention``, ``MultiHeadAttention``, ``RotaryEmbedding``) are
read by the import itself (`elkopt.graph.onnx_attention`); other ``com.microsoft`` operators are
left for the import to refuse by name.
"""

from __future__ import annotations

import onnx

from elkopt.graph.onnx_importer import _optional_input
from elkopt.graph.onnx_shapes import OnnxImportError, _value_infos

CONTRIB = "com.microsoft"


def expand_contrib(graph: onnx.GraphProto) -> int:
    """Replace the fused operators above by standard nodes in place; how many were replaced."""
    infos = _value_infos(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for index, node in enumerate(graph.node):
        expand = _EXPANSIONS.get(node.op_type) if node.domain == CONTRIB else None
        if expand is None:
            nodes.append(node)
            continue
        nodes.extend(expand(node, node.name or f"{node.op_type}_{index}", graph, infos))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _like(graph: onnx.GraphProto, infos: dict[str, onnx.ValueInfoProto], name: str, model: str) -> None:
    """Declare value `name` with the type and shape of value `model`."""
    if model in infos:
        info = onnx.ValueInfoProto()
        info.CopyFrom(infos[model])
        info.name = name
        graph.value_info.append(info)
        infos[name] = info


def _add_bias(node: onnx.NodeProto, base: str, x: str, bias: str | None, graph, infos) -> tuple[list, str]:
    if bias is None:
        return [], x
    out = f"{base}.add_bias"
    _like(graph, infos, out, x)
    return [onnx.helper.make_node("Add", [x, bias], [out], name=out)], out


def _skip_norm(node: onnx.NodeProto, base: str, graph, infos) -> list[onnx.NodeProto]:
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    x, skip, gamma = node.input[0], node.input[1], node.input[2]
    beta = None if simplified else _optional_input(node, 3)
    bias = _optional_input(node, 3 if simplified else 4)
    outputs = list(node.output) + [""] * (4 - len(node.output))
    if outputs[1] or outputs[2]:
        raise OnnxImportError(f"node {base!r} ({CONTRIB}.{node.op_type}): its mean and inverse standard "
                              "deviation outputs are not imported")
    nodes, x = _add_bias(node, base, x, bias, graph, infos)
    total = outputs[3] or f"{base}.sum"
    _like(graph, infos, total, node.input[0])
    nodes.append(onnx.helper.make_node("Add", [x, skip], [total], name=f"{base}.add_skip"))
    epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    if simplified:
        norm = onnx.helper.make_node("SimplifiedLayerNormalization", [total, gamma], [outputs[0]], name=base,
                                     axis=-1, epsilon=epsilon)
    else:
        norm = onnx.helper.make_node("LayerNormalization", [total, gamma, *([beta] if beta else [])],
                                     [outputs[0]], name=base, axis=-1, epsilon=epsilon)
    return [*nodes, norm]


def _gelu(node: onnx.NodeProto, base: str, graph, infos) -> list[onnx.NodeProto]:
    bias = _optional_input(node, 1) if node.op_type in ("FastGelu", "BiasGelu") else None
    nodes, x = _add_bias(node, base, node.input[0], bias, graph, infos)
    approximate = "tanh" if node.op_type == "FastGelu" else "none"
    return [*nodes, onnx.helper.make_node("Gelu", [x], [node.output[0]], name=base, approximate=approximate)]


_EXPANSIONS = {
    "SkipLayerNormalization": _skip_norm, "SkipSimplifiedLayerNormalization": _skip_norm,
    "QuickGelu": _gelu, "FastGelu": _gelu, "BiasGelu": _gelu,
}
