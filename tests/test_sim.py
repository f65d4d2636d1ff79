"""The network simulator on cases small enough to check by hand."""

import dataclasses

import numpy as np
import pytest

from elkopt.chip import Chip, Topology
from elkopt.sim.flows import make_flows, max_min_rates, simulate_flows
from elkopt.sim.network import EAST, NORTH, SOUTH, WEST, all_to_all, grid, network_from_chip
from elkopt.sim.preload import analytic_preload_cycles


def conserved(flows, result):
    """Every byte a flow sends crosses each link of its route exactly once."""
    expected = np.bincount(flows.links, weights=flows.size[flows.owner], minlength=len(result.link_bytes))
    return np.allclose(result.link_bytes, expected)


def test_one_flow_on_one_link():
    flows = make_flows([[0]], [1000.0], release=[5.0])
    result = simulate_flows(flows, bandwidth=np.array([10.0]), latency=np.array([3.0]))
    assert result.transfer_end[0] == pytest.approx(5 + 100)
    assert result.finish[0] == pytest.approx(5 + 100 + 3)
    assert result.peak_utilisation == pytest.approx(1.0)
    assert conserved(flows, result)


def test_two_flows_share_a_link_then_the_longer_speeds_up():
    # 10 B/cycle shared: both at 5 until the 300-byte flow ends at 60; the 1000-byte flow
    # has 700 left and goes on alone at 10: ends at 130
    flows = make_flows([[0], [0]], [300.0, 1000.0])
    result = simulate_flows(flows, bandwidth=np.array([10.0]))
    assert result.finish == pytest.approx([60.0, 130.0])
    assert result.events == 2
    assert result.peak_utilisation == pytest.approx(1.0)
    assert conserved(flows, result)


def test_a_late_flow_slows_the_first():
    # flow 0 alone at 10 B/cycle for 20 cycles (200 B), then both at 5: flow 1 (100 B)
    # ends at 40, flow 0 has 1000 - 200 - 100 = 700 left at full rate: ends at 110
    flows = make_flows([[0], [0]], [1000.0, 100.0], release=[0.0, 20.0])
    result = simulate_flows(flows, bandwidth=np.array([10.0]))
    assert result.finish == pytest.approx([110.0, 40.0])
    assert conserved(flows, result)


def test_max_min_gives_a_bottlenecked_flow_its_share_and_the_rest_to_others():
    # link 0 (10 B/cycle) carries flows a and b; link 1 (4 B/cycle) carries b and c.
    # Filling: all grow to 2, link 1 is full (b, c at 2); a grows alone to 8 on link 0.
    flows = make_flows([[0], [0, 1], [1]], [1.0, 1.0, 1.0])
    rates = max_min_rates(flows, np.ones(3, dtype=bool), np.array([10.0, 4.0]))
    assert rates == pytest.approx([8.0, 2.0, 2.0])
    # an inactive flow takes nothing
    rates = max_min_rates(flows, np.array([True, False, True]), np.array([10.0, 4.0]))
    assert rates == pytest.approx([10.0, 0.0, 4.0])


def test_a_2x2_mesh_shift_round_uses_four_distinct_links():
    # cores 0 1 / 2 3; a ring shift 0 -> 1 -> 3 -> 2 -> 0, 400 bytes each at 8 B/cycle
    mesh = grid(2, 2, link_bytes_per_cycle=8.0, hbm_bytes_per_cycle=16.0)
    ring = [(0, 1), (1, 3), (3, 2), (2, 0)]
    routes = [mesh.core_route(a, b) for a, b in ring]
    assert routes == [[0 * 4 + EAST], [1 * 4 + SOUTH], [3 * 4 + WEST], [2 * 4 + NORTH]]
    flows = make_flows(routes, [400.0] * 4)
    result = simulate_flows(flows, mesh.bandwidth, mesh.latency)
    assert result.finish == pytest.approx([50.0] * 4)  # no link shared: 400 / 8 each
    # the diagonal 0 -> 3 goes east then south (dimension order) and shares both links
    both = make_flows(routes + [mesh.core_route(0, 3)], [400.0] * 5)
    assert mesh.core_route(0, 3) == [0 * 4 + EAST, 1 * 4 + SOUTH]
    slower = simulate_flows(both, mesh.bandwidth, mesh.latency)
    # it shares each of its links with one ring flow: those three move at half rate
    assert slower.makespan == pytest.approx(100.0)
    assert conserved(both, slower) and slower.peak_utilisation <= 1 + 1e-9


