"""Mixture-of-experts decode and multi-head latent attention: hand-computed FLOPs and HBM
bytes of tiny graphs, the routing math, the zoo models' parameter counts, and one tiny
MoE step planned end to end."""

from dataclasses import replace

import pytest

from elkopt.chip import Chip
from elkopt.config import Workload, WorkloadKind
from elkopt.graph import moe
from elkopt.graph.arch import Architecture
from elkopt.graph.builders import build_decode_graph
from elkopt.graph.split import split_operator
from elkopt.graph.zoo import ARCHITECTURES, build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import OpShape
from elkopt.plans.table import table_key

# hidden H = 64, E = 4 routed experts of F = 32, top k = 2, one shared expert; layer 0 dense (ffn 96)
H, E, K, F = 64, 4, 2, 32
TINY = Architecture("tiny_moe", n_layers=2, hidden=H, n_heads=4, n_kv_heads=2, head_dim=16, ffn=96, vocab=100,
                    gated=True, activation="silu", norm="rmsnorm", positional="rotary", n_experts=E,
                    experts_per_token=K, shared_experts=1, expert_ffn=F, dense_layers=1, renormalize_gates=True)
EXPERT_BYTES = 3 * H * F * 2  # gate, up and down of one expert, fp16: 12288
CHIP = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)


def ops_of(graph, prefix):
    return [op for op in graph.ops if op.name.startswith(prefix)]


def routed_bytes(graph, layer=1):
    return sum(op.hbm_bytes(2) for op in ops_of(graph, f"layer{layer}.mlp.experts."))


# ---------------------------------------------------------------- routing math


@pytest.mark.parametrize("batch, experts", [(1, 2.0), (2, 3.0), (3, 3.5)])
def test_uniform_expected_experts_by_hand(batch, experts):
    # E (1 - (1 - k/E)^B) = 4 (1 - 2^-B): 2, 3, 3.5
    assert moe.expected_experts("uniform", E, K, batch) == pytest.approx(experts, abs=1e-12)
    assert moe.expected_experts("uniform", 8, 2, 2) == pytest.approx(3.5)  # the example


def test_inclusion_probabilities_by_hand():
    # zipf:1 popularities 1, 1/2, 1/3, 1/4 (sum 25/12) scaled to sum 2: 24/25 x them
    assert moe.inclusion_probabilities(moe.parse_routing("zipf:1"), E, K) == pytest.approx((0.96, 0.48, 0.32, 0.24))
    # counts 10, 1, 1, 0: 10/6 > 1 is capped at 1, the other token's pick splits 1:1
    assert moe.inclusion_probabilities(moe.parse_routing("loads:10/1/1/0"), E, K) == pytest.approx((1, .5, .5, 0))
    # probabilities that already sum to k are kept; shares summing to 1 are scaled by k
    assert moe.inclusion_probabilities(moe.parse_routing("loads:0.5,0.5,0.5,0.5"), E, K) == pytest.approx((.5,) * 4)
    assert moe.inclusion_probabilities(moe.parse_routing("loads:0.4,0.3,0.2,0.1"), E, K) == pytest.approx(
        (.8, .6, .4, .2))
    # zipf:1 at B = 2: sum 1 - (1 - pi)^2 = 4 - (0.04^2 + 0.52^2 + 0.68^2 + 0.76^2) = 2.688
    assert moe.expected_experts("zipf:1", E, K, 2) == pytest.approx(2.688)


@pytest.mark.parametrize("text", ["", "zipf", "zipf:-1", "zipf:x", "loads:", "loads:1,-1", "loads:0,0", "uniform:2",
                                  "normal:1"])
def test_bad_routing_names_the_field(text):
    with pytest.raises(ValueError, match=r"workload\.routing must be 'uniform', 'zipf:<s>'"):
        moe.parse_routing(text)
    with pytest.raises(ValueError, match=r"workload\.routing"):
        Workload(WorkloadKind.DECODE, 1, 16, routing=text)


def test_loads_must_fit_the_model():
    with pytest.raises(ValueError, match=r"workload\.routing .* 3 expert loads; the model has 4"):
        build_decode_graph(TINY, 1, 16, routing="loads:1,1,1")
    with pytest.raises(ValueError, match="at least 2 positive loads"):
        build_decode_graph(TINY, 1, 16, routing="loads:1,0,0,0")


@pytest.mark.parametrize("tokens, groups", [(1, 2), (2, 4), (3, 3), (5, 2), (64, 4)])
def test_expert_groups(tokens, groups):
    # the largest divisor of tokens x k that is at most E
    assert moe.expert_groups(tokens, K, E) == groups


