"""Whole decode steps over the network against the analytic timeline (issue 4, first version).

    python experiments/sim_step.py                                  # 4 LLMs, b32 KV 2048, IPU-POD4
    python experiments/sim_step.py --models llama2_13b --scheduler static
    python experiments/sim_step.py --models opt_30b --fair --breakdown 5
    python experiments/sim_step.py --models llama2_13b --chip mesh_pod4 --scheduler static

Each model is planned as `python -m elkopt.run` does (plan tables cached), then its
schedule is run by `elkopt.sim.step.simulate_schedule`: operators' exchange phases and the
preloads as flows over the all-to-all network, exchanges first (`--fair`: all flows share
every link max-min fairly). Printed per model: the
analytic and the simulated latency, their ratio, the analytic interconnect stalls, the
simulation's rate recomputations and wall time; then this process's peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from elkopt.app import peak_rss_mb
from elkopt.chip import PUBLISHED_TB_PER_S, Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES, OpShape
from elkopt.plans.table import default_cache_dir
from elkopt.published import PUBLISHED_MS
from elkopt.sim.step import simulate_schedule
from elkopt.solve import SolverOptions

CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"


def print_breakdown(result, run, n: int) -> None:
    """Per operator name (layer prefix dropped): extra cycles in the simulation, waiting
    before the operator plus running it."""
    def spans(start, end):
        previous = np.concatenate([[0.0], end[:-1]])
        return (start - previous) + (end - start)

    analytic = spans(result.timeline.exec_start, result.timeline.exec_end)
    simulated = spans(run.exec_start, run.exec_end)
    extra: dict[str, float] = defaultdict(float)
    for i, op in enumerate(result.graph.ops):
        name = op.name.split(".", 1)[1] if op.name.startswith("layer") else op.name
        extra[name] += simulated[i] - analytic[i]
    total = run.latency_cycles - result.timeline.latency_cycles
    print(f"  extra cycles in all: {total:,.0f}")
    for name, cycles in sorted(extra.items(), key=lambda kv: -kv[1])[:n]:
        print(f"  {name:32s} {cycles:12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED_MS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--chip", default="ipu_pod4")
    parser.add_argument("--tb", type=float, help="HBM bandwidth in published TB/s (default: the chip's)")
    parser.add_argument("--scheduler", default="elkopt")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N",
                        help="also list the N operators (summed over layers) that gain most time")
    parser.add_argument("--mapping", default="dims", choices=("serpentine", "dims"),
                        help="where operators' cores sit on a grid (elkopt.sim.mapping)")
    parser.add_argument("--fair", action="store_true",
                        help="phases in flight slow alike on shared links (default: exchanges first)")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    chip = Chip(**yaml.safe_load((CONF / f"{args.chip}.yaml").read_text()))
    if args.tb:
        chip = dataclasses.replace(chip, hbm_bytes_per_s=args.tb * PUBLISHED_TB_PER_S)
    to_ms = 1e3 / chip.clock_hz
    policy = "all phases fair" if args.fair else "exchanges first"
    print(f"{args.chip}, decode b{args.batch} KV {args.kv_len}, {args.scheduler} schedules, {policy}, "
          f"{args.mapping} mapping")
    print(f"{'model':12s} {'ops':>5s} {'analytic ms':>12s} {'simulated ms':>13s} {'ratio':>6s} "
          f"{'stalls ms':>10s} {'events':>7s} {'sim s':>6s}")
    for name in args.models:
        graph = build_graph(name, "decode", args.batch, args.kv_len)
        result = compile_model(graph, chip, args.scheduler,
                               PlanningOptions(cache_dir=str(cache), plan_space=args.plan_space),
                               solver=SolverOptions(max_nodes=200))
        start = time.perf_counter()
        run = simulate_schedule(result.schedule, chip, exchange_first=not args.fair,
                                shapes=[OpShape.of(op) for op in result.graph.ops], mapping=args.mapping)
        seconds = time.perf_counter() - start
        analytic = result.timeline.latency_cycles
        print(f"{name:12s} {result.graph.n_ops:5d} {analytic * to_ms:12.3f} {run.latency_cycles * to_ms:13.3f} "
              f"{run.latency_cycles / analytic:6.3f} {result.timeline.stall.sum() * to_ms:10.3f} "
              f"{run.events:7d} {seconds:6.1f}", flush=True)
        if args.breakdown:
            print_breakdown(result, run, args.breakdown)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