def test_a_controller_feeds_a_row_of_cores():
    # a 1 x 4 mesh; the west controller of the row sends 100 bytes to each core. All four
    # flows cross its port (HBM share) and its link into core 0; the link (8 B/cycle) is
    # narrower than the port: 400 bytes at 8 B/cycle = 50 cycles, each flow at 2 B/cycle.
    # Per-hop latency 1: core k is 2 + k hops from the controller's port.
    row = grid(1, 4, link_bytes_per_cycle=8.0, hbm_bytes_per_cycle=4 * 10 * 16.0, latency=1.0)
    west = 0
    assert row.controller_core[west] == 0
    routes = [row.controller_route(west, core) for core in range(4)]
    assert [len(r) for r in routes] == [2, 3, 4, 5]
    flows = make_flows(routes, [100.0] * 4)
    result = simulate_flows(flows, row.bandwidth, row.latency)
    assert result.transfer_end == pytest.approx([50.0] * 4)
    assert result.finish == pytest.approx([51.0, 52.0, 53.0, 54.0])  # the port has no latency
    assert conserved(flows, result)
    assert row.nearest_controller(3) != west  # the east controller is nearer to core 3


def test_all_to_all_routes_and_hbm_share():
    net = all_to_all(4, link_bytes_per_cycle=5.0, controllers=2, hbm_bytes_per_cycle=6.0)
    assert net.core_route(1, 2) == [1, 4 + 2]
    assert net.core_route(1, 1) == []
    # both controllers feed core 3: their ports give 3 B/cycle each, core 3's ejection link
    # takes 5: max-min gives each 2.5
    flows = make_flows([net.controller_route(0, 3), net.controller_route(1, 3)], [250.0, 250.0])
    result = simulate_flows(flows, net.bandwidth, net.latency)
    assert result.transfer_end == pytest.approx([100.0, 100.0])
    # one controller alone is held to its port's 3 B/cycle
    alone = simulate_flows(make_flows([net.controller_route(0, 3)], [300.0]), net.bandwidth)
    assert alone.finish == pytest.approx([100.0])


def test_torus_routes_go_the_short_way_round():
    torus = grid(1, 5, link_bytes_per_cycle=1.0, hbm_bytes_per_cycle=1.0, torus=True)
    assert torus.core_route(0, 4) == [0 * 4 + WEST]  # wraps around: one hop
    assert torus.core_route(0, 2) == [0 * 4 + EAST, 1 * 4 + EAST]
    mesh = grid(1, 5, link_bytes_per_cycle=1.0, hbm_bytes_per_cycle=1.0)
    assert len(mesh.core_route(0, 4)) == 4


def test_network_from_chip_matches_the_chip():
    mesh = network_from_chip(Chip(name="m", topology=Topology.MESH, cores_per_chip=64, mesh_rows=4,
                                  mesh_cols=16, mesh_link_bytes_per_s=2.65e9, clock_hz=1.325e9,
                                  hbm_bytes_per_s=1.325e12))
    assert mesh.n_controllers == 2 * (4 + 16)
    assert mesh.bandwidth[mesh.controller_link] == pytest.approx(2.0)
    assert mesh.bandwidth[mesh.controller_port].sum() == pytest.approx(1000.0)
    pod = network_from_chip(Chip(name="pod", n_chips=4))
    assert pod.n_controllers == 16 and pod.cores == 5888
    assert pod.bandwidth[pod.controller_port].sum() == pytest.approx(Chip(name="pod").hbm_bytes_per_s / 1.325e9)


def test_bad_input_is_named():
    net = all_to_all(2, 1.0, 1, 1.0)
    with pytest.raises(ValueError, match="core 5 is not in 0..1"):
        net.core_route(0, 5)
    with pytest.raises(ValueError, match="controller 3"):
        net.controller_route(3, 0)
    with pytest.raises(ValueError, match="2 routes but 1 sizes"):
        make_flows([[0], [1]], [1.0])
    with pytest.raises(ValueError, match="the network has 6 links"):
        simulate_flows(make_flows([[9]], [1.0]), net.bandwidth)


def test_a_preload_on_all_to_all_is_held_by_hbm_or_by_delivery():
    from elkopt.sim.preload import analytic_preload_cycles, simulate_preload
    net = all_to_all(4, link_bytes_per_cycle=5.0, controllers=2, hbm_bytes_per_cycle=6.0)
    # 800 unique bytes through two ports of 3 B/cycle: 133.3 cycles; 300 bytes to each
    # core at 5 B/cycle: 60. HBM-bound.
    result = simulate_preload(net, hbm_bytes=800, cores_used=4, cold_bytes=300)
    assert result.makespan == pytest.approx(800 / 6)
    # replicated 2.5x more (1000 bytes per core): delivery-bound, 200 cycles
    assert simulate_preload(net, 800, 4, 1000).makespan == pytest.approx(200)
    assert analytic_preload_cycles(net, 800, 4, 1000) == pytest.approx(200)
    with pytest.raises(ValueError, match="cores_used must be in 1..4"):
        simulate_preload(net, 800, 5, 10)


