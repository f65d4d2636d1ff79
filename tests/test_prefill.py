"""Prefill and chunked prefill: HBM writes in the graph, the timeline, the checker, the
lower bound, and the schedulers, on graphs small enough to count by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from elkopt.chip import Chip
from elkopt.config import Workload, WorkloadKind
from elkopt.graph.arch import Architecture
from elkopt.graph.ir import Store
from elkopt.graph.prefill import build_prefill_graph
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.option import Plan, PlanOption
from elkopt.plans.table import build_tables
from elkopt.schedule import baselines
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline

# One layer, hidden H = 8, 2 query heads sharing 1 KV head (G = 2) of D = 4, gated FFN F = 16,
# vocab V = 10: every operator can be counted by hand.
MINI = Architecture("mini", n_layers=1, hidden=8, n_heads=2, n_kv_heads=1, head_dim=4, ffn=16, vocab=10,
                    gated=True, activation="silu", norm="rmsnorm", positional="rotary")


def layer_flops(b: int, t: int, p: int) -> int:
    """FLOPs of MINI's layer for b requests of t new tokens after p cached ones (module doc
    of elkopt.graph.prefill), counted op by op: 2 per MATMUL point, 1 per element-wise or
    reduce point, 0 for a Slice."""
    r, h, f = b * t, 8, 16
    norm = 4 * r * h + 3 * r  # square, sum, normalize, scale over [r, H]; mean, add_eps, sqrt over [r]
    qkv = 2 * r * 16 * h  # N = q 8 + k 4 + v 4
    rope_q = r * 8 + r * 4 + r * 8 + r * 8  # cos, negate (half), sin, add over [r, 2 heads, 4]
    rope_k = r * 4 + r * 2 + r * 4 + r * 4  # the same over [r, 1 head, 4]
    keys = p + t
    scores = 2 * b * 2 * t * t * 4 + 2 * b * 2 * t * p * 4  # own keys on chip, cached keys
    pointwise = 6 * b * 2 * t * keys  # scale, mask, softmax max, exp, sum, divide over all keys
    context = 2 * b * 2 * t * 4 * t + 2 * b * 2 * t * 4 * p + (b * 2 * t * 4 if p else 0)  # + the Add
    out = 2 * r * h * 8
    mlp = 2 * r * 2 * f * h + 3 * r * f + 2 * r * h * f  # gate_up, sigmoid/silu/product, down
    residuals = 2 * r * h
    return 2 * norm + qkv + rope_q + rope_k + scores + pointwise + context + out + mlp + residuals


HEAD_FLOPS_PER_REQUEST = (4 * 8 + 3) + 2 * 10 * 8  # final norm and LM head on one token
# elements read from HBM: norm weights 8 + 8, qkv 16 x 8, out 8 x 8, gate_up 32 x 8, down 16 x 8, and
# the rotary tables [T, D] read by each of the 4 Multiplies (cos and sin of q and of k)
LAYER_WEIGHTS = 8 + 8 + 128 + 64 + 256 + 128
HEAD_WEIGHTS = 8 + 80


def test_prefill_graph_counts_by_hand():
    b, t = 2, 4
    g = build_prefill_graph(MINI, batch=b, seq_len=t)
    assert g.total_flops == layer_flops(b, t, 0) + b * HEAD_FLOPS_PER_REQUEST == 12422
    assert g.hbm_bytes == 2 * (LAYER_WEIGHTS + 4 * t * 4 + HEAD_WEIGHTS) == 1488
    # K [B, Hkv, T, D] and V [B, T, Hkv x D]: 2 x 2 x 4 x 4 elements x 2 bytes
    assert g.hbm_bytes_written == 2 * (2 * b * t * 4) == 128
    assert [s.hbm_tensor for s in g.stores] == ["layer0.attn.k_cache.append", "layer0.attn.v_cache.append"]
    written = g.write_bytes_per_op()
    producers = {g.ops[i].name: w for i, w in enumerate(written) if w}
    assert producers == {"layer0.attn.rope_k.add": 64, "layer0.attn.v": 64}
    # the head runs on the last token of each request only
    assert g.ops[-1].name == "lm_head" and g.ops[-1].dim_lengths == (b, 1, 10, 8)


def test_chunk_graph_counts_by_hand():
    b, t, p = 2, 4, 4  # the last chunk of an 8-token prompt
    g = build_prefill_graph(MINI, batch=b, seq_len=8, chunk=t, kv_len=p)
    assert g.total_flops == layer_flops(b, t, p) + b * HEAD_FLOPS_PER_REQUEST == 13894
    cache = 2 * b * p * 4  # K and V of the cached positions, [B, Hkv, P, D] each
    assert g.hbm_bytes == 2 * (LAYER_WEIGHTS + 4 * t * 4 + cache + HEAD_WEIGHTS) == 1616
    assert g.hbm_bytes_written == 128
    names = [op.name for op in g.ops]
    for extra in ("scores_cached", "context_cached", "context_add"):
        assert f"layer0.attn.{extra}" in names
    # a middle chunk has no head; the first chunk is the whole prefill of its tokens
    middle = build_prefill_graph(MINI, batch=b, seq_len=12, chunk=t, kv_len=p)
    assert middle.total_flops == layer_flops(b, t, p) == 13504
    assert middle.hbm_bytes == 2 * (LAYER_WEIGHTS + 4 * t * 4 + cache) == 1440
    first = build_prefill_graph(MINI, batch=b, seq_len=t, chunk=t, kv_len=0)
    assert first.ops == build_prefill_graph(MINI, batch=b, seq_len=t).ops


def test_riding_decode_tokens_count_by_hand():
    b, t, p, d, kv = 2, 4, 4, 3, 6  # the last chunk of two 8-token prompts, and 3 decode tokens after 6
    g = build_prefill_graph(MINI, batch=b, seq_len=8, chunk=t, kv_len=p, decode_batch=d, decode_kv_len=kv)
    rows = b * t + d  # every token of the step goes through the Dots, norms, rotary and MLP together
    prompt_attention = layer_flops(b, t, p) - 1328 * b * t  # the prompts' attention, as without riders
    rider_attention = 2 * d * 2 * kv * 4 + 6 * d * 2 * kv + 2 * d * 2 * 4 * kv  # scores, 6 pointwise, context
    head = (b + d) * HEAD_FLOPS_PER_REQUEST  # the prompts' last tokens and every rider get logits
    assert 1328 * rows == layer_flops(rows, 1, 0) - (16 + 12 + 16) * rows  # the per-row part of a layer
    assert g.total_flops == 1328 * rows + prompt_attention + rider_attention + head == 19255
    # rotary tables over all 11 rows; the prompts' cache [2, 1, 4, 4] and the riders' [3, 1, 6, 4], K and V
    assert g.hbm_bytes == 2 * (LAYER_WEIGHTS + 4 * rows * 4 + 2 * b * p * 4 + 2 * d * kv * 4 + HEAD_WEIGHTS) == 2128
    assert g.hbm_bytes_written == 2 * (2 * rows * 4) == 176  # every token's K and V appended
    assert g.ops[-1].dim_lengths == (1, b + d, 10, 8)
    assert sum("rider_" in op.name for op in g.ops) == 8


@pytest.mark.parametrize("fields, message", [
    (dict(chunk=4096), "workload.chunk=4096 exceeds workload.seq_len=2048"),
    (dict(chunk=300), "workload.chunk=300 does not divide workload.seq_len=2048"),
    (dict(chunk=512, cached=256), "workload.kv_len=256 .* multiple of workload.chunk=512"),
    (dict(chunk=512, cached=2048), r"workload.kv_len=2048 \+ workload.chunk=512 exceeds"),
    (dict(cached=512), "workload.kv_len=512: a whole-prompt prefill"),
    (dict(decode_kv_len=512), "workload.decode_kv_len=512 .* set workload.decode_batch"),
    (dict(decode_batch=-1), "workload.decode_batch .* must be an int >= 0"),
])
def test_bad_prefill_workloads_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        Workload(WorkloadKind.PREFILL, 1, 2048, **fields)


def test_chunk_needs_a_prefill_workload():
    with pytest.raises(ValueError, match="workload.chunk=512 .* workload.kind=prefill"):
        Workload(WorkloadKind.DECODE, 1, 2048, chunk=512)
    with pytest.raises(ValueError, match="workload.decode_batch .* workload.kind=prefill"):
        Workload(WorkloadKind.DECODE, 1, 2048, decode_batch=4)
    assert Workload(WorkloadKind.PREFILL, 1, 2048, chunk=512, cached=1024).describe() == \
        "prefill b1 seq2048 chunk512 kv1024"


def test_stores_are_checked():
    g = build_prefill_graph(MINI, batch=1, seq_len=2)
    with pytest.raises(ValueError, match="no operator produces it"):
        dataclasses.replace(g, stores=(Store("nothing", "cache"),))
    with pytest.raises(ValueError, match="already written"):
        dataclasses.replace(g, stores=(Store("layer0.attn.v", "c"), Store("layer0.attn.k", "c")))


# ---------------------------------------------------------------- the timeline by hand

# 10 HBM bytes and 50 interconnect bytes per cycle (4 cores x 12.5); every plan uses one core
CHIP = Chip(name="t", cores_per_chip=4, sram_bytes_per_core=1000, clock_hz=1e9,
            hbm_bytes_per_s=1e10, core_link_bytes_per_s=12.5e9)


def op(i, exec_cycles, hbm=0, cold=0, window=PROLOGUE, written=0, exchange=0.0):
    option = PlanOption(plan=Plan((1,), ((1,),)), cold_bytes=cold, hot_bytes=200, exec_cycles=exec_cycles,
                        exchange_cycles=exchange, distribution_cycles=0.0)
    return OpSchedule(op=i, option=option, preload_window=window, hbm_bytes=hbm, write_bytes=written)


def three_ops(written=0, window=1, exchange=0.0):
    """op0 runs 100 cycles and writes `written` bytes; op1 runs 20; op2 runs 10 and loads
    500 B (50 HBM cycles, 10 interconnect cycles) in `window`."""
    return Schedule((op(0, 100, written=written), op(1, 20, exchange=exchange),
                     op(2, 10, hbm=500, cold=500, window=window)), preload_order=(2,))


def test_a_write_delays_the_next_load_by_its_hbm_cycles():
    alone = compute_timeline(three_ops(), CHIP)
    # op2's load issued when op1 starts (100): [100, 150]; op2 [150, 160]
    np.testing.assert_allclose([alone.load_start[2], alone.load_end[2]], [100, 150])
    assert alone.latency_cycles == 160
    tl = compute_timeline(three_ops(written=1000), CHIP)
    # the write of 1000 B: 100 HBM cycles (20 interconnect cycles) from op0's end at 100
    np.testing.assert_allclose([tl.write_start[0], tl.write_end[0]], [100, 200])
    assert tl.write_hbm_cycles[0] == 100 and tl.write_noc_cycles[0] == 20
    # the load queues behind it: exactly 100 cycles later, and so does op2
    np.testing.assert_allclose([tl.load_start[2], tl.load_end[2]], [200, 250])
    np.testing.assert_allclose(tl.exec_start, [0, 100, 250])
    assert tl.latency_cycles == alone.latency_cycles + 100
    assert np.isnan(tl.write_start[1:]).all()
    assert tl.hbm_util == pytest.approx((100 + 50) / 260)
    assert sum(tl.breakdown().values()) == pytest.approx(260)
    assert tl.breakdown()["preload_only"] == pytest.approx(130)  # [120, 250]: the write's end, the load


def test_a_load_issued_before_the_write_goes_first():
    tl = compute_timeline(three_ops(written=1000, window=PROLOGUE), CHIP)
    np.testing.assert_allclose([tl.load_start[2], tl.load_end[2]], [0, 50])
    np.testing.assert_allclose([tl.write_start[0], tl.write_end[0]], [100, 200])
    assert tl.latency_cycles == 130


def test_a_write_takes_its_share_of_the_interconnect():
    # over op1 [100, 120] the write (rate 20 / 100 = 0.2) uses 4 cycles; op1 needs 18 for its
    # exchange: 18 + 4 - 20 = 2 cycles of stall
    tl = compute_timeline(three_ops(written=1000, window=PROLOGUE, exchange=18.0), CHIP)
    np.testing.assert_allclose(tl.stall, [0, 2, 0])


def test_the_checker_agrees_with_the_timeline():
    schedule = three_ops(written=1000)
    tl = compute_timeline(schedule, CHIP)
    deps = [[], [0], [1]]
    assert check_schedule(schedule, CHIP, deps, tl) == []
    early = dataclasses.replace(tl, write_start=np.array([90.0, np.nan, np.nan]),
                                write_end=np.array([190.0, np.nan, np.nan]))
    assert any("HBM write starts at cycle 90.0 before the op ends" in p
               for p in check_schedule(schedule, CHIP, deps, early))
    overlap = dataclasses.replace(tl, load_start=np.array([np.nan, np.nan, 150.0]),
                                  load_end=np.array([np.nan, np.nan, 200.0]))
    assert any("load of op 2 starts at cycle 150.0 before the write of op 0 ends" in p
               for p in check_schedule(schedule, CHIP, deps, overlap))
    short = dataclasses.replace(tl, write_end=np.array([150.0, np.nan, np.nan]))
    assert any("HBM write lasts 50.0 cycles < 100.0" in p for p in check_schedule(schedule, CHIP, deps, short))


# ---------------------------------------------------------------- references and schedulers

SMALL = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)


@pytest.fixture(scope="module")
def tiny_prefill():
    graph = build_graph("tiny", "prefill", 2, 16)
    return graph, build_tables(graph, SMALL, 64)


def test_lower_bound_and_ideal_count_the_writes(tiny_prefill):
    graph, tables = tiny_prefill
    # tiny: 2 layers, K and V of 2 x 16 tokens x (2 KV heads x 64) each, 2 bytes
    assert graph.hbm_bytes_written == 2 * 2 * (2 * 16 * 128) * 2 == 32768
    slow = dataclasses.replace(SMALL, hbm_bytes_per_s=1e6)  # HBM-bound: the bound is the bytes
    bound = baselines.lower_bound_cycles(graph, tables, slow)
    assert bound == (graph.hbm_bytes + 32768) / slow.hbm_bytes_per_cycle
    ideal = baselines.schedule_ideal(graph, tables, SMALL).timeline
    assert int(ideal.has_write.sum()) == 4
    assert ideal.write_hbm_cycles.sum() == pytest.approx(32768 / SMALL.hbm_bytes_per_cycle)


@pytest.mark.parametrize("scheduler", ["basic", "static", "inductive", "elkopt"])
def test_tiny_prefill_plans_with_every_scheduler(tiny_prefill, scheduler):
    graph, _ = tiny_prefill
    result = compile_model(graph, SMALL, scheduler, PlanningOptions(max_spatial_splits=64))  # checked inside
    tl = result.timeline
    assert int(tl.has_write.sum()) == 4
    assert [result.schedule.ops[i].write_bytes for i in np.flatnonzero(tl.has_write)] == [2 * 16 * 128 * 2] * 4
    assert tl.latency_ms >= result.references["lower_bound"] * (1 - 1e-9)
    assert check_schedule(result.schedule, SMALL, [graph.dependencies(i) for i in range(graph.n_ops)], tl) == []


def test_the_plan_file_and_the_trace_keep_the_writes(tiny_prefill):
    from elkopt.report import schedule_from_dict, schedule_to_dict
    from elkopt.schedule.timeline import compute_timeline
    from elkopt.schedule.trace import build_chrome_trace

    graph, _ = tiny_prefill
    result = compile_model(graph, SMALL, "static", PlanningOptions(max_spatial_splits=64))
    names = [op.name for op in result.graph.ops]
    again = schedule_from_dict(schedule_to_dict(result.schedule, names))
    assert again == result.schedule
    assert compute_timeline(again, SMALL).latency_cycles == result.timeline.latency_cycles
    trace = build_chrome_trace(result.timeline, result.schedule, names, SMALL)["traceEvents"]
    writes = [e for e in trace if e.get("ph") == "X" and e["tid"] == 4]
    assert len(writes) == 4 and all(e["dur"] > 0 for e in writes)
    assert {e["name"] for e in writes} == {names[i] for i in np.flatnonzero(result.timeline.has_write)}


def test_a_chunk_plans_and_reads_its_cache():
    graph = build_graph("tiny", "prefill", 2, 16, chunk=8, kv_len=8)
    result = compile_model(graph, SMALL, "static", PlanningOptions(max_spatial_splits=64))
    cached = [op for op in result.graph.ops if op.name.endswith("_cached")]
    assert len(cached) == 4 and all(op.hbm_bytes(2) == 2 * 2 * 8 * 64 * 2 for op in cached)
    assert int(result.timeline.has_write.sum()) == 4


def test_a_chunk_with_riding_decode_tokens_plans():
    graph = build_graph("tiny", "prefill", 2, 16, chunk=8, kv_len=8, decode_batch=4, decode_kv_len=32)
    result = compile_model(graph, SMALL, "static", PlanningOptions(max_spatial_splits=64))
    rider_cache = [op for op in result.graph.ops if op.name.endswith(("rider_scores", "rider_context"))]
    assert len(rider_cache) == 4 and all(op.hbm_bytes(2) == 4 * 2 * 32 * 64 * 2 for op in rider_cache)
    assert graph.hbm_bytes_written == 2 * 2 * (2 * 8 + 4) * 128 * 2


def test_designs_without_writes_refuse_a_prefill_and_the_simulator_runs_it():
    from elkopt.conventions import Conventions
    from elkopt.elk.compile import compile_elk
    from elkopt.sim.step import simulate_schedule

    graph = build_graph("tiny", "prefill", 2, 16)
    with pytest.raises(ValueError, match="published designs model no HBM writes.*tiny.prefill.b2.t16"):
        compile_elk(graph, SMALL, "elk_dyn", Conventions())
    # the simulator routes the write (tests/test_sim_writes.py): 1000 B from op0's one core,
    # 100 cycles at the HBM ports (its 80 on the core's 12.5 B/cycle link hide under them),
    # then the load behind it, as in the timeline (test_a_write_delays_the_next_load_by_its_hbm_cycles)
    run = simulate_schedule(three_ops(written=1000), CHIP, mapping="serpentine")
    np.testing.assert_allclose([run.write_start[0], run.write_end[0]], [100, 200])
    np.testing.assert_allclose([run.load_start[2], run.load_end[2]], [200, 250])
    assert run.latency_cycles == pytest.approx(260)


# ---------------------------------------------------------------- a chunked prompt as one job

def tiny_run(tmp_path, folder, *overrides):
    """metrics.json of one run of the app on the tiny model (prefill, 2 x 32 tokens) on a
    256-core IPU MK2, the Static scheduler, plan tables cached under tmp_path."""
    import json

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import elkopt.config  # noqa: F401  (registers the schemas)
    from elkopt.app import main

    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        run = OmegaConf.to_object(compose(config_name="config", overrides=[
            "model=tiny", "workload=prefill", "workload.batch=2", "workload.seq_len=32", "chip=ipu_mk2",
            "chip.cores_per_chip=256", "scheduler=static", "planning.max_spatial_splits=64",
            f"planning.cache_dir={tmp_path / 'cache'}", *overrides]))
    assert main(run, tmp_path / folder) == 0
    return json.loads((tmp_path / folder / "metrics.json").read_text())


def test_a_chunked_prompt_plans_every_step_and_sums_them(tmp_path):
    import json

    from elkopt.graph.zoo import get_architecture

    chunked = tiny_run(tmp_path, "chunked", "workload.chunk=8")
    steps = chunked["chunks"]
    assert [c["kv_len"] for c in steps] == [0, 8, 16, 24]
    assert chunked["workload"] == "prefill b2 seq32 chunk8 x4"
    assert chunked["ttft_ms"] == chunked["latency_ms"] == pytest.approx(sum(c["latency_ms"] for c in steps))
    assert chunked["lower_bound_ms"] == pytest.approx(sum(c["lower_bound_ms"] for c in steps))
    assert sum(chunked["breakdown"].values()) == pytest.approx(chunked["ttft_ms"])
    # each step is exactly the one-step run with its kv_len
    for c in steps:
        one = tiny_run(tmp_path, f"kv{c['kv_len']}", "workload.chunk=8", f"workload.kv_len={c['kv_len']}")
        assert one["ttft_ms"] is None and "chunks" not in one
        assert c["latency_ms"] == pytest.approx(one["latency_ms"], rel=1e-12)
        assert c["hbm_bytes_read"] == one["hbm_bytes_read"]
        saved = json.loads((tmp_path / "chunked" / c["folder"] / "metrics.json").read_text())
        assert saved["latency_ms"] == c["latency_ms"]
    # HBM by hand, in elements: per step and layer the weights (norms 2 x 256, qkv 256 x 512, out 256 x 256,
    # gate_up 2 x 512 x 256, down 512 x 256), 4 rotary tables of [8 tokens, 64]; the K and V caches of the
    # kv_len tokens before the step, [2 requests, 2 KV heads, kv_len, 64] each; once, the head (norm 256,
    # lm_head 1000 x 256); written: every token's K and V, 2 x 2 x 32 x 128 per layer
    tiny = get_architecture("tiny")
    assert (tiny.n_layers, tiny.hidden, tiny.kv_dim, tiny.head_dim, tiny.ffn, tiny.vocab) == \
        (2, 256, 128, 64, 512, 1000)
    weights = 2 * 256 + 256 * 512 + 256 * 256 + 2 * 512 * 256 + 512 * 256 + 4 * 8 * 64
    cache = [2 * 2 * 2 * kv * 64 for kv in (0, 8, 16, 24)]
    assert [c["hbm_bytes_read"] for c in steps] == [2 * (2 * (weights + k) + (256256 if kv == 24 else 0))
                                                    for k, kv in zip(cache, (0, 8, 16, 24))]
    assert chunked["hbm_bytes_read"] == 2 * (4 * 2 * weights + 2 * 2 * 2 * 48 * 64 * 2 + 256256) == 10088960
    assert chunked["hbm_bytes_written"] == 2 * 2 * 2 * 32 * 128 * 2 == 65536
    assert chunked["hbm_bytes_kv"] == 2 * 2 * 2 * 2 * 48 * 64 * 2
    # the later steps take their weight Dots' tables from the cache the first one filled
    later = json.loads((tmp_path / "chunked" / steps[1]["folder"] / "metrics.json").read_text())
    assert later["stats"]["plan_table_cache_hits"] > 0
    # one trace: the steps back to back, one span each in the "chunk steps" process
    trace = json.loads((tmp_path / "chunked" / "trace.json").read_text())["traceEvents"]
    spans = [e for e in trace if e.get("pid") == 2 and e.get("ph") == "X"]
    assert [e["ts"] for e in spans] == pytest.approx([0, *np.cumsum([c["latency_ms"] * 1e3 for c in steps])[:-1]])
    assert max(e["ts"] + e.get("dur", 0) for e in trace if "ts" in e) == pytest.approx(chunked["ttft_ms"] * 1e3)
    plan = json.loads((tmp_path / "chunked" / "plan.json").read_text())
    assert plan == json.loads((tmp_path / "chunked" / steps[-1]["folder"] / "plan.json").read_text())


def test_a_chunk_of_the_whole_prompt_is_the_whole_prompt(tmp_path):
    whole = tiny_run(tmp_path, "whole")
    one = tiny_run(tmp_path, "one", "workload.chunk=32")
    assert whole["ttft_ms"] == whole["latency_ms"]
    assert [c["kv_len"] for c in one["chunks"]] == [0]
    assert one["ttft_ms"] == pytest.approx(whole["ttft_ms"], rel=1e-12)
    assert one["hbm_bytes_read"] == whole["hbm_bytes_read"]


def test_the_totals_of_a_prompt_sum_its_steps_and_rederive_their_labels():
    from elkopt.prefill_run import total_metrics

    def step(latency, lower, util, demand, bound):
        return {"latency_ms": latency, "lower_bound_ms": lower, "ideal_ms": lower, "hbm_util": util,
                "noc_util": 0.5, "tflops": 1.0, "peak_sram_bytes": int(100 * latency), "flops": 10,
                "hbm_bytes": 7, "hbm_bytes_read": 7, "hbm_bytes_written": 2, "stats": {"cache_hits": 1},
                "breakdown": {"execute_only_ms": latency}, "demand": {**demand, "bound": bound, "pct_of_latency": 0.0}}

    first = step(4.0, 3.0, 0.25, {"compute_ms": 1.0, "hbm_ms": 3.0}, "hbm")  # the weights' step: HBM-bound
    second = step(6.0, 5.0, 0.5, {"compute_ms": 5.0, "hbm_ms": 0.5}, "compute")
    total = total_metrics([first, second], (0, 8))
    assert total["ttft_ms"] == total["latency_ms"] == 10.0 and total["lower_bound_ms"] == 8.0
    assert total["hbm_bytes_read"] == 14 and total["hbm_bytes_written"] == 4 and total["flops"] == 20
    assert total["hbm_util"] == pytest.approx((0.25 * 4 + 0.5 * 6) / 10)  # weighted by latency
    assert total["peak_sram_bytes"] == 600 and total["stats"] == {"cache_hits": 2}
    assert total["breakdown"] == {"execute_only_ms": 10.0}
    # 6 ms of compute against 3.5 of HBM over the prompt: compute-bound, at 60% of its latency
    assert total["demand"] == {"compute_ms": 6.0, "hbm_ms": 3.5, "bound": "compute", "pct_of_latency": 60.0}
    assert [(c["kv_len"], c["latency_ms"], c["folder"]) for c in total["chunks"]] == [
        (0, 4.0, "step00_kv0"), (8, 6.0, "step01_kv8")]
