"""What bounds each part of the step (`elkopt.analysis.bound`) on hand-timed schedules.

Test chip as in test_timeline.py: 100 HBM bytes per cycle, 50 interconnect bytes per cycle
(4 cores x 12.5 B/cycle), 1 GHz; every plan uses one core, so a load takes hbm_bytes / 100
cycles of HBM and cold_bytes / 50 cycles of interconnect, and an HBM write of W bytes W / 100
of HBM and W / 50 of interconnect (always interconnect-bound here).
"""

from __future__ import annotations

import numpy as np
import pytest

from elkopt.analysis.bound import (
    BoundAttribution, attribute_bound, bound_metrics, bound_of, estimate_demand, format_bound_table,
    scheduled_operators, step_part, sum_demand,
)
from elkopt.app import format_summary
from elkopt.chip import Chip
from elkopt.graph import zoo
from elkopt.graph.ir import Dim, Operand, Operator, OpKind, Storage
from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline

CHIP = Chip(
    name="t", cores_per_chip=4, sram_bytes_per_core=1000, clock_hz=1e9,
    hbm_bytes_per_s=1e11, core_link_bytes_per_s=12.5e9,
)


def op(i, exec_cycles, hbm=0, cold=0, window=PROLOGUE, exchange=0.0, write=0):
    option = PlanOption(plan=Plan((1,), ((1,),)), cold_bytes=cold, hot_bytes=100, exec_cycles=exec_cycles,
                        exchange_cycles=exchange, distribution_cycles=0.0)
    return OpSchedule(op=i, option=option, preload_window=window, hbm_bytes=hbm, write_bytes=write)


def three_ops():
    """op0: prologue load HBM-bound (HBM 20, interconnect 10 cycles), 30 cycles of which 10
    exchange. op1: load issued as op0 starts, interconnect-bound (HBM 10, interconnect 50):
    cycles 20..70 at the full interconnect rate, so op0 (nominal 20..50) stalls
    10 + 30 - 30 = 10 cycles and ends at 60; op1 waits 60..70, runs 15 cycles, ends at 85.
    op2: no load, 40 cycles of which 5 exchange, 85..125."""
    return Schedule(
        ops=(op(0, 30, hbm=2000, cold=500, exchange=10),
             op(1, 15, hbm=1000, cold=2500, window=0),
             op(2, 40, exchange=5)),
        preload_order=(0, 1),
    )


def test_three_ops_by_hand():
    tl = compute_timeline(three_ops(), CHIP)
    np.testing.assert_allclose(tl.exec_end, [60, 85, 125])  # the timeline as the docstring says
    np.testing.assert_allclose(tl.stall, [10, 0, 0])
    bound = attribute_bound(tl)
    # op0: waits 0..20 for an HBM-bound load; stall 10 + exchange 10; compute 30 - 10
    # op1: waits 60..70 for an interconnect-bound load; computes 15
    # op2: exchange 5, computes 35
    np.testing.assert_allclose(bound.hbm, [20, 0, 0])
    np.testing.assert_allclose(bound.interconnect, [20, 10, 5])
    np.testing.assert_allclose(bound.compute, [20, 15, 35])
    assert bound.totals() == pytest.approx({"compute": 70, "interconnect": 35, "hbm": 20})
    assert sum(bound.totals().values()) == pytest.approx(tl.latency_cycles) == pytest.approx(125)


def test_three_ops_demand_by_hand():
    """Resource demand of `three_ops`, overlapped or not: op0 computes 30 - 10 exchange, its
    interconnect is exchange 10 + delivery 10 and its HBM 20; op1 computes 15, delivers 50,
    reads 10 of HBM; op2 computes 40 - 5, exchanges 5. Its stall (op0's 10) counts nowhere."""
    demand = estimate_demand(compute_timeline(three_ops(), CHIP))
    np.testing.assert_allclose(demand.compute, [20, 15, 35])
    np.testing.assert_allclose(demand.interconnect, [20, 50, 5])
    np.testing.assert_allclose(demand.hbm, [20, 10, 0])
    # every byte over the HBM rate: (2000 + 1000) / 100
    assert demand.totals() == pytest.approx({"compute": 70, "interconnect": 75, "hbm": 30})
    assert demand.by_part(["a", "b", "a"]) == {"a": pytest.approx({"compute": 55, "interconnect": 25, "hbm": 20}),
                                               "b": pytest.approx({"compute": 15, "interconnect": 50, "hbm": 10})}


