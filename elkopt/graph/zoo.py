"""Preset architectures of the reference workloads, and a one-call graph builder."""

from __future__ import annotations

from .arch import Architecture
from .builders import build_decode_graph, build_forward_graph
from .ir import Graph
from .prefill import build_prefill_graph

_LLAMA = dict(gated=True, activation="silu", norm="rmsnorm", positional="rotary")

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("llama2_13b", n_layers=40, hidden=5120, n_heads=40, n_kv_heads=40,
                     head_dim=128, ffn=13824, vocab=32000, **_LLAMA),
        Architecture("llama2_70b", n_layers=80, hidden=8192, n_heads=64, n_kv_heads=8,
                     head_dim=128, ffn=28672, vocab=32000, **_LLAMA),
        # Gemma2 also normalises sublayer outputs, soft-caps logits and scales embeddings;
        # the published graph (2216 ops) has Llama's 48-operator layer, and so do we.
        Architecture("gemma2_27b", n_layers=46, hidden=4608, n_heads=32, n_kv_heads=16,
                     head_dim=128, ffn=36864, vocab=256000, gated=True, activation="gelu",
                     norm="rmsnorm", positional="rotary"),
        Architecture("opt_30b", n_layers=48, hidden=7168, n_heads=56, n_kv_heads=56,
                     head_dim=128, ffn=28672, vocab=50272, gated=False, activation="relu",
                     norm="layernorm", positional="learned", bias=True, scale_query=True,
                     clamp_scores=True),
        # Mixtral-8x7B: mistralai/Mixtral-8x7B-v0.1 config.json (num_hidden_layers 32, hidden_size
        # 4096, num_attention_heads 32, num_key_value_heads 8, intermediate_size 14336,
        # num_local_experts 8, num_experts_per_tok 2, vocab_size 32000, rms_norm, silu, rope;
        # untied embeddings; top-2 gates renormalised). About 46.7e9 parameters.
        Architecture("mixtral_8x7b", n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128,
                     ffn=14336, vocab=32000, n_experts=8, experts_per_token=2, expert_ffn=14336,
                     renormalize_gates=True, **_LLAMA),
        # DeepSeek-V2-Lite: deepseek-ai/DeepSeek-V2-Lite config.json (num_hidden_layers 27,
        # hidden_size 2048, num_attention_heads 16, kv_lora_rank 512, q_lora_rank null,
        # qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, n_routed_experts 64,
        # num_experts_per_tok 6, n_shared_experts 2, moe_intermediate_size 1408,
        # first_k_dense_replace 1 with intermediate_size 10944, vocab_size 102400,
        # norm_topk_prob false, softmax scoring; untied embeddings). About 15.7e9 parameters.
        Architecture("deepseek_v2_lite", n_layers=27, hidden=2048, n_heads=16, n_kv_heads=16, head_dim=192,
                     ffn=10944, vocab=102400, n_experts=64, experts_per_token=6, shared_experts=2,
                     expert_ffn=1408, dense_layers=1, kv_lora_rank=512, qk_nope_head_dim=128,
                     qk_rope_head_dim=64, v_head_dim=128, **_LLAMA),
        # DiT-XL/2: 32x32x4 latent, patch 2 -> 256 tokens; learned sigma doubles the output
        # channels; fixed sin-cos positions are added like a learned table.
        Architecture("dit_xl_2", n_layers=28, hidden=1152, n_heads=16, n_kv_heads=16,
                     head_dim=72, ffn=4608, gated=False, activation="gelu", norm="layernorm",
                     positional="learned", bias=True, kind="dit", latent_size=32, patch_size=2,
                     in_channels=4, out_channels=8, frequency_dim=256),
        # Llama 3.1 (GQA, 128k context): the Hugging Face configs of meta-llama/Llama-3.1-8B and
        # -70B (config.json: num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads,
        # head_dim 128, intermediate_size, vocab_size 128256, rms_norm, silu, rope,
        # max_position_embeddings 131072; untied embeddings). 8B: about 8.03e9 parameters.
        Architecture("llama3_8b", n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8,
                     head_dim=128, ffn=14336, vocab=128256, **_LLAMA),
        Architecture("llama3_70b", n_layers=80, hidden=8192, n_heads=64, n_kv_heads=8,
                     head_dim=128, ffn=28672, vocab=128256, **_LLAMA),
        # small GQA model for tests
        Architecture("tiny", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                     ffn=512, vocab=1000, **_LLAMA),
    )
}

WORKLOADS = ("decode", "forward", "prefill")


class UnknownArchitectureError(ValueError, KeyError):
    """An architecture name not in ARCHITECTURES (catchable as ValueError or KeyError)."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_architecture(name: str) -> Architecture:
    """The preset called `name`; raises UnknownArchitectureError listing the valid names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; valid names: {valid}") from None


def build_graph(arch: str | Architecture, workload_kind: str, batch: int, seq_or_kv_len: int,
                elem_bytes: int = 2, chunk: int | None = None, kv_len: int = 0,
                routing: str | None = None, decode_batch: int = 0, decode_kv_len: int | None = None) -> Graph:
    """Graph of a preset (by name) or an Architecture.

    workload_kind "decode": one token per request with a KV cache of `seq_or_kv_len`;
    "forward": full sequences of `seq_or_kv_len` tokens (DiT: latent patches);
    "prefill": prompts of `seq_or_kv_len` tokens, their K and V written to HBM, or with
    `chunk` one chunk step after `kv_len` cached tokens, and `decode_batch` decode tokens
    riding along after `decode_kv_len` cached positions each (`elkopt.graph.prefill`).
    `routing`: `workload.routing` of a mixture of experts in decode (`elkopt.graph.moe`;
    None: uniform).
    """
    architecture = get_architecture(arch) if isinstance(arch, str) else arch
    if workload_kind == "prefill":
        return build_prefill_graph(architecture, batch, seq_or_kv_len, elem_bytes, chunk=chunk, kv_len=kv_len,
                                   decode_batch=decode_batch, decode_kv_len=decode_kv_len)
    if chunk is not None or decode_batch:
        raise ValueError(f"chunk and decode_batch shape a prefill step, not a {workload_kind!r} workload")
    if workload_kind == "decode":
        return build_decode_graph(architecture, batch, seq_or_kv_len, elem_bytes, routing=routing)
    if workload_kind == "forward":
        return build_forward_graph(architecture, batch, seq_or_kv_len, elem_bytes)
    raise ValueError(f"workload_kind must be one of {WORKLOADS}, got {workload_kind!r}")
