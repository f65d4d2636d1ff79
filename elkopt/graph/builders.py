"""Build operator graphs of transformer workloads from an `Architecture`.

Operators follow the published Elk graphs: element-wise pieces of normalisation, rotary
embedding, softmax and activations are separate operators; data movement (reshape,
transpose, concat, embedding gathers, a decode step's KV-cache writes) is folded away. A
Llama layer has 48 operators. A prefill step's KV-cache writes are `Graph.stores`
(`elkopt.graph.prefill`). Each operator's output tensor is named after the operator; weights are HBM
tensors named `<op>.weight` / `<op>.bias`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .arch import Architecture, require_positive_int
from .ir import Dim, Graph, Operand, OpKind, Operator, Storage, Store

Dims = dict[str, int]  # ordered: dim name -> length (elements)


def chip(tensor: str, *dims: str) -> Operand:
    """An on-chip operand of `tensor` indexed by `dims`."""
    return Operand(tensor, dims, Storage.CHIP)


def hbm(tensor: str, *dims: str) -> Operand:
    """An HBM-resident operand (weights, KV cache) of `tensor` indexed by `dims`."""
    return Operand(tensor, dims, Storage.HBM)


class _GraphBuilder:
    """Accumulates operators in program order; each method returns the output tensor name."""

    def __init__(self) -> None:
        self.ops: list[Operator] = []
        self.graph_inputs: set[str] = set()
        self.stores: list[Store] = []

    def add(self, name: str, label: str, kind: OpKind, dims: Dims, out: tuple[str, ...],
            inputs: tuple[Operand, ...], reduce: str | None = None) -> str:
        self.ops.append(Operator(name, label, kind, tuple(Dim(n, v) for n, v in dims.items()),
                                 chip(name, *out), inputs, reduce))
        return name

    def binary(self, name: str, label: str, dims: Dims, a: Operand, b: Operand) -> str:
        return self.add(name, label, OpKind.BINARY, dims, tuple(dims), (a, b))

    def unary(self, name: str, label: str, dims: Dims, x: Operand) -> str:
        return self.add(name, label, OpKind.UNARY, dims, tuple(dims), (x,))

    def reduce(self, name: str, how: str, dims: Dims, x: Operand, out: tuple[str, ...]) -> str:
        return self.add(name, how.capitalize(), OpKind.REDUCE, dims, out, (x,), reduce=how)

    def matmul(self, name: str, label: str, dims: Dims, out: tuple[str, ...],
               a: Operand, b: Operand) -> str:
        return self.add(name, label, OpKind.MATMUL, dims, out, (a, b), reduce="sum")

    def slice(self, name: str, dims: Dims, source: str, source_dims: tuple[str, ...] = ()) -> str:
        """A Slice over its output space `dims`; its input indexes the sliced region of `source`."""
        return self.add(name, "Slice", OpKind.SLICE, dims, tuple(dims),
                        (chip(source, *(source_dims or tuple(dims))),))

    def graph_input(self, tensor: str) -> str:
        self.graph_inputs.add(tensor)
        return tensor

    def constant(self, name: str) -> Operand:
        """A scalar constant (eps, 1/n, ...) as an on-chip graph input."""
        return chip(self.graph_input(f"const.{name}"))

    def store(self, tensor: str, hbm_tensor: str) -> None:
        """Write the on-chip `tensor` to HBM as `hbm_tensor` once it is produced."""
        self.stores.append(Store(tensor, hbm_tensor))

    def finish(self, name: str, elem_bytes: int) -> Graph:
        return Graph(name, tuple(self.ops), elem_bytes, frozenset(self.graph_inputs), tuple(self.stores))


@dataclass(frozen=True)
class _Step:
    """Token shape of one step: `tokens` new tokens per request, attending to `keys` positions.

    Decode reads the `keys` positions from the HBM cache; otherwise they are this step's own
    tokens, on chip. A prefill step also attends to `cached` positions read from the HBM
    cache (a chunk after the first), writes its keys and values to HBM (`store_kv`) and runs
    the final norm and LM head on `head_tokens` tokens per request (the last ones; None:
    every token; 0: no head). `riders` decode tokens (one per request, each attending to
    `rider_keys` positions of its own cache in HBM) may ride along in a prefill step: the
    step's tokens are then one flat row dim, [1, batch x tokens + riders], and each rider
    gets its logits (`elkopt.graph.prefill`).
    """

    batch: int
    tokens: int
    keys: int
    decode: bool
    cached: int = 0
    store_kv: bool = False
    head_tokens: int | None = None
    riders: int = 0
    rider_keys: int = 0

    @property
    def rows(self) -> Dims:
        """Row dims of element-wise operators: [B, T] ([1, all tokens] with riders)."""
        if self.riders:
            return {"B": 1, "T": self.batch * self.tokens + self.riders}
        return {"B": self.batch, "T": self.tokens}

    @property
    def head_rows(self) -> Dims:
        """Row dims of the final norm and LM head when `head_tokens` is set."""
        if self.riders:
            return {"B": 1, "T": self.batch * (self.head_tokens or 0) + self.riders}
        return {"B": self.batch, "T": self.head_tokens or 0}

    @property
    def dot_rows(self) -> Dims:
        """Row dims of Dots: [B] in decode (the published [B, N, K]), [B, T] otherwise."""
        return {"B": self.batch} if self.decode else self.rows


# ---------------------------------------------------------------- building blocks


def _linear(g: _GraphBuilder, name: str, rows: Dims, x: str, n_in: int, n_out: int,
            bias: bool) -> str:
    """Dot y[rows, N] += x[rows, K] * w[K, N] with an HBM weight, then an optional bias Add."""
    r = tuple(rows)
    y = g.matmul(name, "Dot", {**rows, "N": n_out, "K": n_in}, (*r, "N"),
                 chip(x, *r, "K"), hbm(f"{name}.weight", "K", "N"))
    if bias:
        y = _add_bias(g, name, {**rows, "N": n_out}, y)
    return y


def _add_bias(g: _GraphBuilder, name: str, dims: Dims, x: str) -> str:
    features = list(dims)[-1]
    return g.binary(f"{name}.add_bias", "Add", dims, chip(x, *dims), hbm(f"{name}.bias", features))


def _norm(g: _GraphBuilder, name: str, rows: Dims, hidden: int, x: str, kind: str,
          affine: bool = True) -> str:
    """RMSNorm (7 ops) or LayerNorm (11 ops; 9 without affine) over the hidden dim H."""
    scale = hbm(f"{name}.weight", "H") if affine else None
    shift = hbm(f"{name}.bias", "H") if affine and kind == "layernorm" else None
    return norm_operators(g, name, rows, {"H": hidden}, chip(x, *rows, "H"), kind,
                          g.constant("hidden_size"), g.constant("norm_eps"), scale, shift)


class Builder(Protocol):
    """What the shared decompositions need to add operators; each method returns the output
    tensor's name. `_GraphBuilder` is one; the ONNX importer has another."""

    def binary(self, name: str, label: str, dims: Dims, a: Operand, b: Operand) -> str: ...

    def unary(self, name: str, label: str, dims: Dims, x: Operand) -> str: ...

    def reduce(self, name: str, how: str, dims: Dims, x: Operand, out: tuple[str, ...]) -> str: ...


