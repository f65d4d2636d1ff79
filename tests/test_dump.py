"""Einstein-expression dumps: the zoo's graphs exported and imported back are the same
graphs; bad dumps are refused naming the node and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elkopt.chip import Chip
from elkopt.graph.dump import (
    DumpError, Placeholders, export_einstein, import_einstein, read_einstein, write_einstein,
)
from elkopt.graph.ir import Storage
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model

MODELS = [("tiny", "decode", 4, 64), ("llama2_13b", "decode", 32, 2048), ("opt_30b", "decode", 16, 4096),
          ("gemma2_27b", "decode", 8, 2048), ("dit_xl_2", "forward", 2, 256)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m[0])
def test_a_zoo_graph_exported_and_imported_is_the_same_graph(model):
    graph = build_graph(*model)
    back = import_einstein(json.loads(json.dumps(export_einstein(graph))), graph.name)
    assert back.n_ops == graph.n_ops
    for a, b in zip(graph.ops, back.ops):
        assert (a.signature, a.label, a.kind) == (b.signature, b.label, b.kind), a.name
        assert [x.storage for x in a.inputs] == [x.storage for x in b.inputs], a.name
    assert all(graph.dependencies(i) == back.dependencies(i) for i in range(graph.n_ops))
    assert len(back.graph_inputs) == len(graph.graph_inputs)
    assert sum(op.hbm_bytes(2) for op in back.ops) == sum(op.hbm_bytes(2) for op in graph.ops)


def test_the_reimported_graph_plans_to_the_same_latency(tmp_path):
    graph = build_graph("tiny", "decode", 4, 64)
    back = read_einstein(write_einstein(graph, tmp_path / "tiny.json"))
    assert back.name == "tiny"
    chip = Chip(name="pod", n_chips=4)
    options = PlanningOptions(cache_dir=str(tmp_path / "cache"))
    for scheduler in ("static", "elkopt"):
        ours = compile_model(graph, chip, scheduler, options).timeline.latency_cycles
        theirs = compile_model(back, chip, scheduler, options).timeline.latency_cycles
        assert theirs == ours, scheduler


def node(i, expression, node_type, edges, inputs):
    input_dict = {k: {"dtype": "float32", "shape": v} for k, v in inputs.items()}
    return [i, f' - einstein_v2("{expression}", input_dict={json.dumps(input_dict)}) ', node_type, edges]


def test_weights_parameters_folding_and_where_bounds():
    nodes = [
        [0, " - Parameter x ", "Parameter", []],
        [1, " - Constant w ", "Constant", []],
        node(2, "output0[B, N] +=! input0[B, K] * input1[K, N]", "Dot", [[0, 0], [1, 0]],
             {"input0": [8, 64], "input1": [64, 32]}),
        [3, " - Reshape ", "Reshape", [[2, 0]]],
        node(4, "output0[B, T, N] = input0[B, N] where T in 1", "Convert_like_slice", [[3, 0]],
             {"input0": [8, 32]}),
        node(5, "output0[B, T] >=! input0[B, T, N]", "Max", [[4, 0]], {"input0": [8, 1, 32]}),
    ]
    graph = import_einstein(nodes, "g", elem_bytes=2)
    dot, copy, top = graph.ops
    assert [x.storage for x in dot.inputs] == [Storage.CHIP, Storage.HBM]
    assert dot.dim_lengths == (8, 32, 64) and dot.contracted_dims == ("K",)
    assert copy.inputs[0].tensor == dot.output.tensor  # the Reshape is folded away
    assert copy.dim_lengths == (8, 1, 32) and copy.kind == "slice"  # a bare copy re-lays out
    assert (top.kind, top.reduce) == ("reduce", "max")
    assert graph.graph_inputs == {"n0"} and graph.elem_bytes == 2
    # an input with no node at all is a weight too
    alone = [node(0, "output0[N] = input0[N].call(`exp`)", "Exp", [], {"input0": [16]})]
    [exp] = import_einstein(alone, "g").ops
    assert exp.kind == "unary" and exp.inputs[0].storage == Storage.HBM and exp.hbm_elements == 16


@pytest.mark.parametrize("nodes, message", [
    ({"not": "a list"}, "a dump is a JSON list of nodes"),
    ([[0, "x", "Add"]], r"entry 0: a node is \[id, text, type"),
    ([node(0, "output0[N] = input0[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 0 \(Relu\): input 0 comes from the node itself"),
    ([node(0, "output0[N] = input0[N]", "Relu", [[1, 0]], {"input0": [4]}),
      node(1, "output0[N] = input0[N]", "Relu", [[7, 0]], {"input0": [4]})],
     r"node 0 \(Relu\): input 0 comes from node 1 \(Relu\), which is listed after it \(entry 1, the "
     r"reader is entry 0\) and computes its output"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\): expected '\]' to close the index list of input0 at column \d+"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N + 1] = input0[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\) at column 0: output0 is indexed by N \+ 1; expected plain index names"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N * 2 + K]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\) at column 0: indices \['K', 'N'\] have no length .* expected `where K in <n>`"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N] + input1[N]", "Add", [[0, 0], [0, 0], [0, 0]],
           {"input0": [4], "input1": [4]})],
     r"node 1 \(Add\): edge 2 feeds input2, which input_dict does not list"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N]", "Relu", [[0, 0]], {"input0": [4], "input1": [4]})],
     r"node 1 \(Relu\): input_dict lists input1, which no statement reads"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N]", "Relu", [[0, 1]], {"input0": [4]})],
     r"node 1 \(Relu\): edge 0 reads output 1 of node 0; expected output 0"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "mediate0[N] = input0[N]; output0[N] = mediate1[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\) at column 38: the expression reads mediate1, which is neither in input_dict nor written"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N, M] = input0[N, M]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\) at column 16: input0 has shape \[4\] but 2 indices"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N, M] = input0[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"indices \['M'\] have no length"),
    ([[0, " - Parameter ", "Parameter", []], [1, " - Parameter ", "Parameter", []],
      node(2, "output0[N] = input0[N] + input1[N]", "Add", [[0, 0], [1, 0]], {"input0": [4], "input1": [5]})],
     r"node 2 \(Add\) at column 25: index N has length 4 in input0 and 5 in input1"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] +=! input0[N, K]", "Dot", [[0, 0]], {"input0": [4, 2]})],
     r"node 1 \(Dot\) at column 0: expected `output \+=! a \* b` for a Dot"),
])
def test_bad_dumps_name_the_node_and_what_was_expected(nodes, message):
    with pytest.raises(DumpError, match=message):
        import_einstein(nodes, "g")


def test_a_cut_graph_is_not_exported():
    from elkopt.graph.split import split_large_operators
    graph = build_graph("tiny", "decode", 4, 64)
    cut, report = split_large_operators(graph, 10_000, 0.01, 2, lambda op: 1.0)
    assert report.splits
    with pytest.raises(ValueError, match="before cutting operators into copies"):
        export_einstein(cut)


# -- the published graphs' constructs, one hand-written sample dump each (tests/dumps) ----
DUMPS = Path(__file__).parent / "dumps"


@pytest.mark.parametrize("length, expected, used", [
    (99, 32, {99}), (66, 2048, {66}), (99 * 66, 32 * 2048, {99, 66}),
    (40 * 99, 40 * 32, {99}),  # 3960 is also 60 x 66: the smaller leftover wins
    (2 * 99, 2 * 32, {99}), (66 * 66, 2048 * 2048, {66}),
    (5120, 5120, set()), (128, 128, set()), (1, 1, set()), (0, 0, set()), (11, 11, set()),
])
def test_placeholders_and_their_products_stand_for_sizes(length, expected, used):
    sizes = Placeholders({99: 32, 66: 2048})
    assert sizes(length) == expected
    assert sizes.used == used
    assert Placeholders({99: 99})(99 * 7) == 99 * 7  # a placeholder mapped to itself is left alone


def test_placeholders_refuse_what_cannot_be_a_size():
    with pytest.raises(ValueError, match="placeholder 99 must stand for a positive int"):
        Placeholders({99: 0})
    with pytest.raises(ValueError, match="a placeholder is a size above 1"):
        Placeholders({1: 4})


def test_weights_without_edges_annotations_casts_and_folding():
    graph = read_einstein(DUMPS / "mlp.json")
    assert [(op.label, op.kind) for op in graph.ops] == [
        ("Dot", "matmul"), ("Add", "binary"), ("Erf", "unary"), ("Multiply", "unary"), ("Sum", "reduce")]
    dot, bias, _erf, half, total = graph.ops
    assert [x.storage for x in dot.inputs] == [Storage.CHIP, Storage.HBM]  # input1 has no edge
    assert bias.inputs[1].storage == Storage.HBM and bias.inputs[1].dims == ("N1",)
    assert graph.hbm_bytes == (64 * 256 + 256) * 2
    assert half.inputs[0].tensor == graph.ops[2].output.tensor  # times const(0.5): unary
    # the Convert (with an annotation) and the affine Reshape are folded away
    assert total.inputs[0].tensor == half.output.tensor and total.dim_lengths == (8, 2, 128)
    assert graph.graph_inputs == {"n0"}


def test_element_wise_nodes_of_every_listed_type():
    graph = read_einstein(DUMPS / "elementwise.json")
    assert [(op.label, op.kind.value, len(op.inputs)) for op in graph.ops] == [
        ("Subtract", "binary", 2), ("Divide", "binary", 2), ("Power", "binary", 2), ("Sqrt", "unary", 1),
        ("Negative", "unary", 1), ("Sigmoid", "unary", 1), ("Relu", "unary", 1), ("Tanh", "unary", 1),
        ("Maximum", "binary", 2),
        # three inputs: a chain of two binary operators through an intermediate tensor
        ("FusedMultiplyAdd", "binary", 2), ("FusedMultiplyAdd", "binary", 2)]
    first, second = graph.ops[-2:]
    assert first.output.tensor == second.inputs[0].tensor != second.output.tensor == "n11"
    assert [x.tensor for x in (*first.inputs, second.inputs[1])] == ["n10", "n0", "n1"]


def test_a_multi_statement_softmax_is_the_zoos_four_operators():
    graph = read_einstein(DUMPS / "softmax_basic.json")
    assert [(op.label, op.kind, op.reduce) for op in graph.ops] == [
        ("Max", "reduce", "max"), ("Exp", "binary", None), ("Sum", "reduce", "sum"), ("Divide", "binary", None)]
    assert [graph.dependencies(i) for i in range(4)] == [(), (0,), (1,), (1, 2)]
    assert all(op.dim_lengths == (32, 2048) for op in graph.ops)
    # as in the zoo: exp(x - max) is one binary operator; the row statistics index the rows only
    zoo_softmax = [op for op in build_graph("tiny", "decode", 4, 64).ops if ".softmax." in op.name][:4]
    assert [(op.kind, op.reduce) for op in zoo_softmax] == [(op.kind, op.reduce) for op in graph.ops]
    assert [x.dims for op in graph.ops for x in op.inputs] == [
        ("N0", "N1"), ("N0", "N1"), ("N0",), ("N0", "N1"), ("N0", "N1"), ("N0",)]


def test_slices_and_concatenations():
    graph = read_einstein(DUMPS / "slice_concat.json")
    upper, lower, neg, mul, total = graph.ops
    assert (upper.kind, upper.dim_lengths, upper.inputs[0].tensor) == ("slice", (4, 64), "n0")
    assert lower.dim_lengths == (4, 64)
    # a Concat of computed tensors is folded, as in the zoo's rotary: its consumer reads the
    # first input (at the consumer's own shape); the second input's producer still runs
    assert mul.inputs[0].tensor == neg.output.tensor and mul.dim_lengths == (4, 128)
    assert graph.dependencies(graph.ops.index(mul)) == (graph.ops.index(neg),)
    # a Concat with a Parameter (a cache with the new row appended) folds into it
    assert total.inputs[0].tensor == "n6" and total.dim_lengths == (4, 128, 8)
    assert graph.graph_inputs == {"n0", "n6"}


def test_a_concat_onto_a_kv_cache_needs_no_expression():
    nodes = [[0, " - Parameter token ", "Parameter", []], [1, " - Parameter past_key ", "Parameter", []],
             [2, " - Concat ", "Concat", [[1, 0], [0, 0]]],
             node(3, "output0[B, S] +=! input0[B, D] * input1[B, S, D]", "BatchMatMul", [[0, 0], [2, 0]],
                  {"input0": [2, 8], "input1": [2, 5, 8]})]
    [scores] = import_einstein(nodes, "g").ops
    assert scores.inputs[1].tensor == "n1" and scores.inputs[1].storage == Storage.HBM
    assert scores.hbm_elements == 2 * 5 * 8


def test_a_gather_reads_the_rows_it_looks_up():
    graph = read_einstein(DUMPS / "gather.json")
    gather, square = graph.ops
    assert gather.kind == "gather" and [x.tensor for x in gather.inputs] == ["n0", "n1"]  # index last
    assert gather.inputs[0].storage == Storage.HBM and gather.hbm_elements == 8 * 512
    assert square.kind == "unary"  # input0 * input0 reads one tensor


def test_a_gather_is_exported_and_imported_back():
    back = import_einstein(export_einstein(read_einstein(DUMPS / "gather.json")), "g")
    original = read_einstein(DUMPS / "gather.json")
    assert [op.signature for op in back.ops] == [op.signature for op in original.ops]
    assert "input0[input1[N0], N1]" in export_einstein(original)[2][1]


def test_convolutions_and_pools_are_the_matmuls_and_reductions_they_lower_to():
    graph = read_einstein(DUMPS / "conv_pool.json")
    conv, relu, pool, padded = graph.ops
    assert conv.kind == "matmul" and conv.contracted_dims == ("C", "KH", "KW")
    assert conv.flops == 2 * 2 * 16 * 32 * 32 * 3 * 3 * 3
    assert conv.inputs[0].dims == ("N", "C", "HO", "KH", "WO", "KW")  # window positions counted
    assert conv.inputs[1].storage == Storage.HBM and conv.hbm_elements == 16 * 3 * 3 * 3
    assert relu.kind == "unary"
    assert (pool.kind, pool.reduce, pool.dim_lengths) == ("reduce", "max", (2, 16, 16, 16, 2, 2))
    assert padded.flops == 2 * 2 * 8 * 16 * 16 * 16 * 3 * 3 and padded.inputs[0].tensor == pool.output.tensor


def test_a_decode_step_reads_its_kv_cache_from_hbm_at_the_placeholder_sizes():
    sizes = Placeholders({99: 4, 66: 64})
    graph = read_einstein(DUMPS / "decode_attention.json", placeholders=sizes)
    assert sizes.used == {99, 66}
    _query, scores, *softmax, context, _proj, _residual = graph.ops
    assert len(softmax) == 4
    for bmm, cache in ((scores, "n3"), (context, "n7")):  # the Parameters a BatchMatMul reads
        assert bmm.inputs[1].tensor == cache and bmm.inputs[1].storage == Storage.HBM
        assert bmm.hbm_elements == 4 * 4 * 64 * 128
    assert softmax[0].dim_lengths == (4 * 4, 64)  # 396 = 4 x 99 rows of 66 keys
    assert graph.graph_inputs == {"n0"}
    raw = read_einstein(DUMPS / "decode_attention.json")  # no placeholders: sizes as written
    assert raw.ops[1].hbm_elements == 99 * 4 * 66 * 128


@pytest.mark.parametrize("index, shape, expected", [
    ("N + 3", [10], 7), ("N - 3", [10], 13), ("N * 2", [10], 5), ("N / 4, N % 4", [3, 4], 12),
    ("N // 99", [2], 2 * 5 * 99 // 99), ("(N + 1) * 2", [10], 4),
])
def test_lengths_follow_from_affine_indices(index, shape, expected):
    dump = [[0, " - Parameter ", "Parameter", []],
            node(1, f"output0[N] = input0[{index}]", "Slice", [[0, 0]], {"input0": shape})]
    [op] = import_einstein(dump, "g", placeholders={99: 5}).ops
    assert op.dim_lengths == (expected,)


@pytest.mark.parametrize("path", sorted(DUMPS.glob("*.json")), ids=lambda p: p.stem)
def test_every_sample_dump_plans(path, tmp_path):
    graph = read_einstein(path, placeholders={99: 4, 66: 64})
    chip = Chip(name="pod", n_chips=4)
    result = compile_model(graph, chip, "elkopt", PlanningOptions(cache_dir=str(tmp_path / "cache")))
    ms = result.timeline.latency_cycles * 1e3 / chip.clock_hz
    assert 0 < result.references["lower_bound"] <= ms * (1 + 1e-9)
