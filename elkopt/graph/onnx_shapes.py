"""Loading ONNX files and reading their shapes, for `elkopt.graph.onnx_graph`.

`load_onnx` reads a file without its external weights and turns every way it can fail to be
a model into an `OnnxImportError`; `symbolic_dims` lists the symbolic dims of the graph
inputs, `free_dims` the sizes a user gives, `resolve_sizes` completes and checks them,
`_substitute` puts them on the graph before shape inference, `infer_shapes` runs it and
`_shapes` reads what it found.

Expression dims. Exporters name a dim after an expression of other dims: optimum writes
``past_sequence_length + sequence_length``, torch.onnx (dynamo) ``past_sequence + 1``. A dim
name is read as an expression when Python's grammar parses it into integer literals, names,
``+``, ``-``, ``*``, ``//`` and parentheses only (`parse_dim`; never evaluated by Python);
any other name (``floor(s0/2)``, ``seq len``) is an opaque name that must be given as it
is. A plain name is an expression too, of itself. `free_dims` lists what a user gives: the
plain names, then the names that appear only inside expressions. `resolve_sizes` then, until
nothing changes, computes an expression dim from its names, and solves a missing name from
a given expression dim linear in it (``past_sequence + 1`` = 2048 gives past_sequence =
2047; the solution must be a positive integer); a given expression dim that its names make
another size is an error naming both. Defaults (`resolve_sizes`' `defaults`, the workload's
batch and lengths under `elkopt.app`) are taken one at a time, only for a name the given
sizes leave undetermined. A missing size's error gives the Hydra override that sets it:
``+model.placeholders.<name>=<n>`` for a name Hydra reads as a key, ``+model.placeholders=
{<escaped name>:<n>}`` (merged into the dict) for others, and for an expression dim the
overrides of its missing names.

Shape inference. ONNX's (``data_prop=True``) runs first. When a value the importer reads
(`elkopt.graph.onnx_ops._data_values` and the data inputs of the nodes computing them, less
the values computed from constants only) keeps an unknown dim or rank - TorchScript's and
optimum's masks (a ``Range`` over a shape feeding a flattened ``Gather`` leaves
``[?, 1, 1, ?]``), the ``com.microsoft`` operators of optimum's ``--optimize`` files -
onnxruntime's symbolic shape inference runs on a copy whose large or external initializers
are graph inputs of the same type (no weight is read). ONNX's result wins wherever it knows
a dim, onnxruntime's fills the dims (and whole shapes) it left unknown; where the ranks
differ, ONNX's shape is kept. onnxruntime is optional (``pip install 'elkopt[ort]'``) and
imported only when needed; without it (or when it fails) the import goes on with ONNX's
shapes, and its error about an unknown shape names the values left unknown and the fix
(`InferredShapes.explained`): a model whose unknown values the import does not read still
imports.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
import shlex
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.parser
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)


class OnnxImportError(ValueError):
    """A model that cannot be imported, naming the node (name, op type or index) or value
    and what was expected."""


# -- loading -----------------------------------------------------------------------------
#: What `onnx.load` raises on a file that is not a model in the format its extension picks
#: (protobuf, JSON, text proto, ONNX text); a UnicodeDecodeError is a ValueError.
_NOT_A_MODEL = (DecodeError, json_format.Error, text_format.Error, onnx.parser.ParseError, ValueError)
_JSON_HINT = "; it looks like JSON: an einstein dump is read with model.format=einstein"


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """The ONNX model at `path`, without its external weight files."""
    try:
        model = onnx.load(Path(path), load_external_data=False)
    except OSError as error:
        raise OnnxImportError(f"{path}: cannot read ({error})") from None
    except _NOT_A_MODEL as error:
        detail = str(error)  # a JSON error quotes the file's first entry, which may be long
        detail = detail if len(detail) <= 200 else f"{detail[:200]}..."
        raise OnnxImportError(f"{path}: not an ONNX model ({detail}){_json_hint(path)}") from None
    if not model.HasField("graph"):  # an empty file parses as an empty model
        raise OnnxImportError(f"{path}: not an ONNX model (it has no graph){_json_hint(path)}")
    return model


def _json_hint(path: str | os.PathLike) -> str:
    """The fix when the file starts like JSON (an einstein dump given as an ONNX model)."""
    try:
        with open(path, "rb") as file:
            head = file.read(4096).lstrip()
    except OSError:
        return ""
    return _JSON_HINT if head[:1] in (b"[", b"{") else ""


# -- expression dims ---------------------------------------------------------------------
#: Binary operators of a size expression, and what the others are called in an error.
_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b}
_REFUSED = {ast.Div: "'/'", ast.Pow: "'**'", ast.Mod: "'%'", ast.Call: "a call", ast.Attribute: "'.'",
            ast.UnaryOp: "a unary sign", ast.Subscript: "a subscript", ast.Compare: "a comparison"}
_MAX_EXPRESSION_CHARS = 200


@dataclass(frozen=True)
class DimExpression:
    """A symbolic dim's name read as a size expression: `names` (first seen first) and the
    parsed tree (integer literals, names, + - * // and parentheses only)."""

    text: str
    tree: ast.expr
    names: tuple[str, ...]

    @property
    def is_name(self) -> bool:
        """True for a plain name (an expression of itself)."""
        return isinstance(self.tree, ast.Name)

    def evaluate(self, values: Mapping[str, int]) -> int:
        """The size for `values` (every name of `names` given); OnnxImportError on a // by 0."""
        return _evaluate(self.tree, values, self.text)

    def linear(self, name: str, values: Mapping[str, int]) -> tuple[int, int] | None:
        """(a, b) with the expression = a * `name` + b for the other names at `values`; None
        where it is not linear in `name` (a product of it with itself, a floor division)."""
        return _linear(self.tree, name, values, self.text)


def parse_dim(text: str) -> DimExpression:
    """`text` (a ``dim_param``) read as a size expression; OnnxImportError naming what is not
    allowed. Example: ``parse_dim("past_sequence + 1").names == ("past_sequence",)``."""
    refused = f"symbolic dim {text!r} is not a size expression"
    allowed = "only integer literals, names, + - * // and parentheses are read"
    if len(text) > _MAX_EXPRESSION_CHARS:
        raise OnnxImportError(f"{refused} (over {_MAX_EXPRESSION_CHARS} characters)")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise OnnxImportError(f"{refused} (it does not parse; {allowed})") from None
    names: list[ast.Name] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.append(node)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _OPERATORS:
                what = _REFUSED.get(type(node.op), type(node.op).__name__)
                raise OnnxImportError(f"{refused} ({what} is not allowed; {allowed})")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int) or isinstance(node.value, bool):
                raise OnnxImportError(f"{refused} (literal {node.value!r} is not an integer; {allowed})")
        elif not isinstance(node, (ast.Load, ast.operator)):
            what = _REFUSED.get(type(node), type(node).__name__)
            raise OnnxImportError(f"{refused} ({what} is not allowed; {allowed})")
    in_order = sorted(names, key=lambda name: (name.lineno, name.col_offset))  # ast.walk is breadth first
    return DimExpression(text, tree, tuple(dict.fromkeys(name.id for name in in_order)))


