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
    `scale_query` (OPT multiplies q by 1/sqrt(head_dim) instead of dividing the scores) and
    `clamp_scores` (OPT clamps masked scores at the dtype minimum: one Maximum).
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
    # DiT only: latent image side (elements), patch side, latent channels in and out,
    # and the size of the sinusoidal timestep embedding fed to the timestep MLP.
    latent_size: int = 0
    patch_size: int = 0
    in_channels: int = 0
    out_channels: int = 0
    frequency_dim: int = 0

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