def norm_operators(g: Builder, name: str, rows: Dims, features: Dims, x: Operand, kind: str,
                   count: Operand, eps: Operand, scale: Operand | None = None,
                   shift: Operand | None = None) -> str:
    """RMSNorm (``kind`` "rmsnorm": 5 ops) or LayerNorm ("layernorm": 9 ops) of `x` over the
    `features` dims, one per `rows`, as the published graphs write them; then a Multiply by
    `scale` and an Add of `shift` when given. `count` (elements normalised) and `eps` are
    scalar operands."""
    r, dims = tuple(rows), {**rows, **features}
    every = tuple(dims)
    if kind == "rmsnorm":
        centered = x
        square = g.binary(f"{name}.square", "Multiply", dims, x, x)
        total = g.reduce(f"{name}.sum", "sum", dims, chip(square, *every), r)
        moment = g.binary(f"{name}.mean", "Divide", rows, chip(total, *r), count)
    else:
        total = g.reduce(f"{name}.sum", "sum", dims, x, r)
        mean = g.binary(f"{name}.mean", "Divide", rows, chip(total, *r), count)
        centered = chip(g.binary(f"{name}.center", "Subtract", dims, x, chip(mean, *r)), *every)
        square = g.binary(f"{name}.square", "Multiply", dims, centered, centered)
        total = g.reduce(f"{name}.sum_squares", "sum", dims, chip(square, *every), r)
        moment = g.binary(f"{name}.variance", "Divide", rows, chip(total, *r), count)
    shifted = g.binary(f"{name}.add_eps", "Add", rows, chip(moment, *r), eps)
    root = g.unary(f"{name}.sqrt", "Sqrt", rows, chip(shifted, *r))
    y = g.binary(f"{name}.normalize", "Divide", dims, centered, chip(root, *r))
    if scale is not None:
        y = g.binary(f"{name}.scale", "Multiply", dims, chip(y, *every), scale)
    if shift is not None:
        y = g.binary(f"{name}.shift", "Add", dims, chip(y, *every), shift)
    return y


