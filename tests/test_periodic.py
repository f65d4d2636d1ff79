"""elkopt's layer-periodic load timing: exact on hand-checkable layers, faithful
to the timeline, never worse than its starting plans."""

import dataclasses
import itertools

import numpy as np
import pytest

from elkopt.chip import Chip
from elkopt.graph.zoo import ARCHITECTURES, build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.schedule.checker import check_schedule
from elkopt.schedule.loadtiming import LayerLoads, best_offsets
from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.monolithic import solve_monolithic
from elkopt.schedule.periodic import LayerBlock, find_layers, layer_loads, search_order, stitch, unroll
from elkopt.schedule.synthetic import UNIT_CHIP, random_layers, repeated_layers
from elkopt.schedule.timeline import compute_timeline
from elkopt.solve import SolverOptions, solve

UNIT = UNIT_CHIP  # a load of D bytes lasts D cycles; see elkopt.schedule.synthetic


def layer(nominal, exchange, loads, hot=None, sram=10_000.0, max_offset=None):
    """loads: {op position: (duration, rate, cold bytes)}"""
    k = sorted(loads)
    return LayerLoads(
        nominal=np.array(nominal, float), exchange=np.array(exchange, float),
        hot=np.array(hot or [0.0] * len(nominal), float), load_op=np.array(k, dtype=np.int64),
        duration=np.array([loads[i][0] for i in k], float), rate=np.array([loads[i][1] for i in k], float),
        cold=np.array([loads[i][2] for i in k], float), sram=sram,
        max_offset=len(nominal) if max_offset is None else max_offset,
    )


def test_a_load_waits_for_the_calm_operator():
    # op 0 is all exchange, op 1 is all compute, op 2 needs 80 cycles of data
    # at full interconnect rate: issued during op 1, nothing stalls
    timing = best_offsets(layer([100, 100, 10], [100, 0, 0], {2: (80, 1.0, 8)}), cuts=[0, 1, 2])
    assert timing.period == pytest.approx(210)
    assert list(timing.offsets) == [1]


def test_a_load_that_cannot_hide_makes_its_operator_wait():
    # 150 cycles of data, only 100 calm cycles before op 2: issued during op 1,
    # op 2 waits 50; issued at op 0 (or earlier), op 0 stalls by its overlap
    # times the rate, 100 * 0.2 = 20, and the load still ends in time
    timing = best_offsets(layer([100, 100, 10], [100, 0, 0], {2: (150, 0.2, 8)}), cuts=[0, 1, 2])
    assert timing.period == pytest.approx(230)
    assert timing.offsets[0] >= 2
    # at full rate the stall (100) costs more than the wait (50)
    waiting = best_offsets(layer([100, 100, 10], [100, 0, 0], {2: (150, 1.0, 8)}), cuts=[0, 1, 2])
    assert waiting.period == pytest.approx(260)


def test_sram_keeps_a_load_out_of_a_big_operator():
    # op 1 leaves no room for op 2's data, so the load waits until op 1 ends
    roomy = best_offsets(layer([100, 100, 10], [0, 0, 0], {2: (80, 0.0, 8)}, hot=[0, 0, 0], sram=100))
    tight = best_offsets(layer([100, 100, 10], [0, 0, 0], {2: (80, 0.0, 8)}, hot=[0, 95, 0], sram=100))
    assert roomy.period == pytest.approx(210)
    assert tight.period == pytest.approx(290)  # the load runs while op 2 waits
    assert list(tight.offsets) == [0]


