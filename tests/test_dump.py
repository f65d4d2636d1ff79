"""Einstein-expression dumps: the zoo's graphs exported and imported back are the same
graphs; bad dumps are refused naming the node and what was expected."""

from __future__ import annotations

import json

import pytest

from elkopt.chip import Chip
from elkopt.graph.dump import DumpError, export_einstein, import_einstein, read_einstein, write_einstein
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
    ([node(0, "output0[N] = input0[N]", "Relu", [[4, 0]], {"input0": [4]})],
     r"node 0 \(Relu\): input 0 comes from node 4, which is not listed before it"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\): expected '\]' to close the index list of input0 at column \d+"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N + 1] = input0[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\): output0 is indexed by N \+ 1; expected plain index names"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] = input0[N * 2 + K]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\): indices \['K', 'N'\] have no length .* expected `where K in <n>`"),
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
     r"node 1 \(Relu\): the expression reads mediate1, which is neither in input_dict nor written"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N, M] = input0[N, M]", "Relu", [[0, 0]], {"input0": [4]})],
     r"node 1 \(Relu\): input0 has shape \[4\] but 2 indices"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N, M] = input0[N]", "Relu", [[0, 0]], {"input0": [4]})],
     r"indices \['M'\] have no length"),
    ([[0, " - Parameter ", "Parameter", []], [1, " - Parameter ", "Parameter", []],
      node(2, "output0[N] = input0[N] + input1[N]", "Add", [[0, 0], [1, 0]], {"input0": [4], "input1": [5]})],
     r"index N has length 4 in input0 and 5 in input1"),
    ([[0, " - Parameter ", "Parameter", []],
      node(1, "output0[N] +=! input0[N, K]", "Dot", [[0, 0]], {"input0": [4, 2]})],
     r"node 1 \(Dot\): expected `output \+=! a \* b` for a Dot"),
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