def test_a_mesh_preload_is_never_faster_than_its_busiest_link():
    from elkopt.sim.preload import analytic_preload_cycles, simulate_preload
    mesh = grid(6, 8, link_bytes_per_cycle=4.0, hbm_bytes_per_cycle=100.0, latency=0.0)
    for cores_used, cold in [(48, 64.0), (20, 256.0), (7, 1000.0)]:
        result = simulate_preload(mesh, hbm_bytes=cores_used * cold, cores_used=cores_used, cold_bytes=cold)
        bound = analytic_preload_cycles(mesh, cores_used * cold, cores_used, cold)
        assert result.makespan >= bound * (1 - 1e-9)
        assert result.peak_utilisation <= 1 + 1e-9


def test_chips_joined_by_gateways_share_their_bandwidth():
    # 2 chips x 2 cores; core links 10 B/cycle, gateways 4 B/cycle each way
    net = all_to_all(4, link_bytes_per_cycle=10.0, controllers=2, hbm_bytes_per_cycle=20.0,
                     n_chips=2, inter_chip_bytes_per_cycle=4.0)
    assert net.core_route(0, 1) == [0, 4 + 1]  # same chip: no gateway
    out0, in1 = net.gateway_out[0], net.gateway_in[1]
    assert net.core_route(0, 2) == [0, out0, in1, 4 + 2]
    # both cores of chip 0 send 100 bytes to chip 1: they share its gateway, 2 B/cycle each
    flows = make_flows([net.core_route(0, 2), net.core_route(1, 3)], [100.0, 100.0])
    assert simulate_flows(flows, net.bandwidth).finish == pytest.approx([50.0, 50.0])
    # a core's data comes from a controller of its own chip
    assert [net.nearest_controller(c) for c in range(4)] == [0, 0, 1, 1]
    assert net.controller_route(1, 3) == [net.controller_port[1], net.controller_link[1], 4 + 3]
    with pytest.raises(ValueError, match="do not split evenly over 3 chips"):
        all_to_all(4, 1.0, 3, 1.0, n_chips=3, inter_chip_bytes_per_cycle=1.0)


def test_hbm_controllers_on_chosen_sides():
    west = grid(3, 5, link_bytes_per_cycle=1.0, hbm_bytes_per_cycle=3.0, sides=("west",))
    assert list(west.controller_core) == [0, 5, 10]
    assert west.bandwidth[west.controller_port] == pytest.approx([1.0, 1.0, 1.0])
    chip = Chip(name="m", topology=Topology.MESH, cores_per_chip=15, mesh_rows=3, mesh_cols=5,
                mesh_link_bytes_per_s=1e9, hbm_sides=("north", "south"), link_latency_cycles=7.0)
    assert chip.edge_links == 10
    net = network_from_chip(chip)
    assert net.n_controllers == 10 and set(net.latency[:60]) == {7.0}
    with pytest.raises(ValueError, match="hbm_sides must be distinct sides"):
        Chip(name="bad", hbm_sides=("west", "up"))
    with pytest.raises(ValueError, match="mesh_cols divisible by n_chips"):
        network_from_chip(Chip(name="three", topology=Topology.MESH, n_chips=3, cores_per_chip=4,
                               mesh_rows=3, mesh_cols=4, mesh_link_bytes_per_s=1e9))


