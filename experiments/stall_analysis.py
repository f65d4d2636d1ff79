"""Where elkopt's plan loses time to interconnect contention, and whether a plan could avoid it.

    python experiments/stall_analysis.py                              # Llama2-13B b32 KV 4096
    python experiments/stall_analysis.py --model gemma2_27b --kv-len 2048

Compiles the configuration with the defaults of `python -m elkopt.run` (elkopt, operators
cut as configured), then lists the operators of a middle layer that stall (a load in flight
while they exchange), with their nominal, exchange and stall cycles and the front of
exchange against execution cycles over every plan the enumeration costs for that operator
(before the plan tables' Pareto reduction): a single point means no plan exchanges less.
"""

from __future__ import annotations

import argparse

import numpy as np

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES, OpShape, enumerate_plans
from elkopt.plans.table import default_cache_dir
from elkopt.schedule.periodic import find_layers
from elkopt.solve import SolverOptions


def exchange_front(op, chip: Chip, elem_bytes: int, max_splits: int,
                   plan_space: str) -> list[tuple[int, int]]:
    """(exchange, execution) cycles of the plans no other beats in both, by exchange."""
    plans = enumerate_plans(OpShape.of(op), chip, elem_bytes, max_splits, plan_space)
    fits = plans.hot_bytes <= chip.usable_sram_bytes_per_core
    exchange, execution = plans.exchange_cycles[fits], plans.exec_cycles[fits]
    front, best = [], np.inf
    for i in np.lexsort((execution, exchange)):
        if execution[i] < best:
            best = execution[i]
            front.append((round(float(exchange[i])), round(float(execution[i]))))
    return front


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=4096)
    parser.add_argument("--min-stall", type=float, default=50.0, help="cycles; smaller stalls are not listed")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    chip = Chip(name="ipu_pod4", n_chips=4)
    options = PlanningOptions(cache_dir=str(cache), plan_space=args.plan_space)
    result = compile_model(build_graph(args.model, "decode", args.batch, args.kv_len), chip, "elkopt",
                           options, solver=SolverOptions(max_nodes=200))
    graph, timeline = result.graph, result.timeline
    block = find_layers([op.signature for op in graph.ops])
    first = block.start + (block.count // 2) * block.period
    print(f"{graph.name}: {graph.n_ops} operators planned, elkopt {timeline.latency_ms:.3f} ms, "
          f"Ideal {result.references['ideal']:.3f} ms; layer of {block.period} operators at op {first}")
    total = 0.0
    for i in range(first, first + block.period):
        stall = float(timeline.stall[i])
        total += stall
        if stall < args.min_stall:
            continue
        op, option = graph.ops[i], result.schedule.ops[i].option
        front = exchange_front(op, chip, graph.elem_bytes, options.max_spatial_splits, args.plan_space)
        print(f"  {op.name} ({op.label}): nominal {option.total_cycles:,.0f}, exchange "
              f"{option.exchange_cycles:,.0f}, stall {stall:,.0f} cycles; "
              f"front (exchange, execution) {front[:6]}{' ...' if len(front) > 6 else ''}")
    print(f"stalls in the layer: {total:,.0f} cycles; whole run: "
          f"{timeline.breakdown()['interconnect_stall'] / chip.clock_hz * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