# ---------------------------------------------------------------- the MoE MLP


@pytest.mark.parametrize("batch, experts", [(1, 2), (2, 3), (3, 3.5)])
def test_routed_expert_hbm_bytes_and_flops_by_hand(batch, experts):
    graph = build_decode_graph(TINY, batch, 16)
    assert routed_bytes(graph) == experts * EXPERT_BYTES  # 24576, 36864, 43008
    gate_up, down = (graph.ops[[op.name for op in graph.ops].index(f"layer1.mlp.experts.{n}")]
                     for n in ("gate_up", "down"))
    # each token's k experts: 2 B k H (2F) for the fused gate-and-up, 2 B k F H for down
    assert gate_up.flops == 2 * batch * K * H * 2 * F
    assert down.flops == 2 * batch * K * F * H
    # the shared expert and the router are read whole; the dense layer 0 has no experts
    assert sum(op.hbm_bytes(2) for op in ops_of(graph, "layer1.mlp.shared.")) == 3 * H * F * 2
    assert ops_of(graph, "layer1.mlp.router")[0].hbm_bytes(2) == H * E * 2
    assert not ops_of(graph, "layer0.mlp.experts")
    assert ops_of(graph, "layer0.mlp.gate_up")[0].hbm_bytes(2) == 2 * H * 96 * 2


def test_large_batch_reads_almost_every_expert():
    graph = build_decode_graph(TINY, 64, 16)
    # 4 (1 - 2^-64) experts: all four, to the byte
    assert routed_bytes(graph) == 4 * EXPERT_BYTES
    assert ops_of(graph, "layer1.mlp.experts.gate_up")[0].flops == 2 * 64 * K * H * 2 * F


@pytest.mark.parametrize("routing, batch, expected_bytes", [
    ("loads:3,1,0,0", 64, 2 * EXPERT_BYTES),  # pi = 1, 1, 0, 0: always the same two experts
    ("loads:10/1/1/0", 2, 2.5 * EXPERT_BYTES),  # pi = 1, .5, .5, 0: 1 + .75 + .75
    ("loads:0.5,0.5,0.5,0.5", 2, 3 * EXPERT_BYTES),  # uniform given as probabilities
    ("zipf:1", 2, 22020 + 11010),  # 2.688 experts: 2.688 x 8192 and 2.688 x 4096, each rounded to the byte
])
def test_skewed_routing_hbm_bytes_by_hand(routing, batch, expected_bytes):
    graph = build_decode_graph(TINY, batch, 16, routing=routing)
    assert routed_bytes(graph) == expected_bytes
    uniform = build_decode_graph(TINY, batch, 16)
    assert graph.total_flops == uniform.total_flops  # routing moves bytes, not FLOPs


def test_router_and_top_k_operators():
    graph = build_decode_graph(TINY, 2, 16)
    names = [op.name.removeprefix("layer1.mlp.") for op in ops_of(graph, "layer1.mlp.")]
    # k max reductions, k - 1 DropMax, the selection and the gates, then the renormalisation
    assert names[:13] == ["router", "router_softmax.max", "router_softmax.exp", "router_softmax.sum",
                          "router_softmax.divide", "topk.max0", "topk.drop0", "topk.max1", "topk.select",
                          "topk.gates", "topk.sum", "topk.normalize", "shared.gate_up"]
    labels = {op.name.removeprefix("layer1.mlp."): op.label for op in ops_of(graph, "layer1.mlp.topk")}
    assert labels["topk.max1"] == "Max" and labels["topk.drop0"] == "DropMax"
    assert labels["topk.select"] == "GreaterEqual"
    # the routed experts' loads wait for the selection; nothing else does
    deps = moe.router_dependencies(graph)
    index = {op.name: i for i, op in enumerate(graph.ops)}
    assert deps == {index["layer1.mlp.experts.gate_up"]: (index["layer1.mlp.topk.select"],),
                    index["layer1.mlp.experts.down"]: (index["layer1.mlp.topk.select"],)}