def middle_period(schedule, K, n_layers):
    timeline = compute_timeline(schedule, UNIT)
    mid = (n_layers // 2) * K
    return float(timeline.exec_start[mid + K] - timeline.exec_start[mid])


@pytest.mark.parametrize("seed", range(6))
def test_shortest_path_matches_the_timeline_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    K = 5
    nominal = rng.integers(20, 120, size=K).astype(float)
    exchange = nominal * rng.choice([0.0, 0.3, 1.0], size=K)
    positions = sorted(rng.choice(np.arange(1, K), size=2, replace=False).tolist())
    loads = {int(p): (int(rng.integers(30, 150)), float(rng.choice([0.5, 1.0]))) for p in positions}
    n_layers = 8
    schedule = repeated_layers(nominal, exchange, loads, n_layers)
    block = LayerBlock(0, K, n_layers)
    data = layer_loads(schedule, UNIT, 3 * K, K, K)
    timing = best_offsets(data, cuts=list(range(K)))
    evaluated, _ = unroll(schedule, block, data.load_op, timing.offsets, UNIT, [0] * len(schedule.ops), "t")
    # the steady-state layer in the timeline is the period the path promised
    assert middle_period(evaluated.schedule, K, n_layers) == pytest.approx(timing.period, rel=1e-9)
    # and no choice of windows does better
    best = np.inf
    for offsets in itertools.product(range(K + 1), repeat=len(positions)):
        candidate, _ = unroll(schedule, block, data.load_op, np.array(offsets), UNIT,
                              [0] * len(schedule.ops), "t")
        best = min(best, middle_period(candidate.schedule, K, n_layers))
    assert timing.period <= best + 1e-6


def test_layers_are_found_by_signature():
    graph = build_graph("llama2_13b", "decode", 32, 2048)
    assert find_layers([op.signature for op in graph.ops]) == LayerBlock(0, 48, 40)
    opt = build_graph("opt_30b", "decode", 32, 2048)
    block = find_layers([op.signature for op in opt.ops])
    assert block.start == 1 and block.count == 48
    assert find_layers(list(range(50))) is None  # nothing repeats


CHIP = Chip(name="small", cores_per_chip=256, sram_bytes_per_core=96 * 1024, hbm_bytes_per_s=2e11)


@pytest.fixture(scope="module")
def four_layers():
    arch = dataclasses.replace(ARCHITECTURES["tiny"], n_layers=4)
    return build_graph(arch, "decode", 8, 256)


@pytest.mark.parametrize("layer_milp", [False, True])
def test_elkopt_plan_is_valid_and_no_slower_than_its_starts(four_layers, layer_milp):
    graph = four_layers
    options = PlanningOptions(max_spatial_splits=64, layer_milp=layer_milp)
    result = compile_model(graph, CHIP, "elkopt", options, solver=SolverOptions(max_nodes=20))
    deps = [graph.dependencies(i) for i in range(graph.n_ops)]
    assert check_schedule(result.schedule, CHIP, deps, result.timeline) == []
    assert result.schedule.scheduler == "elkopt"
    latency_ms = result.timeline.latency_ms
    assert latency_ms <= result.references["static"] + 1e-9
    assert latency_ms <= result.solve_stats["inductive_ms"] + 1e-9
    assert latency_ms <= result.solve_stats["induction_ms"] + 1e-9
    assert result.solve_stats["layers"] == 4
    if layer_milp:
        assert result.solve_stats["layer_milp_status"] in ("optimal", "feasible")


def test_elkopt_same_input_same_plan(four_layers):
    options = PlanningOptions(max_spatial_splits=64)
    first = compile_model(four_layers, CHIP, "elkopt", options)
    second = compile_model(four_layers, CHIP, "elkopt", options)
    assert first.schedule == second.schedule


@pytest.mark.parametrize("seed", range(4))
def test_stitch_is_never_slower_than_its_fastest_start(seed):
    # elkopt <= min(inductive, static): stitch starts from the fastest of its starts and
    # keeps only faster candidates; here two starts, every load at once or each at its op
    eager = random_layers(seed)
    lazy = dataclasses.replace(eager, ops=tuple(
        dataclasses.replace(o, preload_window=o.op) if o.has_load else o for o in eager.ops))
    n = len(eager.ops)
    starts = [(name, Evaluated(s, compute_timeline(s, UNIT))) for name, s in (("eager", eager), ("lazy", lazy))]
    deps = [[i - 1] if i else [] for i in range(n)]
    stitched, stats = stitch(starts, UNIT, [i % 5 for i in range(n)], deps, [0] * n)
    assert stitched.timeline.latency_cycles <= min(s.timeline.latency_cycles for _, s in starts) + 1e-9
    assert check_schedule(stitched.schedule, UNIT, deps, stitched.timeline) == []
    assert stats.start in ("eager", "lazy")


@pytest.mark.parametrize("seed", [0, 1, 2, 4, 5, 7])
def test_stitched_plan_is_within_one_percent_of_the_monolithic_optimum(seed):
    schedule = random_layers(seed)  # 25 operators, 10 loads
    n = len(schedule.ops)
    start = Evaluated(schedule, compute_timeline(schedule, UNIT))
    stitched, stats = stitch([("start", start)], UNIT, [i % 5 for i in range(n)],
                             [[i - 1] if i else [] for i in range(n)], [0] * n)
    assert stats.layers == 5
    mono = solve_monolithic(stitched.schedule, UNIT, SolverOptions(mip_rel_gap=0.0, time_limit_s=60))
    assert mono.result.status == "optimal"
    # the MILP describes the timeline exactly: its plan runs as long as it says
    assert mono.evaluated.timeline.latency_cycles == pytest.approx(mono.makespan_cycles, rel=1e-6)
    assert stitched.timeline.latency_cycles <= 1.01 * mono.makespan_cycles


def test_monolithic_refuses_big_graphs():
    schedule = random_layers(0, n_layers=41)  # 205 operators
    with pytest.raises(ValueError, match="205 operators"):
        solve_monolithic(schedule, UNIT)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5])  # graphs where program order is not the best