def test_mesh_chips_side_by_side_share_the_boundary_links():
    # 2 x 4 mesh as 2 chips of 2 columns; 1 B/cycle links, 0.5 B/cycle across the boundary
    # each way in all (0.25 per row)
    net = grid(2, 4, 1.0, hbm_bytes_per_cycle=1.0, n_chips=2, inter_chip_bytes_per_cycle=0.5)
    assert [net.chip_of(core) for core in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    east = net.bandwidth[: 4 * 8].reshape(8, 4)[:, EAST]
    west = net.bandwidth[: 4 * 8].reshape(8, 4)[:, WEST]
    assert east.tolist() == [1.0, 0.25, 1.0, 1.0] * 2 and west.tolist() == [1.0, 1.0, 0.25, 1.0] * 2
    # 10 bytes from core 0 to core 3 cross the boundary: 40 cycles; both rows at once, still
    # 40 (each row has its own boundary link)
    one = simulate_flows(make_flows([net.core_route(0, 3)], [10.0]), net.bandwidth)
    both = simulate_flows(make_flows([net.core_route(0, 3), net.core_route(4, 7)], [10.0, 10.0]), net.bandwidth)
    assert one.makespan == pytest.approx(40) and both.makespan == pytest.approx(40)
    torus = grid(2, 4, 1.0, hbm_bytes_per_cycle=1.0, torus=True, n_chips=2, inter_chip_bytes_per_cycle=0.5)
    assert torus.bandwidth[3 * 4 + EAST] == 0.25  # the wrap from column 3 to 0 crosses chips
    with pytest.raises(ValueError, match="cannot be 3 chips"):
        grid(2, 4, 1.0, hbm_bytes_per_cycle=1.0, n_chips=3, inter_chip_bytes_per_cycle=0.5)


def two_core_schedule(compute: float, exchange: float, window: int):
    """Op 0 (compute, then exchange on both cores) and op 1 (10 cycles) whose 80 HBM bytes
    (30 per core after replication) are loaded during op 0 (window 0) or after it (1)."""
    from elkopt.plans.option import Plan, PlanOption
    from elkopt.schedule.schedule import OpSchedule, Schedule
    plan = Plan((2,), ((1,),))
    first = PlanOption(plan, cold_bytes=0, hot_bytes=0, exec_cycles=compute + exchange,
                       exchange_cycles=exchange, distribution_cycles=0.0)
    second = PlanOption(plan, cold_bytes=30, hot_bytes=0, exec_cycles=10.0, exchange_cycles=0.0,
                        distribution_cycles=0.0, cold_split=(1,))
    ops = (OpSchedule(0, first, 0, 0), OpSchedule(1, second, window, 80))
    return Schedule(ops, (1,), "hand")


# 2 cores at 1 B/cycle each way; 4 HBM controllers of 0.5 B/cycle (2 B/cycle in all)
TWO = Chip(name="two", cores_per_chip=2, clock_hz=1.0, core_link_bytes_per_s=1.0, hbm_bytes_per_s=2.0)


def test_a_step_without_contention_runs_as_the_analytic_timeline():
    from elkopt.schedule.timeline import compute_timeline
    from elkopt.sim.step import simulate_schedule
    # the load (40 cycles at the HBM ports) ends during op 0's 60 compute cycles; op 0
    # exchanges 40 bytes per core alone: 100; op 1: 110
    schedule = two_core_schedule(compute=60, exchange=40, window=0)
    run = simulate_schedule(schedule, TWO)
    assert run.load_end[1] == pytest.approx(40)
    assert run.exec_end == pytest.approx([100, 110])
    assert run.latency_cycles == pytest.approx(compute_timeline(schedule, TWO).latency_cycles)


def test_a_load_and_an_exchange_share_the_links():
    from elkopt.schedule.timeline import compute_timeline
    from elkopt.sim.step import simulate_schedule
    # op 0 computes 10 cycles, then exchanges 40 bytes per core. The load's deliveries
    # (30 bytes per core) have 20 left at t = 10 and share each core's ejection link with
    # the exchange at 0.5 B/cycle: they end at 50, the exchange has 20 bytes left and ends
    # at 70. The analytic stall agrees here: 40 exchange + 0.75 x 40 load cycles - 50 = 20.
    schedule = two_core_schedule(compute=10, exchange=40, window=0)
    run = simulate_schedule(schedule, TWO, exchange_first=False)
    assert run.load_end[1] == pytest.approx(50)
    assert run.exec_end == pytest.approx([70, 80])
    assert compute_timeline(schedule, TWO).latency_cycles == pytest.approx(80)
    net = network_from_chip(TWO)
    ejection0 = net.cores + 0
    assert run.link_bytes[ejection0] == pytest.approx(40 + 30)  # exchange in, delivery in
    assert run.link_bytes[net.controller_port].sum() == pytest.approx(80)
    # issued only when op 0 ends (window 1), the load overlaps nothing: 50 + 40 + 10
    late = simulate_schedule(two_core_schedule(compute=10, exchange=40, window=1), TWO, exchange_first=False)
    assert late.load_start[1] == pytest.approx(50) and late.latency_cycles == pytest.approx(100)


def test_priority_classes_share_what_earlier_classes_leave():
    # link 0 (10 B/cycle): flows a (class 0) and b (class 1); link 1 (4): b and c (class 0)
    flows = make_flows([[0], [0, 1], [1]], [1.0, 1.0, 1.0])
    everyone = np.ones(3, dtype=bool)
    rates = max_min_rates(flows, everyone, np.array([10.0, 4.0]), priority=np.array([0, 1, 0]))
    assert rates == pytest.approx([10.0, 0.0, 4.0])  # class 0 fills both links
    rates = max_min_rates(flows, everyone, np.array([12.0, 4.0]), priority=np.array([0, 1, 1]))
    assert rates == pytest.approx([12.0, 0.0, 4.0])  # b has nothing left on link 0, c takes link 1


def test_with_exchange_first_the_load_pauses_instead():
    from elkopt.sim.step import simulate_schedule
    # the case above, exchanges first: op 0's exchange runs at full rate from 10 to 50
    # while the deliveries (20 bytes left each) pause, then finish at 70; op 1 waits for
    # them: the same 80 cycles, the other way round
    schedule = two_core_schedule(compute=10, exchange=40, window=0)
    run = simulate_schedule(schedule, TWO, exchange_first=True)
    assert run.exec_end[0] == pytest.approx(50) and run.load_end[1] == pytest.approx(70)
    assert run.latency_cycles == pytest.approx(80)


# 3 x 4 mesh, controllers on the west side only (one per row, 2 B/cycle ports), links 1 B/cycle
ROWS = Chip(name="rows", topology=Topology.MESH, cores_per_chip=12, mesh_rows=3, mesh_cols=4,
            mesh_link_bytes_per_s=1.0, clock_hz=1.0, core_link_bytes_per_s=1.0, hbm_bytes_per_s=6.0,
            hbm_sides=("west",))


def rows_schedule(hot: tuple[int, int] = (0, 0), hbm: int = 120):
    """Op 0: 2 cores, 30 compute cycles, no exchange; op 1: 12 cores, 5 cycles, loads `hbm`
    HBM bytes and 10 bytes into each core during op 0."""
    from elkopt.plans.option import Plan, PlanOption
    from elkopt.schedule.schedule import OpSchedule, Schedule
    first = PlanOption(Plan((2,), ((1,),)), cold_bytes=0, hot_bytes=hot[0], exec_cycles=30.0,
                       exchange_cycles=0.0, distribution_cycles=0.0)
    second = PlanOption(Plan((12,), ((1,),)), cold_bytes=10, hot_bytes=hot[1], exec_cycles=5.0,
                        exchange_cycles=0.0, distribution_cycles=0.0, cold_split=(1,))
    return Schedule((OpSchedule(0, first, 0, 0), OpSchedule(1, second, 0, hbm)), (1,), "hand")


def test_a_load_phase_alone_lasts_its_busiest_link_and_the_bins_keep_every_byte():
    from elkopt.sim.step import simulate_schedule
    # ROWS. Op 1 loads 120 HBM bytes (40 per port: 20 cycles) and 10 bytes into each
    # of 12 cores: each controller's link into its row carries 4 x 10 = 40 bytes, the
    # busiest link, so the load ends at 40 although the last core of a row needs 10 only
    # on the links after it. Op 0 (2 cores, 30 compute cycles, no exchange) runs meanwhile.
    chip, schedule = ROWS, rows_schedule()
    net = network_from_chip(chip)
    run = simulate_schedule(schedule, chip, bins=4)
    assert run.load_end[1] == pytest.approx(40) == analytic_preload_cycles(net, 120, 12, 10)
    assert run.exec_end == pytest.approx([30, 45])
    assert run.link_bytes[net.controller_port].sum() == pytest.approx(120)
    assert run.link_bytes[net.controller_link] == pytest.approx([40, 40, 40])
    # 4 bins were planned for 35 cycles of work; the run lasts 45, so they merged once
    assert run.bin_cycles == pytest.approx(35 / 4 * 2)
    assert run.link_bins.sum(axis=0) == pytest.approx(run.link_bytes, rel=1e-6)
    assert run.link_bins[:, net.controller_link[0]] == pytest.approx([17.5, 17.5, 5.0, 0.0], rel=1e-6)
    with pytest.raises(ValueError, match="bins must be an even number"):
        simulate_schedule(schedule, chip, bins=3)


def test_reports_name_the_hottest_links_and_each_core_class():
    from elkopt.sim.report import core_classes, hottest_links, sram_by_core_class
    from elkopt.sim.step import simulate_schedule
    schedule = rows_schedule(hot=(100, 50))
    net = network_from_chip(ROWS)
    run = simulate_schedule(schedule, ROWS, bins=4)
    # the three controller links carried 40 bytes each in a 45-cycle run: one row of three
    top = hottest_links(run, net, clock_hz=1.0, top=2)
    assert top[0]["name"] == "HBM controller 0 -> core 0" and top[0]["alike"] == 3
    assert top[0]["utilisation"] == pytest.approx(40 / 45)
    assert top[0]["hot_from_ms"] == pytest.approx(0.0) and top[0]["peak_utilisation"] == pytest.approx(1.0)
    assert top[1]["utilisation"] < top[0]["utilisation"]
    # cores 0-1 hold op 0's hot data and op 1's cold data; cores 2-11 only op 1's; op 1
    # waits for its load until 40
    assert core_classes(schedule) == [(0, 1), (2, 11)]
    classes, profiles = sram_by_core_class(run, schedule)
    (times, first), (_, rest) = profiles
    assert list(times) == pytest.approx([0, 30, 40, 45])
    assert list(first) == [110, 10, 50, 0] and list(rest) == [10, 10, 50, 0]


def test_a_mesh_ring_is_folded_over_serpentine_rows_into_short_distinct_hops():
    net = grid(4, 4, 1.0, hbm_bytes_per_cycle=1.0)
    assert net.placement.tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12]
    for n in (2, 5, 6, 16):
        pairs = net.ring(n)
        cores = set(net.placement[:n].tolist())
        assert sorted(a for a, _ in pairs) == sorted(b for _, b in pairs) == sorted(cores)
        routes = [net.core_route(a, b) for a, b in pairs]
        assert max(len(r) for r in routes) <= 2
        assert np.bincount(np.concatenate(routes)).max() == 1  # no link carries two transfers
    assert net.ring(1) == []
    assert all_to_all(4, 1.0, 1, 1.0).placement.tolist() == [0, 1, 2, 3]


