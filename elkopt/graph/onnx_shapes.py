"""Loading ONNX files and reading their shapes, for `elkopt.graph.onnx_graph`.

`load_onnx` reads a file without its external weights and turns every way it can fail to be
a model into an `OnnxImportError`; `symbolic_dims` lists the sizes a model needs; `_substitute`
gives them before ONNX shape inference, and `_shapes` reads what inference found.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import onnx.parser
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError


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


# -- symbolic dims -----------------------------------------------------------------------
def symbolic_dims(model: onnx.ModelProto) -> list[str]:
    """The symbolic dims (``dim_param``) of the model's graph inputs, first seen first:
    the names `import_onnx` needs sizes for."""
    initializers = {t.name for t in model.graph.initializer}
    names = (dim.dim_param for value in model.graph.input if value.name not in initializers
             for dim in _tensor_dims(value) or () if dim.HasField("dim_param") and dim.dim_param)
    return list(dict.fromkeys(names))


def _checked_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    for dim, length in sizes.items():
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise OnnxImportError(f"size of symbolic dim {dim!r} must be a positive int, got {length!r}")
    return dict(sizes)


def _tensor_dims(value: onnx.ValueInfoProto) -> Sequence[onnx.TensorShapeProto.Dimension] | None:
    """The dims of a tensor value; None if its shape (even its rank) is unknown."""
    kind = value.type
    if kind.HasField("tensor_type") and kind.tensor_type.HasField("shape"):
        return kind.tensor_type.shape.dim
    return None


def _substitute(graph: onnx.GraphProto, sizes: dict[str, int]) -> None:
    """Give symbolic dims their sizes: required on graph inputs; on outputs and value_info
    an unknown one is cleared for shape inference to compute."""
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
                    f"no size; set it with +model.placeholders.{dim.dim_param}=<n>")
            else:
                raise OnnxImportError(f"graph input {value.name!r}: axis {axis} has no size; "
                                      "export the model with static shapes")
    for value in (*graph.output, *graph.value_info):
        for dim in _tensor_dims(value) or ():
            if dim.HasField("dim_param"):
                if dim.dim_param in sizes:
                    dim.dim_value = sizes[dim.dim_param]
                else:
                    dim.Clear()


# -- shapes after inference --------------------------------------------------------------
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
