"""Mixture-of-experts layers as exporters write them, read as the zoo's, for
`elkopt.graph.onnx_graph`: applied to a shape-inferred model before the import.

An exported mixture-of-experts block is a router and a data-dependent dispatch: Hugging Face's
Mixtral, traced by TorchScript, writes a router ``MatMul`` to E logits, ``Softmax``, ``TopK``
(k), the gates divided by their sum, then for each expert the trace met a ``OneHot`` /
``NonZero`` selection of its tokens, a ``Gather`` of their rows, the expert MLP
(``MatMul``s by its weights) and a ``ScatterElements`` back into the output. Which experts the
trace met depends on its example input, and the dispatch's sizes on the routing, so none of
it has a static shape. `fuse_moe` finds each such block and replaces it by one node
``MixtureOfExperts`` (domain ``elkopt``) from the router's input to the block's output, which
the import reads as the zoo's mixture-of-experts layer (`elkopt.graph.moe.add_moe_mlp`: the
router, top-k, the routed experts over the expected number of distinct experts a step
touches, the weighted combine), so an exported Mixtral and the zoo's give the same operators.

A block is recognised from its ``TopK``: its input is a ``Softmax`` (through ``Cast``) of a
``MatMul`` by a rank-2 weight [H, E] (the router); k is the TopK's constant K. The block's
output is the first value after the last expert ``MatMul`` (a ``MatMul`` by a weight that
depends on the TopK) with the router input's shape that cuts the block: every value that
depends on the TopK and is computed before it is read only up to it. The experts: hidden
size F from their weights ([H, F] and [F, H]), gated when there are two [H, F] weights per
[F, H] one (Mixtral's w1 and w3), the gates renormalised when the TopK's values are summed
(``ReduceSum``), the activation SiLU unless a ``Relu``, ``Erf``, ``Tanh`` or ``Gelu`` is met.
A block that does not fit this is left alone, and the import refuses its ``TopK`` by name.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from elkopt.graph.onnx_shapes import OnnxImportError, _static_shape, _value_infos

DOMAIN = "elkopt"
OP_TYPE = "MixtureOfExperts"


def fuse_moe(graph: onnx.GraphProto) -> int:
    """Replace each mixture-of-experts block (module doc) by a ``MixtureOfExperts`` node in
    place; how many were replaced."""
    count = 0
    routers = [n.output[0] for n in graph.node if n.op_type == "TopK"]
    for values in routers:  # each TopK once, in program order (a replaced block's nodes stay, unread)
        nodes = list(graph.node)
        topk = next(n for n in nodes if n.op_type == "TopK" and n.output[0] == values)
        block = _block(graph, nodes, topk)
        if block is not None:
            _replace(graph, nodes, *block)
            count += 1
    return count


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
    return values


def _block(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], topk: onnx.NodeProto):
    """(router MatMul, x, output value, attributes) of the block around `topk`, or None."""
    producers = {out: n for n in nodes for out in n.output if out}
    constants = _constants(graph)
    initializers = {t.name: t for t in graph.initializer}
    infos = _value_infos(graph)

    def before(value: str) -> onnx.NodeProto | None:
        node = producers.get(value)
        while node is not None and node.op_type == "Cast":
            node = producers.get(node.input[0])
        return node

    softmax = before(topk.input[0])
    router = before(softmax.input[0]) if softmax is not None and softmax.op_type == "Softmax" else None
    if router is None or router.op_type != "MatMul" or router.input[1] not in initializers:
        return None
    weight = initializers[router.input[1]]
    if len(weight.dims) != 2 or len(topk.input) < 2 or topk.input[1] not in constants:
        return None
    hidden, experts = weight.dims
    top_k = int(numpy_helper.to_array(constants[topk.input[1]]).reshape(-1)[0])
    x = router.input[0]
    x_shape = _static_shape(infos.get(x))
    start = nodes.index(topk)
    routed = {out for out in topk.output if out}
    for node in nodes[start + 1:]:
        if any(name in routed for name in node.input):
            routed.update(out for out in node.output if out)
    if x_shape is None:
        return None
    last_read: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            last_read[name] = i
    produced_at = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    matmuls, output = [], None
    for i in range(start + 1, len(nodes)):
        node = nodes[i]
        if not any(name in routed for name in node.input):
            continue
        if node.op_type == "MatMul" and node.input[1] in initializers:
            matmuls.append(node)
        out = node.output[0] if node.output else ""
        if matmuls and _static_shape(infos.get(out)) == x_shape and all(
                last_read.get(v, -1) <= i for v in routed if produced_at.get(v, len(nodes)) <= i and v != out):
            output = out
            break
    if output is None:
        return None
    shapes = [tuple(initializers[n.input[1]].dims) for n in matmuls]
    up = [s for s in shapes if s[0] == hidden]
    down = [s for s in shapes if s[1] == hidden and s[0] != hidden]
    if not up or not down or len(up) + len(down) != len(shapes) or len({s[1] for s in up}) != 1:
        return None
    ffn = up[0][1]
    block_nodes = [n for n in nodes[start:produced_at[output] + 1] if any(o in routed for o in n.output)]
    kinds = {n.op_type for n in block_nodes}
    activation = "relu" if "Relu" in kinds else "gelu" if kinds & {"Erf", "Tanh", "Gelu"} else "silu"
    renormalize = any(n.op_type == "ReduceSum" and n.input[0] == topk.output[0] for n in block_nodes)
    attributes = dict(experts=experts, top_k=top_k, expert_ffn=ffn, gated=int(len(up) == 2 * len(down)),
                      renormalize=int(renormalize), activation=activation)
    return router, x, output, attributes


def _replace(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], router: onnx.NodeProto, x: str,
             output: str, attributes: dict) -> None:
    producer = next(n for n in nodes if output in n.output)
    producer.output[list(producer.output).index(output)] = f"{output}.dispatched"
    name = router.name.rsplit("/", 2)[0] if router.name.count("/") >= 2 else f"{router.name or output}.moe"
    node = onnx.helper.make_node(OP_TYPE, [x, router.input[1]], [output], name=name, domain=DOMAIN, **attributes)
    graph.node.insert(nodes.index(producer) + 1, node)


def attributes_of(node: onnx.NodeProto) -> dict:
    """A ``MixtureOfExperts`` node's attributes (ints and the activation), checked."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    values["activation"] = values.get("activation", b"silu")
    if isinstance(values["activation"], bytes):
        values["activation"] = values["activation"].decode()
    for key in ("experts", "top_k", "expert_ffn"):
        if not isinstance(values.get(key), int) or values[key] < 1:
            raise OnnxImportError(f"node {node.name!r} ({DOMAIN}.{OP_TYPE}): attribute {key} must be a positive int")
    if values["top_k"] > values["experts"]:
        raise OnnxImportError(f"node {node.name!r} ({DOMAIN}.{OP_TYPE}): top_k={values['top_k']} exceeds "
                              f"experts={values['experts']}")
    return values