def _parsed(text: str) -> DimExpression | None:
    """`parse_dim`, or None for an opaque name (given as it is)."""
    try:
        return parse_dim(text)
    except OnnxImportError:
        return None


def _evaluate(node: ast.expr, values: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    assert isinstance(node, ast.BinOp)
    a, b = _evaluate(node.left, values, text), _evaluate(node.right, values, text)
    if isinstance(node.op, ast.FloorDiv) and b == 0:
        raise OnnxImportError(f"symbolic dim {text!r} divides by 0 with {_assignments(values, text)}")
    return _OPERATORS[type(node.op)](a, b)


def _linear(node: ast.expr, name: str, values: Mapping[str, int], text: str) -> tuple[int, int] | None:
    if isinstance(node, ast.Name) and node.id == name:
        return 1, 0
    if isinstance(node, (ast.Constant, ast.Name)):
        return 0, _evaluate(node, values, text)
    assert isinstance(node, ast.BinOp)
    left, right = _linear(node.left, name, values, text), _linear(node.right, name, values, text)
    if left is None or right is None:
        return None
    (a, b), (c, d) = left, right
    if isinstance(node.op, ast.Add):
        return a + c, b + d
    if isinstance(node.op, ast.Sub):
        return a - c, b - d
    if isinstance(node.op, ast.Mult) and (a == 0 or c == 0):
        return a * d + c * b, b * d
    if isinstance(node.op, ast.FloorDiv) and a == 0 and c == 0 and d != 0:
        return 0, b // d
    return None


def _assignments(values: Mapping[str, int], text: str) -> str:
    names = parse_dim(text).names
    return ", ".join(f"{n}={values[n]}" for n in names if n in values)


# -- symbolic dims -----------------------------------------------------------------------
def symbolic_dims(model: onnx.ModelProto) -> list[str]:
    """The symbolic dims (``dim_param``) of the model's graph inputs, first seen first,
    expressions (``past_sequence + 1``) included."""
    initializers = {t.name for t in model.graph.initializer}
    names = (dim.dim_param for value in model.graph.input if value.name not in initializers
             for dim in _tensor_dims(value) or () if dim.HasField("dim_param") and dim.dim_param)
    return list(dict.fromkeys(names))


def free_dims(model: onnx.ModelProto) -> list[str]:
    """The sizes a user gives (they determine every symbolic dim of the graph inputs): the
    plain and opaque names among `symbolic_dims`, then the names that appear only inside
    expressions, first seen first. ``[batch, past_sequence + 1]`` gives ``[batch, past_sequence]``."""
    dims = symbolic_dims(model)
    parsed = [_parsed(dim) for dim in dims]
    plain = [dim for dim, expression in zip(dims, parsed) if expression is None or expression.is_name]
    inner = [name for expression in parsed if expression is not None for name in expression.names]
    return list(dict.fromkeys([*plain, *inner]))


def _checked_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    for dim, length in sizes.items():
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise OnnxImportError(f"size of symbolic dim {dim!r} must be a positive int, got {length!r}")
    return dict(sizes)


#: What an error says of a size taken from `resolve_sizes`' defaults.
_DEFAULT = " (a default)"


def resolve_sizes(model: onnx.ModelProto, sizes: Mapping[str, int],
                  defaults: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every symbolic dim of the graph inputs and every free dim -> its size, from `sizes`
    (any of them, expressions included) and `defaults` (free dims, each taken only when the
    sizes and the defaults before it leave it undetermined); see the module doc.

    OnnxImportError for a contradiction (an expression dim given one size that its names
    make another), a solution that is not a positive integer, or a dim left without a size
    (naming the graph input and axis, with an override that sets it). Sizes of names the
    model does not have are ignored.
    """
    dims = symbolic_dims(model)
    parsed = {dim: _parsed(dim) for dim in dims}
    given = _checked_sizes(sizes)
    known, _ = _solve(parsed, given, {})
    free, chosen = free_dims(model), {}
    for name, size in _checked_sizes(defaults or {}).items():
        if name in free and name not in known:
            chosen[name] = size
            known, _ = _solve(parsed, given, chosen)
    for value, axis, dim in _input_dims(model.graph):
        if dim not in known:
            raise OnnxImportError(f"graph input {value!r}: symbolic dim {dim!r} (axis {axis}) has no size; "
                                  f"{_size_hint(dim, parsed[dim], known)}")
    return {name: known[name] for name in dict.fromkeys([*dims, *free]) if name in known}


def _solve(parsed: Mapping[str, DimExpression | None], given: Mapping[str, int],
           defaults: Mapping[str, int]) -> tuple[dict[str, int], dict[str, str]]:
    """Sizes known from `given` and `defaults`: computed expression dims, solved names. Also
    where each known size comes from, for errors ("" given, _DEFAULT, or the dim solved from)."""
    names = set(parsed) | {n for e in parsed.values() if e is not None for n in e.names}
    known = {n: s for n, s in {**defaults, **given}.items() if n in names}
    origin = {n: ("" if n in given else _DEFAULT) for n in known}
    expressions = {dim: e for dim, e in parsed.items() if e is not None and not e.is_name}
    changed = True
    while changed:
        changed = False
        for dim, expression in expressions.items():
            missing = [n for n in expression.names if n not in known]
            if not missing and dim not in known:
                known[dim], origin[dim] = _positive(expression, known), " (computed)"
                changed = True
            elif len(missing) == 1 and dim in known:
                name = missing[0]
                solution = _solved(expression, name, known[dim], known, origin)
                if solution is not None:
                    known[name], origin[name], changed = solution, f" (from {dim!r}={known[dim]})", True
    for dim, expression in expressions.items():
        if dim in known and all(n in known for n in expression.names):
            size = expression.evaluate(known)
            if size != known[dim]:
                used = ", ".join(f"{n}={known[n]}{origin[n]}" for n in expression.names)
                raise OnnxImportError(f"symbolic dim {dim!r} is {known[dim]}{origin[dim]} but {used} "
                                      f"makes it {size}")
    return known, origin


def _positive(expression: DimExpression, known: Mapping[str, int]) -> int:
    size = expression.evaluate(known)
    if not 0 < size < 2**63:  # an ONNX dim is an int64
        raise OnnxImportError(f"symbolic dim {expression.text!r} is {size} with "
                              f"{_assignments(known, expression.text)}; sizes must be positive int64")
    return size


def _solved(expression: DimExpression, name: str, size: int, known: Mapping[str, int],
            origin: Mapping[str, str]) -> int | None:
    """The positive integer `name` that makes `expression` `size`, the other names `known`;
    None where the expression is not linear in `name`."""
    form = expression.linear(name, known)
    if form is None or form[0] == 0:
        return None
    slope, offset = form
    solution, remainder = divmod(size - offset, slope)
    if remainder or solution <= 0:
        others = ", ".join(f"{n}={known[n]}{origin[n]}" for n in expression.names if n != name)
        raise OnnxImportError(f"symbolic dim {expression.text!r}={size}{origin[expression.text]}"
                              f"{f' with {others}' if others else ''} makes {name}="
                              f"{(size - offset) / slope:g}, not a positive integer")
    return solution


def _input_dims(graph: onnx.GraphProto) -> Iterator[tuple[str, int, str]]:
    """(graph input, axis, dim_param) of every symbolic dim of the graph inputs."""
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name not in initializers:
            for axis, dim in enumerate(_tensor_dims(value) or ()):
                if dim.HasField("dim_param") and dim.dim_param:
                    yield value.name, axis, dim.dim_param


# -- hints: Hydra overrides that set a size ----------------------------------------------
#: Keys that a dotted Hydra override (``+model.placeholders.<key>=<n>``) reaches.
_HYDRA_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
#: Keys that Hydra reads in a dict value (``+model.placeholders={<key>:<n>}``): its unquoted
#: characters, and the ones it escapes with a backslash (quotes, non-ASCII ... it refuses).
_HYDRA_DICT_KEY = re.compile(r"[A-Za-z0-9_\-/\\+.$%*@?|()\[\]{}:=, \t]+")
_HYDRA_ESCAPED = re.compile(r"([\\()\[\]{}:=, \t])")


def _override(name: str) -> str | None:
    """An override that sets `name` (``<n>`` stands for the size): dotted where Hydra reads
    the name as a key, else a dict merged into model.placeholders, quoted for a shell; None
    where no override reaches it (quotes, non-ASCII letters, a name Hydra reads as a number)."""
    if _HYDRA_KEY.fullmatch(name):
        return f"+model.placeholders.{name}=<n>"
    try:
        float(name)
        return None
    except ValueError:
        pass
    if not _HYDRA_DICT_KEY.fullmatch(name):
        return None
    key = _HYDRA_ESCAPED.sub(r"\\\1", name)
    return shlex.quote(f"+model.placeholders={{{key}:<n>}}")


def _size_hint(dim: str, expression: DimExpression | None, known: Mapping[str, int]) -> str:
    """How to give `dim` a size: itself when it is a plain name, else the names it is made of."""
    if expression is None or expression.is_name:
        names, start = [dim], "set it with "
    else:
        names = [n for n in expression.names if n not in known]
        start = f"set {', '.join(names)}, which {'determines' if len(names) == 1 else 'determine'} it: "
    fixes = [_override(name) for name in names]
    if None in fixes:
        unreachable = ", ".join(repr(n) for n, fix in zip(names, fixes) if fix is None)
        return (f"no Hydra override reaches {unreachable} (quotes, non-ASCII letters, a number): give it in "
                "the sizes of elkopt.graph.onnx_graph.import_onnx, or export the model with another dim name")
    return start + " ".join(fixes)


def _tensor_dims(value: onnx.ValueInfoProto) -> Sequence[onnx.TensorShapeProto.Dimension] | None:
    """The dims of a tensor value; None if its shape (even its rank) is unknown."""
    kind = value.type
    if kind.HasField("tensor_type") and kind.tensor_type.HasField("shape"):
        return kind.tensor_type.shape.dim
    return None


def _substitute(graph: onnx.GraphProto, sizes: dict[str, int]) -> None:
    """Give symbolic dims their sizes (`resolve_sizes`): required on graph inputs; on outputs
    and value_info an unknown one is cleared for shape inference to compute."""
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(_tensor_dims(value) or ()):
            if dim.HasField("dim_value"):
                continue
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
            elif dim.dim_param:
                raise OnnxImportError(
                    f"graph input {value.name!r}: symbolic dim {dim.dim_param!r} (axis {axis}) has "
                    f"no size; {_size_hint(dim.dim_param, _parsed(dim.dim_param), sizes)}")
            else:
                raise OnnxImportError(f"graph input {value.name!r}: axis {axis} has no size; "
                                      "export the model with static shapes")
    for value in (*graph.output, *graph.value_info):
        for dim in _tensor_dims(value) or ():
            if dim.HasField("dim_param"):
                size = sizes.get(dim.dim_param)
                if size is None:
                    size = _computed(dim.dim_param, sizes)
                if size is not None:
                    dim.dim_value = size
                else:
                    dim.Clear()


def _computed(dim: str, sizes: Mapping[str, int]) -> int | None:
    """An output's expression dim computed from `sizes`, None when it cannot be (positive only)."""
    expression = _parsed(dim)
    if expression is None or not all(n in sizes for n in expression.names):
        return None
    try:
        size = expression.evaluate(sizes)
    except OnnxImportError:
        return None
    return size if size > 0 else None


# -- shape inference ---------------------------------------------------------------------
#: Initializers with more elements than this are given to onnxruntime as graph inputs (it
#: reads the values of the ones it keeps: shapes, axes, small constants).
_ORT_MAX_INITIALIZER_ELEMENTS = 1024
_ORT_FIX = "pip install 'elkopt[ort]'"
_SHOWN_UNKNOWN = 4


@dataclass(frozen=True)
class InferredShapes:
    """A model with inferred shapes (`infer_shapes`): `unknown`, the values the import needs
    that are still unknown, and `note`, why onnxruntime did not complete them (not installed,
    or its inference failed), None when it ran or was not needed."""

    model: onnx.ModelProto
    unknown: tuple[str, ...] = ()
    note: str | None = None

    def explained(self, error: OnnxImportError) -> OnnxImportError:
        """`error`, with the note appended when it is about one of the unknown values."""
        if self.note and any(repr(value) in str(error) for value in self.unknown):
            return OnnxImportError(f"{error}; {self.note}")
        return error


def infer_shapes(model: onnx.ModelProto, data_values: Collection[str],
                 data_inputs: Callable[[onnx.NodeProto], Sequence[str]]) -> InferredShapes:
    """`model` (its symbolic dims substituted, `_substitute`) with the shapes ONNX's shape
    inference finds, completed by onnxruntime's symbolic shape inference when a value the
    import needs is left with an unknown dim or rank (see the module doc). The needed values
    are `data_values` (`onnx_ops._data_values`) and what the nodes computing them read, less
    those computed from constants only (`data_inputs`: a node's inputs read as data,
    `onnx_ops._data_inputs`). `model` is not changed. OnnxImportError when ONNX's inference
    fails; without onnxruntime, the result says which values are unknown, for the import's
    error (`InferredShapes.explained`): the import may not need them all.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise OnnxImportError(f"shape inference failed: {error}") from None
    needed = _needed_values(inferred.graph, data_values, data_inputs)
    unknown = _unknown(inferred.graph, needed)
    if not unknown:
        return InferredShapes(inferred)
    listed = _listed(unknown, inferred.graph)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError as error:  # onnxruntime, or the sympy its symbolic inference imports
        log.warning("ONNX shape inference leaves %s unknown and onnxruntime's symbolic shape inference "
                    "cannot be imported (%s)", listed, error)
        note = (f"ONNX shape inference leaves {listed} unknown; onnxruntime's symbolic shape inference "
                f"completes such models, but it cannot be imported ({error}): {_ORT_FIX}")
        return InferredShapes(inferred, tuple(unknown), note)
    log.info("ONNX shape inference leaves %s unknown; running onnxruntime's", listed)
    try:
        completed = _ort_inferred(SymbolicShapeInference, _without_weights(model))
    except Exception as error:  # noqa: BLE001 - any failure inside onnxruntime
        note = (f"ONNX shape inference leaves {listed} unknown and onnxruntime's symbolic shape "
                f"inference failed ({type(error).__name__}: {error})")
        log.warning("%s", note)
        return InferredShapes(inferred, tuple(unknown), note)
    _merge(inferred.graph, completed.graph)
    left = _unknown(inferred.graph, needed)
    if left:
        log.info("after onnxruntime's shape inference, %s", _listed(left, inferred.graph))
    return InferredShapes(inferred, tuple(left))


def _needed_values(graph: onnx.GraphProto, data_values: Collection[str],
                   data_inputs: Callable[[onnx.NodeProto], Sequence[str]]) -> list[str]:
    """The values whose shapes the importer reads, in node order: the data inputs and data
    outputs of the nodes that read a graph input or a weight (a node reading constants and
    shapes only makes a constant, whatever its shape, and needs none)."""
    constant = {t.name for t in graph.initializer if math.prod(t.dims) <= 1}
    needed: dict[str, None] = {}
    for node in graph.node:
        inputs, outputs = data_inputs(node), [out for out in node.output if out]
        if all(value in constant for value in inputs):
            constant.update(outputs)
        elif any(out in data_values for out in outputs):
            needed.update(dict.fromkeys(inputs))
            needed.update(dict.fromkeys(out for out in outputs if out in data_values))
    return list(needed)


def _unknown(graph: onnx.GraphProto, values: Sequence[str]) -> list[str]:
    shapes = _shapes(graph)
    return [v for v in values if shapes.get(v) is None or None in shapes[v]]


def _listed(values: Sequence[str], graph: onnx.GraphProto) -> str:
    """A few of `values` with their shapes, e.g. ``'m' [?, 1, 1, ?], 'x' unknown (+3 more)``."""
    shapes = _shapes(graph)

    def shown(value: str) -> str:
        shape = shapes.get(value)
        dims = "unknown" if shape is None else f"[{', '.join('?' if d is None else str(d) for d in shape)}]"
        return f"{value!r} {dims}"

    more = f" (+{len(values) - _SHOWN_UNKNOWN} more)" if len(values) > _SHOWN_UNKNOWN else ""
    noun = "value" if len(values) == 1 else "values"
    return f"the shape of {len(values)} {noun}: " + ", ".join(map(shown, values[:_SHOWN_UNKNOWN])) + more


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose external and large initializers are graph inputs of the same
    type and shape, so onnxruntime reads no weight (a stripped file has none to read)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    kept, moved = [], []
    for tensor in graph.initializer:
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if external or math.prod(tensor.dims) > _ORT_MAX_INITIALIZER_ELEMENTS:
            moved.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            kept.append(tensor)
    inputs = {value.name for value in graph.input}
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for value in moved:
        if value.name in inputs:  # an initializer listed as an input too (IR < 4): give it the full type
            next(v for v in graph.input if v.name == value.name).CopyFrom(value)
        else:
            graph.input.append(value)
    del graph.value_info[:]
    return copy


def _ort_inferred(inference_class, model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's symbolic shape inference of `model` (auto_merge), kept even when it is
    incomplete: its public `infer_shapes` then raises and writes a file into the working folder."""
    inference = inference_class(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
    if not all(hasattr(inference, name) for name in ("_preprocess", "_infer_impl", "_update_output_from_vi")):
        return inference_class.infer_shapes(model, auto_merge=True)
    inference._preprocess(model)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


def _merge(graph: onnx.GraphProto, completed: onnx.GraphProto) -> None:
    """Fill `graph`'s unknown dims and shapes from `completed`'s: ONNX's known dims win, and
    where the ranks differ ONNX's shape is kept."""
    own = _value_infos(graph)
    for value in (*completed.value_info, *completed.output):
        dims = _tensor_dims(value)
        if dims is None:
            continue
        mine = own.get(value.name)
        if mine is None:
            graph.value_info.append(value)
            continue
        if not mine.type.HasField("tensor_type"):
            continue
        current = _tensor_dims(mine)
        if current is None:
            mine.type.tensor_type.shape.CopyFrom(value.type.tensor_type.shape)
        elif len(current) == len(dims):
            for dim, other in zip(current, dims):
                if not dim.HasField("dim_value") and other.HasField("dim_value"):
                    dim.dim_value = other.dim_value
        else:
            log.warning("value %r: ONNX infers rank %d, onnxruntime %d; ONNX's shape is kept",
                        value.name, len(current), len(dims))


# -- shapes after inference --------------------------------------------------------------
def _value_infos(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """Value name -> its ValueInfo (graph inputs, value_info, graph outputs)."""
    return {value.name: value for value in (*graph.input, *graph.value_info, *graph.output)}


def _static_shape(value: onnx.ValueInfoProto | None) -> tuple[int, ...] | None:
    """The shape of `value` when every dim is known, else None (None for no value)."""
    dims = None if value is None else _tensor_dims(value)
    if dims is None or not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _shapes(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    """Value name -> shape after inference, None where a dim is unknown or symbolic (left
    symbolic by inference: the graph inputs' symbols are substituted before it)."""
    shapes: dict[str, tuple[int | None, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = _tensor_dims(value)
        if dims is not None:
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else onnx.defs.onnx_opset_version()