def test_load_slowdown_is_simulated_over_analytic_duration():
    from elkopt.schedule.timeline import compute_timeline
    from elkopt.sim.calibrate import load_slowdown
    from elkopt.sim.step import simulate_schedule
    # 60 unique HBM bytes, 120 delivered (replicas). Analytic: HBM at the 3 edge links'
    # 3 B/cycle, 20 cycles (delivery, 120 B over the mesh's aggregate, is shorter);
    # simulated: 40, each controller link carries its row's 4 x 10 bytes
    schedule = rows_schedule(hbm=60)
    run = simulate_schedule(schedule, ROWS)
    assert list(load_slowdown(run, schedule, ROWS)) == pytest.approx([1.0, 2.0])
    # the factor, put on the chip, makes the analytic load last what the simulation saw
    calibrated = dataclasses.replace(ROWS, load_time_scale=(1.0, 2.0))
    timeline = compute_timeline(schedule, calibrated)
    assert timeline.load_end[1] - timeline.load_start[1] == pytest.approx(40)
    assert compute_timeline(schedule, ROWS).load_end[1] == pytest.approx(20)
    with pytest.raises(ValueError, match="load_time_scale factors must be > 0"):
        dataclasses.replace(ROWS, load_time_scale=(1.0, 0.0))


def test_calibration_keeps_the_fastest_simulated_plan(tmp_path):
    from elkopt.graph.zoo import build_graph
    from elkopt.pipeline import PlanningOptions
    from elkopt.sim.calibrate import calibrate
    chip = Chip(name="small_mesh", topology=Topology.MESH, cores_per_chip=64, mesh_rows=8, mesh_cols=8,
                mesh_link_bytes_per_s=4e9, hbm_bytes_per_s=2e11, hbm_sides=("west",))
    graph = build_graph("tiny", "decode", 4, 64)
    out = calibrate(graph, chip, "static", PlanningOptions(cache_dir=str(tmp_path)), rounds=2)
    first = out.rounds[0]
    assert 1 <= len(out.rounds) <= 3 and [r.round for r in out.rounds] == list(range(len(out.rounds)))
    assert out.run.latency_cycles == min(r.simulated_cycles for r in out.rounds)
    assert out.rounds[out.best_round].simulated_cycles == out.run.latency_cycles
    assert out.gain == pytest.approx(first.simulated_cycles / out.run.latency_cycles - 1) and out.gain >= 0
    # the result is reported on the chip as given, its timeline the uncalibrated analytic one
    assert out.result.chip == chip and out.result.chip.load_time_scale == ()
    assert all(r.max_scale >= r.mean_scale > 0 for r in out.rounds)


