"""The rebuilt published schedulers on hand-made tables with hand-worked schedules.

Units: 1024 cores and 1325/1024 GB/s make a load of m bytes per core take 1000 m cycles
(m / 2^20 x 1024 / (1325/1024) ms x 1.325e6); the NoC/HBM ratio is then ~4000, so loads
are never stretched and leave ~all their NoC time idle. Shift cycles are 1, so NoC
contention never binds unless a test wants it to.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from elkopt.elk.backward import Bound, LoadModel, Loads, contended_start, delay_loads
from elkopt.elk.coldhot import ColdHotTable, ElkOp
from elkopt.elk.lookup import TableIndex
from elkopt.elk.orders import (detect_layer, find_layer_groups, preload_orders,
                               reduced_permutations)
from elkopt.elk.schedulers import (ELK_FULL_THRESHOLD, Problem, evaluate_order,
                                   schedule_basic, schedule_elk_dyn, schedule_elk_full,
                                   schedule_ideal, schedule_static)
from elkopt.elk.suite import run_published

CORES, HBM = 1024, 1325 / 1024
approx = lambda x: pytest.approx(x, rel=1e-12, abs=1e-6)  # noqa: E731


def table(*rows: tuple[int, int, float]) -> ColdHotTable:
    """A table from (cold, hot, cycles) rows; compute is 90% of the cycles, shift 1."""
    rows = sorted(rows)
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    total = col(2).astype(float)
    one = np.ones(1)
    return ColdHotTable(cold=col(0), hot=col(1), total=total, exe=total, comp=0.9 * total,
                        shift=np.ones(len(rows)), hot_set_mem=one, hot_set_total=one,
                        hot_set_comp=one, hot_set_shift=one)


def op(i: int, *rows, kind: str = "Add", op_type: int = 2, dims=(1,), key=None) -> ElkOp:
    return ElkOp(f"Op_{i}_{kind}", op_type, dims, i if key is None else key, table(*rows))


def intervals(sched) -> tuple[list, list]:
    return sched.exe.tolist(), sched.load.tolist()


def assert_timeline(sched, exe, load) -> None:
    got_exe, got_load = intervals(sched)
    assert got_exe == [[approx(a), approx(b)] for a, b in exe]
    assert got_load == [[approx(a), approx(b)] for a, b in load]


# -- shared machinery -----------------------------------------------------------------


def test_load_timing_and_noc_stretch():
    loads = LoadModel(HBM, CORES, 5, 0.7)
    assert loads.hbm_cycles(10) == approx(10_000)
    t, remain = loads.timing(10, 10)
    assert t == approx(10_000) and remain == approx(10_000 - 10_000 / (5 * CORES / HBM))
    # a replicated layout (cold 5000x the unique bytes) needs more NoC time than HBM time
    t, remain = loads.timing(50_000, 10)
    noc = 10_000 * 5000 / (5 * CORES / HBM)
    assert t == approx(noc / 0.7) and remain == approx(noc / 0.7 - noc)
    assert loads.timing(0, 0) == (0.0, 0.0)


def _two_loads() -> Loads:
    loads = Loads()  # placed latest first: (-100, -50) then the earlier (-200, -100)
    loads.start, loads.end = [-100.0, -200.0], [-50.0, -100.0]
    loads.remain, loads.op = [20.0, 40.0], [2, 1]
    return loads


def test_contended_start_walks_idle_noc_time_from_the_latest_load():
    loads = _two_loads()
    # deadline -60 cuts the later load: 20 x 40/50 = 16 idle cycles before the deadline
    assert contended_start(-80.0, -60.0, 10.0, 2, loads) == approx(-60 - 40 * 10 / 16)
    # 30 shift cycles: 16 in the later load, 14 of the earlier load's 40
    assert contended_start(-80.0, -60.0, 30.0, 2, loads) == approx(-100 - 100 * 14 / 40)
    # never fits: 44 cycles before the earliest load
    assert contended_start(-80.0, -60.0, 100.0, 2, loads) == approx(-244.0)
    assert contended_start(-300.0, -60.0, 10.0, 2, loads) == -300.0


def test_delay_loads_pushes_the_loads_earlier():
    loads = _two_loads()
    # the op's 20 compute cycles run out within the later load's 30 x 40/50 = 24 busy NoC
    # cycles before the deadline; the 4 left over (4 x 50/30 cycles of that load) must
    # come before the op's start (-105): that load and every earlier one move 11.67 earlier
    delay_loads(-105.0, -60.0, 20.0, 2, loads)
    off = -105 - 4 * 50 / 30 + 100
    assert loads.start == [approx(-100 + off), approx(-200 + off)]
    assert loads.end == [approx(-50 + off), approx(-100 + off)]
    # with 30 compute cycles the later load is not enough; the op starts after that
    # load's start, so the walk goes on and ends in the earlier load with room to spare
    loads = _two_loads()
    delay_loads(-105.0, -60.0, 30.0, 2, loads)
    assert loads.start == [-100.0, -200.0]


def test_table_index_picks():
    idx = TableIndex(table((10, 100, 50.0), (10, 400, 20.0), (30, 300, 10.0)))
    assert idx.baseline_row(350, largest_cold=False) == 0  # min cold 10: largest hot <= 350
    assert idx.baseline_row(350, largest_cold=True) == 2  # cold 30 fits with hot 300
    assert idx.best_row(350.0) == 2 and idx.best_row(250.0) == 0 and idx.best_row(99.0) == -1
    assert idx.best_row(1000.0) == 2  # 10 + 30/4.457/2 beats 20 + 10/4.457/2


# -- the five designs --------------------------------------------------------------------


def test_basic_double_buffers_the_next_weight_operator():
    # W1 Z W2 W3: W loads 10 B (10 000 cycles), run 4000; Z has no HBM data
    ops = [op(0, (10, 100, 5000.0), (10, 985, 4000.0)), op(1, (0, 50, 1000.0)),
           op(2, (10, 100, 4000.0)), op(3, (10, 100, 4000.0))]
    res = schedule_basic(ops, HBM, CORES, 1000, layers=1)
    # W3 last; W2 cannot overlap W3's load (tail); Z overlaps W2's load; W1 overlaps Z's
    # empty load and W2's (Z does not count as the double-buffered op), leaving 990 B:
    # its 985 B plan (4000 cycles) fits
    assert_timeline(res.schedule,
                    exe=[(-23_000, -19_000), (-19_000, -18_000), (-18_000, -14_000), (-4_000, 0)],
                    load=[(-38_000, -28_000), (-28_000, -28_000), (-28_000, -18_000),
                          (-14_000, -4_000)])
    assert res.schedule.preloads.tolist() == [2, 1, 0, 0]
    assert res.schedule.hot.tolist() == [985, 50, 100, 100]
    assert res.schedule.latency_ms == approx(38_000 / 1.325e6)


def test_static_splits_sram_once_for_all_operators():
    # cold 6 KiB each; a 6 KiB plan runs 3e6 cycles, an 11 KiB plan 2e6; loads 6.144e6
    rows = ((6144, 6144, 3e6), (6144, 11264, 2e6))
    ops = [op(i, *rows) for i in range(4)]
    res = schedule_static(ops, HBM, CORES, 20 * 1024, layers=1)
    # sweep: 6 KiB (slow plans, 14 KiB of preloads: two loads) and 16 KiB (fast plans, no
    # preload fits: fully serial, 4 x 8.144e6). 6 KiB wins: A overlaps B's and C's loads.
    assert res.exec_kb == 6 and res.min_cold_exec_kb == 6
    t = 6.144e6
    assert_timeline(res.schedule,
                    exe=[(-18.144e6, -15.144e6), (-15.144e6, -12.144e6),
                         (-12.144e6, -9.144e6), (-3e6, 0)],
                    load=[(-30.576e6, -30.576e6 + t), (-24.432e6, -18.288e6),
                          (-18.288e6, -12.144e6), (-9.144e6, -3e6)])
    assert res.schedule.preloads.tolist() == [2, 1, 0, 0]
    assert res.schedule.hot.tolist() == [6144] * 4


@pytest.mark.parametrize("slow, latency, hot", [(9000.0, 38_000, 200), (14_000.0, 41_000, 995)])
def test_elk_dyn_chooses_the_group(slow, latency, hot):
    # X can run fast with 995 B hot, or slowly with 200 B; with Y's 10 B preloaded beside
    # it only 1000 - 1.01 x sqrt(10 x 10) = 989.9 B are left, so only the slow plan fits
    ops = [op(0, (10, 200, slow), (10, 995, 3000.0)), op(1, (10, 100, 4000.0)),
           op(2, (10, 100, 4000.0))]
    res = schedule_elk_dyn(ops, HBM, CORES, 1000, layers=1)
    # overlap Y's load: start -18 000 - slow; no overlap: start -28 000 - 3000
    start = max(-18_000 - slow, -31_000)
    end = -18_000 if start > -31_000 else -28_000
    assert res.schedule.exe[0].tolist() == [approx(start), approx(end)]
    assert res.schedule.hot[0] == hot
    assert res.schedule.latency_cycles == approx(latency)
    assert set(res.by_threshold) == {0.9, 0.7, 0.5}


def test_elk_dyn_reports_the_worst_threshold_when_the_best_two_tie():
    # NoC/HBM ratio 1.6: a load needs 1/1.6 of its time on the NoC, so thresholds 0.9 and
    # 0.7 leave loads alone while 0.5 stretches them by 1.25
    hbm = 5 * CORES / 1.6
    ops = [op(0, (100_000, 200_000, 1000.0)), op(1, (100_000, 200_000, 1000.0))]
    res = schedule_elk_dyn(ops, hbm, CORES, 10**6, layers=1)
    t = LoadModel(hbm, CORES, 5, None).hbm_cycles(100_000)
    lat = {th: s.latency_cycles for th, s in res.by_threshold.items()}
    assert lat[0.9] == lat[0.7] == approx(2000 + 2 * t)
    assert lat[0.5] == approx(2000 + 2 * 1.25 * t)
    assert res.threshold == 0.9 and res.schedule.latency_cycles == lat[0.9]
    assert res.printed_threshold == 0.5 and res.printed_ms == approx(lat[0.5] / 1.325e6)


def test_ideal_uses_fastest_plans_and_min_cold_preloads():
    # fast plans need 950 B hot, beside only the 100 B of the smallest hot; one 500 B
    # preload fits (two need 1000 > 900): loads back to back, 4 x 500 000 cycles + 200 000
    ops = [op(i, (500, 100, 300_000.0), (500, 950, 200_000.0)) for i in range(4)]
    res = schedule_ideal(ops, HBM, CORES, 1000, layers=1)
    assert_timeline(res,
                    exe=[(-1.6e6, -1.4e6), (-1.1e6, -0.9e6), (-0.9e6, -0.7e6), (-0.2e6, 0)],
                    load=[(-2.4e6, -1.9e6), (-1.9e6, -1.4e6), (-1.4e6, -0.9e6), (-0.7e6, -0.2e6)])
    assert res.hot.tolist() == [950] * 4 and res.preloads.tolist() == [1, 1, 0, 0]


def _reorder_ops() -> list[ElkOp]:
    # A runs 8000 with 700 B hot; B's 400 B load cannot sit beside it, C's 100 B can
    return [op(0, (200, 700, 8000.0)), op(1, (400, 400, 1000.0)), op(2, (100, 500, 2000.0)),
            op(3, (0, 500, 2000.0))]


def test_elk_full_identity_order_cannot_overlap_a():
    pb = Problem(_reorder_ops(), HBM, CORES, 1000, 1)
    back = evaluate_order(pb, [0, 1, 2, 3], delay_comp=False)
    # B overlaps C's load; A cannot overlap B's load, so it ends when B's load starts
    assert back.exe.tolist() == [[approx(-512_000), approx(-504_000)],
                                 [approx(-5000), approx(-4000)],
                                 [approx(-4000), approx(-2000)], [approx(-2000), 0.0]]
    assert back.latency_cycles == approx(712_000)


def test_elk_full_reordering_helps():
    # preloading C before B: B runs with C resident; A overlaps C's load (100 B beside
    # its 700 B), so B's and C's loads run while A runs: 7000 cycles saved
    identity, swapped = (0, 1, 2, 3), (0, 2, 1, 3)
    res = schedule_elk_full(_reorder_ops(), HBM, CORES, 1000, layers=1,
                            orders=[identity, swapped])
    assert res.order == swapped and res.delay_comp is False
    assert res.runs == 4 and res.completed >= 2
    assert_timeline(res.schedule,
                    exe=[(-413_000, -405_000), (-5000, -4000), (-4000, -2000), (-2000, 0)],
                    load=[(-705_000, -505_000), (-405_000, -5000), (-505_000, -405_000),
                          (-2000, -2000)])
    assert res.schedule.latency_cycles == approx(705_000)


def test_elk_full_abandons_orders_that_leave_nothing_placed():
    # the last op's load is not last in the order: the op before it has no candidate
    pb = Problem(_reorder_ops(), HBM, CORES, 1000, 1)
    assert evaluate_order(pb, [0, 1, 3, 2], delay_comp=True) is None


def test_run_published_names():
    ops = [op(i, (6144, 6144, 3e6), (6144, 11264, 2e6)) for i in range(4)]
    res = run_published(ops, HBM, CORES, 20 * 1024, layers=1)
    printed = res.printed_ms()
    assert set(printed) == {"naive_ms", "base_min_cold_ms", "base_max_cold_ms",
                            "icbm_ordered_ms", "ideal_ms", "icbm_ms"}
    ms = res.latency_ms()
    assert ms["Static"] == min(printed["base_min_cold_ms"], printed["base_max_cold_ms"])
    assert ms["Static"] == approx(30.576e6 / 1.325e6)
    assert ms["Elk-Full"] == printed["icbm_ms"] and res.elk_full.order == (0, 1, 2, 3)
    # the others: 4 back-to-back loads + the last two ops' fast runs (the next-to-last
    # cannot overlap the last load: the tail effect); Static is slower than Basic here
    for name in ("Basic", "Elk-Dyn", "Ideal", "Elk-Full"):
        assert ms[name] == approx((4 * 6.144e6 + 2 * 2e6) / 1.325e6)


def test_static_needs_a_kib_of_sram():
    with pytest.raises(ValueError, match="execution space"):
        schedule_static(_reorder_ops(), HBM, CORES, 1000, layers=1)


# -- order candidates ------------------------------------------------------------------


def _layered() -> list[ElkOp]:
    # P, then 3 layers of [Q (matmul 2x3), a, R (matmul 3x3), b], then S (matmul), t
    ops = [op(0, (0, 1, 1.0), key="p")]
    for layer in range(3):
        base = 1 + 4 * layer
        ops += [op(base, (1, 2, 1.0), kind="Dot", op_type=5, dims=(2, 3), key="q"),
                op(base + 1, (0, 1, 1.0), key="a"),
                op(base + 2, (1, 2, 1.0), kind="Dot", op_type=5, dims=(3, 3), key="r"),
                op(base + 3, (0, 1, 1.0), key="b")]
    return ops + [op(13, (1, 2, 1.0), kind="Dot", op_type=5, dims=(4, 4), key="s"),
                  op(14, (0, 1, 1.0), key="t")]


def test_layer_detection_and_groups():
    ops = _layered()
    assert detect_layer([o.key for o in ops], 3) == (1, 4)
    found = find_layer_groups(ops, 3)
    assert found.groups == ((1,), (2, 3, 4)) and found.types == (0, 1)


def test_preload_orders_permute_every_layer_alike():
    orders = preload_orders(_layered(), 3)
    assert orders == [tuple(range(15)),
                      (0, 2, 3, 4, 1, 6, 7, 8, 5, 10, 11, 12, 9, 13, 14)]


def test_reduced_permutations_keep_one_per_type_sequence():
    assert reduced_permutations([0, 0, 1]) == [(0, 1, 2), (0, 2, 1), (2, 1, 0)]
    assert reduced_permutations([0, 1, 2], max_shift=1) == [(0, 1, 2), (0, 2, 1), (1, 0, 2)]
    assert len(reduced_permutations([0, 1, 2, 3])) == 24


def test_one_layer_gives_the_identity_order():
    assert preload_orders(_reorder_ops(), 1) == [(0, 1, 2, 3)]


def test_elk_full_pruning_keeps_the_winner_and_the_bound_is_a_lower_bound():
    pb = Problem(_reorder_ops(), HBM, CORES, 1000, 1)
    orders = [(0, 1, 2, 3), (0, 2, 1, 3), (1, 0, 2, 3), (2, 0, 1, 3)]
    base = Bound.build(pb.index, pb.loads(5.5, ELK_FULL_THRESHOLD))
    for order in orders:
        for dc in (False, True):
            back = evaluate_order(pb, order, dc)
            if back is not None:  # a bound at its own latency (+ float noise) never stops it
                limited = replace(base, limit=back.latency_cycles * (1 + 1e-12))
                assert evaluate_order(pb, order, dc, limited) is not None
    pruned = schedule_elk_full(pb, orders=orders)
    plain = schedule_elk_full(pb, orders=orders, prune=False)
    assert (pruned.order, pruned.delay_comp) == (plain.order, plain.delay_comp)
    assert pruned.schedule.latency_cycles == plain.schedule.latency_cycles
    assert pruned.completed <= plain.completed
