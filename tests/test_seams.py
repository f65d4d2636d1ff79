"""elkopt's seams: where the HBM idles, and re-timing the head, tail and steady state in
segments as well as the whole graph does, in work bounded by the layer, not the layer count."""

import dataclasses

import numpy as np
import pytest

from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.layers import LayerBlock, layer_loads
from elkopt.schedule.loadtiming import best_path
from elkopt.schedule.periodic import stitch
from elkopt.schedule.seams import SEAM_LAYERS, STEADY_LAYERS, idle_loads, retime_segment, seam_segments
from elkopt.schedule.synthetic import UNIT_CHIP as UNIT
from elkopt.schedule.synthetic import random_layers, repeated_layers
from elkopt.schedule.timeline import compute_timeline


def evaluated(schedule):
    return Evaluated(schedule, compute_timeline(schedule, UNIT))


def chain(n):
    return [[i - 1] if i else [] for i in range(n)]


def test_idle_loads_marks_where_the_hbm_rests():
    # ops of 100, 100, 10 cycles; op 2's load (150 cycles) issued during op 1 of its layer:
    # it runs 100..250, so op 2 waits until 250 and the HBM is busy as op 2 may start
    schedule = repeated_layers([100, 100, 10], [100, 0, 0], {2: (150, 0.2)}, n_layers=3)
    ops = tuple(dataclasses.replace(o, preload_window=o.op - 1) if o.has_load else o for o in schedule.ops)
    plan = evaluated(dataclasses.replace(schedule, ops=ops))
    assert plan.timeline.exec_start[2] == pytest.approx(250)
    idle = idle_loads(plan.schedule, plan.timeline)
    assert len(idle) == 10
    assert idle[0] == 0 and idle[1] == 0  # nothing issued before op 1 starts
    assert idle[2] == -1  # op 2's load still runs when op 1 ends
    assert idle[3] == 1 and idle[4] == 1  # it ended; the next is issued during op 4
    assert idle[5] == -1 and idle[9] == 3


@pytest.mark.parametrize("seed", range(3))
def test_a_segment_over_the_whole_graph_runs_as_the_whole_graph_path_says(seed):
    plan = evaluated(random_layers(seed, ops_per_layer=6, n_layers=8, n_loads=3))
    n = len(plan.schedule.ops)
    whole, _ = retime_segment(plan, 0, n, UNIT, [0] * n, "t", max_offset=6)
    path = best_path(layer_loads(plan.schedule, UNIT, 0, n, 6))
    assert whole.timeline.latency_cycles == pytest.approx(path.period)
    assert whole.timeline.latency_cycles <= plan.timeline.latency_cycles + 1e-9
    assert check_schedule(whole.schedule, UNIT, chain(n), whole.timeline) == []


def test_segments_stop_where_the_hbm_idles_and_meet_on_short_graphs():
    block = LayerBlock(0, 6, 40)
    idle = np.full(241, -1)
    idle[[0, 13, 14, 15, 225, 226, 240]] = 0
    # the head ends at the first idle op from 2 layers in, the tail starts at the last up to 2 layers before the end
    assert seam_segments(block, idle, 2) == [(0, 13), (226, 240)]
    idle[13:16] = -1  # no idle op within a layer past the head: a shorter head, if the HBM idles there
    idle[5] = 0
    assert seam_segments(block, idle, 2) == [(0, 5), (226, 240)]
    idle[5] = idle[225:227] = -1  # idle nowhere on the head's side: that seam is left as it is
    idle[238] = 0  # and a shorter tail
    assert seam_segments(block, idle, 2) == [(238, 240)]
    assert seam_segments(LayerBlock(0, 6, 6), np.zeros(37), 2) == [(0, 36)]


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_bounded_seams_find_what_the_whole_graph_path_finds(seed):
    schedule = random_layers(seed, ops_per_layer=6, n_layers=16, n_loads=3)
    n = len(schedule.ops)
    args = ([("start", evaluated(schedule))], UNIT, [i % 6 for i in range(n)], chain(n), [0] * n)
    whole, whole_stats = stitch(*args, seam_layers=None)
    bounded, stats = stitch(*args)
    assert whole_stats.seam_ops == n
    assert stats.seam_ops < n
    assert bounded.timeline.latency_cycles == pytest.approx(whole.timeline.latency_cycles)
    assert check_schedule(bounded.schedule, UNIT, chain(n), bounded.timeline) == []