def test_demand_counts_the_writes():
    """op0 writes 1000 B (HBM 10, delivery 20 cycles); op2 loads 1000 B (HBM 10, delivery
    250 / 50 = 5)."""
    schedule = Schedule(
        ops=(op(0, 10, write=1000), op(1, 5), op(2, 5, hbm=1000, cold=250, window=2)),
        preload_order=(2,),
    )
    demand = estimate_demand(compute_timeline(schedule, CHIP))
    np.testing.assert_allclose(demand.compute, [10, 5, 5])
    np.testing.assert_allclose(demand.interconnect, [20, 0, 5])
    np.testing.assert_allclose(demand.hbm, [10, 0, 10])


@pytest.mark.parametrize("row, bound", [
    ({"compute": 3.0, "interconnect": 2.0, "hbm": 1.0}, "compute"),
    ({"compute": 1.0, "interconnect": 2.0, "hbm": 1.5}, "interconnect"),
    ({"compute": 1.0, "interconnect": 2.0, "hbm": 2.5}, "hbm"),
    ({"compute": 1.0, "interconnect": 2.0, "hbm": 2.0}, "interconnect"),  # a tie: the first in CAUSES
    ({"compute": 0.0, "interconnect": 0.0, "hbm": 0.0}, "compute"),
])
def test_bound_of_names_the_largest_demand(row, bound):
    assert bound_of(row) == bound


def test_wait_charged_by_the_transfer_in_flight():
    """op1 waits 5..40: its (interconnect-bound, 10 cycles) load is queued behind op2's
    HBM-bound 30-cycle load (0..30), so 25 cycles go to HBM and 10 to interconnect."""
    schedule = Schedule(
        ops=(op(0, 5), op(1, 10, hbm=500, cold=500), op(2, 10, hbm=3000, cold=500)),
        preload_order=(2, 1),
    )
    tl = compute_timeline(schedule, CHIP)
    np.testing.assert_allclose(tl.exec_start, [0, 40, 50])
    bound = attribute_bound(tl)
    np.testing.assert_allclose(bound.hbm, [0, 25, 0])
    np.testing.assert_allclose(bound.interconnect, [0, 10, 0])
    np.testing.assert_allclose(bound.compute, [5, 10, 10])
    assert bound.latency_cycles == pytest.approx(60)


def test_wait_behind_an_hbm_write():
    """op0 writes 1000 B when it ends (10..30, HBM 10 / interconnect 20: interconnect-bound);
    op2's load (HBM 10, interconnect 5), issued as op1 ends at 15, queues behind the write:
    30..40. op2 waits 15..40: 15 cycles to interconnect (the write), 10 to HBM (its load)."""
    schedule = Schedule(
        ops=(op(0, 10, write=1000), op(1, 5), op(2, 5, hbm=1000, cold=250, window=2)),
        preload_order=(2,),
    )
    tl = compute_timeline(schedule, CHIP)
    np.testing.assert_allclose([tl.write_start[0], tl.write_end[0]], [10, 30])
    np.testing.assert_allclose(tl.load_start[2], 30)
    bound = attribute_bound(tl)
    np.testing.assert_allclose(bound.interconnect, [0, 0, 15])
    np.testing.assert_allclose(bound.hbm, [0, 0, 10])
    np.testing.assert_allclose(bound.compute, [10, 5, 5])
    assert sum(bound.totals().values()) == pytest.approx(tl.latency_cycles) == pytest.approx(45)


