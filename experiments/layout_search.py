"""Would other preload layouts shorten elkopt's steady-state layer? A greedy local search.

    python experiments/layout_search.py                               # Llama2-13B b32 KV 4096
    python experiments/layout_search.py --model gemma2_27b --batch 64 --kv-len 2048

A load's preload layout sets its interconnect rate (how hard it contends with exchange)
and the distribution its operator pays before executing. elkopt keeps the layouts the
inductive scheduler chose. This script compiles the configuration as `python -m elkopt.run`
does, then, for each load of a middle layer (longest first, those of at least 1% of the
layer), tries every other preload layout of its operator (per spatial split and cold
split, the fastest row of the plan table) in that layer, times the layer exactly
(`elkopt.schedule.loadtiming.best_offsets`, the cuts elkopt tries), and keeps a layout when
the layer gets shorter.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import PlanTable, default_cache_dir
from elkopt.schedule.loadtiming import best_offsets
from elkopt.schedule.periodic import find_layers, layer_loads, seam_candidates
from elkopt.schedule.schedule import Schedule
from elkopt.solve import SolverOptions


def layouts(table: PlanTable) -> list[int]:
    """Per preload layout (spatial split, cold split) the fastest row of the table."""
    best: dict[tuple, int] = {}
    for row in range(len(table)):
        key = (tuple(table.spatial[row]), tuple(table.cold_split[row]))
        if key not in best or table.total_cycles[row] < table.total_cycles[best[key]]:
            best[key] = row
    return list(best.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=4096)
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    chip = Chip(name="ipu_pod4", n_chips=4)
    result = compile_model(build_graph(args.model, "decode", args.batch, args.kv_len), chip, "elkopt",
                           PlanningOptions(cache_dir=str(cache), plan_space=args.plan_space),
                           solver=SolverOptions(max_nodes=200))
    graph, tables = result.graph, result.tables
    block = find_layers([op.signature for op in graph.ops])
    first = block.start + (block.count // 2) * block.period
    max_offset = min(PlanningOptions.max_preload_ops, block.period)

    def layer_period(schedule: Schedule) -> float:
        layer = layer_loads(schedule, chip, first, block.period, max_offset)
        timing = best_offsets(layer, seam_candidates(layer))
        return timing.period if timing is not None else float("inf")

    start = time.perf_counter()
    schedule = result.schedule
    base = best = layer_period(schedule)
    layer = layer_loads(schedule, chip, first, block.period, max_offset)
    print(f"{graph.name}: elkopt {result.timeline.latency_ms:.3f} ms; steady-state layer "
          f"{base:,.0f} cycles, {layer.n_loads} loads")
    for h in np.argsort(-layer.duration, kind="stable"):
        if layer.duration[h] < 0.01 * layer.nominal.sum():
            continue
        j = first + int(layer.load_op[h])
        own = schedule.ops[j].option
        tried, kept = 0, None
        for row in layouts(tables[j]):
            option = tables[j].option(row)
            if option == own:
                continue
            ops = list(schedule.ops)
            ops[j] = replace(ops[j], option=option)
            candidate = replace(schedule, ops=tuple(ops))
            period = layer_period(candidate)
            tried += 1
            if period < best - 1e-6:
                best, kept = period, candidate
        note = ""
        if kept is not None:
            schedule = kept
            note = f"; kept cold {kept.ops[j].option.cold_bytes:,} B (was {own.cold_bytes:,}), layer {best:,.0f}"
        print(f"  {graph.ops[j].name}: load {layer.duration[h]:,.0f} cycles at rate "
              f"{layer.rate[h]:.2f}, {tried} other layouts{note}")
    print(f"layer {base:,.0f} -> {best:,.0f} cycles ({100 * (best / base - 1):+.2f}%), "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
