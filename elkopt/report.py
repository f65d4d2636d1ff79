"""Schedules to and from JSON-ready dicts, and atomic JSON files.

`schedule_to_dict` / `schedule_from_dict` round-trip a `Schedule` exactly:
integers stay integers and floats are written with Python's shortest
round-trip repr, so `schedule_from_dict(json.loads(json.dumps(d)))` equals
the original. Op names are written for the reader and ignored on the way back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from elkopt.plans.option import Plan, PlanOption
from elkopt.schedule.schedule import OpSchedule, Schedule

#: Identifies the layout of plan.json; bump when it changes incompatibly.
PLAN_FORMAT = "elkopt.plan/1"


def schedule_to_dict(schedule: Schedule, op_names: Sequence[str]) -> dict[str, Any]:
    """A JSON-ready dict of every decision in `schedule` (bytes per core, cycles).

    Example: ``schedule_to_dict(s, names)["ops"][0]["option"]["plan"]["spatial"]``.
    """
    if len(op_names) != len(schedule.ops):
        raise ValueError(f"{len(op_names)} op names for {len(schedule.ops)} scheduled ops")
    return {
        "format": PLAN_FORMAT,
        "scheduler": schedule.scheduler,
        "preload_order": list(schedule.preload_order),
        "ops": [_op_to_dict(op, name) for op, name in zip(schedule.ops, op_names)],
    }


def _op_to_dict(op: OpSchedule, name: str) -> dict[str, Any]:
    option = op.option
    return {
        "op": op.op,
        "name": name,
        "preload_window": op.preload_window,
        "hbm_bytes": op.hbm_bytes,
        "write_bytes": op.write_bytes,
        **({"load_after": list(op.load_after)} if op.load_after else {}),  # a routed expert's router
        "option": {
            "plan": {
                "spatial": list(option.plan.spatial),
                "temporal": [list(t) for t in option.plan.temporal],
            },
            "cold_bytes": option.cold_bytes,
            "hot_bytes": option.hot_bytes,
            "exec_cycles": option.exec_cycles,
            "exchange_cycles": option.exchange_cycles,
            "distribution_cycles": option.distribution_cycles,
            "cold_split": list(option.cold_split),
        },
    }


def schedule_from_dict(d: dict[str, Any]) -> Schedule:
    """Rebuild the `Schedule` written by `schedule_to_dict`."""
    if d.get("format", PLAN_FORMAT) != PLAN_FORMAT:
        raise ValueError(f"plan format {d['format']!r}, expected {PLAN_FORMAT!r}")
    ops = []
    for row in d["ops"]:
        o = row["option"]
        plan = Plan(
            spatial=tuple(o["plan"]["spatial"]),
            temporal=tuple(tuple(t) for t in o["plan"]["temporal"]),
        )
        option = PlanOption(
            plan=plan,
            cold_bytes=o["cold_bytes"],
            hot_bytes=o["hot_bytes"],
            exec_cycles=o["exec_cycles"],
            exchange_cycles=o["exchange_cycles"],
            distribution_cycles=o["distribution_cycles"],
            cold_split=tuple(o["cold_split"]),
        )
        ops.append(OpSchedule(op=row["op"], option=option,
                              preload_window=row["preload_window"], hbm_bytes=row["hbm_bytes"],
                              write_bytes=row.get("write_bytes", 0),  # plans written before HBM writes
                              load_after=tuple(row.get("load_after", ()))))  # ... and before router waits
    return Schedule(ops=tuple(ops), preload_order=tuple(d["preload_order"]),
                    scheduler=d.get("scheduler", ""))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from dataclasses, enums, paths, numpy scalars and arrays.

    Non-finite floats become None (JSON has no NaN or infinity).
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, without importing numpy
        return to_jsonable(obj.tolist())
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON to `path` atomically (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n")


def plan_json_text(plan: dict[str, Any]) -> str:
    """plan.json text: the header fields indented, then one line per operator (grep-friendly)."""
    plan = to_jsonable(plan)
    head = {k: v for k, v in plan.items() if k != "ops"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}," for k, v in head.items()]
    ops = [f"    {json.dumps(op, allow_nan=False)}" for op in plan.get("ops", [])]
    return "{\n" + "\n".join(lines) + '\n  "ops": [\n' + ",\n".join(ops) + "\n  ]\n}\n"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and os.replace.

    A reader sees the old file or the whole new one, never a partial write.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_path_for(path: Path) -> Path:
    """A fresh hidden sibling of `path` to write before os.replace (same file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
