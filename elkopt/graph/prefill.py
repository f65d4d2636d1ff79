"""Prefill steps of a decoder LLM: a whole prompt, or one chunk of it.

A prefill step runs `tokens` new tokens per request through the decoder, with causal
attention on chip among them, and writes the K and V of every layer to HBM: the KV cache
the decode steps will read (`Graph.stores`: per layer the rotated keys [B, Hkv, T, D] and
the values [B, T, Hkv x D], each batch x tokens x kv_dim x elem_bytes bytes). Only the
last token of each request needs logits (the first generated token), so the final norm
and the LM head run on it alone.

Chunked prefill cuts a prompt of `seq_len` tokens into chunks of `chunk` tokens; one graph
is one chunk step. The chunk's position is `kv_len`: the tokens of the same prompt already
in the cache (0 for the first chunk, a multiple of `chunk`). Its queries attend to those
`kv_len` cached positions, K and V read from HBM (`scores_cached`, `context_cached`, and an
Add of the two context parts: 3 operators more per layer), and to its own `chunk` tokens on
chip, causally; it appends its own K and V to the cache. Only the chunk that ends the
prompt (`kv_len + chunk == seq_len`) runs the final norm and the LM head. The whole-prompt
prefill is the chunk step with `chunk = seq_len` and `kv_len = 0`.

Decode tokens may ride along, as serving systems mix them into a prefill step:
`decode_batch` other requests, one new token each, each attending to `decode_kv_len`
positions of its own cache (default `seq_len`: requests whose prompts were as long). All
the step's tokens then share the weight Dots, norms, MLP and rotary as one flat row dim
[1, batch x chunk + decode_batch]; the prefill attention reads its slice of the queries
and keys; the riders' attention reads theirs and their K and V caches from HBM (scores,
scale, mask, softmax, context: `rider_*`, 8 operators per layer for a Llama); the out
projection reads both contexts (their concat folded). Every token's K and V are appended
to the cache, and each rider gets its logits beside the prompts' last tokens.

Example: Llama2-13B, batch 1, prompt 2048 in chunks of 512, the third chunk::

    build_prefill_graph(arch, batch=1, seq_len=2048, chunk=512, kv_len=1024)
    # reads the weights and 2 x 40 x 1024 x 5120 x 2 B of cache; writes 2 x 40 x 512 x 5120 x 2 B
"""

from __future__ import annotations

from .arch import Architecture, require_positive_int
from .builders import _build_decoder, _GraphBuilder, _Step, chip, hbm, softmax_operators
from .ir import Graph


def check_prefill(batch: int, seq_len: int, chunk: int | None, kv_len: int, elem_bytes: int = 2,
                  owner: str = "workload", decode_batch: int = 0, decode_kv_len: int | None = None) -> None:
    """ValueError naming `<owner>.<field>` unless the prefill shape is valid: positive
    sizes; `chunk` (None: the whole prompt) at most `seq_len` and dividing it; `kv_len`
    (tokens already cached) a multiple of `chunk` with `kv_len + chunk <= seq_len`, and 0
    without a chunk; `decode_batch` >= 0, and `decode_kv_len` (None: seq_len) positive and
    only with riders."""
    for name, value in (("batch", batch), ("seq_len", seq_len), ("elem_bytes", elem_bytes)):
        require_positive_int(owner, name, value)
    if not isinstance(decode_batch, int) or isinstance(decode_batch, bool) or decode_batch < 0:
        raise ValueError(f"{owner}.decode_batch (decode tokens riding along) must be an int >= 0, "
                         f"got {decode_batch!r}")
    if decode_kv_len is not None:
        if not decode_batch:
            raise ValueError(f"{owner}.decode_kv_len={decode_kv_len} sizes the caches of decode tokens riding "
                             f"along: set {owner}.decode_batch too, or leave decode_kv_len unset")
        require_positive_int(owner, "decode_kv_len", decode_kv_len)
    if chunk is None:
        if kv_len:
            raise ValueError(f"{owner}.kv_len={kv_len}: a whole-prompt prefill has no cached tokens; set "
                             f"{owner}.chunk to run one chunk after {kv_len} cached tokens, or kv_len=0")
        return
    require_positive_int(owner, "chunk", chunk)
    if not isinstance(kv_len, int) or isinstance(kv_len, bool) or kv_len < 0:
        raise ValueError(f"{owner}.kv_len (tokens already cached) must be an int >= 0, got {kv_len!r}")
    if chunk > seq_len:
        raise ValueError(f"{owner}.chunk={chunk} exceeds {owner}.seq_len={seq_len}: a chunk is part of the prompt")
    if seq_len % chunk:
        raise ValueError(f"{owner}.chunk={chunk} does not divide {owner}.seq_len={seq_len}: the prompt is cut "
                         "into equal chunks; choose a divisor")
    if kv_len % chunk:
        raise ValueError(f"{owner}.kv_len={kv_len} (tokens already cached) must be a multiple of "
                         f"{owner}.chunk={chunk}: the chunks before this one")
    if kv_len + chunk > seq_len:
        raise ValueError(f"{owner}.kv_len={kv_len} + {owner}.chunk={chunk} exceeds {owner}.seq_len={seq_len}: "
                         f"the last chunk starts at kv_len={seq_len - chunk}")