def test_routed_delivery_costs_match_the_simulated_load():
    from elkopt.schedule.timeline import compute_timeline
    from elkopt.sim.preload import LoadRoutes
    from elkopt.sim.step import simulate_schedule
    # serpentine rows of 4, each row fed through its west controller's one link: the first
    # n <= 4 cores put n deliveries on row 0's controller link, later rows never more
    loads = LoadRoutes(network_from_chip(ROWS)).link_loads()
    assert loads.tolist() == [1, 2, 3, 4] + [4] * 8
    routed = dataclasses.replace(ROWS, delivery_link_loads=tuple(loads))
    assert routed.delivery_cycles(10, 12) == pytest.approx(40)  # 10 B x 4 deliveries at 1 B/cycle
    assert ROWS.delivery_cycles(10, 12) == pytest.approx(10 * 12 / ROWS.noc_bytes_per_cycle)
    schedule = rows_schedule(hbm=60)
    timeline = compute_timeline(schedule, routed)
    run = simulate_schedule(schedule, ROWS)
    assert timeline.load_end[1] - timeline.load_start[1] == pytest.approx(run.load_end[1] - run.load_start[1])
    assert LoadRoutes(all_to_all(4, 1.0, 1, 1.0)).link_loads().tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="delivery_link_loads needs one entry per core count"):
        dataclasses.replace(ROWS, delivery_link_loads=(1, 2))


