"""What elkopt's layer decomposition loses: stitched plan vs one MILP over the whole graph.

    python experiments/decomposition_gap.py                 # 12 graphs of 20 to 30 operators
    python experiments/decomposition_gap.py --seeds 30 --time-limit 120

Each graph is a random layer of 4 to 6 operators (some all exchange, some all
compute, two loads of 30 to 150 cycles at interconnect rate 0.5 or 1)
repeated 5 times, on the unit chip of `elkopt.schedule.synthetic`. The
stitched plan is elkopt's (one layer timed in steady state, unrolled, seams
re-timed); the monolithic plan is the MILP of `elkopt.schedule.monolithic`
over all operators (HiGHS, gap 0, warm-started from the stitched plan).
Prints per graph both latencies (cycles), the MILP's status, bound and time,
and the stitched / monolithic ratio.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from elkopt.schedule.baselines import Evaluated
from elkopt.schedule.monolithic import solve_monolithic
from elkopt.schedule.periodic import stitch
from elkopt.schedule.synthetic import UNIT_CHIP, random_layers
from elkopt.schedule.timeline import compute_timeline
from elkopt.solve import SolverOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="graphs per layer size")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per monolithic MILP")
    args = parser.parse_args()
    rows = []
    for ops_per_layer in (4, 5, 6):
        for seed in range(args.seeds):
            schedule = random_layers(seed, ops_per_layer=ops_per_layer, n_layers=5)
            n = len(schedule.ops)
            start = Evaluated(schedule, compute_timeline(schedule, UNIT_CHIP))
            begin = time.perf_counter()
            stitched, _ = stitch([("start", start)], UNIT_CHIP, [i % ops_per_layer for i in range(n)],
                                 [[i - 1] if i else [] for i in range(n)], [0] * n)
            stitch_s = time.perf_counter() - begin
            mono = solve_monolithic(
                stitched.schedule, UNIT_CHIP, SolverOptions(mip_rel_gap=0.0, time_limit_s=args.time_limit)
            )
            rows.append({
                "ops": n,
                "seed": seed,
                "stitched": stitched.timeline.latency_cycles,
                "monolithic": mono.evaluated.timeline.latency_cycles,
                "milp_status": str(mono.result.status),
                "milp_bound": mono.result.bound,
                "stitched/monolithic": stitched.timeline.latency_cycles / mono.evaluated.timeline.latency_cycles,
                "stitched/bound": stitched.timeline.latency_cycles / mono.result.bound if mono.result.bound else float("nan"),
                "stitch_s": stitch_s,
                "milp_s": mono.result.wall_s,
                "binaries": mono.binaries,
            })
            print(f"{n} ops, seed {seed}: stitched {rows[-1]['stitched']:.1f}, monolithic "
                  f"{rows[-1]['monolithic']:.1f} ({rows[-1]['milp_status']}, {mono.result.wall_s:.1f} s)",
                  flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"\nworst stitched / monolithic: {table['stitched/monolithic'].max():.4f}; "
          f"worst stitched / MILP bound: {table['stitched/bound'].max():.4f}; "
          f"{(table['milp_status'] == 'optimal').sum()} of {len(table)} MILPs proven optimal")


if __name__ == "__main__":
    main()
