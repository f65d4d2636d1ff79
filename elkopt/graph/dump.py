"""Einstein-expression graph dumps: export the zoo's graphs, import dumps as graphs.

A dump (the format of the Antares / NNFusion tool chain and of the published Elk model
graphs) is a JSON list with one entry per node::

    [node_id, ' - einstein_v2("output0[B, N] +=! input0[B, K] * input1[K, N]", input_dict={...}) ',
     "Dot", [[producer_id, output_port], ...]]

`elkopt.graph.einstein` parses the node text; `elkopt.graph.dump_export` writes the zoo's
graphs (`export_einstein`, `write_einstein`); `elkopt.graph.dump_entries` resolves the
edges, `elkopt.graph.dump_import` maps nodes to the operator IR and
`elkopt.graph.dump_sizes` sizes them. `read_dump` reads a file and says what it resolved.

Import rules (for what the exporter writes and for the 23 published graphs as they ship;
one hand-written sample per construct is in ``tests/dumps/``):

- **Edges.** Edges feed ``input0``, ``input1``, ... in order. An edge names the latest
  entry with that id listed before its reader (the published files list some ids more
  than once: each entry is an operator of its own). An id listed only after its reader is
  accepted when that entry is data movement over inputs from outside the graph.
- **Inputs from outside the graph**: an edge to a ``Parameter`` or ``Constant`` node, to
  an id the dump does not list (most published files leave their source nodes out), or an
  ``input_dict`` entry with no edge. Each is, from how an operator first reads it:
  - a KV cache in HBM, if a ``BatchMatMul`` reads it as its second operand (through
    folded nodes: the keys of q x K^T, the values of P x V);
  - as declared by a named source node (`` - Parameter x ``: an on-chip graph input;
    `` - Constant w ``: HBM), the exporter's convention;
  - else an on-chip constant if it holds one element, an on-chip step input (token ids, a
    mask) if its shape holds the batch placeholder, and a weight in HBM otherwise.
- **Sizes.** Placeholders (`Placeholders`: 99 for the batch, 66 for the sequence, and
  products such as 99 x 66 or 40 x 99) are replaced in shapes, ``where`` bounds and index
  constants. Read as a decode step (`PrefillDecode`), a dump with no KV cache input is a
  prefill graph and becomes one decode step by the published parser's rule: 66 is 1 new
  token, except in the attention BatchMatMuls, where the dims of the second operand are
  the KV length and that operand is a KV cache read from HBM; the embedding gathers are
  dropped (their output is the step's input). The ``exact`` rule also sizes the scores'
  scale, mask and softmax by the KV length, as a real decode step does.
- **Statements.** Each statement of a node is one operator (a ``SoftmaxBasic`` of four
  statements is four; intermediate tensors such as ``mediate0`` are named after the node).
  The kind comes from the statement:
  - a reduction over a product of two inputs (``+=! a * b``) contracts (``Dot``,
    ``BatchMatMul``, ``Convolution``); over one input it reduces (``Sum``, ``Max``,
    ``MaxPool``; a min-reduction costs as a max);
  - an input indexed by another tensor's value (``input0[input1[N], D]``, or the
    published files' ``input0[G3, D] g input1[N]``) is a gather;
  - a bare input (``output0[N] = input0[N + 5120]``, casts allowed) re-lays out, as a
    ``Slice`` does;
  - otherwise one input makes a unary and two a binary element-wise operator. Three or
    more make a chain of binary operators, and none makes a constant fill (an on-chip
    graph input).
  The label is the node type, or for a statement of a multi-statement node its
  reduction, arithmetic operator or function (``Max``, ``Subtract``, ``Exp``).
- **Dims and lengths.** The dims are the output's indices, then the others in order of
  first use. An input is indexed by every name in its index expressions
  (``input0[N, HO + KH]`` reads N, HO and KH, so a convolution is the matmul it lowers to,
  the window positions counted), except the axes a Broadcast added (a norm weight
  broadcast over the tokens is read as the [H] vector it is). Lengths come from ``where``
  bounds, then plain indices of the input shapes, which must agree, then single-index
  affine expressions: ``N1 - 5120`` on a 5120-long axis runs to 10240, ``N0 / 40`` on a
  3-long one to 120. A ``Dot`` drops its length-1 dims while more than three remain, as
  the published parser does (a decode step's token dim).
- **Data movement.** ``Reshape``, ``Broadcast``, ``Convert`` and ``Result`` nodes are
  folded away: their readers read what they read, through the node's index mapping. So
  is a ``Concat``, as in the zoo and the published pipeline: its readers read its input
  from outside the graph (a KV cache with the new token appended), else its first input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from elkopt.conventions import Conventions
from elkopt.graph.dump_entries import DumpError, describe_json_error
from elkopt.graph.dump_export import export_einstein, write_einstein
from elkopt.graph.dump_import import DumpImport, ImportNotes, import_dump
from elkopt.graph.dump_sizes import (
    BATCH_PLACEHOLDER, DECODE_RULES, SEQUENCE_PLACEHOLDER, Placeholders, PrefillDecode,
)
from elkopt.graph.ir import Graph


def read_dump(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None,
              placeholders: Mapping[int, int] | Placeholders | None = None,
              decode: PrefillDecode | None = None, conventions: Conventions | None = None) -> DumpImport:
    """The dump at `path` read as a graph (named after the file), with notes of what was
    resolved; element size from the caller (a dump's dtypes say nothing about the study's
    element size), placeholders, `decode` and `conventions` as `import_dump`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DumpError(f"{path}: not a text file (byte {error.start} is {error.object[error.start]:#04x}); "
                        "an einstein dump is JSON (an ONNX model is read with model.format=onnx)") from None
    except OSError as error:
        raise DumpError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        nodes = json.loads(text)
    except json.JSONDecodeError as error:
        raise DumpError(f"{path}: not JSON ({error.msg}) at line {error.lineno} column {error.colno}, "
                        f"{describe_json_error(text, error.pos)}") from None
    if not isinstance(placeholders, Placeholders):
        placeholders = Placeholders(placeholders)
    return import_dump(nodes, name or path.stem, elem_bytes, placeholders, decode, conventions)


def read_einstein(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None,
                  placeholders: Mapping[int, int] | Placeholders | None = None,
                  decode: PrefillDecode | None = None) -> Graph:
    """The graph of the dump at `path` (`read_dump` without the notes)."""
    return read_dump(path, elem_bytes, name, placeholders, decode).graph


def import_einstein(nodes: list, name: str, elem_bytes: int = 2,
                    placeholders: Mapping[int, int] | Placeholders | None = None,
                    decode: PrefillDecode | None = None) -> Graph:
    """The operator graph of a dump's node list (see the module doc for the rules).

    `placeholders` maps the dump's symbolic sizes to values, e.g. ``{99: 32, 66: 2048}``
    (or is a `Placeholders`, whose `used` then tells which the dump held); without it
    every length is taken as written.
    """
    if not isinstance(placeholders, Placeholders):
        placeholders = Placeholders(placeholders)
    return import_dump(nodes, name, elem_bytes, placeholders, decode).graph


__all__ = ["BATCH_PLACEHOLDER", "DECODE_RULES", "DumpError", "DumpImport", "ImportNotes", "Placeholders",
           "PrefillDecode", "SEQUENCE_PLACEHOLDER", "export_einstein", "import_dump", "import_einstein",
           "read_dump", "read_einstein", "write_einstein"]
