"""One LLM decode step written as ONNX (as an exporter writes it), imported, and compared with the zoo.

    python experiments/onnx_decoder.py --models llama2_13b            # all 40 layers, b32 KV 2048
    python experiments/onnx_decoder.py --layers 2                      # the four LLMs, 2 layers each
    python experiments/onnx_decoder.py --layers 2 --norm onnx          # RMSNormalization ops
    python experiments/onnx_decoder.py --models llama2_70b --layers 2 --gqa repeat
    python experiments/onnx_decoder.py --no-plan --check               # all layers, no planning
    python experiments/onnx_decoder.py --models llama2_13b --no-plan --save onnx/   # keep the file

For each model, `decode_step_onnx` writes one decode step with `onnx.helper` (no torch):
graph inputs `inputs_embeds` [batch_size, 1, H] (the embedding gather is left out, as the
zoo folds it), `attention_mask` [batch_size, 1, 1, total_sequence_length] (additive) and per
layer `past_key_values.<l>.key` / `.value` [batch_size, Hkv, past_sequence_length, D]
(HBM by the importer's default ``*past*`` pattern); outputs `logits` and the presents.
Weights are fp16 initializers with their real shapes stored as external data in a file
that is never written (`data_location = EXTERNAL`, location / offset / length): a
Llama2-70B step is 1 MB of protobuf. `onnx.shape_inference` (strict mode and check_type
too) and the importer (which reads without external data) only need their dims.

Each layer follows the zoo's decomposition (`elkopt.graph.builders`) in ONNX operators, in the
style of a torch.onnx export of the Hugging-Face model: norm, one fused q/k/v MatMul and
three Slices (+ bias Adds for OPT), Reshape/Transpose to heads, rotary in torch's
evaluation order (Mul by cos; rotate_half: Slice, Slice, Neg, Concat; Mul by sin; Add; the
cos/sin tables [4096, D] in HBM are sliced at the new token's position once per model),
`Concat(past, new)` on the key and value, scores MatMul with the concatenated key, Div by
sqrt(D) (OPT: Mul of q by 1/sqrt(D), then Max with the dtype minimum), the mask Add,
Cast/Softmax/Cast, context MatMul, Transpose/Reshape, output projection, residual Add,
norm, MLP (fused gate/up MatMul and two Slices, SiLU as Sigmoid*x or
Gelu(approximate="tanh"), product, down MatMul; OPT: fc1, bias, Relu, fc2, bias), residual
Add; then final norm and LM head. OPT adds its learned
positions as a graph input `position_embeds` [1, 1, H] (the zoo's on-chip
`embed.positions`). Grouped-query attention as the zoo does it (`--gqa broadcast`): q is
reshaped to [B, Hkv, G, 1, D] and the caches unsqueezed to [B, Hkv, 1, S, D], so MatMul
broadcasts them over the group; `--gqa repeat` writes HF's repeat_kv instead (Unsqueeze,
Expand to G, Reshape to [B, Hq, S, D]). Norms (`--norm`): "decomposed" writes RMSNorm as
torch exports LlamaRMSNorm (Cast to fp32, Pow 2, ReduceMean, Add eps, Sqrt, Div 1/x, Mul,
Cast, Mul weight) and LayerNorm as `LayerNormalization`; "onnx" uses `RMSNormalization`
(opset 23). The opset is the lowest that has every operator used (18, 20 for Gelu, 23).

How the imported graph differs from the zoo's (b32 KV 2048 on ipu_pod4, elkopt schedules):

- HBM bytes are equal to the byte, all four models, all layers, once the past length is
  kv_len - 1: the zoo's "KV cache of kv_len positions" includes the new token, and the
  importer folds `Concat(past_key, new_key)` into the HBM cache, read at the concatenated
  length. Weights have the zoo's fused shapes; every rotary Mul reads its cos/sin row from
  HBM (the importer folds a Slice of an HBM initializer), as the zoo's `rope.cos` /
  `rope.sin`. (A Gather of the tables by position_ids would be one GATHER per table reading
  B x D once, not D per Mul; a static Slice is what matches the zoo.)
- FLOPs are equal, Gemma2's too: `Gelu` is read as the zoo's x * sigmoid(1.702 x), Sigmoid
  and Multiply (until issue 15 it was one UNARY, B x F fewer per layer). The decomposed
  RMSNorm has the zoo's 7 operators and
  its FLOPs: ReduceMean carries no division (the importer's rule: "the mean's division is
  not a separate operator", -B), Div(1, sqrt) adds one (+B), and the zoo's B x H normalising
  Divide is a B x H Mul here. Cast, Reshape, Transpose, Unsqueeze, Expand, Identity, the
  Concat with the past and rotate_half's Concat fold away.
- Operators: the zoo's, kind for kind (Llama2-13B 1928 both, OPT-30B 2269, Llama2-70B
  3848, Gemma2 2216). rotate_half's Concat(-x2, x1) of two computed tensors folds, as in the zoo: the
  sin Mul reads the Neg's tensor at [B, H, 1, D], and x1's Slice runs unread, as the
  zoo's `first_half`. (Before the importer folded it, it was two SLICE parts per rotary,
  +4 operators per layer and +1.6% latency on Llama2-13B.) Labels differ only where the
  decomposed RMSNorm is written as torch exports it (Power, ReduceMean, Div(1, x) for the
  zoo's Multiply, Sum, Divide: same kinds and count); with `--norm onnx` none do.
- Latency: the zoo's to the last digit for Llama2-13B (all 40 layers: 6.950414 ms both;
  2 layers: 0.413105), OPT-30B (0.633953) and Llama2-70B (0.476594), with either norm,
  although the importer's dims differ (a projection is a Dot over (B0, M=1, N, K) where
  the zoo has (B, N, K); GQA scores are (B0, B1, B2, M=1, N=S, K=D) where the zoo has (B,
  Hkv, G, T=1, S, D); element-wise ops run over the ONNX shapes): length-1 dims and axis
  order change no plan. Gemma2 (2 layers) too, 0.523512 ms both (before Gelu was read as
  two operators the import was 0.18% faster, by the zoo's GELU Multiply). Program order
  counts: written with rotate_half before the cos Mul (not torch's order), Gemma2 with
  SiLU came out 0.12% faster than the zoo (other loads overlap the output projection,
  less interconnect stall), Llama unchanged.
- `--gqa repeat` (HF's repeat_kv: Unsqueeze, Expand to G, Reshape to [B, Hq, S, D]) reads
  each cache once, the zoo's HBM bytes to the byte, and has the `--gqa broadcast`
  latency (Llama2-70B and Gemma2, 2 layers: 0.476594 and 0.548772 ms; all 80 / 46 layers:
  the same operators, HBM bytes and FLOPs). The importer keeps the Expand's broadcast
  through the Reshape as a view, heads Hq = (Hkv read, G broadcast), and splits the
  scores and context MatMuls' heads dim into (Hkv, G): the cache indexes Hkv only, q and
  the output both, so the MatMuls are the broadcast graph's dim for dim. (Before, the
  cache was read at the expanded [B, Hq, S, D]: Llama2-70B, 2 layers, 1.84x the HBM
  bytes and 1.31x the latency.)

`--layers 2`, without the gather column (0) and the timing columns (the 2-layer `--gqa
repeat` runs of Llama2-70B and Gemma2 print the same rows)::

    model       graph       ops matmul binary  unary reduce  slice      GFLOP     HBM bytes  latency ms
    llama2_13b  zoo         104     13     53     11      9     18     53.811    4280864768    0.413105
    llama2_13b  onnx        104     13     53     11      9     18     53.811    4280864768    0.413105
    opt_30b     zoo         107     13     67      7     14      6    105.800    6945447936    0.633953
    opt_30b     onnx        107     13     67      7     14      6    105.800    6945447936    0.633953
    llama2_70b  zoo         104     13     53     11      9     18    130.658    4483794944    0.476594
    llama2_70b  onnx        104     13     53     11      9     18    130.658    4483794944    0.476594
    gemma2_27b  zoo         104     13     53     11      9     18    150.160    5698010112    0.549757
    gemma2_27b  onnx        102     13     51     11      9     18    150.157    5698010112    0.548772

`--models llama2_13b` (all 40 layers): 1928 operators, 876.984 GFLOP, 79391180800 HBM
bytes and 6.950414 ms, zoo and ONNX alike (planning 22 to 27 s each, 50 s in all).

The ONNX side is cheap: building and saving Llama2-70B (80 layers, 1.07 MB file) takes
0.14 s and importing it 0.5 s; `--check` also passes `onnx.checker.check_model(full_check=
True)`, which needs the weights file to exist, so it is given a sparse one of the right
length (no disk used) and removed.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import math
import pstats
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from elkopt.app import peak_rss_mb
from elkopt.chip import Chip
from elkopt.graph.arch import Architecture
from elkopt.graph.ir import Graph, OpKind
from elkopt.graph.onnx_graph import read_onnx
from elkopt.graph.zoo import build_graph, get_architecture
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir

CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"
FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT
WEIGHTS_FILE = "weights.bin"  # never written: the initializers point into it for their dims
BATCH, PAST, TOTAL = "batch_size", "past_sequence_length", "total_sequence_length"
ROPE_TABLE = 4096  # rows of the cos/sin tables (max_position_embeddings)
NORMS = ("decomposed", "onnx")
GQA = ("broadcast", "repeat")
KINDS = tuple(OpKind)


def onnx_sizes(batch: int, kv_len: int) -> dict[str, int]:
    """Sizes of the symbolic dims for the importer: the new token is the kv_len-th position."""
    return {BATCH: batch, PAST: kv_len - 1, TOTAL: kv_len}


class _Writer:
    """Nodes and initializers of a graph being written; node outputs are named after the node."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.known: set[str] = set()
        self.offset = 0  # into WEIGHTS_FILE
        self.opset = 18

    def op(self, op_type: str, inputs: list[str], name: str, **attributes) -> str:
        output = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attributes))
        return output

    def weight(self, name: str, *dims: int) -> str:
        """An fp16 initializer of shape `dims`, stored externally (no data in memory)."""
        tensor = TensorProto(name=name, data_type=FP16, dims=dims,
                             data_location=TensorProto.EXTERNAL)
        length = 2 * math.prod(dims)
        for key, value in (("location", WEIGHTS_FILE), ("offset", self.offset), ("length", length)):
            tensor.external_data.add(key=key, value=str(value))
        self.offset += length
        self.initializers.append(tensor)
        return name

    def constant(self, name: str, content) -> str:
        """A small initializer (shapes, axes, scalars), written once under `name`."""
        if name not in self.known:
            self.known.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(content), name))
        return name

    def ints(self, *values: int) -> str:
        return self.constant("const_i64_" + "_".join(str(v).replace("-", "m") for v in values),
                             np.array(values, np.int64))

    def scalar(self, number: float, dtype=np.float16) -> str:
        return self.constant(f"const_{np.dtype(dtype).name}_{number!r}", np.array(number, dtype))