def test_link_latency_delays_a_phase_by_its_longest_route():
    from elkopt.sim.step import simulate_schedule
    # all-to-all, 2 cycles per link: op 0's exchange (one injection + one ejection per
    # transfer) arrives 4 cycles after its 40 cycles of sending; the load's deliveries
    # (one ejection link) 2 cycles after its 40 HBM cycles
    slow = dataclasses.replace(TWO, link_latency_cycles=2.0)
    run = simulate_schedule(two_core_schedule(compute=60, exchange=40, window=0), slow)
    assert run.load_end[1] == pytest.approx(42)
    assert run.exec_end == pytest.approx([104, 114])
    # ROWS, 3 cycles per link: the longest delivery route is a controller link and 3 hops
    rows = simulate_schedule(rows_schedule(), dataclasses.replace(ROWS, link_latency_cycles=3.0))
    assert rows.load_end[1] == pytest.approx(40 + 4 * 3) and rows.exec_end[1] == pytest.approx(57)


def test_several_mesh_chips_fill_one_chip_first_and_feed_it_from_its_own_controllers():
    net = grid(2, 4, 1.0, hbm_bytes_per_cycle=1.0, n_chips=2, inter_chip_bytes_per_cycle=0.5)
    assert net.placement.tolist() == [0, 4, 5, 1, 2, 6, 7, 3]  # down and up the columns
    assert [net.chip_of(int(c)) for c in net.placement[:4]] == [0, 0, 0, 0]
    # core (0, 2) is as far from row 0's west controller (chip 0) as from column 2's south
    # one (chip 1, its own)
    net = grid(3, 4, 1.0, hbm_bytes_per_cycle=1.0, sides=("west", "south"), n_chips=2,
               inter_chip_bytes_per_cycle=1.0)
    assert net.controller_core[net.nearest_controller(2)] == 10
    single = grid(3, 4, 1.0, hbm_bytes_per_cycle=1.0, sides=("west", "south"))
    assert single.controller_core[single.nearest_controller(2)] == 0  # the tie goes to the lower id


def matmul_shape(lengths=(8, 8, 8)):
    """C[m, n] = A[m, k] B[k, n]: dims (m, k, n); operands C, A, B (B from HBM)."""
    from elkopt.graph.ir import OpKind
    from elkopt.plans.space import OpShape
    return OpShape(OpKind.MATMUL, lengths, ((True, False, True), (True, True, False), (False, True, True)),
                   (False, False, True))


def test_exchange_shares_follow_the_replica_dims():
    from elkopt.plans.option import Plan
    from elkopt.sim.mapping import axis_shares
    shape = matmul_shape()
    # split m and n, nothing rotates, no partial sums: only the output's re-layout, spread
    assert axis_shares(shape, Plan((2, 1, 2), ((1, 1, 1),) * 3)).tolist() == [0.5, 0.0, 0.5]
    # split m and k: partial sums over k (a 4 x 4 output piece) plus the re-layout spread
    assert axis_shares(shape, Plan((2, 2, 1), ((1, 1, 1),) * 3)).tolist() == pytest.approx([0.25, 0.75, 0.0])
    # split m and n; B's 8 x 4 tile (k x n) cut in 2 along k: one 4 x 4 piece passes each
    # core, among B's replicas along m; the 4 x 4 output re-layout spread: m 16 + 8, n 8
    assert axis_shares(shape, Plan((2, 1, 2), ((1, 1, 1), (1, 1, 2), (1, 1, 1)))).tolist() == \
        pytest.approx([24 / 32, 0.0, 8 / 32])
    assert axis_shares(shape, Plan((1, 1, 1), ((1, 1, 1),) * 3)).tolist() == [0.0, 0.0, 0.0]


def test_dims_mapping_lays_two_split_dims_on_the_grid():
    from elkopt.plans.option import Plan
    from elkopt.sim.mapping import Mapper
    net = grid(4, 4, 1.0, hbm_bytes_per_cycle=1.0)
    shape = matmul_shape()
    placed = Mapper(net, "dims").place(Plan((2, 1, 4), ((1, 1, 1),) * 3), shape)
    assert placed.cores.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # 2 rows of 4 in the corner
    directions = set((placed.links % 4).tolist())
    assert directions == {EAST, WEST, SOUTH, NORTH} and placed.weight.max() == 1.0
    # rows (n, 4 cores, folded: every link once) and columns (m, 2 cores) get half each
    assert set(np.round(placed.weight, 6).tolist()) == {1.0}
    # a split wider than the grid takes bands of serpentine rows, the same inner index in
    # the same column of every band; one that fits neither way is None
    from elkopt.sim.mapping import band_layout
    assert band_layout(2, 6, rows=4, cols=4).tolist() == [[0, 1, 2, 3, 7, 6], [8, 9, 10, 11, 15, 14]]
    assert band_layout(3, 6, rows=4, cols=4) is None
    # several chips: the layout stays within the first (columns 0-1 of a 2 x 4 grid of two)
    chips = grid(2, 4, 1.0, hbm_bytes_per_cycle=1.0, n_chips=2, inter_chip_bytes_per_cycle=1.0)
    assert Mapper(chips, "dims").place(Plan((2, 1, 2), ((1, 1, 1),) * 3), shape).cores.tolist() == [0, 1, 4, 5]
    # one split dim: the serpentine
    serpentine = Mapper(net, "dims").place(Plan((8, 1, 1), ((1, 1, 1),) * 3), shape)
    assert serpentine.cores.tolist() == net.placement[:8].tolist()
    with pytest.raises(ValueError, match="mapping must be one of"):
        Mapper(net, "diagonal")


