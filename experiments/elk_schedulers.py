"""The rebuilt published schedulers beside the published artifact's own numbers (issue 17).

    python experiments/elk_schedulers.py DUMP.json LOG [LOG ...] [--layers 3]
        [--mesh M --comm C --comp P]

DUMP.json: the artifact's pickled program dumped to JSON (cold-hot tables, hot sets, the
candidate orders of order.pickle). Each LOG is the artifact's stdout for one HBM bandwidth,
given as `path` (bandwidth = the last number in the file name) or `path:GBps`; a timing
file of the same stem (`.timing`, written by --output_full_timings) is compared too,
interval by interval. Elk-Full runs over the dump's orders, in the dump's order, so that
ties pick the same winner; the rebuilt candidates must equal them as a set.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import time
from pathlib import Path

import numpy as np

from elkopt.elk.coldhot import ColdHotTable, ElkOp
from elkopt.elk.lookup import Interconnect
from elkopt.elk.orders import preload_orders
from elkopt.elk.schedulers import (ElkSchedule, Problem, schedule_basic, schedule_elk_dyn,
                                   schedule_elk_full, schedule_ideal, schedule_static)

TOLERANCE = 1e-9


def load_dump(path: str) -> tuple[list[ElkOp], dict]:
    """The dump's operators as `ElkOp`s (key = index of the shared expression)."""
    dump = json.loads(Path(path).read_text())
    tables = []
    for expr in dump["exprs"]:
        rows, hot_set = expr["cold_hot"], expr["hot_set"]
        col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
        hcol = lambda k: np.array([h[k] for h in hot_set], dtype=float)  # noqa: E731
        tables.append(ColdHotTable(
            cold=col(0).astype(np.int64), hot=col(1).astype(np.int64), total=col(10),
            exe=col(7), comp=col(8), shift=col(9), hot_set_mem=hcol(2),
            hot_set_total=hcol(3), hot_set_comp=hcol(4), hot_set_shift=hcol(5)))
    ops = [ElkOp(o["name"], o["op_type"], tuple(dump["exprs"][o["expr"]]["dims"]), o["expr"],
                 tables[o["expr"]]) for o in dump["ops"]]
    return ops, dump