def _norm(w: _Writer, arch: Architecture, name: str, x: str, mode: str) -> str:
    """The architecture's norm over the last axis (weights `<name>.weight` / `.bias`)."""
    hidden = arch.hidden
    if arch.norm == "layernorm":
        return w.op("LayerNormalization", [x, w.weight(f"{name}.weight", hidden),
                                           w.weight(f"{name}.bias", hidden)],
                    f"/{name}/LayerNormalization", axis=-1, epsilon=1e-5)
    scale = w.weight(f"{name}.weight", hidden)
    if mode == "onnx":
        w.opset = max(w.opset, 23)
        return w.op("RMSNormalization", [x, scale], f"/{name}/RMSNormalization", axis=-1,
                    epsilon=1e-5)
    # LlamaRMSNorm: x32 = x.float(); x32 * rsqrt(mean(x32^2) + eps); weight * that.half()
    p = f"/{name}"
    x32 = w.op("Cast", [x], f"{p}/Cast", to=FP32)
    square = w.op("Pow", [x32, w.scalar(2.0, np.float32)], f"{p}/Pow")
    mean = w.op("ReduceMean", [square, w.ints(-1)], f"{p}/ReduceMean", keepdims=1)
    shifted = w.op("Add", [mean, w.scalar(1e-5, np.float32)], f"{p}/Add")
    root = w.op("Sqrt", [shifted], f"{p}/Sqrt")
    inverse = w.op("Div", [w.scalar(1.0, np.float32), root], f"{p}/Div")
    y32 = w.op("Mul", [x32, inverse], f"{p}/Mul")
    y = w.op("Cast", [y32], f"{p}/Cast_1", to=FP16)
    return w.op("Mul", [scale, y], f"{p}/Mul_1")


