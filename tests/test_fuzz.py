"""Bad and unusual input, case by case: every run ends with a verified plan (exit 0) or one
line naming the field or file (exit 2, or Hydra's own message when the value cannot even be
composed), never a traceback from inside elkopt.

Each case is (id, overrides, files, expected): `files` names sample files written by
`write_files` into the case's folder ({tmp} in an override is that folder); `expected` is
"ok" or a regular expression the error must match.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException

from elkopt import app

DUMPS = Path(__file__).parent / "dumps"
TINY = ("model=tiny", "workload.batch=4", "workload.kv_len=64", "scheduler=static")


def expr_node(i, expression, node_type, edges, inputs):
    input_dict = {k: {"dtype": "float32", "shape": v} for k, v in inputs.items()}
    return [i, f' - einstein_v2("{expression}", input_dict={json.dumps(input_dict)}) ', node_type, edges]


EXP = "output0[N0, N1] = input0[N0, N1].call(`exp`)"
GOOD_NODE = expr_node(0, EXP, "Exp", [], {"input0": [8, 16]})


def dump(*nodes) -> str:
    return json.dumps(list(nodes))


#: Sample files by name: text, bytes, or a callable writing into the folder.
FILES = {
    "good.json": dump(GOOD_NODE),
    "not_json.json": "this is not json",
    "truncated.json": dump(GOOD_NODE, GOOD_NODE)[:-30],
    "empty.json": "",
    "empty_list.json": "[]",
    "object.json": '{"nodes": []}',
    "short_entry.json": dump([0, "x", "Exp"]),
    "id_string.json": dump(["0", GOOD_NODE[1], "Exp", []]),
    "bad_edge.json": dump([0, GOOD_NODE[1], "Exp", [[1]]]),
    "port.json": dump(GOOD_NODE, [1, GOOD_NODE[1], "Exp", [[0, 2]]]),
    "self_edge.json": dump([0, GOOD_NODE[1], "Exp", [[0, 0]]]),
    "forward_op.json": dump([0, GOOD_NODE[1], "Exp", [[1, 0]]], [1, GOOD_NODE[1], "Exp", []]),
    "unknown_type.json": dump([0, " - TopK ", "TopK", []]),
    "syntax.json": dump(expr_node(0, "output0[N0, N1] = input0[N0, N1", "Exp", [], {"input0": [8, 16]})),
    "method.json": dump(expr_node(0, "output0[N0] = input0[N0].frobnicate()", "Exp", [], {"input0": [8]})),
    "assign.json": dump(expr_node(0, "output0[N0] *= input0[N0]", "Exp", [], {"input0": [8]})),
    "shape_rank.json": dump(expr_node(0, "output0[N0, N1] = input0[N0, N1]", "Exp", [], {"input0": [8]})),
    "shape_clash.json": dump(expr_node(0, "output0[N0] = input0[N0] + input1[N0]", "Add", [],
                                       {"input0": [8], "input1": [9]})),
    "no_length.json": dump(expr_node(0, "output0[N0, K] = input0[N0]", "Exp", [], {"input0": [8]})),
    "unread.json": dump(expr_node(0, "output0[N0] = input0[N0]", "Exp", [], {"input0": [8], "input1": [8]})),
    "edge_no_input.json": dump(GOOD_NODE, expr_node(1, "output0[N0] = input0[N0]", "Exp", [[0, 0], [0, 0]],
                                                    {"input0": [8]})),
    "zero_dim.json": dump(expr_node(0, EXP, "Exp", [], {"input0": [0, 16]})),
    "negative_dim.json": dump(expr_node(0, EXP, "Exp", [], {"input0": [-8, 16]})),
    "float_dim.json": dump(expr_node(0, EXP, "Exp", [], {"input0": [8.5, 16]})),
    "huge_dim.json": dump(expr_node(0, EXP, "Exp", [], {"input0": [10**12, 10**12]})),
    "too_big_for_sram.json": dump(expr_node(0, EXP, "Exp", [], {"input0": [10**12, 8]})),
    "dot_not_product.json": dump(expr_node(0, "output0[N0] +=! input0[N0, K]", "Dot", [], {"input0": [8, 4]})),
    "two_outputs.json": dump(expr_node(0, "output0[N0] = input0[N0]; output0[N0] = input0[N0]", "Exp", [],
                                       {"input0": [8]})),
    "no_statement.json": dump(expr_node(0, "", "Exp", [], {"input0": [8]})),
    "bad_input_dict.json": dump([0, ' - einstein_v2("output0[N] = input0[N]", input_dict={"input0": '
                                    '{"dtype": "float32", "shape": ["N"]}}) ', "Exp", []]),
    "only_sources.json": dump([0, " - Parameter x ", "Parameter", []]),
    "gather_bad.json": dump(expr_node(0, "output0[N0] = input0[G3] g input1[N0] g input2[N0]", "GatherV2", [],
                                      {"input0": [8], "input1": [8], "input2": [8]})),
    "junk.bin": bytes(random.Random(7).randrange(256) for _ in range(4096)),
    "folder": lambda folder: (folder / "folder").mkdir(),
    "mlp.onnx": lambda folder: _tiny_onnx(folder / "mlp.onnx"),
    "unsupported.onnx": lambda folder: _tiny_onnx(folder / "unsupported.onnx", op="TopK"),
    "empty.onnx": b"",
}


def _tiny_onnx(path: Path, op: str = "Relu") -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc")]
    if op == "TopK":
        k = numpy_helper.from_array(np.array([2], np.int64), "k")
        nodes.append(helper.make_node("TopK", ["h", "k"], ["y", "i"], name="top"))
        inits = [numpy_helper.from_array(np.zeros((16, 8), np.float32), "w"), k]
    else:
        nodes.append(helper.make_node(op, ["h"], ["y"], name="act"))
        inits = [numpy_helper.from_array(np.zeros((16, 8), np.float32), "w")]
    graph = helper.make_graph(nodes, "mlp", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def file_case(name: str, expected: str, *extra: str) -> tuple:
    return (" ".join((f"file:{name}", *extra)), ("model=file", f"model.path={{tmp}}/{name}", "scheduler=static",
                             "workload.batch=4", "workload.kv_len=64", *extra), (name,), expected)


def cfg_case(id_: str, expected: str, *overrides: str, base: tuple = TINY) -> tuple:
    return (id_, (*base, *overrides), (), expected)


NUMBER = r"(must be|positive|> 0|>= )"

CASES = [
    # -- the chip ------------------------------------------------------------------------
    *[cfg_case(f"chip.{f}={v}", rf"{f}.*{NUMBER}|{f}", f"chip.{f}={v}")
      for f in ("clock_hz", "core_link_bytes_per_s", "hbm_bytes_per_s", "inter_chip_exchange_factor",
                "compute_scale", "inter_chip_bytes_per_s")
      for v in ("0", "-1", "inf", "nan")],
    *[cfg_case(f"chip.{f}={v}", f, f"chip.{f}={v}")
      for f in ("n_chips", "cores_per_chip", "sram_bytes_per_core", "hbm_controllers_per_chip")
      for v in ("0", "-1", "1.5", "inf")],
    cfg_case("chip.sram=1e15B", "sram_bytes_per_core must be at most", "chip.sram_bytes_per_core=1000000000000000"),
    cfg_case("chip.sram=100MB", r"planning.static_step_bytes=10240 .* at least 50,000",
             "chip.sram_bytes_per_core=100000000"),
    cfg_case("chip.sram=100MB,step", "ok", "chip.sram_bytes_per_core=100000000", "planning.static_step_bytes=65536"),
    cfg_case("chip.cores=2**21", "elkopt plans at most", "chip.cores_per_chip=2097152"),
    cfg_case("chip.reserved>=sram", "reserved_sram_bytes_per_core", "chip.reserved_sram_bytes_per_core=638976"),
    cfg_case("chip.reserved<0", "reserved_sram_bytes_per_core", "chip.reserved_sram_bytes_per_core=-1"),
    cfg_case("chip.link_latency<0", "link_latency_cycles", "chip.link_latency_cycles=-1"),
    cfg_case("chip.topology", "topology", "chip.topology=hypercube"),
    cfg_case("chip.hbm_sides", "hbm_sides", "chip=mesh_pod4", "chip.hbm_sides=[up]"),
    cfg_case("chip.mesh_negative", "mesh_rows and mesh_cols > 0", "chip=mesh_pod4", "chip.mesh_rows=-64",
             "chip.mesh_cols=-92"),
    cfg_case("chip.mesh_product", "mesh_rows x mesh_cols", "chip=mesh_pod4", "chip.mesh_rows=10"),
    cfg_case("chip.mesh_link=0", "mesh_link_bytes_per_s", "chip=mesh_pod4", "chip.mesh_link_bytes_per_s=0"),
    cfg_case("chip.small_sram", "fits in no plan", "chip.sram_bytes_per_core=64", base=("model=tiny", "scheduler=static")),
    cfg_case("chip=ipu_mk2", "ok", "chip=ipu_mk2"),
    cfg_case("chip=mesh_pod4", "ok", "chip=mesh_pod4"),
    cfg_case("chip=torus_pod4", "ok", "chip=torus_pod4"),
    cfg_case("chip.n_chips=1", "ok", "chip.n_chips=1"),
    cfg_case("chip.cores=16", "ok|no plan|fits in no plan", "chip.n_chips=1", "chip.cores_per_chip=16"),
    cfg_case("chip.compute_scale=1e6", "ok", "chip.compute_scale=1e6"),
    cfg_case("chip.hbm=1e9", "ok", "chip.hbm_bytes_per_s=1e9"),
    # -- the workload --------------------------------------------------------------------
    cfg_case("workload.batch=0", "batch", "workload.batch=0"),
    cfg_case("workload.batch=-1", "batch", "workload.batch=-1"),
    cfg_case("workload.batch=1", "ok", "workload.batch=1"),
    cfg_case("workload.batch=10**9", "iteration space|fits in no plan|batch", "workload.batch=1000000000"),
    cfg_case("workload.kv_len=0", "kv_len", "workload.kv_len=0"),
    cfg_case("workload.kv_len=1", "ok", "workload.kv_len=1"),
    cfg_case("workload.kind", "kind", "workload.kind=inference"),
    cfg_case("workload.elem_bytes=0", "elem_bytes", "workload.elem_bytes=0"),
    cfg_case("workload.elem_bytes=4", "ok", "workload.elem_bytes=4"),
    cfg_case("forward.seq_len=0", "seq_len", "workload=forward", "workload.seq_len=0",
             base=("model=tiny", "scheduler=static")),
    cfg_case("forward.seq_len=1", "ok", "workload=forward", "workload.seq_len=1",
             base=("model=tiny", "scheduler=static")),
    cfg_case("forward.batch=1", "ok", "workload=forward", "workload.batch=1", "workload.seq_len=16",
             base=("model=tiny", "scheduler=static")),
    # -- keys no schema has ---------------------------------------------------------------
    cfg_case("+workload.bach", r"workload.bach is not a setting .* did you mean workload.batch", "+workload.bach=4"),
    cfg_case("+solver.bogus_option", r"solver.bogus_option is not a setting", "+solver.bogus_option=1"),
    cfg_case("+bogus", "bogus is not a setting", "+bogus=1"),
    cfg_case("+chip.sram", r"chip.sram is not a setting", "+chip.sram=4"),
    cfg_case("+planning.cachedir", r"planning.cachedir is not a setting .* planning.cache_dir",
             "+planning.cachedir=/tmp"),
    cfg_case("+sim.bin", r"sim.bin is not a setting .* sim.bins", "+sim.bin=4"),
    cfg_case("workload.bach", "bach", "workload.bach=4"),
    cfg_case("model=nothing", "model", "model=nothing"),
    # -- the model -------------------------------------------------------------------------
    cfg_case("model.name", r"model.name 'gpt5' is not in the model zoo", "model.name=gpt5"),
    cfg_case("placeholders on zoo", "model.placeholders .* zoo model tiny has none", "+model.placeholders.77=5"),
    cfg_case("model=file, no path", "model=file needs model.path", "model=file", base=("scheduler=static",)),
    cfg_case("model=file, missing", r"model.path '/nonexistent/x.json' is not a file", "model=file",
             "model.path=/nonexistent/x.json", base=("scheduler=static",)),
    cfg_case("model.format", "model.format must be one of", "model=file", f"model.path={DUMPS}/mlp.json",
             "model.format=tflite", base=("scheduler=static",)),
    cfg_case("decode_from_prefill", "model.decode_from_prefill must be one of", "model=file",
             f"model.path={DUMPS}/mlp.json", "model.decode_from_prefill=maybe", base=("scheduler=static",)),
    cfg_case("placeholder name", "model.placeholders.batch: an einstein dump's placeholders are sizes",
             "model=file", f"model.path={DUMPS}/mlp.json", "+model.placeholders.batch=4", base=("scheduler=static",)),
    cfg_case("placeholder 0", "model.placeholders.99 must be a positive int", "model=file",
             f"model.path={DUMPS}/decode_attention.json", "+model.placeholders.99=0", base=("scheduler=static",)),
    cfg_case("placeholder unused", "model.placeholders.77: prefill_attention.json holds no placeholder 77",
             "model=file", f"model.path={DUMPS}/prefill_attention.json", "+model.placeholders.77=3",
             base=("scheduler=static",)),
    cfg_case("scheduler", "scheduler", "scheduler=greedy"),
    # -- planning ----------------------------------------------------------------------------
    cfg_case("planning.max_spatial_splits=0", "planning.max_spatial_splits", "planning.max_spatial_splits=0"),
    cfg_case("planning.static_step_bytes=0", "planning.static_step_bytes", "planning.static_step_bytes=0"),
    cfg_case("planning.static_step_bytes=1", r"planning.static_step_bytes=1 .* at least 320",
             "planning.static_step_bytes=1"),
    cfg_case("planning.split_fraction=0", "planning.split_fraction", "planning.split_fraction=0"),
    cfg_case("planning.split_fraction=2", "planning.split_fraction", "planning.split_fraction=2"),
    cfg_case("planning.split_fraction=null", "ok", "planning.split_fraction=null"),
    cfg_case("planning.max_copies=1", "planning.max_copies", "planning.max_copies=1"),
    cfg_case("planning.split_policy", "planning.split_policy", "planning.split_policy=never"),
    cfg_case("planning.cache_dir=null", "ok", "planning.cache_dir=null"),
    cfg_case("planning.cache_dir under a file", "ok", "planning.cache_dir={tmp}/a_file/cache",
             "+fuzz_file=a_file"),
    cfg_case("planning.cache_dir=/proc", "ok", "planning.cache_dir=/proc/elkopt_cache"),
    # -- the solver (the MILP schedulers read it) -----------------------------------------
    *[cfg_case(f"scheduler={s}", "ok", f"scheduler={s}") for s in ("basic", "inductive", "elkopt")],
    cfg_case("solver.threads=0", "solver.threads", "scheduler=inductive", "solver.threads=0"),
    cfg_case("solver.threads=100000", "solver.threads", "scheduler=inductive", "solver.threads=100000"),
    cfg_case("solver.time_limit_s=1e-9", "ok", "scheduler=inductive", "solver.time_limit_s=1e-9"),
    cfg_case("solver.time_limit_s=1e-6 elkopt", "ok", "scheduler=elkopt", "solver.time_limit_s=1e-6"),
    cfg_case("solver.time_limit_s=0", "solver.time_limit_s", "scheduler=inductive", "solver.time_limit_s=0"),
    cfg_case("solver.mip_rel_gap=-1", "solver.mip_rel_gap", "scheduler=inductive", "solver.mip_rel_gap=-1"),
    cfg_case("solver.presolve", "solver.presolve", "scheduler=inductive", "solver.presolve=sometimes"),
    cfg_case("solver.max_nodes=0", "solver.max_nodes", "scheduler=inductive", "solver.max_nodes=0"),
    cfg_case("solver.name", "solver.name", "scheduler=inductive", "solver.name=gurobi"),
    cfg_case("solver.options misspelt", "solver.options.mip_heuristic_efort", "scheduler=inductive",
             "+solver.options.mip_heuristic_efort=0.2"),
    cfg_case("solver.options type", "solver.options.mip_heuristic_effort", "scheduler=inductive",
             "+solver.options.mip_heuristic_effort=lots"),
    cfg_case("solver.options dedicated", r"solver.options.time_limit.*solver.time_limit_s",
             "scheduler=inductive", "+solver.options.time_limit=5"),
    cfg_case("solver.options with static", "solver.options.bogus", "+solver.options.bogus=1"),
    cfg_case("solver.options ok", "ok", "scheduler=inductive", "+solver.options.mip_heuristic_effort=0.2"),
    # -- the simulation ---------------------------------------------------------------------
    cfg_case("sim ok", "ok", "simulate=true"),
    cfg_case("sim.bins=3", "sim.bins", "simulate=true", "sim.bins=3"),
    cfg_case("sim.bins=0", "sim.bins", "simulate=true", "sim.bins=0"),
    cfg_case("sim.bins=1e8", "sim.bins", "simulate=true", "sim.bins=100000000"),
    cfg_case("sim.top_links=-1", "sim.top_links", "simulate=true", "sim.top_links=-1"),
    cfg_case("sim.mapping", "sim.mapping", "simulate=true", "sim.mapping=random"),
    cfg_case("sim.calibrate_rounds=-1", "sim.calibrate_rounds", "simulate=true", "sim.calibrate_rounds=-1"),
    cfg_case("sim mesh", "ok", "simulate=true", "chip=mesh_pod4"),
    # -- graph files -------------------------------------------------------------------------
    file_case("good.json", "ok"),
    file_case("not_json.json", r"not_json.json: not JSON .* line 1"),
    file_case("truncated.json", r"truncated.json: not JSON .* in the entry of node 0"),
    file_case("empty.json", r"empty.json: not JSON"),
    file_case("empty_list.json", "the dump holds no operator node"),
    file_case("object.json", "a dump is a JSON list of nodes"),
    file_case("short_entry.json", r"entry 0: a node is \[id, text, type"),
    file_case("id_string.json", r"entry 0: a node is \[id, text, type"),
    file_case("bad_edge.json", r"node 0 \(Exp\): edge 0 must be \[producer_id, port\]"),
    file_case("port.json", r"node 1 \(Exp\): edge 0 reads output 2 of node 0"),
    file_case("self_edge.json", r"node 0 \(Exp\): input 0 comes from the node itself"),
    file_case("forward_op.json", r"node 0 \(Exp\): input 0 comes from node 1 \(Exp\), which is listed after it"),
    file_case("unknown_type.json", r"node 0 \(TopK\): expected an einstein_v2\(...\) expression"),
    file_case("syntax.json", r"node 0 \(Exp\): expected '\]' .* at column \d+"),
    file_case("method.json", r"node 0 \(Exp\): expected a method name .* at column \d+"),
    file_case("assign.json", r"node 0 \(Exp\): expected an assignment operator .* at column \d+"),
    file_case("shape_rank.json", r"node 0 \(Exp\) at column \d+: input0 has shape \[8\] but 2 indices"),
    file_case("shape_clash.json", r"node 0 \(Add\) at column \d+: index N0 has length 8 in input0 and 9"),
    file_case("no_length.json", r"node 0 \(Exp\) at column \d+: indices \['K'\] have no length"),
    file_case("unread.json", r"node 0 \(Exp\): input_dict lists input1, which no statement reads"),
    file_case("edge_no_input.json", r"node 1 \(Exp\): edge 1 feeds input1, which input_dict does not list"),
    file_case("zero_dim.json", r"node 0 \(Exp\).*N0.*length 0|positive"),
    file_case("negative_dim.json", r"node 0 \(Exp\).*(-8|positive)"),
    file_case("float_dim.json", r"node 0 \(Exp\).*shape"),
    file_case("huge_dim.json", r"node 0 \(Exp\).*iteration space of 1e\+24 points"),
    file_case("too_big_for_sram.json", r"operator 'n0.Exp'.*fits in no plan"),
    file_case("dot_not_product.json", r"node 0 \(Dot\) at column \d+: expected `output \+=! a \* b`"),
    file_case("two_outputs.json", r"node 0 \(Exp\): expected one statement writing output0"),
    file_case("no_statement.json", r"node 0 \(Exp\): expected an einstein_v2 expression, found none"),
    file_case("bad_input_dict.json", r"node 0 \(Exp\): expected \"dtype\" \(a string\) and \"shape\""),
    file_case("only_sources.json", "the dump holds no operator node"),
    file_case("gather_bad.json", r"node 0 \(GatherV2\)"),
    file_case("junk.bin", r"junk.bin: not a text file .* model.format=onnx"),
    file_case("folder", r"model.path '.*folder' is not a file"),
    file_case("good.json", "ok", "workload=forward", "workload.seq_len=8"),
    file_case("good.json", r"model.placeholders.66: good.json holds no placeholder 66", "+model.placeholders.66=4"),
    file_case("mlp.onnx", "ok", "model.format=onnx", "+model.placeholders.seq=8"),
    file_case("mlp.onnx", r"symbolic dim 'seq' .* has no size; set it with \+model.placeholders.seq",
              "model.format=onnx"),
    file_case("mlp.onnx", r"model.placeholders.sequence: mlp.onnx has no symbolic dim 'sequence'",
              "model.format=onnx", "+model.placeholders.sequence=8"),
    file_case("mlp.onnx", "model.placeholders.seq must be a positive int", "model.format=onnx",
              "+model.placeholders.seq=0"),
    file_case("unsupported.onnx", r"TopK", "model.format=onnx", "+model.placeholders.seq=8"),
    file_case("empty.onnx", r"empty.onnx: not an ONNX model", "model.format=onnx"),
    file_case("good.json", r"good.json: not an ONNX model .* model.format=einstein", "model.format=onnx"),
    file_case("junk.bin", r"junk.bin: not an ONNX model", "model.format=onnx"),
    file_case("mlp.onnx", r"mlp.onnx: not a text file .* model.format=onnx", "model.format=einstein"),
    *[(f"sample:{p.stem}", ("model=file", f"model.path={p}", "scheduler=static", "workload.batch=4",
                            "workload.kv_len=64"), (), "ok") for p in sorted(DUMPS.glob("*.json"))],
]


@pytest.fixture(scope="module")
def hydra_context():
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        yield


def write_files(folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        content = FILES[name]
        if callable(content):
            content(folder)
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One plan-table cache for the cases that do not set their own."""
    return tmp_path_factory.mktemp("cache")