def read_log(path: Path) -> dict[str, float]:
    """The `*_ms` and `*_exec_kb` lines the artifact prints."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(\w+_ms|\w+_exec_kb): (\S+)$", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def read_timing(path: Path) -> dict[str, list]:
    """Per design label, its lists: exe, load (preload order), (comp, shift), remain."""
    lines = path.read_text().splitlines()
    out, i = {}, 0
    while i < len(lines):
        name = lines[i].rstrip(":")
        k = 5 if name == "ICBM" else 4
        out[name] = [ast.literal_eval(x) for x in lines[i + 1:i + 1 + k]]
        i += 1 + k
    return out


def interval_error(s: ElkSchedule, ref: list) -> float:
    """Largest absolute difference (cycles) over every interval and NoC list."""
    order = list(s.load_order)
    pairs = [(s.exe, ref[0]), (s.load[order], ref[1]),
             (np.c_[s.comp_cycles, s.shift_cycles], ref[2]), (s.load_remain_noc[order], ref[3])]
    return max(float(np.max(np.abs(a - np.asarray(b, dtype=float)))) for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump")
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--mesh", type=float, default=0.0)
    parser.add_argument("--comm", type=float, default=1.0)
    parser.add_argument("--comp", type=float, default=1.0)
    args = parser.parse_args()
    ops, dump = load_dump(args.dump)
    cores, sram = int(np.prod(dump["num_cores"])), dump["sram"]
    ic = Interconnect(args.mesh, args.comm, args.comp)
    start = time.perf_counter()
    mine = preload_orders(ops, args.layers)
    t_orders = time.perf_counter() - start
    theirs = [tuple(o) for o in dump.get("orders", [])] or mine
    same = set(mine) == set(theirs)
    print(f"{len(ops)} ops, {len(dump['exprs'])} tables, {cores} cores; orders: {len(mine)} "
          f"rebuilt in {t_orders:.3f} s, {'equal to' if same else 'DIFFERENT from'} the "
          f"dump's {len(theirs)} (as a set)")
    failures = 0
    for spec in args.logs:
        path, _, bw = spec.partition(":")
        path = Path(path)
        hbm = float(bw) if bw else float(re.findall(r"\d+", path.stem)[-1])
        log = read_log(path)
        timing_path = path.with_suffix(".timing")
        timing = read_timing(timing_path) if timing_path.exists() else {}
        pb = Problem(ops, hbm, cores, sram, args.layers, ic)
        times, results = {}, {}
        for name, run in [("basic", schedule_basic), ("static", schedule_static),
                          ("elk_dyn", schedule_elk_dyn), ("ideal", schedule_ideal),
                          ("elk_full", lambda p: schedule_elk_full(p, orders=theirs))]:
            t0 = time.perf_counter()
            results[name] = run(pb)
            times[name] = time.perf_counter() - t0
        b, st, dy, ideal, full = (results[k] for k in times)
        rows = [
            ("Basic", "naive_ms", b.schedule, "Naive"),
            ("Static min-cold", "base_min_cold_ms", st.min_cold, "Min Cold"),
            ("Static max-cold", "base_max_cold_ms", st.max_cold, "Max Cold"),
            ("Elk-Dyn (printed)", "icbm_ordered_ms", dy.by_threshold[dy.printed_threshold],
             "ICBM Ordered"),
            ("Ideal", "ideal_ms", ideal, "Ideal"),
            ("Elk-Full", "icbm_ms", full.schedule, "ICBM"),
        ]
        print(f"\n{path.name}: {hbm:g} GB/s  (times: " + ", ".join(
            f"{k} {v:.3f} s" for k, v in times.items()) + ")")
        print(f"  {'design':18s} {'mine ms':>18s} {'artifact ms':>18s} {'rel diff':>9s} "
              f"{'exe+load':>9s} {'intervals':>10s}")
        for label, key, sched, tname in rows:
            if key not in log:
                print(f"  {label:18s} {sched.latency_ms:18.12f} {'(not in the log)':>18s}")
                continue
            ref = log[key]
            rel = abs(sched.latency_ms - ref) / abs(ref)
            # the printed sums of execution and load durations
            sums = max(abs(sched.exe_ms - log.get(key[:-3] + "_exe_ms", np.nan)),
                       abs(sched.load_ms - log.get(key[:-3] + "_load_ms", np.nan))) / abs(ref)
            err = interval_error(sched, timing[tname]) if tname in timing else float("nan")
            ok = rel <= TOLERANCE and sums <= TOLERANCE
            ok = ok and not err > TOLERANCE * abs(sched.latency_cycles)
            failures += not ok
            print(f"  {label:18s} {sched.latency_ms:18.12f} {ref:18.12f} {rel:9.1e} "
                  f"{sums:9.1e} {err:10.3g} {'ok' if ok else 'MISMATCH'}")
        print(f"  Static exec KiB: min-cold {st.min_cold_exec_kb} "
              f"({log.get('base_min_cold_exec_kb', float('nan')):g}), max-cold "
              f"{st.max_cold_exec_kb} ({log.get('base_max_cold_exec_kb', float('nan')):g}); "
              f"Elk-Dyn best {dy.schedule.latency_ms:.12f} at {dy.threshold}, printed at "
              f"{dy.printed_threshold}")
        if "ICBM" in timing:
            same_order = list(full.order) == timing["ICBM"][4]
            print(f"  Elk-Full: delay_comp {full.delay_comp}, {full.completed}/{full.runs} runs "
                  f"completed, winning order {'equal to' if same_order else 'differs from'} "
                  "the artifact's")
        t0 = time.perf_counter()
        plain = schedule_elk_full(pb, orders=theirs, prune=False)
        t_plain = time.perf_counter() - t0
        agree = (plain.schedule.latency_cycles == full.schedule.latency_cycles
                 and plain.order == full.order and plain.delay_comp == full.delay_comp)
        failures += not agree
        print(f"  Elk-Full without pruning: {t_plain:.3f} s, {plain.completed} runs completed, "
              f"{'same winner' if agree else 'DIFFERENT winner'}")
        if set(mine) != set(theirs) or mine != theirs:
            own = schedule_elk_full(pb, orders=mine).schedule.latency_ms
            print(f"  Elk-Full over the rebuilt order list: {own:.12f}")
    print(f"\n{'all match' if not failures and same else f'{failures} mismatches'}")


if __name__ == "__main__":
    main()
