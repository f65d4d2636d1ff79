"""ONNX import: small models built with onnx.helper become the operators the zoo would build,
with weights in HBM, scalars and inputs on chip, data movement folded; models that cannot be
imported are refused naming the node and what was expected."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from elkopt.chip import Chip
from elkopt.graph import builders
from elkopt.graph.ir import Operand, OpKind, Storage
from elkopt.graph.onnx_graph import OnnxImportError, import_onnx, load_onnx, read_onnx
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model

CHIP, HBM = Storage.CHIP, Storage.HBM


def value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def weight(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def ints(name, *values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def scalar(name, number, dtype=np.float32):
    """A one-element (rank-0) initializer."""
    return numpy_helper.from_array(np.array(number, dtype), name)


def scalar_constant(output, number):
    content = helper.make_tensor(f"{output}.v", TensorProto.FLOAT, [], [number])
    return helper.make_node("Constant", [], [output], value=content)


def model(nodes, inputs, outputs, initializers=(), opset=17):
    """A model of `nodes`; inputs as value infos, outputs by name (shapes inferred)."""
    graph = helper.make_graph(nodes, "g", inputs, [value(o, None) for o in outputs], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def node(op_type, inputs, outputs, name=None, **attributes):
    return helper.make_node(op_type, inputs, outputs, name=name or outputs[0], **attributes)


def dims(op):
    return [(d.name, d.length) for d in op.dims]


# -- matmuls ------------------------------------------------------------------------------
def test_a_matmul_with_a_weight_is_a_dot_reading_the_weight_from_hbm():
    m = model([node("MatMul", ["x", "w"], ["y"], name="fc")], [value("x", [8, 32])], ["y"],
              [weight("w", 32, 16)])
    graph = import_onnx(m, "g")
    (op,) = graph.ops
    assert (op.name, op.label, op.kind, op.reduce) == ("fc", "Dot", OpKind.MATMUL, "sum")
    assert dims(op) == [("M", 8), ("N", 16), ("K", 32)]
    assert op.output == Operand("fc", ("M", "N"), CHIP)
    assert op.inputs == (Operand("x", ("M", "K"), CHIP), Operand("w", ("K", "N"), HBM))
    assert graph.total_flops == 2 * 8 * 16 * 32
    assert graph.hbm_bytes == 32 * 16 * 2 and graph.graph_inputs == {"x"}
    assert import_onnx(m, "g", elem_bytes=4).hbm_bytes == 32 * 16 * 4  # element size from the caller


def test_matmul_broadcasts_batch_dims_and_takes_1d_operands():
    batched = model([node("MatMul", ["a", "b"], ["y"])], [value("a", [2, 3, 5, 4]), value("b", [3, 4, 6])],
                    ["y"])
    (op,) = import_onnx(batched, "g").ops
    assert op.label == "BatchMatMul"
    assert dims(op) == [("B0", 2), ("B1", 3), ("M", 5), ("N", 6), ("K", 4)]
    assert [x.dims for x in op.inputs] == [("B0", "B1", "M", "K"), ("B1", "K", "N")]  # b broadcasts over B0
    assert op.flops == 2 * 2 * 3 * 5 * 6 * 4

    rows = model([node("MatMul", ["x", "w"], ["y"])], [value("x", [4, 5, 8])], ["y"], [weight("w", 8, 6)])
    (op,) = import_onnx(rows, "g").ops
    assert op.label == "Dot" and op.output.dims == ("B0", "M", "N")

    vector = model([node("MatMul", ["v", "w"], ["y"])], [value("v", [8])], ["y"], [weight("w", 8, 6)])
    (op,) = import_onnx(vector, "g").ops
    assert dims(op) == [("N", 6), ("K", 8)] and op.output.dims == ("N",)
    assert op.inputs[0].dims == ("K",)


def test_transpose_and_reshape_are_folded_into_their_consumer():
    m = model([node("Relu", ["x"], ["act"]),
               node("Reshape", ["act", "shape"], ["r"]),
               node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
               node("MatMul", ["t", "w"], ["y"], name="fc")],
              [value("x", [4, 16])], ["y"], [ints("shape", 4, 2, 8), weight("w", 2, 3)])
    graph = import_onnx(m, "g")
    assert [op.name for op in graph.ops] == ["act", "fc"]
    fc = graph.ops[1]
    assert fc.inputs[0] == Operand("act", ("B0", "M", "K"), CHIP)  # the Relu's tensor, seen as [4, 8, 2]
    assert dims(fc) == [("B0", 4), ("M", 8), ("N", 3), ("K", 2)]
    assert graph.dependencies(1) == (0,)
    assert graph.hbm_bytes == 2 * 3 * 2  # the reshape's shape initializer is not data


def test_gemm_with_trans_b_and_a_bias_is_a_dot_then_an_add():
    m = model([node("Gemm", ["a", "b", "c"], ["y"], name="lin", transB=1, alpha=0.5)],
              [value("a", [4, 32])], ["y"], [weight("b", 16, 32), weight("c", 16)])
    graph = import_onnx(m, "g")
    dot, bias = graph.ops
    assert (dot.name, dot.label, bias.name, bias.label) == ("lin", "Dot", "lin.add_bias", "Add")
    assert dims(dot) == [("M", 4), ("N", 16), ("K", 32)]
    assert dot.inputs[1] == Operand("b", ("N", "K"), HBM)
    assert bias.inputs == (Operand("lin", ("D0", "D1"), CHIP), Operand("c", ("D1",), HBM))
    assert graph.total_flops == 2 * 4 * 16 * 32 + 4 * 16
    assert graph.hbm_bytes == (16 * 32 + 16) * 2
    assert graph.dependencies(1) == (0,)


# -- convolutions and pools ------------------------------------------------------------------
def test_conv_is_the_matmul_it_lowers_to_with_a_separate_bias():
    m = model([node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
              [value("x", [2, 3, 16, 16])], ["y"], [weight("w", 8, 3, 3, 3), weight("b", 8)])
    graph = import_onnx(m, "g")
    conv, bias = graph.ops
    assert (conv.kind, conv.reduce, bias.name) == (OpKind.MATMUL, "sum", "conv.add_bias")
    assert dims(conv) == [("N", 2), ("F", 8), ("HO", 16), ("WO", 16), ("C", 3), ("KH", 3), ("KW", 3)]
    assert conv.inputs == (Operand("x", ("N", "C", "HO", "KH", "WO", "KW"), CHIP),
                           Operand("w", ("F", "C", "KH", "KW"), HBM))
    assert conv.output.dims == ("N", "F", "HO", "WO") and conv.contracted_dims == ("C", "KH", "KW")
    assert conv.flops == 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3
    assert bias.inputs[1] == Operand("b", ("D1",), HBM)

    strided = model([node("Conv", ["x", "w"], ["y"], strides=[2, 2])], [value("x", [1, 3, 16, 16])], ["y"],
                    [weight("w", 8, 3, 3, 3)])
    (conv,) = import_onnx(strided, "g").ops
    assert dict(dims(conv))["HO"] == 7 and dict(dims(conv))["WO"] == 7


def test_a_grouped_conv_has_a_group_dim_in_every_operand():
    m = model([node("Conv", ["x", "w"], ["y"], group=2)], [value("x", [1, 4, 6, 6])], ["y"],
              [weight("w", 6, 2, 3, 3)])
    (conv,) = import_onnx(m, "g").ops
    assert dims(conv) == [("N", 1), ("G", 2), ("F", 3), ("HO", 4), ("WO", 4), ("C", 2), ("KH", 3), ("KW", 3)]
    assert [x.dims for x in conv.operands] == [("N", "G", "F", "HO", "WO"),
                                               ("N", "G", "C", "HO", "KH", "WO", "KW"),
                                               ("G", "F", "C", "KH", "KW")]
    assert conv.flops == 2 * 1 * 6 * 4 * 4 * 2 * 3 * 3  # 2 N F HO WO (C / G) KH KW


def test_pools_reduce_over_their_window():
    m = model([node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
               node("GlobalAveragePool", ["p"], ["y"])], [value("x", [1, 4, 8, 8])], ["y"])
    pool, mean = import_onnx(m, "g").ops
    assert (pool.kind, pool.reduce, pool.label) == (OpKind.REDUCE, "max", "MaxPool")
    assert dims(pool) == [("N", 1), ("C", 4), ("HO", 4), ("WO", 4), ("KH", 2), ("KW", 2)]
    assert pool.inputs[0].dims == ("N", "C", "HO", "KH", "WO", "KW")
    assert pool.output.dims == ("N", "C", "HO", "WO")
    assert (mean.reduce, mean.label, mean.inputs[0].tensor) == ("sum", "GlobalAveragePool", "p")
    assert dims(mean) == [("N", 1), ("C", 4), ("HO", 1), ("WO", 1), ("KH", 4), ("KW", 4)]


# -- element-wise ------------------------------------------------------------------------------
def test_elementwise_operators_broadcast_and_read_scalars_as_on_chip_constants():
    m = model([node("Add", ["x", "b"], ["add"]),
               node("Mul", ["add", "s"], ["mul"]),
               node("Neg", ["mul"], ["neg"]),
               scalar_constant("c", 0.5),
               node("Div", ["neg", "c"], ["div"]),
               node("Max", ["div", "mask"], ["y"], name="clamp")],
              [value("x", [4, 8, 16]), value("mask", [4, 1, 16])], ["y"],
              [weight("b", 16), scalar("s", 2.0)])
    graph = import_onnx(m, "g")
    assert [(op.label, op.kind) for op in graph.ops] == [
        ("Add", OpKind.BINARY), ("Multiply", OpKind.BINARY), ("Negative", OpKind.UNARY),
        ("Divide", OpKind.BINARY), ("Maximum", OpKind.BINARY)]
    add, mul, _neg, div, clamp = graph.ops
    assert dims(add) == [("D0", 4), ("D1", 8), ("D2", 16)]
    assert add.inputs == (Operand("x", ("D0", "D1", "D2"), CHIP), Operand("b", ("D2",), HBM))
    assert mul.inputs[1] == Operand("s", (), CHIP) and div.inputs[1] == Operand("c", (), CHIP)
    assert clamp.inputs[1] == Operand("mask", ("D0", "D2"), CHIP)  # size 1 on D1: not indexed
    assert graph.graph_inputs == {"x", "mask", "s", "c"}
    assert graph.hbm_bytes == 16 * 2


def test_an_expanded_input_is_read_at_its_own_size():
    m = model([node("Expand", ["mask", "shape"], ["wide"]),
               node("Add", ["scores", "wide"], ["y"])],
              [value("scores", [2, 4, 3, 8]), value("mask", [2, 1, 1, 8])], ["y"],
              [ints("shape", 2, 4, 3, 8)])
    (add,) = import_onnx(m, "g").ops
    assert add.inputs[1] == Operand("mask", ("D0", "D3"), CHIP)

    along_k = model([node("Expand", ["x", "shape"], ["wide"]), node("MatMul", ["wide", "w"], ["y"])],
                    [value("x", [4, 1])], ["y"], [ints("shape", 4, 8), weight("w", 8, 3)])
    (dot,) = import_onnx(along_k, "g").ops  # a contracted dim is read whole: both inputs index it
    assert dot.inputs[0] == Operand("x", ("M", "K"), CHIP) and dot.contracted_dims == ("K",)


def test_where_reads_its_non_constant_inputs():
    fill = model([helper.make_node("Constant", [], ["low"], value_float=-1e4),
                  node("Where", ["mask", "scores", "low"], ["y"], name="masked")],
                 [value("mask", [2, 1, 8], TensorProto.BOOL), value("scores", [2, 4, 8])], ["y"])
    (op,) = import_onnx(fill, "g").ops
    assert (op.label, op.kind) == ("Where", OpKind.BINARY)
    assert op.inputs == (Operand("mask", ("D0", "D2"), CHIP), Operand("scores", ("D0", "D1", "D2"), CHIP))

    select = model([node("Where", ["mask", "a", "b"], ["y"], name="pick")],
                   [value("mask", [2, 8], TensorProto.BOOL), value("a", [2, 8]), value("b", [2, 8])], ["y"])
    graph = import_onnx(select, "g")
    assert [op.name for op in graph.ops] == ["pick.then", "pick.else"]
    assert [x.tensor for x in graph.ops[1].inputs] == ["pick.then", "b"] and graph.dependencies(1) == (0,)


# -- decompositions that follow the zoo -----------------------------------------------------
def test_softmax_is_the_zoos_four_operators():
    zoo = [op for op in build_graph("tiny", "decode", 4, 64).ops
           if op.name.startswith("layer0.attn.softmax.")]
    shape = [d.length for d in zoo[0].dims]
    m = model([node("Softmax", ["scores"], ["y"], name="softmax", axis=-1)], [value("scores", shape)], ["y"])
    ours = import_onnx(m, "g").ops
    assert [op.name for op in ours] == ["softmax.max", "softmax.exp", "softmax.sum", "softmax.divide"]
    assert [(op.label, op.kind, op.reduce, op.signature) for op in ours] == [
        (op.label, op.kind, op.reduce, op.signature) for op in zoo]


def test_log_softmax_shares_the_softmax_max_exp_and_sum():
    m = model([node("LogSoftmax", ["x"], ["y"], name="lsm", axis=-1)], [value("x", [4, 16])], ["y"])
    graph = import_onnx(m, "g")
    assert [(op.name, op.label, op.kind) for op in graph.ops] == [
        ("lsm.max", "Max", OpKind.REDUCE), ("lsm.exp", "Subtract", OpKind.BINARY),
        ("lsm.sum", "Sum", OpKind.REDUCE), ("lsm.log", "Log", OpKind.UNARY),
        ("lsm.shift", "Add", OpKind.BINARY), ("lsm.subtract", "Subtract", OpKind.BINARY)]
    assert [graph.dependencies(i) for i in range(6)] == [(), (0,), (1,), (2,), (0, 3), (4,)]
    assert dims(graph.ops[3]) == [("D0", 4)] and graph.ops[5].inputs[0].tensor == "x"


@pytest.mark.parametrize("op_type, kind, opset", [("LayerNormalization", "layernorm", 17),
                                                 ("SimplifiedLayerNormalization", "rmsnorm", 17),
                                                 ("RMSNormalization", "rmsnorm", 23)])
def test_normalisations_are_the_zoos_decompositions(op_type, kind, opset):
    g = builders._GraphBuilder()
    builders._norm(g, "ln", {"B": 4, "T": 8}, 64, g.graph_input("x"), kind)
    zoo = g.finish("zoo", 2).ops
    inputs = ["x", "scale", "bias"] if kind == "layernorm" else ["x", "scale"]
    m = model([node(op_type, inputs, ["y"], name="ln", axis=-1, epsilon=1e-5)], [value("x", [4, 8, 64])],
              ["y"], [weight("scale", 64), weight("bias", 64)], opset)
    graph = import_onnx(m, "g")
    assert graph.n_ops == (11 if kind == "layernorm" else 7)
    assert [op.name for op in graph.ops] == [op.name for op in zoo]
    assert [(op.label, op.kind, op.reduce, op.signature) for op in graph.ops] == [
        (op.label, op.kind, op.reduce, op.signature) for op in zoo]
    assert graph.graph_inputs == {"x", "ln.count", "ln.epsilon"}


def test_gather_reads_the_gathered_rows_of_an_hbm_table():
    m = model([node("Gather", ["table", "ids"], ["y"], name="embed", axis=0)],
              [value("ids", [4, 8], TensorProto.INT64)], ["y"], [weight("table", 1000, 64)])
    graph = import_onnx(m, "g")
    (op,) = graph.ops
    assert (op.kind, op.label) == (OpKind.GATHER, "Gather")
    assert dims(op) == [("D0", 4), ("D1", 8), ("D2", 64)]
    assert op.inputs == (Operand("table", ("D0", "D1", "D2"), HBM), Operand("ids", ("D0", "D1"), CHIP))
    assert graph.hbm_bytes == 4 * 8 * 64 * 2  # batch x hidden, not the table


def test_reductions_take_axes_from_attributes_or_inputs_and_may_reduce_to_a_scalar():
    m = model([node("ReduceMean", ["x"], ["mean"], axes=[-1], keepdims=1)], [value("x", [4, 8, 16])],
              ["mean"])
    (op,) = import_onnx(m, "g").ops
    assert (op.kind, op.label, op.reduce) == (OpKind.REDUCE, "ReduceMean", "sum")
    assert op.inputs[0].dims == ("D0", "D1", "D2") and op.output.dims == ("D0", "D1")

    m = model([node("ReduceMax", ["x", "axes"], ["top"], keepdims=0),
               node("ReduceSum", ["top"], ["total"], keepdims=0),
               node("Div", ["total", "n"], ["y"])],
              [value("x", [4, 8, 16])], ["y"], [ints("axes", 1), scalar("n", 512.0)], opset=18)
    top, total, div = import_onnx(m, "g").ops
    assert (top.reduce, top.output.dims) == ("max", ("D0", "D2"))
    assert total.output.dims == () and total.flops == 4 * 16
    assert dims(div) == [("S", 1)] and [x.dims for x in div.inputs] == [(), ()]

    noop = model([node("ReduceSum", ["x"], ["same"], noop_with_empty_axes=1), node("Relu", ["same"], ["y"])],
                 [value("x", [4, 8])], ["y"], opset=18)
    (relu,) = import_onnx(noop, "g").ops
    assert relu.inputs[0].tensor == "x"


def test_shape_computations_make_no_operator():
    m = model([node("Shape", ["x"], ["shape"]),
               node("Gather", ["shape", "two"], ["width"], axis=0),
               node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
               node("Sqrt", ["width_f"], ["root"]),
               node("Div", ["x", "root"], ["scaled"]),
               node("Gather", ["shape", "zero"], ["batch"], axis=0),
               node("Unsqueeze", ["batch", "axis0"], ["batch1"]),
               node("Concat", ["batch1", "minus_one"], ["new_shape"], axis=0),
               node("Reshape", ["scaled", "new_shape"], ["flat"]),
               node("Relu", ["flat"], ["y"])],
              [value("x", [4, 8, 16])], ["y"],
              [scalar("two", 2, np.int64), scalar("zero", 0, np.int64), ints("axis0", 0),
               ints("minus_one", -1)])
    graph = import_onnx(m, "g")
    assert [op.label for op in graph.ops] == ["Divide", "Relu"]
    divide, relu = graph.ops
    assert divide.inputs[1] == Operand("root", (), CHIP) and "root" in graph.graph_inputs
    assert dims(relu) == [("D0", 4), ("D1", 128)] and relu.inputs[0].tensor == "scaled"


# -- KV cache, concat, slice, split ----------------------------------------------------------
def test_concat_onto_a_past_kv_input_is_folded_into_the_hbm_cache():
    m = model([node("MatMul", ["x", "wk"], ["new_key"], name="k_proj"),
               node("Concat", ["past_key", "new_key"], ["present_key"], axis=2),
               node("Transpose", ["present_key"], ["keys_t"], perm=[0, 1, 3, 2]),
               node("MatMul", ["q", "keys_t"], ["scores"], name="scores")],
              [value("x", [2, 4, 1, 16]), value("q", [2, 4, 1, 16]), value("past_key", [2, 4, 31, 16])],
              ["scores", "present_key"], [weight("wk", 16, 16)])
    graph = import_onnx(m, "g")
    scores = graph.ops[1]
    assert scores.label == "BatchMatMul"
    assert scores.inputs[1] == Operand("past_key", ("B0", "B1", "K", "N"), HBM)
    assert dict(dims(scores))["N"] == 32  # the concatenated length
    assert "past_key" not in graph.graph_inputs
    assert graph.hbm_bytes == (16 * 16 + 2 * 4 * 32 * 16) * 2
    cached = import_onnx(m, "g", hbm_inputs=["past_*"]).ops[1].inputs[1]
    assert cached.storage == HBM


def test_concat_of_computed_tensors_folds_into_a_read_of_the_first():
    # rotate_half's concat(-x2, x1): the zoo folds it into the Multiply that reads the Neg
    m = model([node("Relu", ["x"], ["a"]),
               node("Sigmoid", ["z"], ["b"]),
               node("Concat", ["c", "b", "a"], ["cat"], axis=1),
               node("Tanh", ["cat"], ["y"])],
              [value("x", [4, 8]), value("z", [4, 4]), value("c", [4, 2])], ["y"])
    graph = import_onnx(m, "g")
    assert [op.name for op in graph.ops] == ["a", "b", "y"]  # no operator for the concat
    tanh = graph.ops[2]
    assert tanh.inputs == (Operand("b", ("D0", "D1"), CHIP),)  # the first computed input ...
    assert dims(tanh) == [("D0", 4), ("D1", 14)]  # ... at the concatenation's shape
    assert graph.dependencies(2) == (1,)  # the Relu still runs, but nothing reads it
    assert "cat" not in graph.producers() and graph.graph_inputs == {"x", "z"}


def gqa_attention(repeat, batch=2, kv_heads=2, group=4, length=16, d=8):
    """q [B, Hq, 1, D] attending to the caches past_key / past_value [B, Hkv, S, D] (HBM), as
    HF writes it (`repeat`: repeat_kv = Unsqueeze, Expand to the group, Reshape to Hq heads)
    or as the zoo does (q grouped to [B, Hkv, G, 1, D], the caches unsqueezed to broadcast)."""
    heads = kv_heads * group
    nodes, weights = [], [ints("axis2", 2)]
    if repeat:
        for t in ("key", "value"):
            nodes += [node("Unsqueeze", [f"past_{t}", "axis2"], [f"{t}5"]),
                      node("Expand", [f"{t}5", "group"], [f"{t}_wide"]),
                      node("Reshape", [f"{t}_wide", "heads"], [f"{t}s"])]
        nodes += [node("Transpose", ["keys"], ["keys_t"], perm=[0, 1, 3, 2])]
        query, weights = "q", weights + [ints("group", 1, 1, group, 1, 1),
                                         ints("heads", batch, heads, length, d)]
    else:
        nodes += [node("Reshape", ["q", "grouped"], ["q5"]),
                  node("Unsqueeze", ["past_key", "axis2"], ["key5"]),
                  node("Transpose", ["key5"], ["keys_t"], perm=[0, 1, 2, 4, 3]),
                  node("Unsqueeze", ["past_value", "axis2"], ["values"])]
        query, weights = "q5", weights + [ints("grouped", batch, kv_heads, group, 1, d)]
    nodes += [node("MatMul", [query, "keys_t"], ["scores"], name="scores"),
              node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
              node("MatMul", ["probs", "values"], ["context"], name="context")]
    cache = [batch, kv_heads, length, d]
    return model(nodes, [value("q", [batch, heads, 1, d]), value("past_key", cache),
                         value("past_value", cache)], ["context"], weights)


def test_repeat_kv_reads_each_cache_once_the_query_heads_split_into_kv_heads_and_group():
    batch, kv_heads, group, length, d = 2, 2, 4, 16, 8
    repeated, grouped = (import_onnx(gqa_attention(r), "g") for r in (True, False))
    scores, context = (op for op in repeated.ops if op.kind == OpKind.MATMUL)
    # the Expand's group G is a factor of the merged heads axis: that dim splits into (Hkv, G),
    # q and the output index both, the cache only Hkv
    assert dims(scores) == [("B0", batch), ("B1_0", kv_heads), ("B1_1", group), ("M", 1),
                            ("N", length), ("K", d)]
    assert scores.inputs == (Operand("q", ("B0", "B1_0", "B1_1", "M", "K"), CHIP),
                             Operand("past_key", ("B0", "B1_0", "K", "N"), HBM))
    assert scores.output.dims == ("B0", "B1_0", "B1_1", "M", "N") and scores.label == "BatchMatMul"
    assert context.inputs[1] == Operand("past_value", ("B0", "B1_0", "K", "N"), HBM)
    assert context.output.dims == ("B0", "B1_0", "B1_1", "M", "N")
    cache_bytes = batch * kv_heads * length * d * 2
    assert repeated.hbm_bytes == grouped.hbm_bytes == 2 * cache_bytes  # once, not G times
    assert repeated.total_flops == grouped.total_flops == 2 * (2 * batch * kv_heads * group * length * d) \
        + sum(op.flops for op in repeated.ops if op.kind != OpKind.MATMUL)
    # the matmuls are the zoo-style broadcast's, dim for dim: the same plans
    assert [op.signature for op in repeated.ops if op.kind == OpKind.MATMUL] == [
        op.signature for op in grouped.ops if op.kind == OpKind.MATMUL]


def test_an_element_wise_op_splits_a_partly_broadcast_axis_too_unless_the_reshape_is_uneven():
    m = model([node("Expand", ["x", "wide"], ["x_wide"]),  # [3, 1, 5] -> [3, 2, 5]
               node("Reshape", ["x_wide", "merged"], ["x6"]),  # -> [6, 5]: axis 0 is (3, G = 2)
               node("Add", ["x6", "z"], ["y"], name="add"),
               node("Reshape", ["x_wide", "uneven"], ["x2"]),  # -> [2, 15]: 3 x 2 does not split at 2
               node("Add", ["x2", "w"], ["y2"], name="add2")],
              [value("x", [3, 1, 5]), value("z", [6, 5]), value("w", [2, 15])], ["y", "y2"],
              [ints("wide", 3, 2, 5), ints("merged", 6, 5), ints("uneven", 2, 15)])
    add, add2 = import_onnx(m, "g").ops
    assert dims(add) == [("D0_0", 3), ("D0_1", 2), ("D1", 5)]
    assert add.inputs == (Operand("x", ("D0_0", "D1"), CHIP), Operand("z", ("D0_0", "D0_1", "D1"), CHIP))
    assert add.output.dims == ("D0_0", "D0_1", "D1") and add.flops == 6 * 5
    assert add2.inputs[0] == Operand("x", ("D0", "D1"), CHIP)  # read plainly, at [2, 15]


def test_slices_of_hbm_are_folded_slices_on_chip_are_operators_and_splits_are_slices():
    m = model([node("Slice", ["table", "start", "end", "axis0"], ["rows"]),
               node("Add", ["x", "rows"], ["sum"]),
               node("Slice", ["sum", "start", "end", "axis1"], ["left"], name="take"),
               node("Split", ["sum", "halves"], ["s0", "s1"], axis=1),
               node("Mul", ["s0", "s1"], ["prod"]),
               node("Add", ["left", "prod"], ["y"], name="out")],
              [value("x", [8, 16])], ["y"],
              [weight("table", 32, 16), ints("start", 0), ints("end", 8), ints("axis0", 0), ints("axis1", 1),
               ints("halves", 8, 8)], opset=18)
    graph = import_onnx(m, "g")
    add, take, s0, s1, mul, _out = graph.ops
    assert add.inputs[1] == Operand("table", ("D0", "D1"), HBM) and graph.hbm_bytes == 8 * 16 * 2
    assert (take.kind, take.label, dims(take)) == (OpKind.SLICE, "Slice", [("D0", 8), ("D1", 8)])
    assert take.inputs[0] == Operand("sum", ("D0", "D1"), CHIP)
    # a Split of an on-chip tensor is one SLICE per output, each 8 x 8 of the 8 x 16 sum
    for part in (s0, s1):
        assert (part.kind, dims(part), part.inputs[0].tensor) == (OpKind.SLICE, [("D0", 8), ("D1", 8)], "sum")
    assert [x.tensor for x in mul.inputs] == [s0.output.tensor, s1.output.tensor]


# -- names, symbolic dims, errors --------------------------------------------------------------
def test_operator_names_do_not_clash_with_inputs_weights_or_each_other():
    m = model([helper.make_node("Relu", ["x"], ["a"], name="x"),
               helper.make_node("Relu", ["a"], ["b"]),
               helper.make_node("Relu", ["b"], ["y"], name="w")],
              [value("x", [4])], ["y"], [weight("w", 4)])
    assert [op.name for op in import_onnx(m, "g").ops] == ["x_1", "Relu_1", "w_1"]


def test_symbolic_dims_come_from_sizes():
    m = model([node("MatMul", ["x", "w"], ["y"])], [value("x", ["batch", 64])], ["y"], [weight("w", 64, 32)])
    m.graph.output[0].CopyFrom(value("y", ["batch", 32]))
    (op,) = import_onnx(m, "g", sizes={"batch": 4}).ops
    assert dims(op) == [("M", 4), ("N", 32), ("K", 64)]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the caller's model is kept
    with pytest.raises(OnnxImportError, match=r"graph input 'x': symbolic dim 'batch' \(axis 0\) has no "
                                              r"size; set it with \+model.placeholders.batch=<n>"):
        import_onnx(m, "g")


def test_a_value_without_a_static_shape_is_refused_naming_the_node():
    m = model([node("Reshape", ["x", "shape"], ["r"]), node("Relu", ["r"], ["y"], name="act")],
              [value("x", [4, 8]), value("shape", [2], TensorProto.INT64)], ["y"])
    with pytest.raises(OnnxImportError, match=r"node 'act' \(Relu\): value '\w+' has shape \[\?, \?\] "
                                              r"after shape inference; expected a static shape: set "
                                              r"model.placeholders.<dim> .*, or export the model"):
        import_onnx(m, "g")


def test_an_unsupported_op_is_refused_naming_the_node_and_the_supported_types():
    m = model([node("Relu", ["x"], ["a"]), helper.make_node("TopK", ["a", "k"], ["v", "i"], name="top")],
              [value("x", [4, 8])], ["v"], [ints("k", 2)])
    with pytest.raises(OnnxImportError, match=r"node 'top' \(TopK\): op type 'TopK' is not supported; "
                                              r"supported: .*LayerNormalization.*MatMul"):
        import_onnx(m, "g")
    m.graph.node[1].name = ""
    with pytest.raises(OnnxImportError, match=r"node 1 \(TopK\)"):
        import_onnx(m, "g")


def test_a_secondary_output_is_refused():
    m = model([node("MaxPool", ["x"], ["p", "where"], name="pool", kernel_shape=[2, 2]),
               node("Relu", ["where"], ["y"], name="act")], [value("x", [1, 2, 4, 4])], ["y"])
    with pytest.raises(OnnxImportError, match=r"node 'act' \(Relu\): reads 'where', output 1 of node 'pool' "
                                              r"\(MaxPool\), which is not imported"):
        import_onnx(m, "g")


def test_external_weights_need_not_be_present(tmp_path):
    m = model([node("MatMul", ["x", "w"], ["y"])], [value("x", [4, 64])], ["y"],
              [numpy_helper.from_array(np.ones((64, 32), np.float32), "w")])
    onnx.save(m, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.bin", size_threshold=0)
    (tmp_path / "ext.bin").unlink()
    graph = read_onnx(tmp_path / "ext.onnx")
    assert graph.name == "ext" and graph.hbm_bytes == 64 * 32 * 2


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xff not a model")
    with pytest.raises(OnnxImportError, match="junk.onnx: not an ONNX model"):
        read_onnx(tmp_path / "junk.onnx")


@pytest.mark.parametrize("file_name", ["dump.json", "dump.onnx"])
def test_an_einstein_dump_is_refused_with_the_fix(tmp_path, file_name):
    """A .json name makes onnx.load parse JSON (a protobuf ParseError), any other protobuf."""
    path = tmp_path / file_name
    path.write_text('\n  [[0, " - einstein_v2(...)", "Exp", []]]\n')
    with pytest.raises(OnnxImportError, match=rf"{re.escape(file_name)}: not an ONNX model \(.*\); it looks "
                                              r"like JSON: an einstein dump is read with model.format=einstein"):
        load_onnx(path)


@pytest.mark.parametrize("suffix", [".onnx", ".json", ".textproto"])
def test_random_bytes_are_refused_naming_the_file(tmp_path, suffix):
    """The suffix picks onnx.load's reader: protobuf (DecodeError), or text (UnicodeDecodeError)."""
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8).tobytes())
    with pytest.raises(OnnxImportError, match=rf"noise{re.escape(suffix)}: not an ONNX model") as refused:
        load_onnx(path)
    assert "looks like JSON" not in str(refused.value)


