"""ONNX shapes: dims named by expressions of other dims are computed, solved and checked;
error hints are valid Hydra overrides; onnxruntime's symbolic shape inference completes
what ONNX's leaves unknown (masks over a Range, com.microsoft operators) in the exporters'
fixtures."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import pytest
from onnx import TensorProto, helper, numpy_helper

from elkopt.app import _read_onnx
from elkopt.config import ModelConfig, Workload
from elkopt.graph.ir import Storage
from elkopt.graph.onnx_graph import import_onnx
from elkopt.graph.onnx_ops import _data_inputs, _data_values
from elkopt.graph.onnx_shapes import (
    OnnxImportError, _needed_values, _shapes, _substitute, _without_weights, free_dims, infer_shapes,
    load_onnx, parse_dim, resolve_sizes, symbolic_dims,
)

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"


def value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def relu_model(*input_shapes):
    """Graph inputs x0, x1, ... of `input_shapes`, each through a Relu to an output y0, y1, ..."""
    inputs = [value(f"x{i}", shape) for i, shape in enumerate(input_shapes)]
    nodes = [helper.make_node("Relu", [f"x{i}"], [f"y{i}"], name=f"act{i}") for i in range(len(input_shapes))]
    outputs = [value(f"y{i}", None) for i in range(len(input_shapes))]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def shape_step(model, sizes):
    """What import_onnx does before reading nodes: sizes resolved and substituted, shapes inferred."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _substitute(copy.graph, resolve_sizes(copy, sizes))
    return infer_shapes(copy, _data_values(copy.graph), _data_inputs).model


# -- expressions --------------------------------------------------------------------------
@pytest.mark.parametrize("text, names, values, size", [
    ("batch", ("batch",), {"batch": 4}, 4),
    ("past_sequence + 1", ("past_sequence",), {"past_sequence": 2047}, 2048),  # torch.onnx dynamo
    ("past_sequence_length + sequence_length", ("past_sequence_length", "sequence_length"),
     {"past_sequence_length": 10, "sequence_length": 3}, 13),  # optimum
    ("2*s0", ("s0",), {"s0": 5}, 10),  # sympy's form
    ("(s0 + 1)//2 - s1", ("s0", "s1"), {"s0": 8, "s1": 2}, 2),
])
def test_the_exporters_expression_dims_parse_and_evaluate(text, names, values, size):
    expression = parse_dim(text)
    assert expression.names == names and expression.evaluate(values) == size
    assert expression.is_name == (text == "batch")


@pytest.mark.parametrize("text, reason", [
    ("s0/2", "'/' is not allowed"), ("floor(s0/2)", "a call is not allowed"),
    ("s0**2", "'\\*\\*' is not allowed"), ("-s0", "a unary sign is not allowed"),
    ("seq len", "it does not parse"), ("1.5*s", "literal 1.5 is not an integer"),
    ("a.b", "'.' is not allowed"), ("x if y else z", "IfExp is not allowed"), ("__import__('os')", "a call"),
    ("s" * 300, "over 200 characters"),
])
def test_anything_else_is_refused_saying_what(text, reason):
    with pytest.raises(OnnxImportError, match=rf"symbolic dim .* is not a size expression \(.*{reason}"):
        parse_dim(text)


def test_free_dims_are_the_plain_names_then_the_names_only_inside_expressions():
    m = relu_model(["batch", "past_sequence + 1"], ["batch", 2, "past_sequence", 16], ["a + b", "floor(c/2)"])
    assert symbolic_dims(m) == ["batch", "past_sequence + 1", "past_sequence", "a + b", "floor(c/2)"]
    assert free_dims(m) == ["batch", "past_sequence", "floor(c/2)", "a", "b"]


# -- resolving sizes ----------------------------------------------------------------------
DECODE = relu_model(["batch", "past_sequence + 1"], ["batch", 2, "past_sequence", 16])