def test_load_factor_separates_tables_and_survives_splits():
    one, two = (ops_of(build_decode_graph(TINY, b, 16), "layer1.mlp.experts.gate_up")[0] for b in (3, 6))
    # B = 3: G = 3 groups, factor 3.5 / 3; B = 6: G = 4, C = 3, 4 (1 - 2^-6) = 3.9375 experts
    assert one.load_factor == pytest.approx(3.5 / 3)
    same_shape_other_factor = replace(one, load_factor=0.5)
    assert one.signature != same_shape_other_factor.signature
    assert OpShape.of(one) != OpShape.of(same_shape_other_factor)
    key = table_key(OpShape.of(one), CHIP, 2, 64)
    assert key != table_key(OpShape.of(same_shape_other_factor), CHIP, 2, 64)
    # an operator without a factor keeps its old cache key and signature
    plain = replace(one, load_factor=1.0, routed_by=None)
    assert len(plain.signature) == 4
    assert table_key(OpShape.of(plain), CHIP, 2, 64) != key
    parts = split_operator(two, "N", 2)
    assert all(p.load_factor == two.load_factor and p.routed_by == two.routed_by for p in parts)
    assert sum(p.hbm_bytes(2) for p in parts) == two.hbm_bytes(2) == 3.9375 * 2 * H * F * 2


def test_bad_moe_architectures():
    with pytest.raises(ValueError, match="experts_per_token .* must be in 1..n_experts=4"):
        replace(TINY, experts_per_token=5)
    with pytest.raises(ValueError, match="expert_ffn must be a positive int"):
        replace(TINY, expert_ffn=0)
    with pytest.raises(ValueError, match="dense_layers=2 leaves no expert layer"):
        replace(TINY, dense_layers=2)
    with pytest.raises(ValueError, match="set n_experts > 0 too"):
        replace(TINY, n_experts=0)
    with pytest.raises(ValueError, match="set kv_lora_rank > 0 too"):
        replace(TINY, v_head_dim=16)


# ---------------------------------------------------------------- latent attention

MLA = replace(TINY, name="tiny_mla", n_kv_heads=4, head_dim=24, kv_lora_rank=32, qk_nope_head_dim=16,
              qk_rope_head_dim=8, v_head_dim=16)


def test_latent_cache_is_read_once_by_hand():
    batch, kv = 2, 16
    graph = build_decode_graph(MLA, batch, kv)
    attention = ops_of(graph, "layer0.attn.")
    reads = {op.name.removeprefix("layer0.attn."): op.hbm_bytes(2) for op in attention if op.hbm_bytes(2)}
    # the cache: B x S x (kv_lora_rank + rope) elements, each read once, shared by the 4 heads
    assert reads.pop("latent_cache") == batch * kv * 32 * 2
    assert reads.pop("scores_rope") == batch * kv * 8 * 2
    assert [op.name for op in graph.ops if op.hbm_bytes(2) and "cache" in op.inputs[-1].tensor] == [
        f"layer{i}.attn.{name}" for i in range(2) for name in ("latent_cache", "scores_rope")]
    heads = 4
    assert reads == {
        "q": H * heads * 24 * 2, "kv_a": H * 40 * 2, "kv_norm.scale": 32 * 2,
        "q_absorb": heads * 16 * 32 * 2, "v_absorb": heads * 32 * 16 * 2, "out": heads * 16 * H * 2,
        # rotary tables [T, rope]: cos and sin, for q and for k
        "rope_q.cos": 8 * 2, "rope_q.sin": 8 * 2, "rope_k.cos": 8 * 2, "rope_k.sin": 8 * 2}
    flops = {op.name.removeprefix("layer0.attn."): op.flops for op in attention}
    assert flops["q_absorb"] == 2 * batch * heads * 16 * 32
    assert flops["scores_latent"] == 2 * batch * heads * kv * 32
    assert flops["scores_rope"] == 2 * batch * heads * kv * 8
    assert flops["context"] == 2 * batch * heads * 32 * kv
    assert flops["v_absorb"] == 2 * batch * heads * 16 * 32
    assert not [op for op in graph.ops if "k_cache" in op.name or "v_cache" in op.name]


def test_latent_attention_rules():
    with pytest.raises(ValueError, match="head_dim is the query/key head size .* = 24"):
        replace(MLA, head_dim=16)
    with pytest.raises(ValueError, match="n_kv_heads = n_heads = 4"):
        replace(MLA, n_kv_heads=2)
    # a forward pass attends on chip: no cache, the same operators but the cache Slice
    forward = build_graph(MLA, "forward", 2, 16)
    assert not [op for op in ops_of(forward, "layer0.attn.") if op.hbm_bytes(2) and "cache" in op.inputs[-1].tensor]
    scores = ops_of(forward, "layer0.attn.scores_latent")[0]
    assert scores.flops == 2 * 2 * 16 * 4 * 16 * 32  # B T Hq S C


# ---------------------------------------------------------------- the zoo models