def test_an_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")  # parses as an empty ModelProto
    with pytest.raises(OnnxImportError, match=r"empty.onnx: not an ONNX model \(it has no graph\)"):
        load_onnx(tmp_path / "empty.onnx")


# -- a transformer block, end to end ----------------------------------------------------------
def transformer_block(batch=4, seq=16, hidden=64, heads=4):
    """LayerNorm -> q/k/v -> scores -> softmax -> context -> projection -> residual Add."""
    d = hidden // heads
    nodes = [node("LayerNormalization", ["x", "ln_w", "ln_b"], ["h"], name="ln", axis=-1)]
    for p in "qkv":
        nodes += [node("MatMul", ["h", f"w{p}"], [p], name=f"{p}_proj"),
                  node("Reshape", [p, "heads_shape"], [f"{p}4"]),
                  node("Transpose", [f"{p}4"], [f"{p}h"], perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [node("MatMul", ["qh", "kh"], ["scores"], name="scores"),
              node("Div", ["scores", "sqrt_d"], ["scaled"], name="scale"),
              node("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
              node("MatMul", ["probs", "vh"], ["ctx"], name="context"),
              node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              node("Reshape", ["ctx_t", "hidden_shape"], ["ctx2"]),
              node("MatMul", ["ctx2", "wo"], ["o"], name="out_proj"),
              node("Add", ["x", "o"], ["y"], name="residual")]
    weights = [weight("ln_w", hidden), weight("ln_b", hidden),
               *(weight(f"w{p}", hidden, hidden) for p in "qkvo"),
               scalar("sqrt_d", float(d) ** 0.5),
               ints("heads_shape", batch, seq, heads, d), ints("hidden_shape", batch, seq, hidden)]
    return model(nodes, [value("x", [batch, seq, hidden])], ["y"], weights)


def test_a_transformer_block_imports_from_a_file_and_plans(tmp_path):
    onnx.save(transformer_block(), tmp_path / "block.onnx")
    graph = read_onnx(tmp_path / "block.onnx")
    # the q/k/v projections of one input become one Dot and three Slices (onnx_rewrites)
    assert graph.name == "block" and graph.n_ops == 11 + 1 + 3 + 1 + 1 + 4 + 1 + 1 + 1
    labels = [op.label for op in graph.ops if op.kind in (OpKind.MATMUL, OpKind.SLICE)]
    assert labels == ["Dot", "Slice", "Slice", "Slice", "BatchMatMul", "BatchMatMul", "Dot"]
    scores = graph.ops[graph.n_ops - 9]
    assert scores.name == "scores" and dims(scores) == [("B0", 4), ("B1", 4), ("M", 16), ("N", 16), ("K", 16)]
    assert scores.inputs == (Operand("q_proj", ("B0", "B1", "M", "K"), CHIP),
                             Operand("k_proj", ("B0", "B1", "K", "N"), CHIP))
    b, t, h = 4, 16, 64
    assert graph.total_flops > 4 * 2 * b * t * h * h + 2 * 2 * b * t * t * h
    assert graph.hbm_bytes == (4 * h * h + 2 * h) * 2
    chip = Chip(name="pod", n_chips=4)
    options = PlanningOptions(cache_dir=str(tmp_path / "cache"))
    for scheduler in ("static", "elkopt"):
        assert compile_model(graph, chip, scheduler, options).timeline.latency_cycles > 0, scheduler
