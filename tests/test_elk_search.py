"""elkopt's search in the published model (`elkopt.elk.search`, scheduler=elkopt under
conventions.published_plans).

The problems are hand-made layers: odd operators are matmul-like, with HBM data and rows
whose cold layout is the unique bytes or 2x / 4x replicated (faster, but their loads keep
the NoC busier); even operators have no HBM data and are shift-heavy (a reduction), so
they stall when they overlap a load that leaves little NoC time idle. 1024 cores at
2816 GB/s make the NoC/HBM ratio 2, as on the published machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from elkopt.elk.coldhot import ColdHotTable, ElkOp
from elkopt.elk.lookup import TableIndex
from elkopt.elk.schedulers import Problem, evaluate_order, schedule_elk_full
from elkopt.elk.search import pareto_rows, search_published
from elkopt.elk.timing import check_elk_schedule
from test_cli import run_cli


def table(rows: list[tuple[int, int, float, float]]) -> ColdHotTable:
    """A table from (cold, hot, compute cycles, shift cycles) rows."""
    rows = sorted(rows)
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    comp, shift = col(2).astype(float), col(3).astype(float)
    one = np.ones(1)
    return ColdHotTable(cold=col(0), hot=col(1), total=comp + shift, exe=comp + shift, comp=comp, shift=shift,
                        hot_set_mem=one, hot_set_total=one, hot_set_comp=one, hot_set_shift=one)


def problem(seed: int, per: int = 4, layers: int = 3) -> Problem:
    rng = np.random.default_rng(seed)
    tables = []
    for j in range(per):
        if j % 2:
            unique = int(rng.integers(2000, 20000))
            rows = [(unique * rep, int(unique * rep * h), float(rng.integers(1000, 20000)) / rep ** 0.5 / h,
                     float(rng.integers(200, 4000))) for rep in (1, 2, 4) for h in (1.1, 1.5, 2.5)]
            tables.append(table(rows))
        else:
            tables.append(table([(0, 100, float(rng.integers(50, 500)), float(rng.integers(500, 8000))),
                                 (0, 200, float(rng.integers(300, 800)), float(rng.integers(300, 5000)))]))
    ops = [ElkOp(f"Op_{k * per + j}_{'Dot' if j % 2 else 'Sum'}", 5 if j % 2 else 2, (1,), j, tables[j])
           for k in range(layers) for j in range(per)]
    return Problem(ops, 2816.0, 1024, 200_000, layers)


def test_pareto_rows_drop_dominated_and_repeated_rows():
    t = TableIndex(table([
        (10, 20, 100.0, 10.0),   # 0: the smallest
        (10, 30, 100.0, 10.0),   # 1: needs more SRAM for nothing: dominated by 0
        (10, 40, 50.0, 10.0),    # 2: faster
        (20, 40, 40.0, 10.0),    # 3: faster still, with more cold bytes
        (20, 40, 40.0, 10.0),    # 4: the same as 3
        (20, 50, 45.0, 5.0),     # 5: slower than 3 but lighter on the NoC
    ]))
    assert pareto_rows(t) == [0, 2, 3, 5]


def test_preferred_rows_stand_only_where_they_fit():
    pb = problem(1)
    full = schedule_elk_full(pb)
    plain = evaluate_order(pb, full.order, full.delay_comp)
    assert plain.latency_cycles == full.schedule.latency_cycles
    # a row needing more SRAM than there is never runs: the published pick stands
    big = table([(10, 100, 900.0, 100.0), (300_000, 300_000, 1.0, 1.0)])
    ops = [ElkOp("Op_0_Dot", 5, (1,), 0, big), ElkOp("Op_1_Dot", 5, (1,), 0, big)]
    tiny = Problem(ops, 2816.0, 1024, 200_000, 1)
    base = evaluate_order(tiny, [0, 1], True)
    preferred = evaluate_order(tiny, [0, 1], True, prefer={0: 1, 1: 1})
    assert preferred.row.tolist() == base.row.tolist() == [0, 0]


@pytest.mark.parametrize("seed", range(8))
def test_the_search_is_never_slower_than_elk_full_and_its_schedule_is_valid(seed):
    pb = problem(seed)
    full = schedule_elk_full(pb)
    res = search_published(pb, full)
    assert res.schedule.latency_cycles <= full.schedule.latency_cycles
    assert res.start_cycles == full.schedule.latency_cycles
    assert check_elk_schedule(res.schedule, pb) == []
    # the schedule is what the published engine gives for the decisions reported
    prefer = {i: res.rows[op.key] for i, op in enumerate(pb.ops) if op.key in res.rows}
    again = evaluate_order(pb, res.order, res.delay_comp, prefer=prefer)
    assert again.latency_cycles == res.schedule.latency_cycles
    assert again.row.tolist() == res.schedule.rows.tolist()
    # one decision per table, among its Pareto rows
    for key, row in res.rows.items():
        first = next(i for i, op in enumerate(pb.ops) if op.key == key)
        assert row in pareto_rows(pb.index[first])


def test_a_row_that_keeps_the_noc_free_beats_the_published_pick():
    # seed 1: the published pick for the matmul is its replicated, fastest row, whose load
    # leaves the reduction next to it no idle NoC time; the search takes a lighter row
    pb = problem(1)
    full = schedule_elk_full(pb)
    res = search_published(pb, full)
    assert res.gain > 0.05
    key, row = next(iter(res.rows.items()))
    t = pb.index[[op.key for op in pb.ops].index(key)]
    i = next(i for i, op in enumerate(pb.ops) if op.key == key)
    published = full.schedule.rows[i]
    assert t.exe_list[row] > t.exe_list[published]  # slower on its own ...
    assert t.cold_list[row] < t.cold_list[published]  # ... but its load is lighter on the NoC


def test_the_search_is_deterministic_and_keeps_to_its_trials():
    pb = problem(11)
    a, b = search_published(pb), search_published(pb)
    assert a.rows == b.rows and a.order == b.order and a.schedule.latency_cycles == b.schedule.latency_cycles
    assert a.gain > 0
    short = search_published(pb, max_trials=3)
    assert short.trials <= 3
    assert short.schedule.latency_cycles >= a.schedule.latency_cycles


def test_cli_elkopt_in_the_published_model(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "conventions=published", "scheduler=elkopt")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["scheduler"] == "elkopt" and metrics["reference_designs"] == "published"
    assert metrics["latency_ms"] <= metrics["elk_full_ms"]
    assert metrics["latency_ms"] >= metrics["lower_bound_ms"]
    assert metrics["stats"]["search_trials"] > 0
    gain = 1 - metrics["latency_ms"] / metrics["elk_full_ms"]
    assert metrics["stats"]["search_gain_vs_elk_full"] == pytest.approx(gain, abs=1e-6)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["design"] == "elkopt" and "delay_comp" in plan["choices"]
    assert plan["ops"][-1]["exec"][1] == pytest.approx(metrics["latency_cycles"])
    # without the published plans, elkopt is its own pipeline
    (tmp_path / "own").mkdir()
    other = run_cli(tmp_path / "own", "model=tiny", "conventions=published_graphs", "scheduler=elkopt")
    assert other.returncode == 0, other.stderr
    own = json.loads((tmp_path / "own" / "run" / "metrics.json").read_text())
    assert own["reference_designs"] == "elkopt"