def _linear(w: _Writer, name: str, x: str, n_in: int, n_out: int, bias: bool) -> str:
    y = w.op("MatMul", [x, w.weight(f"{name}.weight", n_in, n_out)], f"/{name}/MatMul")
    if bias:
        y = w.op("Add", [y, w.weight(f"{name}.bias", n_out)], f"/{name}/Add")
    return y


def _columns(w: _Writer, name: str, x: str, start: int, end: int) -> str:
    """x[..., start:end]: an on-chip Slice, as the zoo's q/k/v and gate/up."""
    return w.op("Slice", [x, w.ints(start), w.ints(end), w.ints(-1)], name)


def _rotary(w: _Writer, p: str, x: str, head_dim: int, cos: str, sin: str) -> str:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1), over [B, H, 1, D],
    in torch's evaluation order (the order a trace exports): x * cos first."""
    half = head_dim // 2
    by_cos = w.op("Mul", [x, cos], f"{p}/Mul")
    first = _columns(w, f"{p}/Slice", x, 0, half)
    second = _columns(w, f"{p}/Slice_1", x, half, head_dim)
    negated = w.op("Neg", [second], f"{p}/Neg")
    rotated = w.op("Concat", [negated, first], f"{p}/Concat", axis=-1)
    by_sin = w.op("Mul", [rotated, sin], f"{p}/Mul_1")
    return w.op("Add", [by_cos, by_sin], f"{p}/Add")