def softmax_operators(g: Builder, name: str, space: Dims, rows: tuple[str, ...], scores: Operand,
                      log: bool = False) -> str:
    """Softmax of `scores` over the dims of `space` not in `rows`, as the published graphs
    write it: max, exp(x - max) as one Subtract, sum, divide (4 ops). With `log`, log
    softmax: the same max, exp and sum, then log(sum), plus the max, and x minus that (6)."""
    every = tuple(space)
    peak = g.reduce(f"{name}.max", "max", space, scores, rows)
    exp = g.binary(f"{name}.exp", "Subtract", space, scores, chip(peak, *rows))
    total = g.reduce(f"{name}.sum", "sum", space, chip(exp, *every), rows)
    if not log:
        return g.binary(f"{name}.divide", "Divide", space, chip(exp, *every), chip(total, *rows))
    row_space = {d: space[d] for d in rows}
    logged = g.unary(f"{name}.log", "Log", row_space, chip(total, *rows))
    shift = g.binary(f"{name}.shift", "Add", row_space, chip(logged, *rows), chip(peak, *rows))
    return g.binary(f"{name}.subtract", "Subtract", space, scores, chip(shift, *rows))


def _activation(g: _GraphBuilder, name: str, activation: str, dims: Dims, x: str) -> str:
    """ReLU as one op; SiLU as x * sigmoid(x), two ops.

    GELU uses the same two pieces, x * sigmoid(1.702 x) with the factor folded into the
    Sigmoid: that keeps Gemma2's layer at Llama's 48 operators, as in the published graph.
    """
    xs = chip(x, *dims)
    if activation == "relu":
        return g.unary(f"{name}.relu", "Relu", dims, xs)
    gate = g.unary(f"{name}.sigmoid", "Sigmoid", dims, xs)
    return g.binary(f"{name}.{activation}", "Multiply", dims, xs, chip(gate, *dims))