def test_a_searched_preload_order_is_faster_and_runs_as_promised(seed):
    schedule = random_layers(seed, ops_per_layer=6, n_layers=8, n_loads=4)
    K, n = 6, len(schedule.ops)
    layer = layer_loads(schedule, UNIT, 3 * K, K, K)
    base = best_offsets(layer, cuts=[0])
    reordered, tried, kept = search_order(layer, 0)
    timing = best_offsets(reordered, cuts=[0])
    assert kept >= 1 and tried >= 6
    assert timing.period < base.period - 1e-6
    assert sorted(reordered.load_op) == sorted(layer.load_op)  # the same loads, another order
    evaluated, _ = unroll(schedule, LayerBlock(0, K, 8), reordered.load_op, timing.offsets, UNIT, [0] * n, "t")
    deps = [[i - 1] if i else [] for i in range(n)]
    assert check_schedule(evaluated.schedule, UNIT, deps, evaluated.timeline) == []
    assert middle_period(evaluated.schedule, K, 8) == pytest.approx(timing.period, rel=1e-9)


def test_the_layer_milp_chooses_a_calmer_plan_when_it_pays():
    # test_a_load_that_cannot_hide_makes_its_operator_wait at full rate: 260 cycles.
    # Op 0 may also run in a plan with more compute and less exchange (120 cycles, 20 of
    # them exchange): the load then runs beside it, op 0 stalls 20 and nothing waits.
    from elkopt.schedule.periodic import _build, _chosen
    d = layer([100, 100, 10], [100, 0, 0], {2: (150, 1.0, 8)})
    fixed = _build(d)
    assert solve(fixed, SolverOptions()).objective == pytest.approx(260)
    choices = [np.array([[100, 100, 0], [120, 20, 0]]), np.array([[100, 0, 0]]), np.array([[10, 0, 0]])]
    model = _build(d, choices=choices)
    result = solve(model, SolverOptions())
    assert result.objective == pytest.approx(250)
    assert _chosen(model, 3) == [1, 0, 0]
    # a calmer plan that costs more than it saves is left alone
    costly = [np.array([[100, 100, 0], [200, 0, 0]]), choices[1], choices[2]]
    model = _build(d, choices=costly)
    assert solve(model, SolverOptions()).objective == pytest.approx(260)
    assert _chosen(model, 3) == [0, 0, 0]


def test_plan_alternatives_keep_the_preload_layout(four_layers):
    from elkopt.plans.table import build_tables
    from elkopt.schedule.baselines import schedule_static
    from elkopt.schedule.periodic import plan_alternatives
    tables = build_tables(four_layers, CHIP, 64)
    schedule = schedule_static(four_layers, tables, CHIP).schedule
    alternatives = plan_alternatives(tables.tables, limit=4)
    some = 0
    for j, op in enumerate(schedule.ops):
        options = alternatives(schedule, j)
        assert options[0] == op.option and 1 <= len(options) <= 4
        assert len(set(options)) == len(options)
        some += len(options) > 1
        if op.has_load:  # same spatial split and cold layout: the load is unchanged
            assert {(o.plan.spatial, o.cold_split, o.cold_bytes) for o in options} == {
                (op.option.plan.spatial, op.option.cold_split, op.option.cold_bytes)}
        for a, b in itertools.permutations(options[1:], 2):  # none dominates another
            key = lambda o: (o.total_cycles, o.exchange_cycles + o.distribution_cycles, o.hot_bytes)
            assert not all(x <= y for x, y in zip(key(a), key(b)))
    assert some > 0