def test_an_expression_dim_is_computed_from_its_names_and_solves_a_missing_one():
    computed = resolve_sizes(DECODE, {"batch": 4, "past_sequence": 2047})
    assert computed == {"batch": 4, "past_sequence + 1": 2048, "past_sequence": 2047}
    assert resolve_sizes(DECODE, {"batch": 4, "past_sequence + 1": 2048}) == computed
    mask, cache = import_onnx(DECODE, "g", sizes={"batch": 4, "past_sequence + 1": 2048}).ops
    assert [d.length for d in mask.dims] == [4, 2048] and [d.length for d in cache.dims] == [4, 2, 2047, 16]
    optimum = relu_model(["batch_size", "past_sequence_length + sequence_length"])
    assert resolve_sizes(optimum, {"batch_size": 1, "past_sequence_length + sequence_length": 9,
                                   "sequence_length": 2})["past_sequence_length"] == 7
    assert resolve_sizes(relu_model(["3*s - 2"]), {"3*s - 2": 13}) == {"3*s - 2": 13, "s": 5}


def test_a_contradiction_is_one_line_naming_both_values():
    with pytest.raises(OnnxImportError) as error:
        resolve_sizes(DECODE, {"batch": 1, "past_sequence + 1": 9999, "past_sequence": 2047})
    assert str(error.value) == "symbolic dim 'past_sequence + 1' is 9999 but past_sequence=2047 makes it 2048"
    two = relu_model(["past_sequence + 1", "past_sequence + 2"])
    with pytest.raises(OnnxImportError, match=r"^symbolic dim 'past_sequence \+ 2' is 100 but past_sequence=2047 "
                                              r"\(from 'past_sequence \+ 1'=2048\) makes it 2049$"):
        resolve_sizes(two, {"past_sequence + 1": 2048, "past_sequence + 2": 100})


@pytest.mark.parametrize("text, size, message", [
    ("past_sequence + 1", 1, "makes past_sequence=0, not a positive integer"),
    ("2*s", 9, "makes s=4.5, not a positive integer"),
])
def test_a_solution_must_be_a_positive_integer(text, size, message):
    with pytest.raises(OnnxImportError, match=rf"symbolic dim '.*'={size} {message}"):
        resolve_sizes(relu_model([text]), {text: size})


def test_defaults_fill_only_what_the_given_sizes_leave_undetermined():
    defaults = {"batch": 8, "past_sequence": 100, "unused": 3}
    assert resolve_sizes(DECODE, {"past_sequence + 1": 2048}, defaults)["past_sequence"] == 2047
    assert resolve_sizes(DECODE, {}, defaults) == {"batch": 8, "past_sequence + 1": 101, "past_sequence": 100}
    # a * a cannot be solved for a: a's default is taken, then checked against it
    with pytest.raises(OnnxImportError, match=r"^symbolic dim 'a \* a' is 9 but a=4 \(a default\) makes it 16$"):
        resolve_sizes(relu_model(["a * a"]), {"a * a": 9}, {"a": 4})