def _rotary(g: _GraphBuilder, name: str, x: str, x_dims: tuple[str, ...], dims: Dims) -> str:
    """Rotary embedding, 6 ops: x*cos + rotate_half(x)*sin over `dims` (last dim D)."""
    axes = tuple(dims)
    half = {**dims, "D": dims["D"] // 2}
    cos = g.binary(f"{name}.cos", "Multiply", dims, chip(x, *x_dims), hbm("rope.cos", "T", "D"))
    g.slice(f"{name}.first_half", half, x, x_dims)
    second = g.slice(f"{name}.second_half", half, x, x_dims)
    negated = g.unary(f"{name}.negate", "Negative", half, chip(second, *axes))
    # rotate_half = concat(-second, first); the concat is folded into this Multiply's input
    sin = g.binary(f"{name}.sin", "Multiply", dims, chip(negated, *axes), hbm("rope.sin", "T", "D"))
    return g.binary(f"{name}.add", "Add", dims, chip(cos, *axes), chip(sin, *axes))


def _attention(g: _GraphBuilder, arch: Architecture, step: _Step, p: str, x: str,
               mask: Operand | None) -> str:
    """Fused QKV projection, rotary, scores, softmax (4 ops), context and output projection.

    Decode reads K and V caches [B, Hkv, S, D] from HBM; query heads sharing a KV head are
    the group dim G, so each cache is read once. A full forward attends on chip. Multi-head
    latent attention is `elkopt.graph.moe.add_latent_attention`.
    """
    if arch.uses_latent_attention:
        from . import moe  # moe builds on this module's helpers
        return moe.add_latent_attention(g, arch, step, p, x, mask)
    r = tuple(step.rows)
    d, n_kv, group = arch.head_dim, arch.n_kv_heads, arch.group_size
    qkv = _linear(g, f"{p}.qkv", step.dot_rows, x, arch.hidden, arch.q_dim + 2 * arch.kv_dim,
                  bias=arch.bias and arch.fused_qkv_bias)

    def project(part: str, width: int) -> str:
        y = g.slice(f"{p}.{part}", {**step.rows, "N": width}, qkv)
        separate = arch.bias and not arch.fused_qkv_bias
        return _add_bias(g, f"{p}.{part}", {**step.rows, "N": width}, y) if separate else y

    rotary = arch.positional == "rotary"
    q = project("q", arch.q_dim)
    k = project("k", arch.kv_dim)
    if rotary:
        q = _rotary(g, f"{p}.rope_q", q, (*r, "Hq", "D"),
                    {**step.rows, "Hq": arch.n_heads, "D": d})
    v = project("v", arch.kv_dim)
    if rotary:  # k leaves the rotary head-major, [B, Hkv, T, D]
        k = _rotary(g, f"{p}.rope_k", k, (*r, "Hkv", "D"),
                    {"B": step.rows["B"], "Hkv": n_kv, "T": step.rows["T"], "D": d})
    if arch.scale_query:
        q = g.binary(f"{p}.scale_q", "Multiply", {**step.rows, "N": arch.q_dim},
                     chip(q, *r, "N"), g.constant("inv_sqrt_head_dim"))
    # Decode: the new k and v go to the caches (folded data movement); scores read the caches.
    # Prefill: they are written to HBM (stores) and attended to on chip.
    if step.store_kv:
        g.store(k, f"{p}.k_cache.append")
        g.store(v, f"{p}.v_cache.append")
    if step.decode:
        keys = hbm(f"{p}.k_cache", "B", "Hkv", "S", "D")
        values = hbm(f"{p}.v_cache", "B", "Hkv", "S", "D")
    else:
        k_dims = ("B", "Hkv", "S", "D") if rotary else ("B", "S", "Hkv", "D")
        keys, values = chip(k, *k_dims), chip(v, "B", "S", "Hkv", "D")

    own = {"B": step.batch, "Hkv": n_kv, "G": group, "T": step.tokens, "S": step.keys}
    s_dims, row_dims = tuple(own), tuple(own)[:-1]
    if step.cached:  # scores against the cached positions, read from HBM
        g.matmul(f"{p}.scores_cached", "BatchMatMul", {**own, "S": step.cached, "D": d}, s_dims,
                 chip(q, "B", "T", "Hkv", "G", "D"), hbm(f"{p}.k_cache", "B", "Hkv", "S", "D"))
    scores = g.matmul(f"{p}.scores", "BatchMatMul", {**own, "D": d}, s_dims,
                      chip(q, "B", "T", "Hkv", "G", "D"), keys)
    # softmax over the cached and the own positions: the concat of the two score blocks is
    # folded into the next operator's input
    space = {**own, "S": step.cached + step.keys}
    if not arch.scale_query:
        scores = g.binary(f"{p}.scale", "Divide", space, chip(scores, *s_dims),
                          g.constant("sqrt_head_dim"))
    if mask is not None:
        scores = g.binary(f"{p}.mask", "Add", space, chip(scores, *s_dims), mask)
    if arch.clamp_scores:
        scores = g.binary(f"{p}.clamp", "Maximum", space, chip(scores, *s_dims),
                          g.constant("dtype_min"))
    probs = softmax_operators(g, f"{p}.softmax", space, row_dims, chip(scores, *s_dims))
    context_space = {**{n: space[n] for n in row_dims}, "D": d, "S": step.keys}
    if step.cached:  # the cached positions' share of the context, V read from HBM
        past = g.matmul(f"{p}.context_cached", "BatchMatMul", {**context_space, "S": step.cached},
                        (*row_dims, "D"), chip(probs, *s_dims), hbm(f"{p}.v_cache", "B", "Hkv", "S", "D"))
    context = g.matmul(f"{p}.context", "BatchMatMul", context_space,
                       (*row_dims, "D"), chip(probs, *s_dims), values)
    if step.cached:
        context_rows = {**{n: space[n] for n in row_dims}, "D": d}
        context = g.binary(f"{p}.context_add", "Add", context_rows, chip(past, *context_rows),
                           chip(context, *context_rows))
    if step.riders:  # the decode tokens' attention; the out projection reads both contexts
        from . import prefill  # prefill builds on this module's helpers
        context = prefill.add_rider_attention(g, arch, step, p, q)
    return _linear(g, f"{p}.out", step.dot_rows, context, arch.q_dim, arch.hidden, arch.bias)


def _mlp(g: _GraphBuilder, arch: Architecture, step: _Step, p: str, x: str, layer: int = 0,
         routing: object = None) -> str:
    """Gated (fused gate-and-up Dot, 2 Slices, activation, product) or plain MLP; a mixture
    of experts in the expert layers of an MoE model (`elkopt.graph.moe`, `routing`: its
    `workload.routing`)."""
    if arch.is_expert_layer(layer):
        from . import moe  # moe builds on this module's helpers
        return moe.add_moe_mlp(g, arch, step, p, x, routing)
    rows = {**step.rows, "F": arch.ffn}
    if arch.gated:
        fused = _linear(g, f"{p}.gate_up", step.dot_rows, x, arch.hidden, 2 * arch.ffn, arch.bias)
        gate = g.slice(f"{p}.gate", rows, fused)
        up = g.slice(f"{p}.up", rows, fused)
        act = _activation(g, f"{p}.act", arch.activation, rows, gate)
        h = g.binary(f"{p}.gate_times_up", "Multiply", rows, chip(act, *rows), chip(up, *rows))
    else:
        h = _linear(g, f"{p}.fc1", step.dot_rows, x, arch.hidden, arch.ffn, arch.bias)
        h = _activation(g, f"{p}.act", arch.activation, rows, h)
    return _linear(g, f"{p}.down", step.dot_rows, h, arch.ffn, arch.hidden, arch.bias)


def _residual(g: _GraphBuilder, name: str, rows: Dims, hidden: int, a: str, b: str) -> str:
    r = tuple(rows)
    return g.binary(name, "Add", {**rows, "H": hidden}, chip(a, *r, "H"), chip(b, *r, "H"))


# ---------------------------------------------------------------- decoder LLMs


def _build_decoder(arch: Architecture, step: _Step, name: str, elem_bytes: int,
                   routing: object = None) -> Graph:
    """Embedded tokens -> layers -> final norm -> LM head.

    Each layer is norm, attention, residual Add, norm, MLP, residual Add: the published
    48 operators, with the residual Add that the published table lists first placed last,
    so that the final norm reads the complete residual stream.
    """
    g = _GraphBuilder()
    rows, r, hidden = step.rows, tuple(step.rows), arch.hidden
    x = g.graph_input("embed.tokens")  # gathered embedding rows [B, T, H]
    if arch.positional == "learned":
        x = g.binary("embed.add_positions", "Add", {**rows, "H": hidden}, chip(x, *r, "H"),
                     chip(g.graph_input("embed.positions"), "T", "H"))
    if step.decode:
        mask = chip(g.graph_input("input.attention_mask"), "B", "T", "S")
    else:
        mask = chip(g.graph_input("input.causal_mask"), "T", "S")
    for layer in range(arch.n_layers):
        p = f"layer{layer}"
        h = _norm(g, f"{p}.attn_norm", rows, hidden, x, arch.norm)
        h = _attention(g, arch, step, f"{p}.attn", h, mask)
        mid = _residual(g, f"{p}.attn_residual", rows, hidden, x, h)
        h = _norm(g, f"{p}.mlp_norm", rows, hidden, mid, arch.norm)
        h = _mlp(g, arch, step, f"{p}.mlp", h, layer, routing)
        x = _residual(g, f"{p}.mlp_residual", rows, hidden, mid, h)
    if step.head_tokens is None:
        x = _norm(g, "final_norm", rows, hidden, x, arch.norm)
        if arch.vocab:
            _linear(g, "lm_head", step.dot_rows, x, hidden, arch.vocab, bias=False)
    elif step.head_tokens or step.riders:  # the last tokens of each request only: their slice of x is folded
        last = step.head_rows
        x = _norm(g, "final_norm", last, hidden, x, arch.norm)
        if arch.vocab:
            _linear(g, "lm_head", last, x, hidden, arch.vocab, bias=False)
    return g.finish(name, elem_bytes)


# ---------------------------------------------------------------- diffusion transformer


def _modulation(g: _GraphBuilder, name: str, batch: int, hidden: int, condition: str,
                parts: tuple[str, ...]) -> list[str]:
    """adaLN: SiLU(c), Dot to len(parts) x hidden, one Slice per part; each part is [B, H]."""
    row = {"B": batch, "H": hidden}
    act = _activation(g, name, "silu", row, condition)
    fused = _linear(g, f"{name}.linear", {"B": batch}, act, hidden, len(parts) * hidden, bias=True)
    return [g.slice(f"{name}.{part}", row, fused) for part in parts]


def _modulate(g: _GraphBuilder, name: str, rows: Dims, hidden: int, x: str, shift: str,
              scale: str) -> str:
    """x * (1 + scale) + shift, with shift and scale per sample [B, H]: 3 ops."""
    r = tuple(rows)
    dims = {**rows, "H": hidden}
    one_plus = g.binary(f"{name}.one_plus_scale", "Add", {"B": rows["B"], "H": hidden},
                        chip(scale, "B", "H"), g.constant("one"))
    y = g.binary(f"{name}.scale", "Multiply", dims, chip(x, *r, "H"), chip(one_plus, "B", "H"))
    return g.binary(f"{name}.shift", "Add", dims, chip(y, *r, "H"), chip(shift, "B", "H"))


def _gated_residual(g: _GraphBuilder, name: str, rows: Dims, hidden: int, x: str, gate: str,
                    h: str) -> str:
    """x + gate * h with a per-sample gate [B, H]: 2 ops."""
    r = tuple(rows)
    gated = g.binary(f"{name}_gate", "Multiply", {**rows, "H": hidden}, chip(gate, "B", "H"),
                     chip(h, *r, "H"))
    return _residual(g, f"{name}_residual", rows, hidden, x, gated)


def _build_dit(arch: Architecture, step: _Step, name: str, elem_bytes: int) -> Graph:
    """One denoising step of a DiT (adaLN-Zero blocks) over `step.tokens` latent patches."""
    g = _GraphBuilder()
    batch, hidden, rows = step.batch, arch.hidden, step.rows
    cond_rows = {"B": batch}
    # conditioning c = MLP(sinusoidal timestep features) + class embedding (a gathered row)
    t = _linear(g, "embed.timestep_fc1", cond_rows, g.graph_input("input.timestep_features"),
                arch.frequency_dim, hidden, bias=True)
    t = _activation(g, "embed.timestep_act", "silu", {"B": batch, "H": hidden}, t)
    t = _linear(g, "embed.timestep_fc2", cond_rows, t, hidden, hidden, bias=True)
    c = g.binary("embed.condition", "Add", {"B": batch, "H": hidden}, chip(t, "B", "H"),
                 chip(g.graph_input("input.class_embedding"), "B", "H"))
    patch_elements = arch.in_channels * arch.patch_size**2
    x = _linear(g, "embed.patch", rows, g.graph_input("input.patches"), patch_elements, hidden,
                bias=True)
    x = g.binary("embed.add_positions", "Add", {**rows, "H": hidden}, chip(x, "B", "T", "H"),
                 hbm("embed.position_table", "T", "H"))
    for layer in range(arch.n_layers):
        p = f"block{layer}"
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = _modulation(
            g, f"{p}.ada", batch, hidden, c,
            ("shift_attn", "scale_attn", "gate_attn", "shift_mlp", "scale_mlp", "gate_mlp"))
        h = _norm(g, f"{p}.attn_norm", rows, hidden, x, "layernorm", affine=False)
        h = _modulate(g, f"{p}.attn_modulate", rows, hidden, h, shift_a, scale_a)
        h = _attention(g, arch, step, f"{p}.attn", h, mask=None)
        x = _gated_residual(g, f"{p}.attn", rows, hidden, x, gate_a, h)
        h = _norm(g, f"{p}.mlp_norm", rows, hidden, x, "layernorm", affine=False)
        h = _modulate(g, f"{p}.mlp_modulate", rows, hidden, h, shift_m, scale_m)
        h = _mlp(g, arch, step, f"{p}.mlp", h)
        x = _gated_residual(g, f"{p}.mlp", rows, hidden, x, gate_m, h)
    shift, scale = _modulation(g, "final.ada", batch, hidden, c, ("shift", "scale"))
    h = _norm(g, "final.norm", rows, hidden, x, "layernorm", affine=False)
    h = _modulate(g, "final.modulate", rows, hidden, h, shift, scale)
    _linear(g, "final.linear", rows, h, hidden, arch.out_channels * arch.patch_size**2, bias=True)
    return g.finish(name, elem_bytes)


# ---------------------------------------------------------------- public entry points


def _check(caller: str, arch: Architecture, sizes: dict[str, int]) -> None:
    if not isinstance(arch, Architecture):
        raise ValueError(f"{caller}: arch must be an Architecture, got {type(arch).__name__}")
    for field_name, value in sizes.items():
        require_positive_int(caller, field_name, value)


def build_decode_graph(arch: Architecture, batch: int, kv_len: int, elem_bytes: int = 2,
                       routing: object = None) -> Graph:
    """One decode step: one new token for each of `batch` requests, each with a KV cache of
    `kv_len` positions read from HBM. `elem_bytes` bytes per element (2 = fp16). `routing`:
    how a mixture of experts spreads tokens (`elkopt.graph.moe.parse_routing`; None: uniform)."""
    _check("build_decode_graph", arch, {"batch": batch, "kv_len": kv_len, "elem_bytes": elem_bytes})
    if arch.kind != "decoder":
        raise ValueError(f"build_decode_graph: kind {arch.kind!r} of {arch.name!r} has no decode "
                         "step; use build_forward_graph")
    step = _Step(batch, tokens=1, keys=kv_len, decode=True)
    return _build_decoder(arch, step, f"{arch.name}.decode.b{batch}.s{kv_len}", elem_bytes, routing)


def build_forward_graph(arch: Architecture, batch: int, seq_len: int, elem_bytes: int = 2) -> Graph:
    """A full-sequence forward pass (training forward, prefill, or one DiT denoising step) of
    `batch` sequences of `seq_len` tokens (DiT: latent patches); attention stays on chip
    (causal for decoders), weights come from HBM."""
    _check("build_forward_graph", arch,
           {"batch": batch, "seq_len": seq_len, "elem_bytes": elem_bytes})
    step = _Step(batch, tokens=seq_len, keys=seq_len, decode=False)
    name = f"{arch.name}.forward.b{batch}.t{seq_len}"
    if arch.kind == "dit":
        return _build_dit(arch, step, name, elem_bytes)
    return _build_decoder(arch, step, name, elem_bytes)
