"""Dumps in the published graphs' own style (tests/dumps: prefill_attention, repeated_ids,
gather_infix; hand-written): missing source nodes, broadcasts, repeated ids, infix gathers,
and a prefill graph read as one decode step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elkopt.chip import Chip
from elkopt.graph.dump import DumpError, PrefillDecode, import_dump, read_dump
from elkopt.graph.ir import Storage
from elkopt.pipeline import PlanningOptions, compile_model

DUMPS = Path(__file__).parent / "dumps"
SIZES = {99: 4, 66: 64}  # batch 4; 66 is the KV length of a decode step, or the sequence


def by_name(graph):
    return {op.name: op for op in graph.ops}


@pytest.fixture(scope="module")
def decode():
    return read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64))


def test_a_prefill_graph_read_as_a_decode_step_by_the_published_rule(decode):
    graph, notes = decode.graph, decode.notes
    ops = by_name(graph)
    assert graph.n_ops == 21  # 22 operator nodes, the embedding gather dropped
    assert (notes.decode_from_prefill, notes.attention_matmuls, notes.dropped_gathers) == ("published", 2, 1)
    assert "n14" in graph.graph_inputs  # the gathered embeddings are the step's input
    # the token is 1; the Dot drops it, as the published parser does
    assert ops["n28.Dot"].dim_lengths == (4, 192, 64)
    assert ops["n17.Multiply"].dim_lengths == (4, 1, 64)
    # q x K^T and P x V read K and V caches of 64 positions from HBM, not this step's K, V
    scores, context = ops["n36.BatchMatMul"], ops["n48.BatchMatMul"]
    assert scores.dim_lengths == (4, 2, 1, 64, 32) and context.dim_lengths == (4, 2, 1, 32, 64)
    for bmm in (scores, context):
        cache = bmm.inputs[1]
        assert cache.storage == Storage.HBM and cache.tensor == f"{bmm.output.tensor}.cache"
        assert bmm.hbm_elements == 4 * 2 * 64 * 32
    assert scores.inputs[0].tensor == "n29"  # the query slice, read through the reshapes
    # the published rule: scale, mask and softmax between them see [B, H, 1, 1]
    for name in ("n38.Divide", "n41.Add", "n42.SoftmaxBasic", "n43.SoftmaxBasic", "n45.SoftmaxBasic"):
        assert ops[name].dim_lengths == (4, 2, 1, 1), name
    assert notes.sizes == {"99": 4, "66": 1, "66 (KV)": 64}


def test_inputs_from_outside_the_graph_are_what_their_first_reader_makes_them(decode):
    graph, notes = decode.graph, decode.notes
    ops = by_name(graph)
    norm_weight = ops["n27.Multiply"].inputs[0]  # [64] broadcast over batch and tokens
    assert (norm_weight.tensor, norm_weight.dims, norm_weight.storage) == ("n6", ("N2",), Storage.HBM)
    mean = ops["n19.Divide"].inputs[1]  # a broadcast scalar: no dims, on chip
    assert (mean.tensor, mean.dims, mean.storage) == ("n7", (), Storage.CHIP)
    mask = ops["n41.Add"].inputs[1]  # [99, 66, 66] broadcast over the heads: the step's mask
    assert (mask.tensor, mask.dims, mask.storage) == ("n90", ("N0", "N2", "N3"), Storage.CHIP)
    qkv = ops["n28.Dot"].inputs[1]  # a Concat of three transposed weights: the first, whole
    assert (qkv.tensor, qkv.storage) == ("n1", Storage.HBM) and ops["n28.Dot"].hbm_elements == 64 * 192
    assert notes.outside == {"weights": 3, "kv_caches": 2, "step_inputs": 1, "constants": 3}
    assert notes.missing_nodes == 11 and notes.folded == 22 and notes.nodes == 44
    assert {"n7", "n8", "n9", "n90"} <= graph.graph_inputs


def test_the_totals_of_the_decode_step(decode):
    graph = decode.graph
    elementwise = 5 * 4 * 64 + 3 * 4 + 6 * 4 * 2  # [B, 1, H] x5, [B, 1] x3, [B, H, 1, 1] x6
    matmuls = 2 * 4 * (192 * 64 + 2 * 64 * 32 + 2 * 32 * 64 + 64 * 64)
    assert graph.total_flops == elementwise + matmuls
    weights = 64 + 64 * 192 + 64 * 64
    caches = 2 * 4 * 2 * 64 * 32
    assert graph.hbm_bytes == 2 * (weights + caches)


def test_the_exact_rule_sizes_the_softmax_path_by_the_kv_length():
    read = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64, "exact"))
    ops = by_name(read.graph)
    for name in ("n38.Divide", "n41.Add", "n42.SoftmaxBasic", "n43.SoftmaxBasic", "n44.SoftmaxBasic",
                 "n45.SoftmaxBasic"):
        assert ops[name].dim_lengths == (4, 2, 1, 64), name
    assert ops["n41.Add"].elements(ops["n41.Add"].inputs[1]) == 4 * 1 * 64  # the mask of one token
    assert ops["n42.SoftmaxBasic"].output.dims == ("N0", "N1", "N2")  # the max over the keys
    assert read.notes.decode_from_prefill == "exact"
    published = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64))
    assert [op.name for op in read.graph.ops] == [op.name for op in published.graph.ops]
    assert read.graph.hbm_bytes == published.graph.hbm_bytes


def test_the_same_dump_read_as_written_is_a_forward_pass():
    sizes = {99: 2, 66: 8}
    read = read_dump(DUMPS / "prefill_attention.json", placeholders=sizes)
    ops = by_name(read.graph)
    assert read.graph.n_ops == 22 and read.notes.decode_from_prefill is None
    gather = ops["n14.GatherV2"]  # `input0[G3, N2] g input1[N0, N1]`: rows looked up per token
    assert gather.kind == "gather" and gather.dim_lengths == (2, 8, 64)
    assert [(x.tensor, x.storage) for x in gather.inputs] == [("n4", Storage.HBM), ("n5", Storage.CHIP)]
    scores = ops["n36.BatchMatMul"]  # attends to this step's own keys, on chip
    assert scores.dim_lengths == (2, 2, 8, 8, 32) and scores.inputs[1].tensor == "n30"
    assert all(x.storage == Storage.CHIP for x in scores.inputs)
    assert ops["n42.SoftmaxBasic"].dim_lengths == (2, 2, 8, 8)
    assert ops["n28.Dot"].dim_lengths == (2, 8, 192, 64)


def test_repeated_ids_are_operators_of_their_own_and_an_edge_names_the_latest():
    read = read_dump(DUMPS / "repeated_ids.json", placeholders=SIZES)
    graph, notes = read.graph, read.notes
    assert [op.name for op in graph.ops] == ["n2.Dot", "n3.Add", "n2@3.Dot", "n3@4.Add", "n4.Dot"]
    assert [[x.tensor for x in op.inputs] for op in graph.ops] == [
        ["n101", "n100"], ["n2", "n101"], ["n3", "n100"], ["n2@3", "n3"], ["n3@4", "n102"]]
    assert [graph.dependencies(i) for i in range(5)] == [(), (0,), (1,), (1, 2), (3,)]
    # node 4 reads node 5 (a transposed weight) listed after it
    assert graph.ops[4].inputs[1].storage == Storage.HBM and graph.ops[4].dim_lengths == (4, 16, 64)
    assert (notes.repeated_ids, notes.repeated_entries, notes.forward_references) == (2, 2, 1)
    summary = notes.summary()
    assert "2 ids listed more than once (2 extra entries" in summary
    assert "1 edges to data movement listed after its reader" in summary


def test_both_infix_gathers():
    read = read_dump(DUMPS / "gather_infix.json", placeholders={99: 2, 66: 8})
    lookup, tanh, pick, head = read.graph.ops
    assert lookup.kind == "gather" and lookup.dim_lengths == (2, 8, 32)
    assert lookup.inputs[0].storage == Storage.HBM and lookup.hbm_elements == 2 * 8 * 32
    # `input0[N0, G3, N1] g input1[N2]`: one position picked, its length-1 index is no loop
    assert pick.kind == "gather" and pick.dim_lengths == (2, 32)
    assert pick.inputs[0].tensor == tanh.output.tensor and pick.inputs[1].dims == ()
    assert head.dim_lengths == (2, 10, 32) and head.inputs[0].tensor == pick.output.tensor


def test_named_and_bare_source_nodes():
    def dot(i, edges):
        text = (' - einstein_v2(" output0[N0, N1] +=! input0[N0, N2] * input1[N2, N1]; ", input_dict={ '
                '"input0" : { "dtype" : "float32", "shape" : [99, 64]} , '
                '"input1" : { "dtype" : "float32", "shape" : [64, 8]} })  ')
        return [i, text, "Dot", edges]
    # the published opt files keep their source nodes, bare: a Parameter may be a weight
    bare = [[0, "", "Parameter", []], [1, "", "Parameter", []], dot(2, [[0, 0], [1, 0]])]
    [op] = import_dump(bare, "g", placeholders=None).graph.ops
    assert [x.storage for x in op.inputs] == [Storage.HBM, Storage.HBM]  # no placeholder: both weights
    [op] = import_dump(bare, "g", placeholders=_sizes()).graph.ops
    assert [x.storage for x in op.inputs] == [Storage.CHIP, Storage.HBM]  # [99, 64] holds the batch
    # a named Parameter is an on-chip input whatever its shape (the exporter's convention)
    named = [[0, " - Parameter x ", "Parameter", []], [1, "", "Constant", []], dot(2, [[0, 0], [1, 0]])]
    [op] = import_dump(named, "g").graph.ops
    assert [x.storage for x in op.inputs] == [Storage.CHIP, Storage.HBM]


def _sizes():
    from elkopt.graph.dump import Placeholders
    return Placeholders(SIZES)


def test_a_decode_step_dump_is_read_as_written_and_a_prefill_attention_is_converted():
    def bmm(query):
        text = (' - einstein_v2(" output0[B0, N, M] +=! input0[B0, N, K] * input1[B0, K, M]; ", input_dict={ '
                f'"input0" : {{ "dtype" : "float32", "shape" : [396, {query}, 128]}} , '
                '"input1" : { "dtype" : "float32", "shape" : [396, 128, 66]} })  ')
        return [[1, text, "BatchMatMul", [[3, 0], [2, 0]]]]
    # one token attending to a cache from outside the graph: a decode step as it is
    step = import_dump(bmm(1), "g", placeholders=_sizes(), decode=PrefillDecode(64))
    assert step.graph.ops[0].dim_lengths == (16, 1, 64, 128) and step.notes.decode_from_prefill is None
    # 66 queries: a prefill attention, whose decode step has one (the published parser's
    # reading of prefill_kv.json)
    prefill = import_dump(bmm(66), "g", placeholders=_sizes(), decode=PrefillDecode(64))
    [op] = prefill.graph.ops
    assert op.dim_lengths == (16, 1, 64, 128) and prefill.notes.decode_from_prefill == "published"
    assert op.inputs[1].storage == Storage.HBM and op.inputs[1].tensor == "n2"


def test_a_truncated_dump_names_the_entry_and_the_position(tmp_path):
    text = (DUMPS / "repeated_ids.json").read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('[4, " - einstein') + 60])
    with pytest.raises(DumpError, match=r"cut.json: not JSON \(.*\) at line 7 column \d+, in the entry of node 4"):
        read_dump(cut)


def node(i, expression, node_type, edges, inputs):
    input_dict = {k: {"dtype": "float32", "shape": v} for k, v in inputs.items()}
    return [i, f' - einstein_v2("{expression}", input_dict={json.dumps(input_dict)}) ', node_type, edges]


def test_a_folded_node_that_does_not_fit_its_input_is_refused():
    nodes = [node(0, "output0[N0, N1] = input0[N1] where N0 in 4", "Broadcast", [[9, 0]], {"input0": [8]}),
             node(1, "output0[N1, N0, N2] = input0[N0, N1, N2]", "Reshape", [[0, 0]], {"input0": [4, 8, 2]}),
             node(2, "output0[N0] +=! input0[N0, N1, N2]", "Sum", [[1, 0]], {"input0": [8, 4, 2]})]
    with pytest.raises(DumpError, match=r"node 1 \(Reshape\): input0 is read with 3 indices, but the node it "
                                        r"comes from writes 2 axes"):
        import_dump(nodes, "g")
    nodes[1] = node(1, "output0[N0, N1, N2] = input0[N0, N1, N2].call(`exp`)", "Exp", [[0, 0]],
                    {"input0": [4, 8, 2]})
    with pytest.raises(DumpError, match=r"node 1 \(Exp\): input0 has shape \[4, 8, 2\], but node 0 \(data "
                                        r"movement\), which feeds it, writes 2 axes"):
        import_dump(nodes, "g")


@pytest.mark.parametrize("rule", ["published", "exact"])
def test_the_decode_step_plans(rule, tmp_path):
    graph = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64, rule)).graph
    chip = Chip(name="pod", n_chips=4)
    result = compile_model(graph, chip, "elkopt", PlanningOptions(cache_dir=str(tmp_path / "cache")))
    ms = result.timeline.latency_cycles * 1e3 / chip.clock_hz
    assert 0 < result.references["lower_bound"] <= ms * (1 + 1e-9)
    assert result.graph.n_ops >= 21


def test_a_published_graph_file_stands_beside_the_published_numbers_only_as_the_parser_reads_it():
    from elkopt.app import RunInputs, published_model
    from elkopt.config import Workload, WorkloadKind
    from elkopt.graph.dump import ImportNotes
    from elkopt.published import PUBLISHED_GRAPHS
    digest = next(d for d, model in PUBLISHED_GRAPHS.items() if model == "llama2_13b")
    graph = read_dump(DUMPS / "repeated_ids.json").graph
    workload = Workload(WorkloadKind.DECODE, 32, 2048)

    def inputs(sha, rule):
        return RunInputs("llama2-13", workload, Chip(name="pod", n_chips=4), graph, source="llama2-13.json",
                         source_sha256=sha, notes=ImportNotes(decode_from_prefill=rule))
    assert published_model(inputs(digest, "published")) == "llama2_13b"
    assert published_model(inputs(digest, "exact")) is None  # not the graph the numbers are for
    assert published_model(inputs("0" * 64, "published")) is None  # another file of that name


def test_the_published_graph_rules():
    from elkopt.conventions import Conventions
    published = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64),
                          conventions=Conventions.published())
    plain = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64))
    ops = by_name(published.graph)

    def storage(name):
        return [(x.tensor, x.storage) for x in ops[name].inputs]
    # reload_activations: only the previous operator's output and inputs stay on chip
    assert storage("n17.Multiply") == [("n14", Storage.CHIP)] * 2  # the dropped gather counts as one
    assert storage("n53.Add") == [("n14.reload", Storage.HBM), ("n52", Storage.CHIP)]  # the residual
    assert storage("n26.Divide")[0] == ("n14.reload", Storage.HBM)
    assert storage("n30.Slice") == [("n28", Storage.CHIP)]  # the QKV output, read by the Slice before
    assert storage("n36.BatchMatMul")[0] == ("n29.reload", Storage.HBM)  # two operators back
    assert storage("n22.Add")[1] == ("n8.reload", Storage.HBM)  # eps: a [1] input, not adjacent
    assert storage("n19.Divide")[1] == ("n7", Storage.CHIP)  # a scalar is never reloaded
    assert storage("n41.Add")[1] == ("n90.reload", Storage.HBM)  # the mask
    # the HBM bytes grow by exactly the reloaded activations (2 bytes per element)
    extra = published.graph.hbm_bytes - plain.graph.hbm_bytes
    reloaded = [x for op in published.graph.ops for x in op.inputs if x.tensor.endswith(".reload")]
    assert sorted(x.tensor for x in reloaded) == ["n14.reload", "n14.reload", "n29.reload", "n8.reload",
                                                  "n90.reload"]  # the Slices' n28 stays on chip
    assert extra == 2 * sum(op.elements(x) for op in published.graph.ops for x in op.inputs
                            if x.tensor.endswith(".reload"))
    # slice_input_shape: a Slice is costed over the tensor it slices
    assert ops["n29.Slice"].dim_lengths == (4, 1, 192)
    assert by_name(plain.graph)["n29.Slice"].dim_lengths == (4, 1, 64)
    # one rule at a time
    only = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64),
                     conventions=Conventions().only("slice_input_shape"))
    assert by_name(only.graph)["n29.Slice"].dim_lengths == (4, 1, 192)
    assert only.graph.hbm_bytes == plain.graph.hbm_bytes
    with pytest.raises(ValueError, match="unknown convention 'bogus'"):
        Conventions().only("bogus")


def test_the_conventions_group_and_the_reload_rule_on_zoo_graphs():
    from hydra import compose, initialize_config_module

    from elkopt.config import to_conventions
    from elkopt.conventions import Conventions
    from elkopt.graph.reload import reload_activations
    from elkopt.graph.zoo import build_graph
    from omegaconf import OmegaConf

    def composed(*overrides):
        return to_conventions(OmegaConf.to_object(compose(config_name="config", overrides=list(overrides))).conventions)
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        assert composed() == Conventions()
        assert composed("conventions=published") == Conventions.published()
        assert composed("conventions.slice_input_shape=true").active == ("slice_input_shape",)
    graph = build_graph("tiny", "decode", 4, 64)
    reloaded = reload_activations(graph)
    for before, after, op in zip(graph.ops, reloaded.ops, reloaded.ops):
        for x, y in zip(before.inputs, after.inputs):
            if y.tensor != x.tensor:  # reloaded: an on-chip activation read two or more operators back
                assert (y.tensor, y.storage, x.storage) == (f"{x.tensor}.reload", Storage.HBM, Storage.CHIP)
    residual = next(op for op in reloaded.ops if op.name == "layer0.attn_residual")
    assert residual.inputs[0].storage == Storage.HBM  # the embedding, read long after it was made
    assert reloaded.hbm_bytes > graph.hbm_bytes and reloaded.n_ops == graph.n_ops


def test_operators_as_the_published_compiler_reads_them():
    from elkopt.conventions import Conventions
    from elkopt.elk.texpr import ELEMENT, MATMUL, SLICE, UNARY, texpr_entry
    graph = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64),
                      conventions=Conventions.published()).graph
    ops = by_name(graph)
    dot = texpr_entry(ops["n28.Dot"])  # [B, N, K] x [K, N]: dims (S0, M, K), the weight loaded
    assert (dot.op_type, dot.dims, dot.variables, dot.ignore) == (
        MATMUL, (4, 192, 64), (((0,), (1,)), ((0,), (2,)), ((2,), (1,))), (True, False))
    softmax_max = texpr_entry(ops["n42.SoftmaxBasic"])  # a reduction, but a SoftmaxBasic node
    assert softmax_max.op_type == ELEMENT and softmax_max.variables[0] == ((0,), (1,), (2,))
    mean = texpr_entry(ops["n19.Divide"])  # the broadcast scalar is no operand
    assert len(mean.variables) == 2 and mean.ignore == (True,)
    assert len(texpr_entry(ops["n19.Divide"], drop_scalar_operands=False).variables) == 3
    assert texpr_entry(ops["n23.Sqrt"]).op_type == UNARY and texpr_entry(ops["n29.Slice"]).op_type == SLICE
    assert texpr_entry(ops["n29.Slice"]).dims == (4, 1, 192)
    # layers repeat: equal keys share one published table
    assert len({texpr_entry(op).key for op in graph.ops}) < graph.n_ops


def test_a_graph_as_the_published_program_runs_the_published_designs():
    from elkopt.conventions import Conventions
    from elkopt.elk.program import elk_ops, published_hbm_GBps
    from elkopt.elk.suite import run_published
    graph = read_dump(DUMPS / "prefill_attention.json", placeholders=SIZES, decode=PrefillDecode(64),
                      conventions=Conventions.published()).graph
    ops = elk_ops(graph, cores=16, sram_bytes=64 * 1024)
    assert [op.name for op in ops[:2]] == ["Op_0_Multiply", "Op_1_Sum"]
    tables = {id(op.table) for op in ops}
    assert len(tables) == len({op.key for op in ops}) < len(ops)  # one table per distinct form
    assert published_hbm_GBps(16 * 1000 * 2**20 * 1000) == 16000
    ms = run_published(ops, hbm_GBps=100, cores=16, sram_bytes=64 * 1024, layers=1).latency_ms()
    assert set(ms) == {"Basic", "Static", "Elk-Dyn", "Elk-Full", "Ideal"}
    assert all(0 < v < float("inf") for v in ms.values())
    assert ms["Ideal"] <= min(ms.values()) + 1e-12 and ms["Elk-Full"] <= ms["Basic"]