@pytest.mark.parametrize("seed", [0, 2, 3, 5])
def test_the_layer_milp_with_sequencing_bounds_every_preload_order(seed):
    # With every load movable and gap 0, the layer MILP relaxes the exact timing of
    # every issue order (it may also place the cycle's seam inside an op), so its
    # optimum is at most the best order found by brute force, and at most what it
    # finds with the order fixed.
    from elkopt.schedule.periodic import _build
    schedule = random_layers(seed, ops_per_layer=6, n_layers=8, n_loads=4)
    K = 6
    d = layer_loads(schedule, UNIT, 3 * K, K, K)
    exact = [best_offsets(d.reordered(np.array(p)), cuts=list(range(K)))
             for p in itertools.permutations(range(d.n_loads))]
    best_order = min(t.period for t in exact if t is not None)
    options = SolverOptions(mip_rel_gap=0.0)
    fixed = solve(_build(d), options)
    free = solve(_build(d, movable=range(d.n_loads)), options)
    assert str(free.status) == str(fixed.status) == "optimal"
    assert free.objective <= fixed.objective + 1e-6
    assert free.objective <= best_order + 1e-6
    if seed != 0:  # program order is not the best order here: the MILP sees it
        assert free.objective < fixed.objective - 1.0


class FakeClock:
    """A clock one second later at every reading: every Ticker update is due."""

    def __init__(self, step=1.0):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def ticking(clock):
    """A Ticker class whose lines are due whenever `clock` has moved a second."""
    from elkopt.progress import Ticker
    return lambda say, label, total: Ticker(say, label, total, every_s=1.0, clock=clock)


def test_the_preload_order_search_says_how_far_it_is(monkeypatch):
    import re
    from elkopt.schedule import preloadorder
    monkeypatch.setattr(preloadorder, "Ticker", ticking(FakeClock()))
    layer = layer_loads(random_layers(0, ops_per_layer=6, n_layers=8, n_loads=4), UNIT, 18, 6, 6)
    heavy = len(preloadorder.heavy_loads(layer))
    total = 3 * heavy * (heavy - 1) // 2  # three passes over every pair
    lines = []
    _, tried, kept = search_order(layer, 0, progress=lines.append)
    *updates, last = lines
    counts = []
    for line in updates:
        found = re.fullmatch(rf"elkopt: preload orders: (\d+)/{total} after \d+ s, about \d+ s left; "
                             r"best layer \d+ cycles", line)
        assert found, line
        counts.append(int(found[1]))
    assert counts == list(range(1, tried + 1))  # one line per order tried, with the clock this fast
    assert re.fullmatch(rf"elkopt: preload orders: {tried}/{total} done in \d+ s; {kept} swaps kept; "
                        r"best layer \d+ cycles", last)


def test_stitch_counts_the_seams_and_is_quiet_when_quick(monkeypatch):
    from elkopt.schedule import periodic
    schedule = random_layers(1)  # 25 operators
    n = len(schedule.ops)
    start = Evaluated(schedule, compute_timeline(schedule, UNIT))
    args = ([("start", start)], UNIT, [i % 5 for i in range(n)], [[i - 1] if i else [] for i in range(n)], [0] * n)
    monkeypatch.setattr(periodic, "Ticker", ticking(FakeClock()))
    lines = []
    stitch(*args, progress=lines.append)
    seams = [line for line in lines if line.startswith("elkopt: seams (load timing over the head and tail ops): ")]
    counts = [line.split(": ")[2].split(" ")[0] for line in seams]
    assert counts == [f"{k}/{n}" for k in range(1, n + 1)] + [f"{n}/{n}"]  # one per op, then done
    assert seams[-1].startswith(f"elkopt: seams (load timing over the head and tail ops): {n}/{n} done in ")
    assert any(line.startswith("elkopt: layer load timing (start plans x cuts): 1/") for line in lines)
    # a clock that stands still: every phase ends within every_s, nothing is said
    monkeypatch.setattr(periodic, "Ticker", ticking(FakeClock(step=0.0)))
    quiet = []
    stitch(*args, progress=quiet.append)
    assert quiet == []