def _attention(w: _Writer, arch: Architecture, layer: int, x: str, mask: str,
               rope: tuple[str, str] | None, gqa: str) -> tuple[str, str, str]:
    """Self-attention of one layer on the normed hidden state; (output, present key, value)."""
    p = f"model.layers.{layer}.self_attn"
    d, n_q, n_kv, group = arch.head_dim, arch.n_heads, arch.n_kv_heads, arch.group_size
    q_dim, kv_dim = arch.q_dim, arch.kv_dim
    qkv = _linear(w, f"{p}.qkv_proj", x, arch.hidden, q_dim + 2 * kv_dim, bias=False)
    parts = {}
    for part, start, width in (("q", 0, q_dim), ("k", q_dim, kv_dim), ("v", q_dim + kv_dim, kv_dim)):
        y = _columns(w, f"/{p}/{part}/Slice", qkv, start, start + width)
        if arch.bias:
            y = w.op("Add", [y, w.weight(f"{p}.{part}_proj.bias", width)], f"/{p}/{part}/Add")
        parts[part] = y
    q, k, v = parts["q"], parts["k"], parts["v"]
    if arch.scale_query:  # OPT: q_proj(x) * head_dim**-0.5
        q = w.op("Mul", [q, w.scalar(d ** -0.5)], f"/{p}/Mul")

    def heads(y: str, n: int, tag: str) -> str:  # [B, 1, n*D] -> [B, n, 1, D]
        y = w.op("Reshape", [y, w.ints(0, 0, n, d)], f"/{p}/{tag}/Reshape")
        return w.op("Transpose", [y], f"/{p}/{tag}/Transpose", perm=[0, 2, 1, 3])

    q, k, v = heads(q, n_q, "q"), heads(k, n_kv, "k"), heads(v, n_kv, "v")
    if rope is not None:
        q = _rotary(w, f"/{p}/rotary_q", q, d, *rope)
        k = _rotary(w, f"/{p}/rotary_k", k, d, *rope)
    past_key, past_value = f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"
    key = w.op("Concat", [past_key, k], f"/{p}/Concat_key", axis=2)  # present [B, Hkv, S, D]
    value = w.op("Concat", [past_value, v], f"/{p}/Concat_value", axis=2)
    if group > 1 and gqa == "broadcast":  # the zoo's [B, Hkv, G, 1, S]: caches read once
        q = w.op("Reshape", [q, w.ints(0, n_kv, group, 1, d)], f"/{p}/q/Reshape_group")
        keys = w.op("Unsqueeze", [key, w.ints(2)], f"/{p}/Unsqueeze_key")
        keys = w.op("Transpose", [keys], f"/{p}/Transpose_key", perm=[0, 1, 2, 4, 3])
        values = w.op("Unsqueeze", [value, w.ints(2)], f"/{p}/Unsqueeze_value")
        mask = w.op("Unsqueeze", [mask, w.ints(1)], f"/{p}/Unsqueeze_mask")
        context_perm = [0, 3, 1, 2, 4]
    else:
        keys, values = key, value
        if group > 1:  # HF repeat_kv: [B, Hkv, S, D] -> [B, Hkv, G, S, D] -> [B, Hq, S, D]
            def repeat(y: str, tag: str) -> str:
                y = w.op("Unsqueeze", [y, w.ints(2)], f"/{p}/{tag}/Unsqueeze")
                y = w.op("Expand", [y, w.ints(1, 1, group, 1, 1)], f"/{p}/{tag}/Expand")
                return w.op("Reshape", [y, w.ints(0, n_q, -1, d)], f"/{p}/{tag}/Reshape")

            keys, values = repeat(key, "repeat_key"), repeat(value, "repeat_value")
        keys = w.op("Transpose", [keys], f"/{p}/Transpose_key", perm=[0, 1, 3, 2])
        context_perm = [0, 2, 1, 3]
    scores = w.op("MatMul", [q, keys], f"/{p}/MatMul")
    if not arch.scale_query:
        scores = w.op("Div", [scores, w.scalar(math.sqrt(d))], f"/{p}/Div")
    scores = w.op("Add", [scores, mask], f"/{p}/Add")
    if arch.clamp_scores:  # OPT: max(scores, finfo.min)
        scores = w.op("Max", [scores, w.scalar(float(np.finfo(np.float16).min))], f"/{p}/Max")
    scores = w.op("Cast", [scores], f"/{p}/Cast", to=FP32)
    probs = w.op("Softmax", [scores], f"/{p}/Softmax", axis=-1)
    probs = w.op("Cast", [probs], f"/{p}/Cast_1", to=FP16)
    context = w.op("MatMul", [probs, values], f"/{p}/MatMul_1")
    context = w.op("Transpose", [context], f"/{p}/Transpose", perm=context_perm)
    context = w.op("Reshape", [context, w.ints(0, 1, q_dim)],
                   f"/{p}/Reshape")
    out = _linear(w, f"{p}.o_proj", context, q_dim, arch.hidden, arch.bias)
    return out, key, value