def run_case(overrides: tuple[str, ...], files: tuple[str, ...], folder: Path, cache: Path,
             capsys) -> tuple[int, str]:
    """(status, error line): 0 and "" for a finished run; Hydra's composition errors as 1."""
    write_files(folder, files)
    overrides = tuple(o.replace("{tmp}", str(folder)) for o in overrides)
    for override in overrides:
        if override.startswith("+fuzz_file="):  # a plain file where a folder is expected
            (folder / override.split("=", 1)[1]).write_text("a file")
    overrides = tuple(o for o in overrides if not o.startswith("+fuzz_file="))
    if not any(o.startswith("planning.cache_dir") for o in overrides):
        overrides = (*overrides, f"planning.cache_dir={cache}")
    try:
        cfg = compose(config_name="config", overrides=list(overrides))
    except ConfigCompositionException as error:
        return 1, f"{error} {error.__cause__}"
    status = app.run_job(cfg, folder / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("elkopt: error:")]
    return status, lines[-1] if lines else err


@pytest.mark.parametrize("case_id, overrides, files, expected", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_ends_in_a_verified_plan_or_one_line(case_id, overrides, files, expected, tmp_path,
                                                        hydra_context, cache, capsys):
    status, error = run_case(overrides, files, tmp_path, cache, capsys)
    if expected == "ok" or (status == 0 and "ok" in expected.split("|")):
        assert status == 0, error
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["verified"] is True and metrics["latency_ms"] > 0
        return
    assert status != 0, f"{case_id}: expected an error matching {expected!r}, the run succeeded"
    assert re.search(expected, error), error
    if status == app.EXIT_BAD_INPUT:  # elkopt's own: one line, and error.json says the same
        assert "\n" not in error.strip() and "Traceback" not in error
        assert json.loads((tmp_path / "run" / "error.json").read_text())["error"] in error


def test_the_table_has_at_least_150_cases():
    assert len(CASES) >= 150, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES)  # ids are unique


@pytest.mark.parametrize("place, expected", [
    ("{file}/sub", "Not a directory"), ("/proc/elkopt_run", "No such file or directory"),
])
def test_an_output_folder_that_cannot_be_made_is_one_line(place, expected, tmp_path):
    (tmp_path / "file").write_text("a file")
    place = place.replace("{file}", str(tmp_path / "file"))
    env = {**os.environ, "ELKOPT_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "elkopt.run", *TINY, f"hydra.run.dir={place}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == app.EXIT_BAD_INPUT
    assert run.stderr.strip() == (f"elkopt: error: hydra.run.dir={place}: cannot create that folder "
                                  f"({expected}); choose a writable place")