def test_seam_work_does_not_grow_with_the_layers():
    bound = (STEADY_LAYERS + 1 + 2 * (SEAM_LAYERS + 1)) * 6
    for n_layers in (16, 40):
        schedule = random_layers(2, ops_per_layer=6, n_layers=n_layers, n_loads=4)
        n = len(schedule.ops)
        _, stats = stitch([("start", evaluated(schedule))], UNIT, [i % 6 for i in range(n)], chain(n), [0] * n)
        assert 0 < stats.seam_ops <= bound


@pytest.mark.parametrize("seed", range(4))
def test_a_tail_segment_starts_from_the_loads_already_in_sram(seed):
    # re-timed from an idle op whose next loads were issued before it, the tail runs as its
    # path says, after the unchanged head: exact at the boundary
    plan = evaluated(random_layers(seed, ops_per_layer=5, n_layers=8, n_loads=2))
    schedule, n = plan.schedule, len(plan.schedule.ops)
    idle = idle_loads(schedule, plan.timeline)
    ahead = [k for k in range(1, n) if idle[k] >= 0 and any(j >= k for j in schedule.preload_order[: idle[k]])]
    assert ahead  # the start issues every load before the first op: every load is ahead
    first = ahead[len(ahead) // 2]
    tail, _ = retime_segment(plan, first, n, UNIT, [0] * n, "t", max_offset=5)
    carried = [j for j in schedule.preload_order[: idle[first]] if j >= first]
    loads = carried + list(schedule.preload_order[idle[first]:])
    path = best_path(layer_loads(schedule, UNIT, first, n - first, 5, loads=loads), issued=len(carried))
    assert tail.timeline.latency_cycles == pytest.approx(plan.timeline.exec_end[first - 1] + path.period)
    assert np.array_equal(tail.timeline.exec_start[:first], plan.timeline.exec_start[:first])
    assert check_schedule(tail.schedule, UNIT, chain(n), tail.timeline) == []


def fit_sram_by_definition(schedule, windows, sram):
    """The rule of `fit_sram`, op by op over every load (quadratic; the reference)."""
    ops, windows, moved = schedule.ops, windows.copy(), set()
    loads = [j for j in range(len(ops)) if ops[j].has_load]
    for i in range(len(ops)):
        while True:
            held = [j for j in loads if j > i and max(windows[j], 0) <= i and windows[j] != j]
            if not held or ops[i].option.hot_bytes + sum(ops[j].option.cold_bytes for j in held) <= sram:
                break
            j = max(held)
            windows[j] = i + 1 if i + 1 < j else j
            moved.add(j)
    return windows, len(moved)


@pytest.mark.parametrize("seed", range(12))
def test_fit_sram_defers_as_its_rule_says(seed):
    from elkopt.schedule.layers import fit_sram

    rng = np.random.default_rng(seed)
    schedule = random_layers(seed, ops_per_layer=6, n_layers=6, n_loads=3)
    ops = [dataclasses.replace(o, option=dataclasses.replace(
        o.option, cold_bytes=int(rng.integers(0, 400)), hot_bytes=int(rng.integers(0, 600)))) for o in schedule.ops]
    schedule = dataclasses.replace(schedule, ops=tuple(ops))
    n = len(ops)
    # windows anywhere from the prologue to the load's own op, zero-byte loads included
    windows = np.array([int(rng.integers(-1, i + 1)) for i in range(n)])
    for sram in (300, 700, 1500, 10_000):
        got_windows, got_moved = fit_sram(schedule, windows, sram)
        want_windows, want_moved = fit_sram_by_definition(schedule, windows, sram)
        assert got_windows.tolist() == want_windows.tolist() and got_moved == want_moved
