"""The published designs as elkopt schedulers (`elkopt.elk.compile`, scheduler=elk_*)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from elkopt.chip import Chip, Topology
from elkopt.conventions import Conventions
from elkopt.elk.compile import ElkRun, compile_elk, count_layers, published_machine
from elkopt.elk.timing import ELK_CHECKS, check_elk_schedule, lower_bound_cycles, sram_in_use
from elkopt.elk.convert import elk_dyn_start, load_windows, to_schedule
from elkopt.elk.enumerate import PlanRules
from elkopt.elk.program import capacity_split, cold_hot_table, entry_hbm_bytes
from elkopt.elk.texpr import TExprEntry, texpr_entry
from elkopt.graph import zoo
from elkopt.graph.reload import reload_activations
from elkopt.plans.table import build_tables
from elkopt.report import schedule_from_dict
from elkopt.schedule.checker import CHECKS, check_schedule
from elkopt.schedule.schedule import PROLOGUE
from elkopt.schedule.timeline import compute_timeline
from test_cli import run_cli  # the CLI as the CLI tests run it

POD4 = Chip(name="pod4", n_chips=4, cores_per_chip=1472)


@pytest.fixture(scope="module")
def tiny_full() -> ElkRun:
    graph = reload_activations(zoo.build_graph("tiny", "decode", 32, 2048))
    return compile_elk(graph, POD4, "elk_full", Conventions.published())


def designs(run: ElkRun) -> dict:
    r = run.results
    return {"basic": r.basic.schedule, "static": r.static.schedule, "elk_dyn": r.elk_dyn.schedule,
            "ideal": r.ideal, "elk_full": r.elk_full.schedule}


def test_every_design_passes_the_check_and_no_design_beats_the_lower_bound(tiny_full):
    bound = lower_bound_cycles(tiny_full.problem)
    assert bound > 0
    for name, schedule in designs(tiny_full).items():
        assert check_elk_schedule(schedule, tiny_full.problem) == [], name
        assert schedule.latency_cycles >= bound * (1 - 1e-12), name


def test_the_timeline_is_the_schedule_from_zero(tiny_full):
    s, tl = tiny_full.schedule, tiny_full.timeline
    assert tl.latency_cycles == pytest.approx(s.latency_cycles, rel=1e-12)
    assert np.nanmin(tl.load_start) == pytest.approx(0, abs=1e-6)
    assert np.allclose(tl.exec_end - tl.exec_start, s.exe[:, 1] - s.exe[:, 0])
    assert sum(tl.breakdown().values()) == pytest.approx(tl.latency_cycles, rel=1e-9)
    # operators without HBM data have no load, the others their HBM time at least
    no_data = np.asarray([t.min_cold == 0 for t in tiny_full.problem.index])
    assert no_data.any() and (~no_data).any()
    assert np.isnan(tl.load_start[no_data]).all()
    assert (tl.load_end - tl.load_start)[~no_data] == pytest.approx(tl.load_end[~no_data] - tl.load_start[~no_data])
    assert ((tl.load_end - tl.load_start)[~no_data] >= tl.hbm_cycles[~no_data] * (1 - 1e-12)).all()
    assert tl.peak_sram_bytes <= POD4.usable_sram_bytes_per_core


def test_references_name_every_design(tiny_full):
    refs = tiny_full.references
    ms = tiny_full.results.latency_ms()
    assert refs["elk_full"] == ms["Elk-Full"] == pytest.approx(tiny_full.timeline.latency_ms, rel=1e-12)
    assert refs["elk_dyn"] == min(s.latency_ms for s in tiny_full.results.elk_dyn.by_threshold.values())
    assert refs["lower_bound"] <= min(ms.values())


def test_the_check_finds_broken_schedules(tiny_full):
    s, pb = tiny_full.schedule, tiny_full.problem
    loaded = [i for i, t in enumerate(pb.index) if t.min_cold > 0]
    i = loaded[1]
    early = s.exe.copy()
    early[i] -= (early[i, 0] - early[i - 1, 0]) / 2  # starts while the op before it runs
    assert any("starts before" in p for p in check_elk_schedule(replace(s, exe=early), pb))
    short = s.exe.copy()
    short[i, 0] = short[i, 1] - 1
    assert any("its pair needs" in p for p in check_elk_schedule(replace(s, exe=short), pb))
    hot = s.hot.copy()
    hot[i] += 1
    assert any("not a pair of its table" in p for p in check_elk_schedule(replace(s, hot=hot), pb))
    late = s.load.copy()
    late[i] += s.exe[i, 1] - s.load[i, 0]  # loaded while it runs
    assert any("ends after it starts" in p for p in check_elk_schedule(replace(s, load=late), pb))
    j = loaded[2]
    both = s.load.copy()
    both[j] = both[i]  # two loads at once
    assert any("overlap" in p for p in check_elk_schedule(replace(s, load=both), pb))


def test_sram_in_use_counts_the_loads_waiting_beside_each_operator(tiny_full):
    s, pb = tiny_full.schedule, tiny_full.problem
    used = sram_in_use(s, pb)
    assert (used >= s.hot).all() and used.max() <= pb.sram_bytes
    assert tiny_full.stats["sram_overcommit_bytes"] == 0
    # by hand: a load moved to start with op 0 waits beside every operator before its own
    j = max(i for i, t in enumerate(pb.index) if t.min_cold > 0)
    early = s.load.copy()
    early[j] = [s.exe[0, 0] - 1, s.exe[0, 0]]
    moved = sram_in_use(replace(s, load=early), pb)
    extra = np.zeros(len(pb.ops))
    before = s.load[j, 0]
    extra[:j] = [pb.index[j].min_cold if s.exe[i, 1] <= before else 0 for i in range(j)]
    assert moved == pytest.approx(used + extra)


def test_layers_are_counted_from_the_graph():
    assert count_layers(zoo.build_graph("tiny", "decode", 32, 2048)) == 2
    assert count_layers(zoo.build_graph("llama2_13b", "decode", 32, 2048)) == 40


def test_the_machine_is_the_published_one_or_an_error_naming_the_field():
    hbm, ic = published_machine(POD4)
    assert hbm == pytest.approx(16000) and (ic.mesh, ic.comm, ic.comp) == (0, 1, 1)
    _, ic = published_machine(replace(POD4, core_link_bytes_per_s=2 * POD4.core_link_bytes_per_s,
                                      compute_scale=0.5))
    assert (ic.comm, ic.comp) == (pytest.approx(2), 0.5)
    with pytest.raises(ValueError, match="chip.clock_hz"):
        published_machine(replace(POD4, clock_hz=1e9))
    with pytest.raises(ValueError, match="chip.topology"):
        published_machine(replace(POD4, topology=Topology.MESH, mesh_rows=64, mesh_cols=92,
                                  mesh_link_bytes_per_s=1e9))


def test_layers_setting_is_checked(tiny_full):
    with pytest.raises(ValueError, match="planning.layers"):
        compile_elk(tiny_full.graph, POD4, "elk_basic", Conventions.published(), layers=0)
    with pytest.raises(ValueError, match="unknown published scheduler"):
        compile_elk(tiny_full.graph, POD4, "elk_fast", Conventions.published())


def test_cli_runs_a_published_design(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "conventions=published", "scheduler=elk_full")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["scheduler"] == "elk_full" and metrics["reference_designs"] == "published"
    assert metrics["latency_ms"] == pytest.approx(metrics["elk_full_ms"], rel=1e-12)
    for key in ("basic_ms", "static_ms", "elk_dyn_ms", "elk_dyn_printed_ms", "ideal_ms", "lower_bound_ms"):
        assert metrics[key] > 0, key
    assert metrics["verified"] and metrics["verified_checks"] == list(ELK_CHECKS)
    assert metrics["stats"]["layers"] == 2
    plan = json.loads((run / "plan.json").read_text())
    assert plan["design"] == "Elk-Full" and len(plan["ops"]) == metrics["n_ops"]
    assert sorted(plan["load_order"]) == list(range(metrics["n_ops"]))
    assert plan["ops"][-1]["exec"][1] == pytest.approx(metrics["latency_cycles"])
    trace = json.loads((run / "trace.json").read_text())
    assert sum(e.get("name") == plan["ops"][0]["name"] and e["ph"] == "X" for e in trace["traceEvents"]) >= 1
    assert "Elk-Full" in result.stdout and "Elk Static" in result.stdout


def test_cli_refuses_to_simulate_a_published_design(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "scheduler=elk_basic", "simulate=true")
    assert result.returncode == 2
    assert "simulate" in result.stderr and "elk_basic" in result.stderr


def entry(*dims: int, inputs: int = 2) -> TExprEntry:
    variables = tuple(((d,),) for d in range(inputs + 1))
    return TExprEntry(5, dims, variables, (True,) * inputs)


def test_capacity_split_halves_the_largest_dim_until_the_op_fits():
    cap_mb = 1  # 2^19 two-byte elements
    # a BatchMatMul: four largest dims 64 x 32 x 512 x 2 = 2^21 -> halve 512 twice
    bmm = entry(64, 1, 512, 32, 2)
    # a Dot: two largest dims 2048 x 512 = 2^20 -> halve 2048 once; a one-input op: never
    dot, unary = entry(4, 2048, 512), entry(4096, 4096, inputs=1)
    out = capacity_split([bmm, dot, unary], [True, False, False], cap_mb)
    assert [i for i, _ in out] == [0, 0, 0, 0, 1, 1, 2]
    assert [e.dims for _, e in out] == [(64, 1, 128, 32, 2)] * 4 + [(4, 1024, 512)] * 2 + [(4096, 4096)]
    # a tie takes the first of the largest dims; odd lengths round down
    assert capacity_split([entry(1025, 1025)], [False], cap_mb)[0][1].dims == (512, 512)
    assert capacity_split([dot], [False], 2) == [(0, dot)]
    with pytest.raises(ValueError, match="capacity"):
        capacity_split([dot], [False], 0)


def test_the_capacity_split_reaches_the_cli_names_and_plan(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "conventions=published", "scheduler=elk_basic",
                     "planning.split_factor=5888", "workload.batch=256", "workload.kv_len=8192")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    stats = metrics["stats"]
    assert stats["split_copies_added"] > 0 and metrics["n_ops"] == len(plan["ops"])
    names = [op["name"] for op in plan["ops"]]
    parts = [n for n in names if ".part" in n]
    assert len(parts) == stats["split_copies_added"] + stats["split_ops"]
    k = names.index(parts[0])  # the copies of one operator follow each other: .part0, .part1, ...
    base = parts[0].removesuffix(".part0")
    copies = sum(n.startswith(base + ".part") for n in names)
    assert names[k:k + copies] == [f"{base}.part{j}" for j in range(copies)]
    assert len({op["graph_op"] for op in plan["ops"][k:k + copies]}) == 1


# -- the published designs on elkopt's accounting ------------------------------------------


@pytest.fixture(scope="module")
def tiny_elkopt() -> ElkRun:
    graph = zoo.build_graph("tiny", "decode", 32, 2048)
    return compile_elk(graph, POD4, "elk_full", Conventions())


def test_an_elkopt_plan_table_as_a_cold_hot_table(tiny_elkopt):
    graph = tiny_elkopt.graph
    tables = build_tables(graph, POD4)
    for i, op in enumerate(graph.ops):
        plan, ch = tables[i], cold_hot_table(tables[i], op.hbm_bytes(graph.elem_bytes))
        pairs = list(zip(ch.cold.tolist(), ch.hot.tolist()))
        assert pairs == sorted(set(pairs))  # one row per (cold, hot) pair, sorted
        assert set(pairs) == set(zip(plan.cold_bytes.tolist(), plan.hot_bytes.tolist()))
        for k, (cold, hot) in enumerate(pairs):  # each pair's fastest row, and where it came from
            same = (plan.cold_bytes == cold) & (plan.hot_bytes == hot)
            assert ch.total[k] == plan.total_cycles[same].min() == plan.total_cycles[ch.row[k]]
        assert ch.exe.tolist() == plan.exec_cycles[ch.row].tolist()
        assert (ch.comp + ch.shift).tolist() == pytest.approx(ch.exe.tolist())
        assert ch.hbm_bytes == op.hbm_bytes(graph.elem_bytes)
    with pytest.raises(ValueError, match="empty"):
        cold_hot_table(tables[0].__class__(*(a[:0] for a in tables[0].to_arrays().values())), 0)


def test_on_elkopt_accounting_the_designs_are_timed_on_elkopt_timeline(tiny_elkopt):
    run, graph = tiny_elkopt, tiny_elkopt.graph
    assert run.plan is not None and len(run.plan.ops) == graph.n_ops
    recomputed = compute_timeline(run.plan, POD4, [op.flops for op in graph.ops])
    assert recomputed.latency_cycles == run.timeline.latency_cycles
    assert check_schedule(run.plan, POD4, [graph.dependencies(i) for i in range(graph.n_ops)], recomputed) == []
    refs = run.references
    assert refs["elk_full"] == pytest.approx(run.timeline.latency_ms, rel=1e-12)
    assert {"basic", "static", "elk_dyn", "elk_dyn_printed", "lower_bound"} <= run.timed_ms.keys()
    assert refs["lower_bound"] <= min(refs[k] for k in ("basic", "static", "elk_dyn", "elk_full"))
    # loads stream the operators' unique bytes (no per-core padding)
    loaded = ~np.isnan(run.timeline.load_start)
    hbm = np.asarray([op.hbm_bytes(graph.elem_bytes) for op in graph.ops], dtype=float)
    assert (hbm[loaded] > 0).all() and (hbm[~loaded] == 0).all()
    assert run.timeline.hbm_cycles[loaded] == pytest.approx(hbm[loaded] / POD4.hbm_bytes_per_cycle)
    # the plan's options are rows of the elkopt tables the published designs chose from
    chosen = run.schedule.rows
    for i in range(graph.n_ops):
        assert run.plan.ops[i].option.hot_bytes == run.schedule.hot[i] == run.problem.ops[i].table.hot[chosen[i]]


def test_the_load_window_is_the_operator_running_when_the_load_starts(tiny_full):
    s = tiny_full.schedule
    loaded = np.asarray([t.min_cold > 0 for t in tiny_full.problem.index])
    windows = load_windows(s, loaded)
    for i in np.flatnonzero(loaded).tolist():
        w, start = windows[i], s.load[i, 0]
        assert w == PROLOGUE or w <= i
        if w == PROLOGUE:
            assert start < s.exe[0, 0] + 1e-6
        elif w < i:
            assert s.exe[w, 0] - 1e-6 <= start < s.exe[w, 1]
        else:  # issued in the gap before its own operator, after the op before it ended
            assert w == 0 or start >= s.exe[w - 1, 1] - 1e-6


def test_capacity_split_needs_the_published_plans():
    with pytest.raises(ValueError, match="published_plans=true"):
        Conventions(capacity_split=True)
    assert Conventions().only("capacity_split").active == ("drop_scalar_operands", "published_plans",
                                                           "capacity_split")
    with pytest.raises(ValueError, match="drop_scalar_operands=true"):
        Conventions(published_plans=True)
    assert Conventions().only("published_plans").active == ("drop_scalar_operands", "published_plans")


def test_cli_on_elkopt_accounting_writes_an_elkopt_plan(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "scheduler=elk_dyn")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    schedule = schedule_from_dict(json.loads((run / "plan.json").read_text()))
    assert schedule.scheduler == "elk_dyn" and len(schedule.ops) == metrics["n_ops"]
    chip = Chip(**{k: v for k, v in metrics["config"]["chip"].items()})
    timeline = compute_timeline(schedule, chip)
    assert timeline.latency_ms == pytest.approx(metrics["latency_ms"], rel=1e-12)
    assert metrics["latency_ms"] == pytest.approx(metrics["elk_dyn_ms"], rel=1e-12)
    assert metrics["verified_checks"] == [*ELK_CHECKS, *CHECKS]


def test_loads_that_overfill_elkopts_sram_count_are_deferred(tiny_elkopt):
    run, graph = tiny_elkopt, tiny_elkopt.graph
    tables = build_tables(graph, POD4)
    hot = max(o.option.hot_bytes for o in run.plan.ops)
    sram = max(hot, run.timeline.peak_sram_bytes - 1)  # one byte less than the plan's peak
    assert sram >= hot
    plan, moved = to_schedule(run.schedule, run.problem.ops, graph, tables, "elk_full", sram)
    assert moved >= 1
    small = replace(POD4, reserved_sram_bytes_per_core=POD4.sram_bytes_per_core - sram)
    deps = [graph.dependencies(i) for i in range(graph.n_ops)]
    timeline = compute_timeline(plan, small)
    assert check_schedule(plan, small, deps, timeline) == []
    assert timeline.peak_sram_bytes <= sram
    # with room to spare nothing moves, and the windows are the published schedule's
    same, none = to_schedule(run.schedule, run.problem.ops, graph, tables, "elk_full", POD4.sram_bytes_per_core)
    assert none == 0 and same == run.plan


def test_elk_dyn_start_is_a_valid_schedule_or_none():
    graph = zoo.build_graph("tiny", "decode", 32, 2048)
    tables = build_tables(graph, POD4)
    start = elk_dyn_start(graph, tables, POD4)
    assert start is not None and start.schedule.scheduler == "elk_dyn"
    assert check_schedule(start.schedule, POD4, [graph.dependencies(i) for i in range(graph.n_ops)],
                          start.timeline) == []
    # a chip the published model cannot describe, a graph too small for it: no start
    mesh = replace(POD4, topology=Topology.MESH, mesh_rows=64, mesh_cols=92, mesh_link_bytes_per_s=1e10)
    assert elk_dyn_start(graph, build_tables(graph, mesh), mesh) is None
    one = replace(graph, ops=graph.ops[:1])
    assert elk_dyn_start(one, build_tables(one, POD4), POD4) is None


def test_padded_hbm_bytes_and_published_delivery_reach_the_load_model(tiny_full):
    graph, published = tiny_full.graph, Conventions.published()
    assert all(t.hbm_bytes == -1 for t in tiny_full.problem.index) and tiny_full.problem.noc_gbps is None
    unpadded = compile_elk(graph, POD4, "elk_basic", published.without("padded_hbm_bytes"))
    for op, t in zip(unpadded.problem.ops, unpadded.problem.index):
        assert t.hbm_bytes == entry_hbm_bytes(texpr_entry(graph.ops[op.source]), graph.elem_bytes)
    loaded = [i for i, t in enumerate(unpadded.problem.index) if t.min_cold > 0]
    padded = [t.min_cold * POD4.cores for t in tiny_full.problem.index]
    assert all(unpadded.problem.index[i].hbm_bytes <= padded[i] for i in loaded)
    assert any(unpadded.problem.index[i].hbm_bytes < padded[i] for i in loaded)  # per-core padding
    chip_rate = compile_elk(graph, POD4, "elk_basic", published.without("published_delivery"))
    assert chip_rate.problem.noc_gbps == pytest.approx(5.5)


def test_noc_thresholds_bound_each_designs_share_of_the_noc(tiny_full):
    pb = tiny_full.problem
    assert pb.noc_thresholds and pb.loads(5, 0.7).threshold == 0.7
    assert sorted(tiny_full.results.elk_dyn.by_threshold) == [0.5, 0.7, 0.9]
    whole = compile_elk(tiny_full.graph, POD4, "elk_dyn", Conventions.published().without("noc_thresholds"))
    assert not whole.problem.noc_thresholds
    assert whole.problem.loads(5, 0.7).threshold == 1.0 and whole.problem.loads(5.5, None).threshold is None
    assert list(whole.results.elk_dyn.by_threshold) == [1.0] and whole.results.elk_dyn.printed_threshold == 1.0
    # a load whose cold layout needs more than 0.7 of the NoC is stretched only under the rule
    t = next(t for t in pb.index if t.min_cold > 0)
    wide = t.min_cold * 8
    stretched, _ = pb.loads(5, 0.7).timing(wide, t.min_cold, t.hbm_bytes)
    free, _ = whole.problem.loads(5, 0.7).timing(wide, t.min_cold, t.hbm_bytes)
    assert stretched > free >= pb.loads(5, 0.7).hbm_cycles(t.min_cold, t.hbm_bytes)


def test_rules_that_need_others_say_which():
    with pytest.raises(ValueError, match="conventions.slice_compute needs conventions.drop_scalar_operands and "
                                         "conventions.published_plans"):
        Conventions(slice_compute=True)
    assert Conventions().only("reduce_ladder").active == ("drop_scalar_operands", "published_plans", "reduce_ladder")
    no_plans = Conventions.published().without("published_plans")
    assert no_plans.active == ("reload_activations", "slice_input_shape", "drop_scalar_operands",
                               "padded_hbm_bytes", "published_delivery", "noc_thresholds")
    assert Conventions.published().plan_rules() == PlanRules()
    assert Conventions().plan_rules() == PlanRules(False, False, False, False)