def build_prefill_graph(arch: Architecture, batch: int, seq_len: int, elem_bytes: int = 2,
                        chunk: int | None = None, kv_len: int = 0, decode_batch: int = 0,
                        decode_kv_len: int | None = None) -> Graph:
    """One prefill step of `batch` prompts of `seq_len` tokens (module doc): the whole
    prompt, or with `chunk` the chunk of that many tokens after `kv_len` cached ones; with
    `decode_batch` decode tokens riding along, each after `decode_kv_len` cached positions
    (None: seq_len). `elem_bytes` bytes per element (2 = fp16)."""
    if not isinstance(arch, Architecture):
        raise ValueError(f"build_prefill_graph: arch must be an Architecture, got {type(arch).__name__}")
    check_prefill(batch, seq_len, chunk, kv_len, elem_bytes, "build_prefill_graph", decode_batch, decode_kv_len)
    if arch.kind != "decoder":
        raise ValueError(f"build_prefill_graph: kind {arch.kind!r} of {arch.name!r} has no KV cache; "
                         "use build_forward_graph")
    tokens = seq_len if chunk is None else chunk
    last = kv_len + tokens == seq_len
    riders_keys = seq_len if decode_kv_len is None else decode_kv_len
    step = _Step(batch, tokens=tokens, keys=tokens, decode=False, cached=kv_len, store_kv=True,
                 head_tokens=1 if last else 0, riders=decode_batch, rider_keys=riders_keys if decode_batch else 0)
    name = f"{arch.name}.prefill.b{batch}.t{seq_len}"
    if chunk is not None:
        name += f".c{chunk}.kv{kv_len}"
    if decode_batch:
        name += f".d{decode_batch}.kv{riders_keys}"
    return _build_decoder(arch, step, name, elem_bytes)


def add_rider_attention(g: _GraphBuilder, arch: Architecture, step: _Step, p: str, q: str) -> str:
    """The attention of a prefill step's riding decode tokens (module doc): scores against
    their K caches [R, Hkv, S, D] read from HBM, scale, mask, softmax, context with their V
    caches; returns the context tensor. Their queries are the last `step.riders` rows of the
    step's flat query tensor `q`."""
    d, n_kv, group = arch.head_dim, arch.n_kv_heads, arch.group_size
    space = {"B": step.riders, "Hkv": n_kv, "G": group, "T": 1, "S": step.rider_keys}
    s_dims, row_dims = tuple(space), tuple(space)[:-1]
    scores = g.matmul(f"{p}.rider_scores", "BatchMatMul", {**space, "D": d}, s_dims,
                      chip(q, "B", "T", "Hkv", "G", "D"), hbm(f"{p}.rider_k_cache", "B", "Hkv", "S", "D"))
    if not arch.scale_query:
        scores = g.binary(f"{p}.rider_scale", "Divide", space, chip(scores, *s_dims), g.constant("sqrt_head_dim"))
    mask = chip(g.graph_input("input.attention_mask"), "B", "T", "S")
    scores = g.binary(f"{p}.rider_mask", "Add", space, chip(scores, *s_dims), mask)
    if arch.clamp_scores:
        scores = g.binary(f"{p}.rider_clamp", "Maximum", space, chip(scores, *s_dims), g.constant("dtype_min"))
    probs = softmax_operators(g, f"{p}.rider_softmax", space, row_dims, chip(scores, *s_dims))
    return g.matmul(f"{p}.rider_context", "BatchMatMul", {**{n: space[n] for n in row_dims}, "D": d,
                                                           "S": step.rider_keys},
                    (*row_dims, "D"), chip(probs, *s_dims), hbm(f"{p}.rider_v_cache", "B", "Hkv", "S", "D"))