def test_zoo_parameter_counts_by_hand():
    # Mixtral-8x7B: embedding and LM head 2 x 32000 x 4096; per layer attention
    # 2 x 4096^2 + 2 x 4096 x 1024, two norms, router 4096 x 8, 8 experts of 3 x 4096 x 14336
    mixtral_layer = 2 * 4096**2 + 2 * 4096 * 1024 + 2 * 4096 + 4096 * 8 + 8 * 3 * 4096 * 14336
    mixtral = 2 * 32000 * 4096 + 32 * mixtral_layer + 4096
    assert mixtral == 46_702_792_704
    assert ARCHITECTURES["mixtral_8x7b"].parameter_count == mixtral
    # DeepSeek-V2-Lite: per layer q 2048 x 16 x 192, kv_a 2048 x 576, kv norm 512, kv_b 512 x 16 x 256,
    # o 2048^2, two norms; layer 0 dense 3 x 2048 x 10944; 26 layers of 64 + 2 experts of 3 x 2048 x 1408
    # and a router 2048 x 64
    attention = 2048 * 3072 + 2048 * 576 + 512 + 512 * 4096 + 2048 * 2048 + 2 * 2048
    moe_layer = 66 * 3 * 2048 * 1408 + 2048 * 64
    deepseek = 2 * 102400 * 2048 + 2048 + 27 * attention + 3 * 2048 * 10944 + 26 * moe_layer
    assert deepseek == 15_706_484_224
    assert ARCHITECTURES["deepseek_v2_lite"].parameter_count == deepseek


def test_zoo_models_at_batch_one_read_k_experts():
    mixtral = build_graph("mixtral_8x7b", "decode", 1, 2048)
    # B = 1: exactly the top 2 of 8 experts per layer
    per_layer = sum(op.hbm_bytes(2) for op in ops_of(mixtral, "layer5.mlp.experts."))
    assert per_layer == 2 * 3 * 4096 * 14336 * 2
    deepseek = build_graph("deepseek_v2_lite", "decode", 32, 2048)
    experts = 64 * (1 - (58 / 64) ** 32)  # about 61.3 of 64
    assert sum(op.hbm_bytes(2) for op in ops_of(deepseek, "layer3.mlp.experts.")) == pytest.approx(
        experts * 3 * 2048 * 1408 * 2, abs=2)
    cache = [op for op in ops_of(deepseek, "layer3.attn.") if "kv_cache" in op.inputs[-1].tensor]
    assert sum(op.hbm_bytes(2) for op in cache) == 32 * 2048 * (512 + 64) * 2
    assert not ops_of(deepseek, "layer0.mlp.experts") and ops_of(deepseek, "layer1.mlp.experts")


# ---------------------------------------------------------------- end to end


def test_tiny_moe_step_plans_end_to_end():
    graph = build_decode_graph(MLA, 3, 16)
    result = compile_model(graph, CHIP, "elkopt", PlanningOptions())
    planned = result.graph
    # every expected HBM byte is loaded once: the schedule's loads are the graph's bytes
    assert sum(op.hbm_bytes for op in result.schedule.ops) == planned.hbm_bytes
    assert abs(planned.hbm_bytes - graph.hbm_bytes) <= planned.n_ops - graph.n_ops  # rounding of cut parts
    assert result.timeline.latency_cycles > 0
    assert result.references["lower_bound"] <= result.timeline.latency_ms * (1 + 1e-9)


def test_metrics_report_experts_loaded():
    from types import SimpleNamespace

    from elkopt.app import moe_experts_loaded

    def loaded(model, batch, routing="uniform", kind=WorkloadKind.DECODE):
        workload = Workload(kind, batch, 2048, routing=routing)
        return moe_experts_loaded(SimpleNamespace(model=model, workload=workload))

    assert loaded("mixtral_8x7b", 1) == pytest.approx(2)
    assert loaded("mixtral_8x7b", 2) == pytest.approx(3.5)  # 8 (1 - (3/4)^2)
    assert loaded("deepseek_v2_lite", 32) == pytest.approx(64 * (1 - (58 / 64) ** 32))
    assert loaded("deepseek_v2_lite", 32, "zipf:1.2") < loaded("deepseek_v2_lite", 32)
    assert loaded("llama2_13b", 32) is None and loaded("mixtral_8x7b", 2, kind=WorkloadKind.FORWARD) is None
    assert Workload(WorkloadKind.DECODE, 2, 16, routing="zipf:1").describe() == "decode b2 kv16 routing zipf:1"