def named(name, kind=OpKind.BINARY, label="Add", hbm_tensor=None):
    """A one-dim operator called `name`, reading `hbm_tensor` from HBM when given."""
    matmul = kind is OpKind.MATMUL  # then a product over a contracted dim K
    dims = ("N", "K") if matmul else ("N",)
    x = Operand("x", dims[1:] if matmul else dims, Storage.CHIP)
    other = Operand(hbm_tensor or "y", dims, Storage.HBM if hbm_tensor else Storage.CHIP)
    return Operator(name, label, kind, dims=tuple(Dim(d, 8) for d in dims), output=Operand(name, ("N",), Storage.CHIP),
                    inputs=(x, other), reduce="sum" if matmul else None)


@pytest.mark.parametrize("name, part", [
    ("layer3.attn.qkv", "projections"), ("layer3.attn.out", "projections"), ("layer3.attn.scores", "attention"),
    ("layer3.attn.softmax.max", "attention"), ("layer3.attn.rope_q.cos", "attention"),
    ("layer3.attn_norm.sum", "norm"), ("final_norm.sqrt", "norm"), ("layer3.mlp.gate_up", "mlp"),
    ("layer3.mlp.shared.down", "mlp"), ("layer5.mlp.experts.gate_up", "experts"),
    ("layer5.mlp.router", "router"), ("layer5.mlp.router_softmax.exp", "router"),
    ("layer5.mlp.topk.select", "router"), ("layer3.attn_residual", "residual"), ("lm_head", "lm_head"),
    ("embed.add_positions", "embedding"), ("block2.ada.linear", "modulation"),
    ("/model/layers.0/Add_3", "element-wise"),
])
def test_step_part_by_name(name, part):
    assert step_part(named(name)) == part


def test_unknown_matmul_takes_its_label_and_a_cache_read_is_kv_cache():
    assert step_part(named("node_17", OpKind.MATMUL, "BatchMatMul")) == "BatchMatMul"
    assert step_part(named("/model/layers.0/self_attn/q_proj/MatMul", OpKind.MATMUL, "Dot")) == "Dot"
    assert step_part(named("layer0.attn.scores", OpKind.MATMUL, "BatchMatMul", "layer0.attn.k_cache")) == "kv_cache"
    assert step_part(named("/attn/MatMul", OpKind.MATMUL, "MatMul", "past_key_values.0.key")) == "kv_cache"


def test_zoo_decode_reads_its_cache_in_the_attention_products():
    graph = zoo.build_graph("tiny", "decode", 2, 16)  # 2 layers
    kv = [o.name for o in graph.ops if step_part(o) == "kv_cache"]
    assert kv == [f"layer{i}.attn.{p}" for i in range(2) for p in ("scores", "context")]


def test_by_part_sums_the_operators_of_each_part():
    bound = BoundAttribution(compute=np.array([1.0, 2.0, 4.0]), interconnect=np.array([8.0, 16.0, 32.0]),
                             hbm=np.array([64.0, 128.0, 256.0]), latency_cycles=511.0)
    assert bound.by_part(["mlp", "norm", "mlp"]) == {
        "mlp": {"compute": 5.0, "interconnect": 40.0, "hbm": 320.0},
        "norm": {"compute": 2.0, "interconnect": 16.0, "hbm": 128.0},
    }
    with pytest.raises(ValueError, match="2 part names for 3 operators"):
        bound.by_part(["mlp", "norm"])