def _mlp(w: _Writer, arch: Architecture, layer: int, x: str) -> str:
    p = f"model.layers.{layer}.mlp"
    if not arch.gated:
        h = _linear(w, f"{p}.fc1", x, arch.hidden, arch.ffn, arch.bias)
        h = _activation(w, arch.activation, f"/{p}/act", h)
        return _linear(w, f"{p}.fc2", h, arch.ffn, arch.hidden, arch.bias)
    fused = _linear(w, f"{p}.gate_up_proj", x, arch.hidden, 2 * arch.ffn, arch.bias)
    gate = _columns(w, f"/{p}/gate/Slice", fused, 0, arch.ffn)
    up = _columns(w, f"/{p}/up/Slice", fused, arch.ffn, 2 * arch.ffn)
    h = w.op("Mul", [_activation(w, arch.activation, f"/{p}/act", gate), up], f"/{p}/Mul")
    return _linear(w, f"{p}.down_proj", h, arch.ffn, arch.hidden, arch.bias)


def _activation(w: _Writer, activation: str, p: str, x: str) -> str:
    if activation == "relu":
        return w.op("Relu", [x], f"{p}/Relu")
    if activation == "gelu":  # gelu_pytorch_tanh
        w.opset = max(w.opset, 20)
        return w.op("Gelu", [x], f"{p}/Gelu", approximate="tanh")
    return w.op("Mul", [x, w.op("Sigmoid", [x], f"{p}/Sigmoid")], f"{p}/Mul")  # SiLU


