"""plan.json round trip and atomic JSON writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from elkopt.plans.option import Plan, PlanOption
from elkopt.report import (
    plan_json_text, schedule_from_dict, schedule_to_dict, to_jsonable, write_json_atomic,
)
from elkopt.schedule.schedule import PROLOGUE, OpSchedule, Schedule


def hand_made_schedule() -> Schedule:
    dot = PlanOption(
        plan=Plan(spatial=(4, 8, 2), temporal=((1, 1, 1), (2, 1, 2), (1, 4, 2))),
        cold_bytes=40_960, hot_bytes=122_880,
        exec_cycles=12_345.678901234567, exchange_cycles=1_000.1, distribution_cycles=0.1 + 0.2,
        cold_split=(4,),
    )
    add = PlanOption(plan=Plan(spatial=(64,), temporal=((1, 1, 1),)), cold_bytes=0,
                     hot_bytes=3_072, exec_cycles=500.0, exchange_cycles=118.0,
                     distribution_cycles=0.0)
    ops = (
        OpSchedule(op=0, option=dot, preload_window=PROLOGUE, hbm_bytes=10_485_760),
        OpSchedule(op=1, option=add, preload_window=0, hbm_bytes=0),
        OpSchedule(op=2, option=dot, preload_window=0, hbm_bytes=10_485_760),
    )
    return Schedule(ops=ops, preload_order=(2, 0), scheduler="static")


def test_round_trip_is_exact_through_json():
    schedule = hand_made_schedule()
    d = schedule_to_dict(schedule, ["l0.q", "l0.add", "l1.q"])
    back = schedule_from_dict(json.loads(json.dumps(d)))
    assert back == schedule
    assert back.ops[0].option.distribution_cycles == 0.1 + 0.2  # floats bit-exact
    assert isinstance(back.ops[0].option.plan.temporal[1], tuple)


def test_dict_is_readable():
    d = schedule_to_dict(hand_made_schedule(), ["l0.q", "l0.add", "l1.q"])
    assert d["scheduler"] == "static" and d["preload_order"] == [2, 0]
    first = d["ops"][0]
    assert first["name"] == "l0.q" and first["preload_window"] == PROLOGUE
    assert first["option"]["plan"]["spatial"] == [4, 8, 2]
    assert first["option"]["cold_split"] == [4]


def test_names_must_match_ops():
    with pytest.raises(ValueError, match="2 op names for 3"):
        schedule_to_dict(hand_made_schedule(), ["a", "b"])


def test_write_json_atomic(tmp_path):
    path = tmp_path / "plan.json"
    d = schedule_to_dict(hand_made_schedule(), ["a", "b", "c"])
    write_json_atomic(path, d)
    assert schedule_from_dict(json.loads(path.read_text())) == hand_made_schedule()
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"latency_ms": 1.0})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"latency_ms": object()})
    assert json.loads(path.read_text()) == {"latency_ms": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_to_jsonable_numpy_and_non_finite():
    data = {"n": np.int64(3), "x": np.float64(0.5), "a": np.arange(2), "inf": float("inf")}
    assert to_jsonable(data) == {"n": 3, "x": 0.5, "a": [0, 1], "inf": None}


def test_plan_json_text_is_one_op_per_line():
    d = schedule_to_dict(hand_made_schedule(), ["a", "b", "c"])
    text = plan_json_text(d)
    assert json.loads(text) == json.loads(json.dumps(d))
    op_lines = [line for line in text.splitlines() if line.lstrip().startswith('{"op"')]
    assert len(op_lines) == 3
    assert schedule_from_dict(json.loads(text)) == hand_made_schedule()