def test_bound_metrics_in_ms_by_part():
    tl = compute_timeline(three_ops(), CHIP)  # 1 GHz: 1 cycle = 1e-6 ms
    ops = [named("layer0.attn.qkv", OpKind.MATMUL, "Dot"), named("layer0.mlp.down", OpKind.MATMUL, "Dot"),
           named("layer0.mlp_residual")]
    metrics = bound_metrics(tl, ops)
    assert metrics["bound"] == pytest.approx({"compute_ms": 70e-6, "interconnect_ms": 35e-6, "hbm_ms": 20e-6})
    assert list(metrics["bound_by_part"]) == ["projections", "mlp", "residual"]  # PART_ORDER
    assert metrics["bound_by_part"]["mlp"] == pytest.approx(
        {"compute_ms": 15e-6, "interconnect_ms": 10e-6, "hbm_ms": 0.0})
    # demand (test_three_ops_demand_by_hand): projections 20/20/20, mlp 15/50/10, residual 35/5/0
    assert metrics["demand_by_part"] == {
        "projections": pytest.approx({"compute_ms": 20e-6, "interconnect_ms": 20e-6, "hbm_ms": 20e-6,
                                      "bound": "compute"}),  # a tie goes to the first cause
        "mlp": pytest.approx({"compute_ms": 15e-6, "interconnect_ms": 50e-6, "hbm_ms": 10e-6,
                              "bound": "interconnect"}),
        "residual": pytest.approx({"compute_ms": 35e-6, "interconnect_ms": 5e-6, "hbm_ms": 0.0, "bound": "compute"}),
    }
    # the step: interconnect 75 of 125 cycles
    assert metrics["demand"] == pytest.approx({"compute_ms": 70e-6, "interconnect_ms": 75e-6, "hbm_ms": 30e-6,
                                               "bound": "interconnect", "pct_of_latency": 60.0})
    in_us = {**metrics, "bound": {k: v * 1e6 for k, v in metrics["bound"].items()},
             "demand": {k: v * 1e6 if k.endswith("_ms") else v for k, v in metrics["demand"].items()}}
    lines = format_bound_table(in_us)
    rows = lines[2:-2]  # two header lines, two lines of legend
    assert rows[-1].split() == ["total", "70.000", "35.000", "20.000", "70.000", "75.000", "30.000",
                                "interconnect", "60%"]
    assert [line.split()[0] for line in rows[:-1]] == ["projections", "mlp", "residual"]
    assert [line.split()[-1] for line in rows[:-1]] == ["compute", "interconnect", "compute"]
    assert max(len(line) for line in lines) <= 105


OLD_METRICS = {  # a metrics.json of a run from before `bound` existed
    "model": "llama2_13b", "workload": "decode", "chip": "ipu_pod4", "scheduler": "inductive",
    "latency_ms": 7.0, "basic_ms": 12.0, "static_ms": 9.0, "ideal_ms": 6.8, "lower_bound_ms": 6.0,
    "published_ms": None, "hbm_util": 0.9, "noc_util": 0.5, "compile_s": 30.0,
}


def test_summary_of_older_metrics_has_no_bound_table():
    assert format_bound_table(OLD_METRICS) == []
    text = format_summary(OLD_METRICS)
    assert "bound by" not in text and "7.000" in text


def test_summary_prints_the_bound_table_after_the_latencies():
    tl = compute_timeline(three_ops(), CHIP)
    metrics = {**OLD_METRICS, **bound_metrics(tl, [named("lm_head", OpKind.MATMUL, "Dot")] * 3)}
    text = format_summary(metrics).splitlines()
    at = next(k for k, line in enumerate(text) if "bound by" in line)
    assert at > next(k for k, line in enumerate(text) if "lower bound" in line)
    assert text[at + 1].split()[:2] == ["part", "compute"]
    assert [line.split()[0] for line in text[at + 2:-2]] == ["lm", "total"]
    assert text[-2].startswith("  critical path:")


def test_summary_of_metrics_from_before_demand_shows_the_critical_path_alone():
    tl = compute_timeline(three_ops(), CHIP)
    metrics = bound_metrics(tl, [named("lm_head", OpKind.MATMUL, "Dot")] * 3)
    del metrics["demand"], metrics["demand_by_part"]
    lines = format_bound_table({**OLD_METRICS, **metrics})
    assert len(lines) == 4 and "demand" not in lines[0] and "bound" not in lines[1]
    assert [len(line.split()) for line in lines[2:]] == [5, 4]  # "lm head" and "total", three numbers each