def decode_step_onnx(arch: str | Architecture, layers: int | None = None, kv_len: int = 2048,
                     norm: str = "decomposed", gqa: str = "broadcast") -> onnx.ModelProto:
    """One decode step of `arch` (its first `layers` layers, all by default) as an ONNX model.

    Batch and lengths are symbolic (`onnx_sizes` gives them for the importer); `kv_len`
    only places the rotary row: the new token is at position kv_len - 1.
    """
    arch = get_architecture(arch) if isinstance(arch, str) else arch
    if arch.kind != "decoder":
        raise ValueError(f"{arch.name}: a decode step needs a decoder, not {arch.kind!r}")
    if norm not in NORMS or gqa not in GQA:
        raise ValueError(f"norm must be one of {NORMS} and gqa one of {GQA}, got {norm!r}, {gqa!r}")
    n_layers = arch.n_layers if layers is None else min(layers, arch.n_layers)
    hidden, d, n_kv = arch.hidden, arch.head_dim, arch.n_kv_heads
    w = _Writer()
    inputs = [helper.make_tensor_value_info("inputs_embeds", FP16, [BATCH, 1, hidden]),
              helper.make_tensor_value_info("attention_mask", FP16, [BATCH, 1, 1, TOTAL])]
    outputs = [helper.make_tensor_value_info("logits" if arch.vocab else "last_hidden_state", FP16,
                                             [BATCH, 1, arch.vocab or hidden])]
    x = "inputs_embeds"
    if arch.positional == "learned":  # the gathered position row, an on-chip input like the zoo's
        inputs.append(helper.make_tensor_value_info("position_embeds", FP16, [1, 1, hidden]))
        x = w.op("Add", [x, "position_embeds"], "/model/embed_positions/Add")
    rope = None
    if arch.positional == "rotary":  # cos/sin rows of the new token, sliced once from HBM tables
        position = kv_len - 1
        rows = max(ROPE_TABLE, kv_len)
        rope = tuple(w.op("Slice", [w.weight(f"model.rotary_emb.{f}_table", rows, d), w.ints(position),
                                    w.ints(position + 1), w.ints(0)], f"/model/rotary_emb/Slice_{f}")
                     for f in ("cos", "sin"))
    for layer in range(n_layers):
        p = f"model.layers.{layer}"
        for t in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{layer}.{t}", FP16,
                                                        [BATCH, n_kv, PAST, d]))
        h = _norm(w, arch, f"{p}.input_layernorm", x, norm)
        h, key, value = _attention(w, arch, layer, h, "attention_mask", rope, gqa)
        x = w.op("Add", [x, h], f"/{p}/Add")
        h = _norm(w, arch, f"{p}.post_attention_layernorm", x, norm)
        x = w.op("Add", [x, _mlp(w, arch, layer, h)], f"/{p}/Add_1")
        for t, y in (("key", key), ("value", value)):
            present = f"present.{layer}.{t}"
            w.nodes.append(helper.make_node("Identity", [y], [present], name=f"/{p}/present_{t}"))
            outputs.append(helper.make_tensor_value_info(present, FP16, [BATCH, n_kv, TOTAL, d]))
    x = _norm(w, arch, "model.norm", x, norm)
    if arch.vocab:
        x = w.op("MatMul", [x, w.weight("lm_head.weight", hidden, arch.vocab)], "/lm_head/MatMul")
    w.nodes.append(helper.make_node("Identity", [x], [outputs[0].name], name="/output"))
    graph = helper.make_graph(w.nodes, f"{arch.name}_decode", inputs, outputs, w.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", w.opset)],
                             producer_name="elkopt experiments/onnx_decoder.py")


def external_bytes(model: onnx.ModelProto) -> int:
    """Length of the external weights file the model's initializers point into."""
    ends = [int(e["offset"]) + int(e["length"]) for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL
            for e in [{entry.key: entry.value for entry in t.external_data}]]
    return max(ends, default=0)


def zoo_graph(arch: str | Architecture, batch: int, kv_len: int, layers: int | None = None) -> Graph:
    """The zoo's decode graph of `arch`, cut to its first `layers` layers if given."""
    arch = get_architecture(arch) if isinstance(arch, str) else arch
    if layers is not None:
        arch = dataclasses.replace(arch, n_layers=min(layers, arch.n_layers))
    return build_graph(arch, "decode", batch, kv_len)


def kind_counts(graph: Graph) -> Counter:
    return Counter(op.kind for op in graph.ops)