# -- hints --------------------------------------------------------------------------------
def hydra_sizes(hint: str) -> dict:
    """The sizes the overrides of `hint` set, each ``<n>`` a distinct size (9, 8, ...), as
    Hydra's override parser reads them (OverrideParseException when one does not parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [arg.replace("<n>", str(9 - i)) for i, arg in enumerate(shlex.split(hint))]
    sizes = {}
    for override in OverridesParser.create().parse_overrides(args):
        key, size = override.key_or_group, override.value()
        assert override.is_add()  # placeholders is empty in conf/model/file.yaml: keys are added
        if key == "model.placeholders":
            sizes.update(size)
        else:
            assert key.startswith("model.placeholders.")
            sizes[key.removeprefix("model.placeholders.")] = size
    return sizes


@pytest.mark.parametrize("name, fixed", [
    ("seq", ["seq"]), ("batch_size", ["batch_size"]), ("$x", ["$x"]),
    ("past_sequence + 1", ["past_sequence"]), ("past_sequence_length + sequence_length",
                                               ["past_sequence_length", "sequence_length"]),
    ("seq-len", ["seq", "len"]),  # a hyphen is a minus: 9 - 8
    ("seq len", ["seq len"]), ("floor(s0/2)", ["floor(s0/2)"]), ("a.b", ["a.b"]), ("s:1", ["s:1"]),
    ("batch/2", ["batch/2"]), ("x,y", ["x,y"]), ("{k}", ["{k}"]), ("a=b", ["a=b"]), ("back\\slash", ["back\\slash"]),
    (" lead", [" lead"]), ("-x", ["-x"]),
])
def test_every_hint_is_a_hydra_override_that_sets_the_missing_dim(name, fixed):
    m = relu_model(["b", name])
    sizes = hydra_sizes(hint_of(m, {"b": 1}))
    assert sorted(sizes) == sorted(fixed)
    assert resolve_sizes(m, {"b": 1, **sizes})[name] > 0  # and the overrides do set it


def test_a_name_no_override_reaches_is_said_so():
    for name in ["q'uote", "é", "1e3", "a#b"]:
        with pytest.raises(OnnxImportError, match=r"no Hydra override reaches .* give it in the sizes of "
                                                  r"elkopt.graph.onnx_graph.import_onnx"):
            resolve_sizes(relu_model([name]), {})


def test_the_old_hint_is_not_an_override_and_ours_is():
    from hydra.errors import OverrideParseException

    with pytest.raises(OverrideParseException):
        hydra_sizes("+model.placeholders.past_sequence + 1=<n>")
    assert hydra_sizes("+model.placeholders.past_sequence=<n>") == {"past_sequence": 9}


# -- shape inference: the onnxruntime fallback ---------------------------------------------
def mask_model():
    """An exported padding mask in miniature: x [4, 8] gathered along axis 1 at Range(0,
    shape(mask)[1]) + offset (the flattened index TorchScript writes), then Relu. ONNX leaves
    the Range's length, hence the index's and the Gather's, unknown; the index is [8]."""
    nodes = [
        helper.make_node("Shape", ["mask"], ["mask_shape"]),
        helper.make_node("Gather", ["mask_shape", "one"], ["length"], axis=0),
        helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
        helper.make_node("Add", ["positions", "offset"], ["index"]),
        helper.make_node("Gather", ["x", "index"], ["picked"], axis=1, name="pick"),
        helper.make_node("Relu", ["picked"], ["y"], name="act"),
    ]
    initializers = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    inputs = [value("x", [4, 8]), value("mask", ["batch", "sequence"], TensorProto.INT64),
              value("offset", [1], TensorProto.INT64)]
    graph = helper.make_graph(nodes, "mask", inputs, [value("y", None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_alone_leaves_the_mask_unknown():
    m = mask_model()
    _substitute(m.graph, {"batch": 4, "sequence": 8})
    shapes = _shapes(onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True).graph)
    assert shapes["picked"] == (4, None) and shapes["y"] == (4, None)
    assert shapes["positions"] == (None,) and shapes["index"] == (None,)
    needed = ["positions", "offset", "index", "x", "picked", "y"]  # what the Add, Gather and Relu read and write
    assert _needed_values(m.graph, _data_values(m.graph), _data_inputs) == needed


def test_onnxruntime_completes_the_mask_and_the_import_reads_it():
    pytest.importorskip("onnxruntime")
    shapes = _shapes(shape_step(mask_model(), {"batch": 4, "sequence": 8}).graph)
    assert shapes["positions"] == shapes["index"] == (8,) and shapes["picked"] == shapes["y"] == (4, 8)
    add, pick, act = import_onnx(mask_model(), "mask", sizes={"batch": 4, "sequence": 8}).ops
    assert [d.length for d in add.dims] == [8] and [d.length for d in act.dims] == [4, 8]
    assert add.inputs[1].tensor == "offset" and pick.inputs[1].tensor == add.output.tensor


def test_without_onnxruntime_the_error_names_the_values_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.tools.symbolic_shape_infer", None)  # import fails
    expected = (r"^node 3 \(Add\): value '(positions|index)' has shape \[\?\] after shape inference; .*; "
                r"ONNX shape inference leaves the shape of 4 values: 'positions' \[\?\], 'index' \[\?\], "
                r"'picked' \[4, \?\], 'y' \[4, \?\] unknown; onnxruntime's symbolic shape inference completes "
                r"such models, but it cannot be imported \(.*\): pip install 'elkopt\[ort\]'$")
    with pytest.raises(OnnxImportError, match=expected):
        import_onnx(mask_model(), "mask", sizes={"batch": 4, "sequence": 8})


def test_without_onnxruntime_a_model_imports_if_the_import_needs_no_unknown_shape(monkeypatch):
    # ONNX does not know SimplifiedLayerNormalization (y unknown); the importer sizes it by x
    monkeypatch.setitem(sys.modules, "onnxruntime.tools.symbolic_shape_infer", None)
    norm = helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], ["y"], name="norm", axis=-1)
    graph = helper.make_graph([norm], "g", [value("x", [2, 8])], [value("y", None)],
                              [numpy_helper.from_array(np.ones(8, np.float32), "scale")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert len(import_onnx(m, "g").ops) == 7  # the zoo's RMSNorm
    # and an error about another value does not get the onnxruntime note
    pool = helper.make_node("MaxPool", ["x"], ["p", "where"], name="pool", kernel_shape=[2, 2])
    act = helper.make_node("Relu", ["where"], ["y"], name="act")
    graph = helper.make_graph([pool, act], "g", [value("x", [1, 2, 4, 4])], [value("y", None)])
    with pytest.raises(OnnxImportError, match=r"which is not imported \(only the outputs the importer maps are\)$"):
        import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "g")


def test_importing_elkopt_does_not_import_onnxruntime():
    import subprocess

    code = "import sys, elkopt.graph.onnx_graph, elkopt.app; print('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_onnxruntime_reads_no_weight():
    big = numpy_helper.from_array(np.zeros((64, 32), np.float32), "big")
    small = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    stripped = TensorProto(name="stripped", data_type=TensorProto.FLOAT, dims=[3], raw_data=bytes(12))
    onnx.external_data_helper.set_external_data(stripped, location="absent.weights")  # its file is absent
    stripped.data_location = TensorProto.EXTERNAL
    stripped.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [value("x", [2])], [value("y", None)],
                              [big, small, stripped])
    copy = _without_weights(helper.make_model(graph))
    assert [t.name for t in copy.graph.initializer] == ["shape"]
    moved = {v.name: (v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
             for v in copy.graph.input}
    assert moved == {"x": (TensorProto.FLOAT, [2]), "big": (TensorProto.FLOAT, [64, 32]),
                     "stripped": (TensorProto.FLOAT, [3])}


def test_onnx_shapes_win_where_known_and_onnxruntime_fills_the_rest():
    from elkopt.graph.onnx_shapes import _merge

    own = helper.make_graph([], "onnx", [], [value("out", [4, None])],
                            value_info=[value("a", [4, None]), value("b", None), value("c", [2, None])])
    theirs = helper.make_graph([], "ort", [], [value("out", [4, 6])], value_info=[
        value("a", [5, 8]), value("b", [3, 3]), value("c", [2, 7, 1]), value("d", [9])])
    _merge(own, theirs)
    assert _shapes(own) == {"a": (4, 8), "b": (3, 3), "c": (2, None), "d": (9,), "out": (4, 6)}


# -- the exporters' fixtures -----------------------------------------------------------------
def fixture_sizes(model):
    """Free dims only (expression dims computed): batch 4, 64 cached tokens, 1 new token in a
    decode file (total_sequence 65), 64 tokens in a prefill file."""
    free = free_dims(model)
    decode = any("past" in name for name in free)
    return {name: 4 if "batch" in name else 64 if "past" in name else 65 if "total" in name
            else 1 if decode else 64 for name in free}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.onnx")), ids=lambda p: p.stem)
def test_every_data_value_of_the_exporters_fixtures_has_a_static_shape(path):
    pytest.importorskip("onnxruntime")
    model = load_onnx(path)
    inferred = shape_step(model, fixture_sizes(model))
    shapes = _shapes(inferred.graph)
    unknown = {v for v in _data_values(inferred.graph) if shapes.get(v) is None or None in shapes[v]}
    if path.stem == "ts_mixtral_decode":
        # the expert dispatch: sizes that depend on the routing, downstream of NonZero
        routed = set()
        for node in inferred.graph.node:
            if node.op_type == "NonZero" or routed.intersection(node.input):
                routed.update(node.output)
        assert unknown and unknown <= routed
    else:
        assert not unknown
    computed = {name: size for name, size in resolve_sizes(model, fixture_sizes(model)).items() if "+" in name}
    assert set(computed.values()) <= {65}  # past_sequence + 1, past_sequence_length + sequence_length: 64 + 1


# -- elkopt.app: defaults from the workload ----------------------------------------------
def write(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return ModelConfig(name="file", path=str(path), format="onnx")


def test_a_decode_workload_sizes_the_exporters_names(tmp_path):
    config = write(relu_model(["batch_size", "past_sequence_length + sequence_length"],
                              ["batch_size", 2, "past_sequence_length", 16]), tmp_path)
    decode = Workload(kind="decode", batch=3, tokens=100)
    graph, sizes = _read_onnx(config, decode)
    # a KV length of 100 counts the new token (as the zoo's): 99 cached, 100 in all
    assert sizes == {"batch_size": 3, "past_sequence_length + sequence_length": 100, "past_sequence_length": 99,
                     "sequence_length": 1}
    assert [d.length for d in graph.ops[0].dims] == [3, 100]
    config.placeholders = {"past_sequence_length + sequence_length": 50}  # given: the default gives way
    assert _read_onnx(config, decode)[1]["past_sequence_length"] == 49
    config.placeholders = {"past_sequence_length + sequence_length": 50, "past_sequence_length": 20}
    assert _read_onnx(config, decode)[1]["sequence_length"] == 30  # solved: the default is not taken
    config.placeholders = {"past_sequence_length + sequence_length": 50, "past_sequence_length": 20,
                           "sequence_length": 1}
    with pytest.raises(OnnxImportError, match=r"^symbolic dim 'past_sequence_length \+ sequence_length' is 50 but "
                                              r"past_sequence_length=20, sequence_length=1 makes it 21$"):
        _read_onnx(config, decode)
    config.placeholders = {"total": 5}
    with pytest.raises(ValueError, match=r"model.placeholders.total: m.onnx has no symbolic dim 'total'"):
        _read_onnx(config, decode)


def test_a_forward_workload_sizes_the_sequence(tmp_path):
    config = write(relu_model(["batch", "sequence"], ["batch", "past_sequence + 1"]), tmp_path)
    with pytest.raises(OnnxImportError, match=r"symbolic dim 'past_sequence \+ 1' \(axis 1\) has no size; set "
                                              r"past_sequence, which determines it: "
                                              r"\+model.placeholders.past_sequence=<n>$"):
        _read_onnx(config, Workload(kind="forward", batch=2, tokens=16))
    config.placeholders = {"past_sequence": 7}
    graph, sizes = _read_onnx(config, Workload(kind="forward", batch=2, tokens=16))
    assert sizes == {"batch": 2, "sequence": 16, "past_sequence + 1": 8, "past_sequence": 7}
    assert graph.ops[0].dims[1].length == 16 and graph.ops[1].dims[1].length == 8
    assert Storage.CHIP in {operand.storage for operand in graph.ops[0].inputs}


def hint_of(model, sizes) -> str:
    """The overrides the missing-size error of `model` suggests."""
    with pytest.raises(OnnxImportError, match="has no size; set ") as error:
        resolve_sizes(model, sizes)
    return str(error.value).split(" it with ", 1)[-1].split(" it: ", 1)[-1]


def test_the_hints_compose_into_the_run_config_and_size_the_model():
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from elkopt.config import register_configs

    register_configs()
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        for name in ["past_sequence + 1", "seq len", "floor(s0/2)"]:
            model = relu_model(["batch", name])
            hints = [arg.replace("<n>", "9") for arg in shlex.split(hint_of(model, {"batch": 2}))]
            # a dict merges into the placeholders given before it
            overrides = ["model=file", "+model.placeholders.batch=2", *hints]
            placeholders = OmegaConf.to_object(compose(config_name="config", overrides=overrides)).model.placeholders
            assert resolve_sizes(model, placeholders)[name] == (10 if name == "past_sequence + 1" else 9)
