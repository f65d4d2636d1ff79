"""HBM writes in the network simulator (a prefill step's KV cache): routed from the cores to
the controllers, queued on the one HBM channel with the loads as in the analytic timeline,
sharing the links with exchanges; decode schedules (no writes) run as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from elkopt.chip import Chip, Topology
from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline
from elkopt.sim.network import WEST, network_from_chip
from elkopt.sim.preload import load_routes
from elkopt.sim.step import simulate_schedule

# 4 cores, links of 1 B/cycle each way; 4 HBM controllers with ports of 0.5 B/cycle (2 B/cycle in all)
FOUR = Chip(name="four", cores_per_chip=4, clock_hz=1.0, core_link_bytes_per_s=1.0, hbm_bytes_per_s=2.0)
# 3 x 4 mesh, one controller per row on the west side (ports of 2 B/cycle), links 1 B/cycle
ROWS = Chip(name="rows", topology=Topology.MESH, cores_per_chip=12, mesh_rows=3, mesh_cols=4,
            mesh_link_bytes_per_s=1.0, clock_hz=1.0, core_link_bytes_per_s=1.0, hbm_bytes_per_s=6.0,
            hbm_sides=("west",))


def op(i: int, cores: int, compute: float, exchange: float = 0.0, written: int = 0, hbm: int = 0,
       cold: int = 0, window: int = PROLOGUE) -> OpSchedule:
    """Op i on `cores` cores: `compute` cycles, then `exchange` cycles of ring exchange; writes
    `written` bytes to HBM when it ends; loads `hbm` bytes (`cold` per core) in `window`."""
    option = PlanOption(Plan((cores,), ((1,),)), cold_bytes=cold, hot_bytes=0, exec_cycles=compute + exchange,
                        exchange_cycles=exchange, distribution_cycles=0.0, cold_split=(1,) if cold else ())
    return OpSchedule(i, option, window if hbm else 0, hbm, write_bytes=written)


@pytest.mark.parametrize("cores, written, duration", [
    (4, 80, 40),  # 20 B per core port: 40 cycles; 20 B per core on its injection link: 20
    (1, 16, 16),  # 4 B per port: 8 cycles; all 16 B on one core's injection link: 16
])
def test_a_write_alone_lasts_its_analytic_duration(cores, written, duration):
    # the analytic cost with routed delivery (`Chip.delivery_link_loads`: on all-to-all one
    # core's link per core); the aggregate cost spreads a plan on fewer cores over all links
    routed = dataclasses.replace(FOUR, delivery_link_loads=tuple(load_routes(network_from_chip(FOUR)).link_loads()))
    schedule = Schedule((op(0, cores, compute=10, written=written),), (), "hand")
    run = simulate_schedule(schedule, FOUR)
    tl = compute_timeline(schedule, routed)
    if cores == FOUR.cores:
        assert compute_timeline(schedule, FOUR).write_end[0] == pytest.approx(tl.write_end[0])
    assert run.write_start[0] == pytest.approx(10) == tl.write_start[0]  # when its op ends
    assert run.write_end[0] == pytest.approx(10 + duration) == pytest.approx(tl.write_end[0])
    assert run.latency_cycles == pytest.approx(10) == tl.latency_cycles  # a write after the last op
    net = network_from_chip(FOUR)
    assert run.link_bytes[net.controller_port] == pytest.approx([written / 4] * 4)
    injection = run.link_bytes[:4]
    assert injection == pytest.approx([written / cores] * cores + [0.0] * (4 - cores))
    assert run.link_bytes[4:8].sum() == 0  # ejection links: a write leaves the cores
    assert np.isnan(run.load_start).all()


def three_ops(load_window: int, load_op: int = 2) -> Schedule:
    """Op 0: 4 cores, 100 cycles, writes 80 B (40 HBM cycles); op 1: 20 cycles; op 2: 10
    cycles. Op `load_op` loads 40 B (20 HBM cycles) and 10 B into each of its 4 cores
    (10 cycles on their ejection links) in `load_window`."""
    loaded = {"hbm": 40, "cold": 10, "window": load_window}
    ops = [op(0, 4, 100, written=80), op(1, 4, 20), op(2, 4, 10)]
    ops[load_op] = op(load_op, 4, ops[load_op].option.exec_cycles, **loaded)
    return Schedule(tuple(ops), (load_op,), "hand")


def test_the_write_starts_when_its_op_ends_and_a_load_queued_later_waits_for_it():
    # the load of op 2 is issued when op 1 starts (100), the write when op 0 ends (100), just
    # before it: write [100, 140], load [140, 160]; op 1 [100, 120]; op 2 waits: [160, 170]
    schedule = three_ops(load_window=1)
    run = simulate_schedule(schedule, FOUR)
    np.testing.assert_allclose([run.write_start[0], run.write_end[0]], [100, 140])
    np.testing.assert_allclose([run.load_start[2], run.load_end[2]], [140, 160])
    np.testing.assert_allclose(run.exec_start, [0, 100, 160])
    np.testing.assert_allclose(run.exec_end, [100, 120, 170])
    tl = compute_timeline(schedule, FOUR)
    for name in ("exec_start", "exec_end", "load_start", "load_end", "write_start", "write_end"):
        np.testing.assert_allclose(getattr(run, name), getattr(tl, name), err_msg=name)


def test_loads_issued_before_the_write_go_first():
    # issued during op 0 (window 0): the load runs [0, 20], the write [100, 140]; op 2 at 120
    early = simulate_schedule(three_ops(load_window=0), FOUR)
    np.testing.assert_allclose([early.load_start[2], early.load_end[2]], [0, 20])
    np.testing.assert_allclose([early.write_start[0], early.write_end[0]], [100, 140])
    assert early.latency_cycles == pytest.approx(130)
    # op 1's own load, issued as op 0 ends (window 1 of op 1): it joins the queue at 100
    # ahead of the write: load [100, 120], op 1 [120, 140], write [120, 160]
    schedule = three_ops(load_window=1, load_op=1)
    run = simulate_schedule(schedule, FOUR)
    np.testing.assert_allclose([run.load_start[1], run.load_end[1]], [100, 120])
    np.testing.assert_allclose([run.write_start[0], run.write_end[0]], [120, 160])
    np.testing.assert_allclose(run.exec_end, [100, 140, 150])
    tl = compute_timeline(schedule, FOUR)
    np.testing.assert_allclose([tl.write_start[0], tl.load_start[1]], [120, 100])


def test_an_exchange_pauses_the_write_it_meets():
    # op 0: 2 cores, 10 cycles, writes 80 B: 40 B per core on its injection link (40 cycles),
    # 20 B per port (40 cycles). Op 1 on the same 2 cores exchanges 20 B per core at once,
    # [10, 30], on the same injection links, first: the collections pause until 30 and end
    # at 70; the HBM ports had finished at 50; the write ends with its last phase, at 70
    schedule = Schedule((op(0, 2, 10, written=80), op(1, 2, 0, exchange=20)), (), "hand")
    run = simulate_schedule(schedule, FOUR, exchange_first=True)
    np.testing.assert_allclose(run.exec_end, [10, 30])
    np.testing.assert_allclose([run.write_start[0], run.write_end[0]], [10, 70])
    assert run.link_bytes[:2] == pytest.approx([40 + 20, 40 + 20])  # write and exchange out of each core


def test_a_mesh_write_goes_in_dimension_order_to_the_nearest_controller():
    net = network_from_chip(ROWS)
    # core 7 (row 1, column 3): west along row 1 to core 4, then core 4's link out to controller 1
    route = net.route_to_controller(7, net.nearest_controller(7))
    assert route[:3] == [7 * 4 + WEST, 6 * 4 + WEST, 5 * 4 + WEST]
    assert net.link_src[route[3]] == 4 and net.link_dst[route[3]] == net.controller_node(1)
    assert route[4] == net.controller_port[1]
    # 120 B from all 12 cores (10 each): each row's link into its controller carries 4 x 10 =
    # 40 B (40 cycles, the busiest link); the ports take 40 B each at 2 B/cycle (20 cycles)
    schedule = Schedule((op(0, 12, 5, written=120),), (), "hand")
    run = simulate_schedule(schedule, ROWS)
    assert run.write_end[0] - run.write_start[0] == pytest.approx(40)
    out_links = net.controller_link + net.n_controllers
    assert run.link_bytes[out_links] == pytest.approx([40, 40, 40])
    assert run.link_bytes[net.controller_link].sum() == 0  # the load direction stays idle


def test_a_schedule_without_writes_runs_as_before_and_the_trace_shows_the_writes():
    from elkopt.sim.report import TRACE_PID, trace_events
    # decode-like: op 0 (4 cores, 60 compute cycles, 40 B exchanged per core) while op 1's
    # load (40 HBM bytes: 20 cycles; 10 B into each core) runs; op 1 10 cycles
    decode = Schedule((op(0, 4, 60, exchange=40), op(1, 4, 10, hbm=40, cold=10, window=0)), (1,), "hand")
    run = simulate_schedule(decode, FOUR)
    np.testing.assert_allclose([run.load_start[1], run.load_end[1]], [0, 20])
    np.testing.assert_allclose(run.exec_end, [100, 110])
    assert np.isnan(run.write_start).all() and np.isnan(run.write_end).all()
    net = network_from_chip(FOUR)
    names = ["a", "b"]
    lanes = {e["args"]["name"] for e in trace_events(run, decode, net, FOUR, names) if e["name"] == "thread_name"}
    assert lanes == {"execute", "exchange", "HBM load"}
    # the same step writing 40 B after op 1 (the last op): nothing before it moves
    written = Schedule((decode.ops[0], op(1, 4, 10, hbm=40, cold=10, window=0, written=40)), (1,), "hand")
    again = simulate_schedule(written, FOUR)
    np.testing.assert_allclose(again.exec_end, run.exec_end)
    np.testing.assert_allclose([again.write_start[1], again.write_end[1]], [110, 130])
    events = trace_events(again, written, net, FOUR, names)
    spans = [e for e in events if e["ph"] == "X" and e["pid"] == TRACE_PID and e["tid"] == 4]
    assert [(s["name"], s["ts"], s["dur"]) for s in spans] == [("b", 110e6, 20e6)]
    assert spans[0]["args"]["write_bytes"] == 40


def test_a_routed_expert_load_waits_for_its_router_as_in_the_timeline():
    # not a write, but the same queue: op 2's load (40 B: 20 HBM cycles; 10 B per core) may go
    # from op 0's start but must wait for its router, op 0, to end (30): [30, 50]; op 1 runs
    # [30, 50] meanwhile; op 2 [50, 60]
    expert = dataclasses.replace(op(2, 4, 10, hbm=40, cold=10, window=0), load_after=(0,))
    schedule = Schedule((op(0, 4, 30), op(1, 4, 20), expert), (2,), "hand")
    run = simulate_schedule(schedule, FOUR)
    np.testing.assert_allclose([run.load_start[2], run.load_end[2]], [30, 50])
    np.testing.assert_allclose(run.exec_end, [30, 50, 60])
    tl = compute_timeline(schedule, FOUR)
    np.testing.assert_allclose([tl.load_start[2], tl.exec_end[2]], [30, 60])


def test_a_tiny_prefill_step_simulates_its_kv_cache_writes():
    from elkopt.graph.zoo import build_graph
    from elkopt.pipeline import PlanningOptions, compile_model

    chip = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)
    graph = build_graph("tiny", "prefill", 2, 16)
    result = compile_model(graph, chip, "static", PlanningOptions(max_spatial_splits=64))
    run = simulate_schedule(result.schedule, chip)
    written = ~np.isnan(run.write_start)
    # tiny: 2 layers, K and V each of 2 x 16 tokens x 128 (2 KV heads of 64), 2 bytes
    assert written.sum() == 4
    assert [result.schedule.ops[i].write_bytes for i in np.flatnonzero(written)] == [2 * 16 * 128 * 2] * 4
    assert (run.write_start[written] >= run.exec_end[written]).all()
    assert (run.write_end[written] > run.write_start[written]).all()
    net = network_from_chip(chip)
    read = sum(op.hbm_bytes for op in result.schedule.ops)
    assert run.link_bytes[net.controller_port].sum() == pytest.approx(read + 4 * 2 * 16 * 128 * 2)
    assert run.latency_cycles == pytest.approx(result.timeline.latency_cycles, rel=0.05)