def label_difference(zoo: Graph, ours: Graph) -> str:
    """Operator labels whose counts differ, as `label onnx-zoo`."""
    a, b = Counter(op.label for op in zoo.ops), Counter(op.label for op in ours.ops)
    diff = {label: b[label] - a[label] for label in sorted({*a, *b}) if a[label] != b[label]}
    return ", ".join(f"{label} {n:+d}" for label, n in diff.items()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["llama2_13b", "opt_30b", "llama2_70b", "gemma2_27b"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=None, help="build only the first N layers")
    parser.add_argument("--norm", choices=NORMS, default="decomposed")
    parser.add_argument("--gqa", choices=GQA, default="broadcast")
    parser.add_argument("--chip", default="ipu_pod4")
    parser.add_argument("--scheduler", default="elkopt")
    parser.add_argument("--no-plan", action="store_true", help="skip planning (no latency)")
    parser.add_argument("--check", action="store_true",
                        help="run onnx.checker (full) on each model, beside a sparse weights file")
    parser.add_argument("--profile", action="store_true", help="cProfile the import, top 12 by cumtime")
    parser.add_argument("--save", metavar="DIR", help="keep the ONNX files in DIR (for python -m elkopt.run "
                        "model=file model.format=onnx model.path=DIR/<model>.onnx)")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    chip = Chip(**yaml.safe_load((CONF / f"{args.chip}.yaml").read_text()))
    options = PlanningOptions(cache_dir=str(default_cache_dir()), plan_space=args.plan_space)
    layers = f"{args.layers} layers" if args.layers else "all layers"
    print(f"decode b{args.batch} KV {args.kv_len}, {layers}, norm {args.norm}, gqa {args.gqa}; "
          f"{args.chip}, {args.scheduler} schedules")
    kinds = "".join(f" {k.value:>6s}" for k in KINDS)
    print(f"{'model':11s} {'graph':9s} {'ops':>5s}{kinds} {'GFLOP':>10s} {'HBM bytes':>13s} "
          f"{'build s':>7s} {'file KB':>8s} {'import s':>8s} {'plan s':>7s} {'latency ms':>11s}")

    def plan(graph: Graph) -> tuple[float, float]:
        if args.no_plan:
            return math.nan, math.nan
        start = time.perf_counter()
        result = compile_model(graph, chip, args.scheduler, options)
        return time.perf_counter() - start, result.timeline.latency_cycles * 1e3 / chip.clock_hz

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.save or scratch
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name in args.models:
            arch = get_architecture(name)
            zoo = zoo_graph(arch, args.batch, args.kv_len, args.layers)
            start = time.perf_counter()
            model = decode_step_onnx(arch, args.layers, args.kv_len, args.norm, args.gqa)
            path = Path(folder) / f"{name}.onnx"
            onnx.save(model, path)
            built = time.perf_counter() - start
            if args.check:  # the checker wants the weights file: a sparse one of the right length
                with open(Path(folder) / WEIGHTS_FILE, "wb") as weights:
                    weights.truncate(external_bytes(model))
                onnx.checker.check_model(path, full_check=True)
                (Path(folder) / WEIGHTS_FILE).unlink()
            profiler = cProfile.Profile() if args.profile else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            ours = read_onnx(path, sizes=onnx_sizes(args.batch, args.kv_len))
            if profiler:
                profiler.disable()
            imported = time.perf_counter() - start
            rows = []
            for graph, label, build_s, size, import_s in (
                    (zoo, "zoo", math.nan, math.nan, math.nan),
                    (ours, "onnx", built, path.stat().st_size / 1e3, imported)):
                plan_s, latency = plan(graph)
                counts = kind_counts(graph)
                rows.append((graph.n_ops, graph.total_flops, graph.hbm_bytes, latency, counts))
                print(f"{name:11s} {label:9s} {graph.n_ops:5d}" + "".join(f" {counts[k]:6d}" for k in KINDS)
                      + f" {graph.total_flops / 1e9:10.3f} {graph.hbm_bytes:13d} {build_s:7.2f} {size:8.1f}"
                      f" {import_s:8.2f} {plan_s:7.1f} {latency:11.6f}", flush=True)
            (z_ops, z_flops, z_hbm, z_ms, z_kinds), (o_ops, o_flops, o_hbm, o_ms, o_kinds) = rows
            kind_diff = "".join(f" {n:+6d}" if (n := o_kinds[k] - z_kinds[k]) else f" {'':6s}" for k in KINDS)
            print(f"{name:11s} {'onnx/zoo':9s} {o_ops / z_ops:5.3f}{kind_diff} "
                  f"{o_flops / z_flops:10.7f} {o_hbm / z_hbm:13.10f} {'':7s} {'':8s} {'':8s} {'':7s} "
                  f"{o_ms / z_ms:11.6f}")
            print(f"{'':11s} labels onnx-zoo: {label_difference(zoo, ours)}", flush=True)
            if profiler:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(12)
                print(text.getvalue())
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
