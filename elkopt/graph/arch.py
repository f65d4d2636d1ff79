"""Model architecture descriptions, in Hugging-Face terms (sizes in elements)."""

from __future__ import annotations

from dataclasses import dataclass

ACTIVATIONS = ("silu", "gelu", "relu")
NORMS = ("rmsnorm", "layernorm")
POSITIONALS = ("rotary", "learned", "none")
KINDS = ("decoder", "dit")


@dataclass(frozen=True)
class Architecture:
    """A transformer stack; every size is a count of elements, heads or layers.

    Decoder-only LLMs (`kind="decoder"`) and diffusion transformers (`kind="dit"`, adaLN-Zero
    blocks over latent patches). Implementation details of some model codes that add
    operators are explicit flags so the graph matches the published operator counts:
    `scale_query` (OPT multiplies q by 1/sqrt(head_dim) instead of dividing the scores),
    `clamp_scores` (OPT clamps masked scores at the dtype minimum: one Maximum) and
    `fused_qkv_bias` (with `bias`: one bias Add on the fused q/k/v projection, as GPT-2's
    Conv1D `c_attn` has one bias of 3 x hidden, instead of one per q, k and v slice, as OPT's
    separate projections and the published graph).
    """

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int  # intermediate size of the MLP (per branch when gated)
    gated: bool
    activation: str
    norm: str
    positional: str
    vocab: int = 0  # 0: no LM head
    bias: bool = False  # biases on every linear layer (and LayerNorm)
    kind: str = "decoder"
    scale_query: bool = False
    clamp_scores: bool = False
    fused_qkv_bias: bool = False
    # DiT only: latent image side (elements), patch side, latent channels in and out,
    # and the size of the sinusoidal timestep embedding fed to the timestep MLP.
    latent_size: int = 0
    patch_size: int = 0
    in_channels: int = 0
    out_channels: int = 0
    frequency_dim: int = 0
    # Mixture of experts (0 experts: a dense model). Layers `dense_layers` and up replace the
    # MLP by `n_experts` routed experts of intermediate size `expert_ffn` (gated like `gated`),
    # `experts_per_token` of them per token (top-k), plus `shared_experts` experts every token
    # uses; the first `dense_layers` layers keep a dense MLP of size `ffn`. `renormalize_gates`:
    # the top-k gates are divided by their sum (Mixtral), else used as the softmax gave them
    # (DeepSeek-V2-Lite, norm_topk_prob false).
    n_experts: int = 0
    experts_per_token: int = 0
    shared_experts: int = 0
    expert_ffn: int = 0
    dense_layers: int = 0
    renormalize_gates: bool = False
    # Multi-head latent attention (DeepSeek-V2; 0: standard attention). Keys and values are
    # compressed to a `kv_lora_rank` latent plus a `qk_rope_head_dim` rotary key shared by all
    # heads; query heads are `qk_nope_head_dim` + `qk_rope_head_dim` wide (= head_dim), value
    # heads `v_head_dim`. Queries are projected directly (no q LoRA, as in V2-Lite).
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    def __post_init__(self) -> None:
        positive = ["n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "ffn"]
        if self.kind == "dit":
            positive += ["latent_size", "patch_size", "in_channels", "out_channels",
                         "frequency_dim"]
        for name in positive:
            require_positive_int(f"architecture {self.name!r}", name, getattr(self, name))
        if not isinstance(self.vocab, int) or self.vocab < 0:
            raise ValueError(f"architecture {self.name!r}: vocab must be an int >= 0, "
                             f"got {self.vocab!r}")
        for name, allowed in (("activation", ACTIVATIONS), ("norm", NORMS),
                              ("positional", POSITIONALS), ("kind", KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"architecture {self.name!r}: {name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"architecture {self.name!r}: n_kv_heads={self.n_kv_heads} does not "
                             f"divide n_heads={self.n_heads}")
        if self.positional == "rotary" and self.head_dim % 2:
            raise ValueError(f"architecture {self.name!r}: head_dim must be even for rotary, "
                             f"got {self.head_dim}")
        if self.kind == "dit" and self.latent_size % self.patch_size:
            raise ValueError(f"architecture {self.name!r}: patch_size={self.patch_size} does not "
                             f"divide latent_size={self.latent_size}")
        self._check_experts()
        self._check_latent_attention()

    def _check_experts(self) -> None:
        owner = f"architecture {self.name!r}"
        moe = ("experts_per_token", "shared_experts", "expert_ffn", "dense_layers")
        for name in ("n_experts", *moe):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{owner}: {name} must be an int >= 0, got {value!r}")
        if not self.n_experts:
            set_fields = [n for n in moe if getattr(self, n)] + (["renormalize_gates"] if self.renormalize_gates
                                                                  else [])
            if set_fields:
                raise ValueError(f"{owner}: {', '.join(set_fields)} describe a mixture of experts; set "
                                 "n_experts > 0 too, or leave them at 0 for a dense model")
            return
        if self.kind != "decoder":
            raise ValueError(f"{owner}: a mixture of experts (n_experts={self.n_experts}) needs kind "
                             f"'decoder', got {self.kind!r}")
        require_positive_int(owner, "expert_ffn", self.expert_ffn)
        if not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(f"{owner}: experts_per_token (top-k) must be in 1..n_experts={self.n_experts}, "
                             f"got {self.experts_per_token}")
        if self.dense_layers >= self.n_layers:
            raise ValueError(f"{owner}: dense_layers={self.dense_layers} leaves no expert layer of the "
                             f"{self.n_layers}; use n_experts=0 for a dense model")

    def _check_latent_attention(self) -> None:
        owner = f"architecture {self.name!r}"
        mla = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        for name in mla:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{owner}: {name} must be an int >= 0, got {value!r}")
        if not self.kv_lora_rank:
            if any(getattr(self, n) for n in mla):
                raise ValueError(f"{owner}: qk_nope_head_dim, qk_rope_head_dim and v_head_dim describe "
                                 "multi-head latent attention; set kv_lora_rank > 0 too, or leave them at 0")
            return
        for name in mla:
            require_positive_int(owner, name, getattr(self, name))
        if self.kind != "decoder" or self.positional != "rotary":
            raise ValueError(f"{owner}: multi-head latent attention needs kind 'decoder' and positional "
                             f"'rotary', got {self.kind!r} and {self.positional!r}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"{owner}: qk_rope_head_dim must be even for rotary, got {self.qk_rope_head_dim}")
        if self.head_dim != self.qk_nope_head_dim + self.qk_rope_head_dim:
            raise ValueError(f"{owner}: with latent attention head_dim is the query/key head size "
                             f"qk_nope_head_dim + qk_rope_head_dim = {self.qk_nope_head_dim + self.qk_rope_head_dim}, "
                             f"got {self.head_dim}")
        if self.n_kv_heads != self.n_heads:
            raise ValueError(f"{owner}: latent attention has one latent per token for all heads; set "
                             f"n_kv_heads = n_heads = {self.n_heads}, got {self.n_kv_heads}")
        if self.bias:
            raise ValueError(f"{owner}: latent attention is built without biases; set bias=false")

    @property
    def is_moe(self) -> bool:
        """True for a mixture of experts (n_experts > 0)."""
        return self.n_experts > 0

    @property
    def uses_latent_attention(self) -> bool:
        """True for multi-head latent attention (kv_lora_rank > 0)."""
        return self.kv_lora_rank > 0

    def is_expert_layer(self, layer: int) -> bool:
        """True when decoder layer `layer` (0-based) has routed experts instead of a dense MLP."""
        return self.is_moe and layer >= self.dense_layers

    @property
    def parameter_count(self) -> int:
        """Parameters (elements) of a decoder: untied embedding and LM head (vocab x hidden
        each), attention, MLPs or experts (all of them), routers, and the norms' weights (and
        biases for LayerNorm). Learned position tables are not counted."""
        if self.kind != "decoder":
            raise ValueError(f"architecture {self.name!r}: parameter_count covers decoders, not {self.kind!r}")
        h = self.hidden
        norm = h if self.norm == "rmsnorm" else 2 * h

        def mlp(ffn: int) -> int:
            return (3 if self.gated else 2) * h * ffn + ((2 if self.gated else 1) * ffn + h) * self.bias

        if self.uses_latent_attention:
            attention = (h * self.n_heads * self.head_dim  # q_proj
                         + h * (self.kv_lora_rank + self.qk_rope_head_dim)  # kv_a_proj_with_mqa
                         + self.kv_lora_rank  # kv_a_layernorm
                         + self.kv_lora_rank * self.n_heads * (self.qk_nope_head_dim + self.v_head_dim)  # kv_b
                         + self.n_heads * self.v_head_dim * h)  # o_proj
        else:
            attention = (h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
                         + (self.q_dim + 2 * self.kv_dim + h) * self.bias)
        total = 2 * self.vocab * h + norm
        for layer in range(self.n_layers):
            total += attention + 2 * norm
            if self.is_expert_layer(layer):
                total += ((self.n_experts + self.shared_experts) * mlp(self.expert_ffn)
                          + h * self.n_experts)  # the router
            else:
                total += mlp(self.ffn)
        return total

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        """Width of the query projection: n_heads x head_dim."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (or value) projection: n_kv_heads x head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def image_tokens(self) -> int:
        """DiT tokens per image: (latent_size / patch_size)^2; 0 for decoders."""
        if self.kind != "dit":
            return 0
        return (self.latent_size // self.patch_size) ** 2


def require_positive_int(owner: str, field_name: str, value: object) -> None:
    """Raise ValueError naming `owner` and `field_name` unless `value` is an int > 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}: {field_name} must be a positive int, got {value!r}")
