"""Preset architectures of the reference workloads, and a one-call graph builder."""

from __future__ import annotations

from .arch import Architecture
from .builders import build_decode_graph, build_forward_graph
from .ir import Graph

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
        # DiT-XL/2: 32x32x4 latent, patch 2 -> 256 tokens; learned sigma doubles the output
        # channels; fixed sin-cos positions are added like a learned table.
        Architecture("dit_xl_2", n_layers=28, hidden=1152, n_heads=16, n_kv_heads=16,
                     head_dim=72, ffn=4608, gated=False, activation="gelu", norm="layernorm",
                     positional="learned", bias=True, kind="dit", latent_size=32, patch_size=2,
                     in_channels=4, out_channels=8, frequency_dim=256),
        # small GQA model for tests
        Architecture("tiny", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                     ffn=512, vocab=1000, **_LLAMA),
    )
}

WORKLOADS = ("decode", "forward")


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
                elem_bytes: int = 2) -> Graph:
    """Graph of a preset (by name) or an Architecture.

    workload_kind "decode": one token per request with a KV cache of `seq_or_kv_len`;
    "forward": full sequences of `seq_or_kv_len` tokens (DiT: latent patches).
    """
    architecture = get_architecture(arch) if isinstance(arch, str) else arch
    if workload_kind == "decode":
        return build_decode_graph(architecture, batch, seq_or_kv_len, elem_bytes)
    if workload_kind == "forward":
        return build_forward_graph(architecture, batch, seq_or_kv_len, elem_bytes)
    raise ValueError(f"workload_kind must be one of {WORKLOADS}, got {workload_kind!r}")
