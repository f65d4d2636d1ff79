"""ONNX models as operator graphs: `read_onnx` (a file) and `import_onnx` (a ModelProto).

The sibling of `elkopt.graph.dump` for models exported to ONNX. Only shapes matter: a file is
read without its external weight files, the caller gives the symbolic dims (`sizes`, e.g.
``{"batch": 4, "seq": 128}``, substituted on the graph inputs, outputs and value_info) and
ONNX shape inference fills in the rest. Dims named by expressions of others
(``past_sequence + 1``) are computed from them or solve for them, and a contradiction is an
error; where ONNX's inference leaves a value the import reads unknown (exported masks,
``com.microsoft`` operators), onnxruntime's symbolic shape inference completes it, when
installed (`elkopt.graph.onnx_shapes` has the rules). The element size comes from the
caller, never from the ONNX dtypes.

Tensors and storage:

- initializers with more than one element are weights, read from HBM; one-element
  initializers, ``Constant`` nodes (whatever their size) and values computed only from
  constants and shapes (``Shape``, ``Size``, ``ConstantOfShape``, ``Range``, ``EyeLike``,
  and any node whose data inputs are all constants) are constants: no operator, read as
  on-chip graph inputs like the zoo's scalar constants;
- a graph output named like ``*present*`` that an operator computes (a prompt's K and V
  returned for the KV cache) is written to HBM, as the zoo's prefill writes them
  (`Graph.stores`); a decode step's present (past with the new entries appended) is the HBM
  cache itself;
- a graph input that is not an initializer is an on-chip graph input, unless its name
  matches an fnmatch pattern of `hbm_inputs` (by default ``*past*`` and ``*cache*``: a
  decode model's KV cache), then it is read from HBM;
- only values that reach a graph output through data inputs are imported: the shape,
  axes and pads inputs of ``Reshape``, ``Expand``, ``Slice``, reductions ... are not data,
  so the shape computations feeding them produce nothing.

Operators are named after their node (``<op_type>_<index>`` for a node without a name), with
a suffix when one node becomes several; an operator's output tensor is named after it, and
names are made unique against each other and against graph inputs and initializers.
Dims are ``D0, D1, ...`` over an output's axes unless said otherwise.

- ``MatMul`` (numpy semantics, 1-D operands included): one MATMUL over dims ``B0...``
  (batch), ``M``, ``N``, ``K``, reduce "sum"; labelled ``BatchMatMul`` when both operands
  index a batch dim, else ``Dot``. ``Gemm``: a Dot over ``M, N, K`` (transA/transB pick the
  operands' axis order; alpha and beta cost nothing), then C as an ``Add`` named
  ``<node>.add_bias``, like the zoo's linear layers.
- ``Conv`` (1-D to 3-D): the matmul it lowers to (im2col), labelled ``Conv``, dims ``N, [G,]
  F, [DO,] [HO,] WO, C, [KD,] [KH,] KW``: the image is read once per window position, indexed
  ``(N, [G,] C, HO, KH, WO, KW)``; the weight ``([G,] F, C, KH, KW)``; ``group > 1`` adds the
  group dim ``G`` to all three operands. Strides, pads and dilations act through the
  inferred output size. A bias is a separate ``Add`` (``<node>.add_bias``).
- ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``GlobalMaxPool``: a REDUCE (max /
  sum) labelled with the op type, dims ``N, C, HO, WO, KH, KW``, the input indexed
  ``(N, C, HO, KH, WO, KW)`` (a global pool's window is the whole image, its HO = WO = 1).
- Element-wise nodes (``Add``, ``Sub``, ``Mul``, ``Div``, ``Pow``, ``Max``, ``Min``,
  comparisons; ``Relu``, ``Sigmoid``, ``Exp``, ``Sqrt``, ``Neg``, ``Clip``, ...): one BINARY or
  UNARY over the output's axes, labelled as the zoo does (``Subtract``, ``Multiply``,
  ``Negative``, ...; the op type otherwise). An input of size 1 or missing on an axis
  does not index it (numpy broadcasting); a scalar is an operand with no dims; nor does
  an axis an ``Expand`` broadcast (below), so an expanded mask costs its own size. A
  one-input ``Max``/``Min``/``Sum`` is folded; more than two inputs are refused.
- ``Where`` (a select): one BINARY ``Where`` over its two non-constant inputs, so a masked
  fill ``where(mask, scores, -inf)`` reads the mask and the scores, like the zoo's mask
  ``Add``; with one non-constant input it reads that and the first constant one; with
  three, two chained operators: ``<node>.then`` (condition, X), ``<node>.else`` (that, Y).
- ``ReduceSum``, ``ReduceMean``, ``ReduceL1``, ``ReduceL2``, ``ReduceSumSquare``,
  ``ReduceLogSumExp``, ``ReduceProd`` (reduce "sum"), ``ReduceMax``, ``ReduceMin``,
  ``ArgMax``, ``ArgMin`` ("max"): one REDUCE labelled with the op type, the output indexing
  the kept axes (keepdims adds nothing: a kept axis has size 1). Axes come from the
  attribute or, from opset 18 (13 for ReduceSum), from an initializer or ``Constant``
  input; no axes reduce everything (the output is then a scalar, an operand with no dims),
  unless ``noop_with_empty_axes``, which folds the node. The mean's division and the L2's
  root are not separate operators.
- ``Softmax`` (opset 13: one axis; before: the axes from ``axis`` on): the zoo's four
  operators ``<node>.max`` (Max), ``.exp`` (Subtract: exp(x - max) is one operator),
  ``.sum`` (Sum), ``.divide`` (Divide). ``LogSoftmax``: the same max, exp and sum, then
  ``.log`` (Log), ``.shift`` (Add of the max) and ``.subtract`` (x minus that).
- ``LayerNormalization``: the zoo's LayerNorm decomposition (11 operators, 10 without
  bias) over the axes from ``axis`` on; ``SimplifiedLayerNormalization`` and
  ``RMSNormalization``: the zoo's RMSNorm (7). The element count and epsilon are scalar
  graph inputs ``<node>.count`` and ``<node>.epsilon``.
- ``Gather``: a GATHER reading (data, indices); the data operand is indexed by the
  indices' dims in place of the gathered axis, so an embedding lookup reads batch x hidden
  elements of its table.
- ``Concat``: with an HBM input (a decode model's ``concat(past_key, new_key)``), consumers
  read that HBM tensor at the concatenated length and the new entries are the folded
  cache write (with several, a new HBM tensor named after the output). Otherwise, with no
  input computed by an operator, the output is an on-chip graph input; with one or more,
  the concat is folded like the zoo's (rotate_half's ``concat(-x2, x1)`` is its sin
  Multiply's input): consumers read the first computed input's tensor at their own view
  of the shape. The other inputs' producers still run, in program order, but nothing
  reads them through the concat (constants and graph inputs are dropped).
- ``Slice`` of an HBM tensor is folded (consumers read the slice from HBM, as the zoo's
  rotary tables); of an on-chip tensor, a SLICE over the output's axes, as the zoo's
  q/k/v and rotary halves. ``Split``: the same for each output (``<node>.<k>``).
- ``Gelu`` (exact or tanh): the zoo's GELU, x * sigmoid(1.702 x), a ``<node>.sigmoid``
  Sigmoid and a Multiply.
- Folded data movement (consumers read the producer's tensor, at their own view of its
  shape): ``Reshape``, ``Transpose``, ``Flatten``, ``Squeeze``, ``Unsqueeze``, ``Identity``,
  ``Cast``, ``CastLike``, ``Expand``, ``Tile``, ``Pad``, ``Dropout`` (inference).
- ``Expand`` is a broadcast, not a copy: its output's axes are remembered as factors of
  the tensor read and factors broadcast (a new axis, or one of size 1 in its input).
  Identity, Cast, CastLike, Dropout, Transpose (permuted) and the reshapes (``Reshape``,
  ``Flatten``, ``Squeeze``, ``Unsqueeze``: factors regrouped row-major onto the new axes,
  splitting one where an axis ends inside it) keep that; Tile, Pad, Split, Slice, Concat
  and any reshape that would split a factor unevenly drop it. ``MatMul``, element-wise
  ops and ``Where`` index an axis of such an input only through its read factors (other
  readers - reductions, Softmax, Gather ... - read the whole shape): an all-broadcast
  axis indexes nothing; a partly broadcast one - HF's ``repeat_kv``: past_key [B, Hkv,
  S, D] unsqueezed, expanded to [B, Hkv, G, S, D] and reshaped to [B, Hq, S, D] has heads
  Hq = (Hkv read, G broadcast) - splits that operator dim into one sub-dim per factor,
  ``<dim>_0, <dim>_1, ...`` (major first), which the other operands and the output index
  in its place, while that input indexes only the read ones. So the scores MatMul of q
  [B, Hq, 1, D] with that cache runs over ``B0, B1_0 (Hkv), B1_1 (G), M, N, K``, reads the
  cache once (B x Hkv x S x D) and keeps the FLOPs and the q and output volumes: the
  zoo's grouped attention. A MatMul's contracted K is not split (an input broadcast
  along it reads it whole, so both inputs index it), and the first input to split a dim
  sets its factors (another input with other factors on that dim reads it whole).

Before the import, after shape inference, a mixture-of-experts block (a ``Softmax`` router
and its ``TopK``, then the exporter's data-dependent dispatch to the experts) becomes one
``MixtureOfExperts`` node that the import reads as the zoo's layer over the expected number
of distinct experts (`routing`; `elkopt.graph.onnx_moe`), onnxruntime's fused operators that exporters write
(``SkipLayerNormalization``, ``SkipSimplifiedLayerNormalization``, ``QuickGelu``, ``FastGelu``,
``BiasGelu``) become the standard nodes they fuse (`elkopt.graph.onnx_contrib`; the fused
attentions ``GroupQueryAttention``, ``MultiHeadAttention`` and ``RotaryEmbedding`` are read as
the zoo's attention by `elkopt.graph.onnx_attention`), and the graph
is rewritten to cost what its architecture costs (`elkopt.graph.onnx_rewrites`): masks built
from ``*mask*`` inputs are one on-chip input each, tables computed from positions or weights
(rotary cos/sin) are read from HBM, token and position embedding lookups are folded as the
zoo's, a NaN guard after a softmax is dropped, constant scales on a MatMul's operands move to
its output, and sibling projections of one input are one MatMul and Slices.

Not imported: control flow (``If``, ``Loop``, ``Scan``), local functions, ``ConvTranspose``,
``Resize``, ``GatherElements``/``GatherND``/``ScatterND`` outside a mask or a
mixture-of-experts dispatch, ``TopK`` outside a router, other contrib operators
(``Attention``, ``MatMulNBits``, ...) and the secondary outputs of a node
(``MaxPool`` indices, ``LayerNormalization`` mean, a ``Dropout`` mask): an ``OnnxImportError``
names the node and what was expected. A file that is not an ONNX model (an einstein dump's
JSON, say) is refused the same way, naming the file.

The import is split by responsibility: `elkopt.graph.onnx_shapes` loads files and handles
symbolic dims and inferred shapes, `elkopt.graph.onnx_moe`, `elkopt.graph.onnx_contrib` and
`elkopt.graph.onnx_rewrites` rewrite the inferred graph, `elkopt.graph.onnx_views` follows an Expand's broadcast,
`elkopt.graph.onnx_importer` keeps the values and emits operators, and
`elkopt.graph.onnx_ops` translates each op type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from elkopt.graph.ir import Graph
from elkopt.graph.onnx_contrib import expand_contrib
from elkopt.graph.onnx_moe import fuse_moe
from elkopt.graph.onnx_ops import _data_inputs, _data_values, _Importer
from elkopt.graph.onnx_rewrites import rewrite_exported
from elkopt.graph.onnx_shapes import (
    OnnxImportError, _substitute, infer_shapes, load_onnx, resolve_sizes, symbolic_dims,
)

DEFAULT_HBM_INPUTS = ("*past*", "*cache*")


def read_onnx(path: str | os.PathLike, elem_bytes: int = 2, name: str | None = None,
              sizes: Mapping[str, int] | None = None,
              hbm_inputs: Sequence[str] = DEFAULT_HBM_INPUTS, routing: str | None = None) -> Graph:
    """The operator graph of the ONNX file at `path` (named after the file unless `name`).

    External weight files are not read (only shapes matter); see `import_onnx`.
    """
    return import_onnx(load_onnx(path), name or Path(path).stem, elem_bytes, sizes, hbm_inputs, routing)


def import_onnx(model: onnx.ModelProto, name: str, elem_bytes: int = 2,
                sizes: Mapping[str, int] | None = None,
                hbm_inputs: Sequence[str] = DEFAULT_HBM_INPUTS, routing: str | None = None) -> Graph:
    """The operator graph of `model` (see the module doc for the rules); `model` is not changed.

    sizes: symbolic dim name (``dim_param``) -> length; every symbolic dim of a graph
    input needs one, given or computed from the others (`onnx_shapes.resolve_sizes`:
    ``past_sequence + 1`` from past_sequence, or past_sequence solved from it).
    hbm_inputs: fnmatch patterns of graph inputs read from HBM. routing: how tokens pick
    the experts of a mixture-of-experts layer (`workload.routing`, `elkopt.graph.moe`;
    None: uniform).
    """
    if not isinstance(model, onnx.ModelProto):
        raise OnnxImportError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    _substitute(model_copy.graph, resolve_sizes(model_copy, sizes or {}))
    shapes = infer_shapes(model_copy, _data_values(model_copy.graph), _data_inputs)
    inferred = shapes.model
    fuse_moe(inferred.graph)
    expand_contrib(inferred.graph)
    rewrite_exported(inferred)
    patterns = (hbm_inputs,) if isinstance(hbm_inputs, str) else tuple(hbm_inputs)
    try:
        return _Importer(inferred, patterns, routing).run(name, elem_bytes)
    except OnnxImportError as error:  # an unknown shape: say why onnxruntime did not infer it
        raise shapes.explained(error) from None


__all__ = ["DEFAULT_HBM_INPUTS", "OnnxImportError", "import_onnx", "load_onnx", "read_onnx", "symbolic_dims"]