def test_collect_has_the_totals_as_columns(tmp_path):
    import json

    from elkopt.collect import collect

    tl = compute_timeline(three_ops(), CHIP)
    (tmp_path / "0").mkdir()
    metrics = {**OLD_METRICS, **bound_metrics(tl, [named("layer0.mlp.down", OpKind.MATMUL, "Dot")] * 3)}
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(metrics))
    row = collect(tmp_path, write=False).iloc[0]
    assert row["bound.compute_ms"] == pytest.approx(70e-6)
    assert row["bound.interconnect_ms"] == pytest.approx(35e-6)
    assert row["bound.hbm_ms"] == pytest.approx(20e-6)
    assert row["bound_by_part.mlp.hbm_ms"] == pytest.approx(20e-6)
    assert row["demand.bound"] == "interconnect"
    assert row["demand_by_part.mlp.interconnect_ms"] == pytest.approx(75e-6)


@pytest.mark.parametrize("hbm_bytes_per_s, kv_bound", [(1e9, "hbm"), (2e11, "interconnect")])
def test_tiny_decode_kv_cache_is_hbm_bound_at_a_slow_hbm(hbm_bytes_per_s, kv_bound):
    """tiny decode, batch 2, KV 16: the attention products read K and V of 2 layers, each
    2 x 16 tokens x (2 KV heads x 64) x 2 bytes = 8192 bytes, 32768 in all. At 1 GB/s that is
    32.8 us of HBM against microseconds of compute and delivery; at 200 GB/s 0.16 us."""
    from elkopt.pipeline import PlanningOptions, compile_model

    chip = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=hbm_bytes_per_s)
    graph = zoo.build_graph("tiny", "decode", 2, 16)
    result = compile_model(graph, chip, "static", PlanningOptions(max_spatial_splits=64))
    metrics = bound_metrics(result.timeline, scheduled_operators(result))
    kv = metrics["demand_by_part"]["kv_cache"]
    assert kv["hbm_ms"] == pytest.approx(32768 / hbm_bytes_per_s * 1e3)
    assert kv["bound"] == kv_bound
    assert metrics["demand"]["hbm_ms"] == pytest.approx(graph.hbm_bytes / hbm_bytes_per_s * 1e3)  # all bytes
    if kv_bound == "hbm":  # then the whole step is HBM-bound and runs at HBM's roofline, within 1%
        assert metrics["demand"]["bound"] == "hbm"
        assert metrics["demand"]["pct_of_latency"] == pytest.approx(100, abs=1)


def test_sum_demand_of_chunk_steps_recomputes_the_bounds():
    step = {"latency_ms": 2.0, "demand": {"compute_ms": 1.0, "interconnect_ms": 0.5, "hbm_ms": 0.2,
                                          "bound": "compute", "pct_of_latency": 50.0},
            "demand_by_part": {"mlp": {"compute_ms": 1.0, "interconnect_ms": 0.5, "hbm_ms": 0.2, "bound": "compute"}}}
    later = {"latency_ms": 3.0, "demand": {"compute_ms": 0.5, "interconnect_ms": 0.5, "hbm_ms": 2.5,
                                           "bound": "hbm", "pct_of_latency": 83.3},
             "demand_by_part": {"kv_cache": {"compute_ms": 0.5, "interconnect_ms": 0.5, "hbm_ms": 2.5,
                                             "bound": "hbm"}}}
    total = sum_demand([step, later])
    # compute 1.5, interconnect 1.0, HBM 2.7 over 5 ms: HBM-bound at 54%
    assert total["demand"] == pytest.approx({"compute_ms": 1.5, "interconnect_ms": 1.0, "hbm_ms": 2.7,
                                             "bound": "hbm", "pct_of_latency": 54.0})
    assert list(total["demand_by_part"]) == ["kv_cache", "mlp"]  # PART_ORDER
    assert total["demand_by_part"]["mlp"]["bound"] == "compute"
    assert sum_demand([step, OLD_METRICS]) == {}
