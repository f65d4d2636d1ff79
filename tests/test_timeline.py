"""Timeline, checker and trace on tiny hand-checkable schedules.

Test chip: 100 HBM bytes per cycle, 50 interconnect bytes per cycle (4 cores x
12.5 B/cycle), 1000 B of SRAM per core, 1 GHz. Every plan uses one core, so a
load's interconnect bytes equal its cold bytes.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from elkopt.chip import Chip
from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.checker import ScheduleError, assert_valid, check_schedule
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule
from elkopt.schedule.timeline import compute_timeline
from elkopt.schedule.trace import write_chrome_trace

CHIP = Chip(
    name="t", cores_per_chip=4, sram_bytes_per_core=1000, clock_hz=1e9,
    hbm_bytes_per_s=1e11, core_link_bytes_per_s=12.5e9,
)


def op(i, exec_cycles, hbm=0, cold=0, hot=200, window=PROLOGUE, exchange=0.0, distribution=0.0):
    option = PlanOption(
        plan=Plan((1,), ((1,),)), cold_bytes=cold, hot_bytes=hot, exec_cycles=exec_cycles,
        exchange_cycles=exchange, distribution_cycles=distribution,
    )
    return OpSchedule(op=i, option=option, preload_window=window, hbm_bytes=hbm)


def two_prologue_loads(exchange=0.0):
    """load0: 10 cycles (HBM 10, NoC 10); load1: 20 cycles (HBM 20, NoC 10, rate 0.5)."""
    return Schedule(
        ops=(
            op(0, 25, hbm=1000, cold=500, exchange=exchange, distribution=5),
            op(1, 50, hbm=2000, cold=500),
        ),
        preload_order=(0, 1),
    )


def preload_in_window():
    """op0 has no data; op1 loads during op0 (30 cycles), op2 during op1 (10 cycles)."""
    return Schedule(
        ops=(
            op(0, 100),
            op(1, 10, hbm=3000, cold=500, window=0),
            op(2, 5, hbm=1000, cold=500, window=1),
        ),
        preload_order=(1, 2),
    )


CHAIN = [[], [0], [1]]


def test_chip_rates_are_round():
    assert CHIP.hbm_bytes_per_cycle == 100
    assert CHIP.noc_bytes_per_cycle == 50


def test_prologue_loads_are_sequential():
    tl = compute_timeline(two_prologue_loads(), CHIP)
    np.testing.assert_allclose(tl.hbm_cycles, [10, 20])
    np.testing.assert_allclose(tl.noc_cycles, [10, 10])
    np.testing.assert_allclose(tl.load_start, [0, 10])
    np.testing.assert_allclose(tl.load_end, [10, 30])
    # op0 waits for its load; 30 cycles (25 exec + 5 distribution).
    np.testing.assert_allclose(tl.exec_start, [10, 40])
    np.testing.assert_allclose(tl.exec_end, [40, 90])
    # busy = 20 cycles of load1 x rate 0.5 = 10; exchange 5 + 10 <= 30: no stall.
    np.testing.assert_allclose(tl.stall, [0, 0])
    assert tl.latency_cycles == 90
    assert tl.latency_ms == pytest.approx(90e-6)
    assert tl.breakdown() == {
        "preload_only": 10, "execute_only": 60, "overlapped": 20,
        "interconnect_stall": 0, "idle": 0,
    }


def test_interconnect_stall_is_exact():
    tl = compute_timeline(two_prologue_loads(exchange=20), CHIP)
    # exchange 20 + distribution 5 + busy 10 - nominal 30 = 5 cycles of stall.
    np.testing.assert_allclose(tl.stall, [5, 0])
    np.testing.assert_allclose(tl.exec_start, [10, 45])
    np.testing.assert_allclose(tl.exec_end, [45, 95])
    parts = tl.breakdown()
    assert parts == {
        "preload_only": 10, "execute_only": 60, "overlapped": 20,
        "interconnect_stall": 5, "idle": 0,
    }
    assert sum(parts.values()) == pytest.approx(tl.latency_cycles)
    assert tl.hbm_util == pytest.approx(30 / 95)
    assert tl.noc_util == pytest.approx((10 + 10 + 25) / 95)


def test_preload_during_previous_op():
    tl = compute_timeline(preload_in_window(), CHIP)
    # load1 starts with op0 at 0 and hides under it; load2 waits for op1 to start.
    np.testing.assert_allclose(tl.load_start, [np.nan, 0, 100])
    np.testing.assert_allclose(tl.load_end, [np.nan, 30, 110])
    np.testing.assert_allclose(tl.exec_start, [0, 100, 110])
    np.testing.assert_allclose(tl.exec_end, [100, 110, 115])
    assert tl.latency_cycles == 115
    parts = tl.breakdown()
    assert parts == {
        "preload_only": 0, "execute_only": 75, "overlapped": 40,
        "interconnect_stall": 0, "idle": 0,
    }


def test_sram_profile_hot_plus_waiting_cold():
    tl = compute_timeline(preload_in_window(), CHIP)
    times, used = tl.sram_profile()
    np.testing.assert_allclose(times, [0, 100, 110, 115])
    # op0 hot + op1 cold; op1 hot + op2 cold (its load started at 100); op2 hot; nothing.
    np.testing.assert_array_equal(used, [700, 700, 200, 0])
    assert tl.peak_sram_bytes == 700


def test_preload_order_may_differ_from_program_order():
    schedule = Schedule(
        ops=(op(0, 100, hbm=1000, cold=100), op(1, 100, hbm=2000, cold=100)),
        preload_order=(1, 0),
    )
    tl = compute_timeline(schedule, CHIP)
    np.testing.assert_allclose(tl.load_start, [20, 0])
    np.testing.assert_allclose(tl.load_end, [30, 20])
    np.testing.assert_allclose(tl.exec_start, [30, 130])
    assert check_schedule(schedule, CHIP, [[], [0]]) == []


def test_waiting_for_a_load_is_preload_only_and_tflops():
    # op1's 50-cycle load is issued with op0 and outlasts it.
    schedule = Schedule(
        ops=(op(0, 10), op(1, 10, hbm=5000, cold=100, window=0)),
        preload_order=(1,),
    )
    tl = compute_timeline(schedule, CHIP, flops=[1_000_000, 1_000_000])
    np.testing.assert_allclose(tl.exec_start, [0, 50])
    assert tl.breakdown() == {
        "preload_only": 40, "execute_only": 10, "overlapped": 10,
        "interconnect_stall": 0, "idle": 0,
    }
    # 2e6 FLOP in 60 ns.
    assert tl.tflops == pytest.approx(2e6 / 60e-9 / 1e12)
    assert compute_timeline(schedule, CHIP).tflops is None


def test_deadlock_raises_naming_both_ops():
    # op1's load is queued behind op2's, which is issued during op1.
    schedule = Schedule(
        ops=(op(0, 10), op(1, 10, hbm=100, cold=10, window=0),
             op(2, 10, hbm=100, cold=10, window=1)),
        preload_order=(2, 1),
    )
    with pytest.raises(ScheduleError, match=r"op 1 .*op 2"):
        compute_timeline(schedule, CHIP)
    problems = check_schedule(schedule, CHIP, CHAIN)
    assert any("op 1: deadlock" in p for p in problems)


def test_checker_accepts_valid_schedules():
    for schedule, deps in [
        (two_prologue_loads(), [[], [0]]),
        (two_prologue_loads(exchange=20), [[], [0]]),
        (preload_in_window(), CHAIN),
    ]:
        assert check_schedule(schedule, CHIP, deps) == []
        assert_valid(schedule, CHIP, deps, compute_timeline(schedule, CHIP))


def test_checker_rejects_sram_overflow():
    schedule = preload_in_window()
    big = dataclasses.replace(schedule.ops[1].option, cold_bytes=900)
    schedule = dataclasses.replace(
        schedule, ops=(schedule.ops[0], dataclasses.replace(schedule.ops[1], option=big),
                       schedule.ops[2]),
    )
    problems = check_schedule(schedule, CHIP, CHAIN)
    assert problems == [
        "op 1: SRAM 1100 B > 1000 B at cycle 0.0 (hot 200 of op 0 + cold of ops 1)"
    ]
    with pytest.raises(ValueError, match="SRAM 1100 B"):
        assert_valid(schedule, CHIP, CHAIN)


def test_checker_rejects_hot_over_usable():
    schedule = Schedule(ops=(op(0, 10, hot=1200),), preload_order=())
    problems = check_schedule(schedule, CHIP, [[]])
    assert "op 0: hot 1200 B > usable SRAM 1000 B" in problems


def test_checker_rejects_load_after_its_op():
    schedule = preload_in_window()
    tl = compute_timeline(schedule, CHIP)
    late = dataclasses.replace(
        tl, load_start=np.array([np.nan, 0, 105]), load_end=np.array([np.nan, 30, 115])
    )
    problems = check_schedule(schedule, CHIP, CHAIN, late)
    assert problems == ["op 2: load ends at cycle 115.0 after the op starts at cycle 110.0"]


def test_checker_rejects_load_before_window_and_overlapping_loads():
    schedule = preload_in_window()
    tl = compute_timeline(schedule, CHIP)
    early = dataclasses.replace(
        tl, load_start=np.array([np.nan, 0, 20]), load_end=np.array([np.nan, 30, 30])
    )
    problems = check_schedule(schedule, CHIP, CHAIN, early)
    assert any("op 2: load starts at cycle 20.0 before its window op 1" in p for p in problems)
    assert any("before the previous load in preload_order (op 1)" in p for p in problems)


def test_checker_rejects_overlapping_execution():
    schedule = preload_in_window()
    tl = compute_timeline(schedule, CHIP)
    squeezed = dataclasses.replace(
        tl, exec_start=np.array([0.0, 95, 110]), exec_end=np.array([100.0, 105, 115])
    )
    problems = check_schedule(schedule, CHIP, CHAIN, squeezed)
    assert "op 1: starts at cycle 95.0 before op 0 ends at cycle 100.0" in problems


def test_checker_rejects_dependency_violation():
    schedule = preload_in_window()
    problems = check_schedule(schedule, CHIP, [[], [2], [1]])
    assert problems == ["op 1: starts at cycle 100.0 before its input op 2 ends at cycle 115.0"]


def test_checker_rejects_wrong_preload_order():
    base = preload_in_window()
    missing = dataclasses.replace(base, preload_order=(1,))
    assert "op 2: has 1000 HBM bytes but is not in preload_order" in check_schedule(
        missing, CHIP, CHAIN
    )
    twice = dataclasses.replace(base, preload_order=(1, 2, 2))
    assert "op 2: appears 2 times in preload_order" in check_schedule(twice, CHIP, CHAIN)
    no_data = dataclasses.replace(base, preload_order=(0, 1, 2))
    assert "op 0: in preload_order but has no HBM data" in check_schedule(no_data, CHIP, CHAIN)


def test_checker_rejects_window_after_op():
    base = preload_in_window()
    late = dataclasses.replace(base.ops[1], preload_window=2)
    schedule = dataclasses.replace(base, ops=(base.ops[0], late, base.ops[2]))
    problems = check_schedule(schedule, CHIP, CHAIN)
    assert "op 1: preload_window 2 not in [-1, 1]" in problems
    assert any("op 1: deadlock" in p for p in problems)


def test_own_window_loads_after_the_previous_op():
    base = preload_in_window()
    own = dataclasses.replace(base.ops[2], preload_window=2)
    schedule = dataclasses.replace(base, ops=(base.ops[0], base.ops[1], own))
    tl = compute_timeline(schedule, CHIP)
    # load2 (10 cycles) waits for op1 to end at 110, then op2 waits for it
    np.testing.assert_allclose(tl.load_start, [np.nan, 0, 110])
    np.testing.assert_allclose(tl.exec_start, [0, 100, 120])
    assert tl.latency_cycles == 125
    assert check_schedule(schedule, CHIP, CHAIN, tl) == []
    # its load then holds no SRAM beside op1's execution
    times, used = tl.sram_profile()
    assert used[np.searchsorted(times, 105, side="right") - 1] == 200
    times, used = compute_timeline(base, CHIP).sram_profile()
    assert used[np.searchsorted(times, 105, side="right") - 1] == 700


def test_checker_rejects_wrong_op_index():
    base = preload_in_window()
    schedule = dataclasses.replace(
        base, ops=(base.ops[0], base.ops[1], dataclasses.replace(base.ops[2], op=7))
    )
    assert "op 2: ops[2].op is 7" in check_schedule(schedule, CHIP, CHAIN)


def test_chrome_trace_has_lanes(tmp_path):
    schedule = two_prologue_loads(exchange=20)
    tl = compute_timeline(schedule, CHIP)
    path = tmp_path / "trace.json"
    write_chrome_trace(path, tl, schedule, ["matmul", "add"], CHIP)
    trace = json.loads(path.read_text())
    assert trace["displayTimeUnit"] == "ns"
    events = trace["traceEvents"]
    lanes = {e["args"]["name"]: e["tid"] for e in events if e.get("name") == "thread_name"}
    assert set(lanes) == {"execute", "HBM load", "interconnect stall"}
    spans = [e for e in events if e["ph"] == "X"]
    by_lane = {name: [e for e in spans if e["tid"] == tid] for name, tid in lanes.items()}
    assert [e["name"] for e in by_lane["execute"]] == ["matmul", "add"]
    assert [e["name"] for e in by_lane["HBM load"]] == ["matmul", "add"]
    # 1 GHz: one cycle is 1e-3 us; op0 runs [10, 45] cycles with a 5-cycle stall at the end.
    first = by_lane["execute"][0]
    assert first["ts"] == pytest.approx(0.010) and first["dur"] == pytest.approx(0.035)
    assert first["args"]["hot_bytes"] == 200 and first["args"]["spatial"] == [1]
    (stall,) = by_lane["interconnect stall"]
    assert stall["ts"] == pytest.approx(0.040) and stall["dur"] == pytest.approx(0.005)


def test_random_timelines_pass_the_independent_checker():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 10))
        ops = []
        for i in range(n):
            loaded = bool(rng.random() < 0.7)
            ops.append(op(
                i, int(rng.integers(1, 50)), hbm=int(rng.integers(1, 3000)) if loaded else 0,
                cold=int(rng.integers(0, 400)) if loaded else 0, hot=int(rng.integers(0, 600)),
                window=int(rng.integers(max(-1, i - 3), i)) if loaded else PROLOGUE,
                exchange=float(rng.integers(0, 30)), distribution=float(rng.integers(0, 5)),
            ))
        # Ordering loads by window can never deadlock.
        order = sorted((j for j in range(n) if ops[j].has_load),
                       key=lambda j: (ops[j].preload_window, rng.random()))
        schedule = Schedule(tuple(ops), tuple(order))
        tl = compute_timeline(schedule, CHIP)
        problems = check_schedule(schedule, CHIP, [[i - 1] if i else [] for i in range(n)], tl)
        sram = [p for p in problems if "SRAM" in p]
        assert len(sram) == len(problems)
        assert (tl.peak_sram_bytes > CHIP.usable_sram_bytes_per_core) == bool(sram)
        assert sum(tl.breakdown().values()) == pytest.approx(tl.latency_cycles)