def test_a_mapped_op_alone_takes_its_exchange_cycles_and_loads_reach_its_cores():
    from elkopt.plans.option import Plan, PlanOption
    from elkopt.schedule.schedule import OpSchedule, Schedule
    from elkopt.sim.preload import load_routes
    from elkopt.sim.step import simulate_schedule
    chip = Chip(name="grid", topology=Topology.MESH, cores_per_chip=16, mesh_rows=4, mesh_cols=4,
                mesh_link_bytes_per_s=1.0, clock_hz=1.0, core_link_bytes_per_s=1.0, hbm_bytes_per_s=16.0)
    plan = Plan((2, 1, 4), ((1, 1, 1), (1, 1, 2), (1, 1, 1)))
    option = PlanOption(plan, cold_bytes=5, hot_bytes=0, exec_cycles=50.0, exchange_cycles=30.0,
                        distribution_cycles=0.0, cold_split=(1,))
    schedule = Schedule((OpSchedule(0, option, -1, 40),), (0,), "hand")
    shapes = [matmul_shape()]
    run = simulate_schedule(schedule, chip, shapes=shapes, mapping="dims")
    assert run.exec_end[0] - run.exec_start[0] == pytest.approx(50)
    net = network_from_chip(chip)
    flows = load_routes(net).flows(40, 8, 5, cores=np.arange(8))
    deliveries = flows.links[flows.ptr[net.n_controllers]:]
    last = flows.ptr[net.n_controllers + 1:] - 1
    assert sorted(net.link_dst[flows.links[last]].tolist()) == list(range(8))
    assert len(deliveries) == flows.ptr[-1] - flows.ptr[net.n_controllers]
    with pytest.raises(ValueError, match="needs one operator shape per scheduled op"):
        simulate_schedule(schedule, chip, mapping="dims")


def test_every_byte_of_a_step_crosses_the_links_it_should():
    from elkopt.plans.option import Plan, PlanOption
    from elkopt.schedule.schedule import OpSchedule, Schedule
    from elkopt.sim.step import simulate_schedule
    # 6 cores on 3 chips joined by gateways: op 0's exchange over all 6 (folded ring
    # 0-2-4-5-3-1, so chip 1's gateway out carries two transfers), then op 1 loads 64 HBM
    # bytes and 12 per core. Each core sends and receives exchange cycles x link rate,
    # whatever the gateways carry, and the ejection links also take the loads.
    chip = Chip(name="three", n_chips=3, cores_per_chip=2, clock_hz=1.0, core_link_bytes_per_s=2.0,
                hbm_bytes_per_s=8.0, inter_chip_bytes_per_s=4.0)
    first = PlanOption(Plan((6,), ((1,),)), cold_bytes=0, hot_bytes=0, exec_cycles=30.0,
                       exchange_cycles=10.0, distribution_cycles=0.0)
    second = PlanOption(Plan((6,), ((1,),)), cold_bytes=12, hot_bytes=0, exec_cycles=5.0,
                        exchange_cycles=0.0, distribution_cycles=0.0, cold_split=(1,))
    schedule = Schedule((OpSchedule(0, first, 0, 0), OpSchedule(1, second, 0, 64)), (1,), "hand")
    net = network_from_chip(chip)
    run = simulate_schedule(schedule, chip)
    injection, ejection = run.link_bytes[:6], run.link_bytes[6:12]
    assert injection == pytest.approx(np.full(6, 10 * 2.0))
    assert ejection == pytest.approx(np.full(6, 10 * 2.0 + 12))
    assert run.link_bytes[net.gateway_out[1]] == pytest.approx(2 * 10 * 2.0)
    assert run.link_bytes[net.controller_port].sum() == pytest.approx(64)
    assert run.link_bytes[list(net.gateway_out)].sum() == pytest.approx(run.link_bytes[list(net.gateway_in)].sum())
    assert run.exec_end[0] == pytest.approx(30)  # 20 compute + 10 exchange: 40 B at 4 B/cycle keep up
    assert run.link_bins.sum(axis=0) == pytest.approx(run.link_bytes, rel=1e-6)
