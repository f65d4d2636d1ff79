"""Rewrites of exported graphs (elkopt.graph.onnx_rewrites) and onnxruntime's fused operators
(elkopt.graph.onnx_contrib): small models built with onnx.helper, imported, with the operators,
FLOPs and HBM bytes worked out by hand."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from elkopt.graph.ir import OpKind
from elkopt.graph.onnx_graph import import_onnx

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def value(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def weight(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def scalar(name, number):
    return numpy_helper.from_array(np.array(number, np.float32), name)


def ints(name, *values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, [value(o, None) for o in outputs], list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets)


def node(op_type, inputs, outputs, **attributes):
    return helper.make_node(op_type, inputs, outputs, name=outputs[0], **attributes)


def kinds(graph):
    return [(op.kind, op.label) for op in graph.ops]


def test_a_mask_built_from_the_attention_mask_is_one_on_chip_input():
    # (1 - mask) * -10000, added to the scores: the mask's three nodes make no operator
    m = model([node("Cast", ["attention_mask"], ["m_f"], to=F),
               node("Sub", ["one", "m_f"], ["inverted"]),
               node("Mul", ["inverted", "big"], ["bias"]),
               node("Add", ["scores", "bias"], ["y"])],
              [value("scores", [2, 4]), value("attention_mask", [2, 4], I64)], ["y"],
              [scalar("one", 1.0), scalar("big", -1e4)])
    graph = import_onnx(m, "g")
    (add,) = graph.ops
    assert kinds(graph) == [(OpKind.BINARY, "Add")]
    assert [x.tensor for x in add.inputs] == ["scores", "bias"] and "bias" in graph.graph_inputs
    assert graph.hbm_bytes == 0 and add.flops == 8


def test_rotary_tables_computed_from_positions_are_read_from_hbm_once_for_the_batch():
    # cos(position * inv_freq), duplicated to the head dim: a [2, 8] table, whose rows are the
    # same for both requests (one KV length for the batch): 8 elements read by the Mul
    m = model([node("Cast", ["position_ids"], ["p"], to=F),
               node("Mul", ["p", "inv_freq"], ["angles"]),
               node("Concat", ["angles", "angles"], ["both"], axis=-1),
               node("Cos", ["both"], ["cos"]),
               node("Mul", ["x", "cos"], ["y"])],
              [value("x", [2, 8]), value("position_ids", [2, 1], I64)], ["y"], [weight("inv_freq", 4)])
    graph = import_onnx(m, "g", elem_bytes=2)
    (mul,) = graph.ops
    assert mul.inputs[1].tensor == "cos" and mul.inputs[1].storage.value == "hbm"
    assert mul.elements(mul.inputs[0]) == 2 * 8 and graph.hbm_bytes == 1 * 8 * 2


def test_the_nan_guard_after_a_softmax_is_dropped():
    m = model([node("Softmax", ["s"], ["p"], axis=-1),
               node("IsNaN", ["p"], ["nan"]),
               node("Where", ["nan", "zero", "p"], ["guarded"]),
               node("MatMul", ["guarded", "v"], ["y"])],
              [value("s", [4, 8]), value("v", [8, 16])], ["y"], [scalar("zero", 0.0)])
    graph = import_onnx(m, "g")
    labels = [op.label for op in graph.ops]
    assert labels == ["Max", "Subtract", "Sum", "Divide", "Dot"]
    assert graph.ops[-1].inputs[0].tensor == graph.ops[3].output.tensor


def test_operand_scales_move_to_the_matmul_output_and_the_cache_is_read_once():
    # torch's scaled-dot-product attention: q * sqrt(s) @ (k^T * sqrt(s)); k is an HBM cache
    m = model([node("Mul", ["q", "root"], ["q_scaled"]),
               node("Transpose", ["past_key"], ["k_t"], perm=[0, 2, 1]),
               node("Mul", ["k_t", "root"], ["k_scaled"]),
               node("MatMul", ["q_scaled", "k_scaled"], ["scores"]),
               node("Relu", ["scores"], ["y"])],
              [value("q", [4, 1, 16]), value("past_key", [4, 8, 16])], ["y"], [scalar("root", 0.5)])
    graph = import_onnx(m, "g", elem_bytes=2)
    matmul, scale, relu = graph.ops
    assert (matmul.kind, scale.label, relu.label) == (OpKind.MATMUL, "Multiply", "Relu")
    assert matmul.inputs[0].tensor == "q" and matmul.inputs[1].tensor == "past_key"
    assert matmul.flops == 2 * 4 * 8 * 16 and scale.flops == 4 * 8  # the scores, scaled once
    assert graph.hbm_bytes == 4 * 8 * 16 * 2


def test_a_scale_on_q_alone_stays_where_the_scores_are_larger():
    # OPT scales q [4, 1, 16] (64 elements); the scores [4, 1, 32] (128) would cost more
    m = model([node("Mul", ["q", "inv_root"], ["q_scaled"]),
               node("MatMul", ["q_scaled", "k_t"], ["scores"])],
              [value("q", [4, 1, 16]), value("k_t", [4, 16, 32])], ["scores"], [scalar("inv_root", 0.25)])
    graph = import_onnx(m, "g")
    assert [op.label for op in graph.ops] == ["Multiply", "BatchMatMul"] and graph.ops[0].flops == 64


def test_sibling_projections_become_one_matmul_and_slices():
    m = model([node("MatMul", ["x", "w_q"], ["q"]),
               node("MatMul", ["x", "w_k"], ["k"]),
               node("MatMul", ["x", "w_v"], ["v"]),
               node("Concat", ["q", "k", "v"], ["qkv"], axis=-1),
               node("Relu", ["qkv"], ["y"])],
              [value("x", [2, 8])], ["y"], [weight("w_q", 8, 8), weight("w_k", 8, 4), weight("w_v", 8, 4)])
    graph = import_onnx(m, "g", elem_bytes=2)
    fused, *slices = [op for op in graph.ops if op.label != "Relu"]
    assert fused.kind == OpKind.MATMUL and [d.length for d in fused.dims][-2:] == [16, 8]
    expected = [(OpKind.SLICE, 16), (OpKind.SLICE, 8), (OpKind.SLICE, 8)]  # 2 x 8, 2 x 4, 2 x 4
    assert [(op.kind, op.elements(op.output)) for op in slices] == expected
    assert graph.hbm_bytes == 8 * 16 * 2 and fused.flops == 2 * 2 * 16 * 8


def test_gelu_in_tanh_form_is_the_zoos_sigmoid_and_multiply():
    # GPT-2: 0.5 * x * (1 + tanh(0.79788 * (x + 0.044715 * x^3)))
    m = model([node("Mul", ["x", "half"], ["x_half"]),
               node("Pow", ["x", "three"], ["cube"]),
               node("Mul", ["cube", "c1"], ["cube_c"]),
               node("Add", ["x", "cube_c"], ["inner"]),
               node("Mul", ["inner", "c2"], ["scaled"]),
               node("Tanh", ["scaled"], ["t"]),
               node("Add", ["t", "one"], ["t1"]),
               node("Mul", ["x_half", "t1"], ["y"])],
              [value("x", [2, 32])], ["y"],
              [scalar("half", 0.5), scalar("three", 3.0), scalar("c1", 0.044715), scalar("c2", 0.79788),
               scalar("one", 1.0)])
    graph = import_onnx(m, "g")
    assert kinds(graph) == [(OpKind.UNARY, "Sigmoid"), (OpKind.BINARY, "Multiply")]
    assert graph.total_flops == 2 * 64


def test_an_embedding_lookup_by_the_token_ids_is_folded_like_the_zoos():
    m = model([node("Reshape", ["input_ids", "flat"], ["ids"]),
               node("Gather", ["embed", "ids"], ["tokens"]),
               node("MatMul", ["tokens", "w"], ["y"])],
              [value("input_ids", [2, 1], I64)], ["y"], [weight("embed", 100, 8), weight("w", 8, 4), ints("flat", 2)])
    graph = import_onnx(m, "g", elem_bytes=2)
    (dot,) = graph.ops
    assert dot.inputs[0].tensor == "tokens" and "tokens" in graph.graph_inputs
    assert graph.hbm_bytes == 8 * 4 * 2  # the projection's weight only, not the table


def test_skip_layer_normalization_is_bias_skip_and_the_zoos_layernorm():
    contrib = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"],
                                ["y", "", "", "sum"], name="sln", domain="com.microsoft", epsilon=1e-5)]
    m = model(contrib + [node("Add", ["y", "sum"], ["out"])],
              [value("x", [2, 16]), value("skip", [2, 16])], ["out"],
              [weight("gamma", 16), weight("beta", 16), weight("bias", 16)], domains=["com.microsoft"])
    graph = import_onnx(m, "g", elem_bytes=2)
    labels = [op.label for op in graph.ops]
    # bias and skip Adds, then the 11 operators of the zoo's LayerNorm, then the reader of both outputs
    assert labels[:2] == ["Add", "Add"] and len(labels) == 2 + 11 + 1
    assert graph.ops[-1].inputs[1].tensor == graph.ops[1].output.tensor  # the residual sum is output 3
    assert graph.hbm_bytes == 3 * 16 * 2


def test_quick_and_fast_gelu_are_the_zoos_two_operators():
    m = model([helper.make_node("QuickGelu", ["x"], ["a"], name="quick", domain="com.microsoft", alpha=1.0),
               helper.make_node("FastGelu", ["a", "bias"], ["y"], name="fast", domain="com.microsoft")],
              [value("x", [2, 16])], ["y"], [weight("bias", 16)], domains=["com.microsoft"])
    graph = import_onnx(m, "g")
    assert [op.label for op in graph.ops] == ["Sigmoid", "Multiply", "Add", "Sigmoid", "Multiply"]


# -- onnxruntime's fused attention (elkopt.graph.onnx_attention) ---------------------------------
MS = "com.microsoft"
I32 = TensorProto.INT32


def test_group_query_attention_reads_the_cache_once_at_the_total_length():
    # 4 query heads of 16 on 2 KV heads, batch 2, one new token after 8 cached ones
    gqa = helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_key", "past_value", "seqlens", "total"],
                           ["context", "present_key", "present_value"], name="gqa", domain=MS,
                           num_heads=4, kv_num_heads=2)
    m = model([gqa, node("MatMul", ["context", "w"], ["y"])],
              [value("q", [2, 1, 64]), value("k", [2, 1, 32]), value("v", [2, 1, 32]),
               value("past_key", [2, 2, 8, 16]), value("past_value", [2, 2, 8, 16]), value("seqlens", [2], I32),
               value("total", [], I32)], ["y"], [weight("w", 64, 64)], domains=[MS])
    graph = import_onnx(m, "g", elem_bytes=2)
    labels = [op.label for op in graph.ops]
    assert labels == ["BatchMatMul", "Divide", "Add", "Max", "Subtract", "Sum", "Divide", "BatchMatMul", "Dot"]
    scores, context = graph.ops[0], graph.ops[7]
    assert scores.flops == context.flops == 2 * 2 * 4 * 1 * 9 * 16  # B x Hq x T x (8 + 1) x D, twice
    cache = 2 * 2 * 9 * 16 * 2  # each cache read once (not per query head), at past + new positions
    assert graph.hbm_bytes == 2 * cache + 64 * 64 * 2


def test_packed_group_query_attention_with_rotary_is_the_zoos_attention():
    gqa = helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_key", "past_value", "seqlens", "total",
                                                   "cos_cache", "sin_cache"],
                           ["context", "present_key", "present_value"], name="gqa", domain=MS,
                           num_heads=4, kv_num_heads=2, do_rotary=1)
    m = model([gqa], [value("qkv", [2, 1, 128]), value("past_key", [2, 2, 8, 16]), value("past_value", [2, 2, 8, 16]),
                      value("seqlens", [2], I32), value("total", [], I32)], ["context"],
              [weight("cos_cache", 512, 8), weight("sin_cache", 512, 8)], domains=[MS])
    graph = import_onnx(m, "g", elem_bytes=2)
    kinds = [op.kind for op in graph.ops]
    # q, k, v slices; the rotary of q and of k (6 each); scores, scale, mask, softmax (4), context
    assert kinds[:3] == [OpKind.SLICE] * 3 and len(kinds) == 3 + 12 + 8
    assert [op.name for op in graph.ops[:3]] == ["gqa.q", "gqa.k", "gqa.v"]
    rotary_reads = 4 * 1 * 16 * 2  # cos and sin for q and k: T x D each, as the zoo's rope.cos/sin
    assert graph.hbm_bytes == 2 * (2 * 2 * 9 * 16 * 2) + rotary_reads


def test_causal_multi_head_attention_without_a_cache_attends_on_chip():
    mha = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["context"], name="mha", domain=MS, num_heads=4,
                           unidirectional=1)
    m = model([mha], [value("q", [2, 6, 64]), value("k", [2, 6, 64]), value("v", [2, 6, 64])], ["context"],
              domains=[MS])
    graph = import_onnx(m, "g")
    assert [op.label for op in graph.ops] == ["BatchMatMul", "Divide", "Add", "Max", "Subtract", "Sum", "Divide",
                                              "BatchMatMul"]
    assert graph.hbm_bytes == 0 and graph.ops[0].flops == 2 * 2 * 4 * 6 * 6 * 16


def test_rotary_embedding_is_the_zoos_six_operators():
    rope = helper.make_node("RotaryEmbedding", ["x", "positions", "cos_cache", "sin_cache"], ["y"], name="rope",
                            domain=MS, num_heads=4)
    m = model([rope], [value("x", [2, 1, 64]), value("positions", [2, 1], I64)], ["y"],
              [weight("cos_cache", 512, 8), weight("sin_cache", 512, 8)], domains=[MS])
    graph = import_onnx(m, "g", elem_bytes=2)
    assert [op.label for op in graph.ops] == ["Multiply", "Slice", "Slice", "Negative", "Multiply", "Add"]
    assert graph.hbm_bytes == 2 * 1 * 16 * 2
