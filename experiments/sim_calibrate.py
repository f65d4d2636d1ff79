"""Feedback from the simulator into planning: what re-planning with simulator-calibrated
load costs gains (issue 4, `elkopt.sim.calibrate`).

    python experiments/sim_calibrate.py                          # Llama2-13B b32 KV 2048 on the mesh
    python experiments/sim_calibrate.py --chip ipu_pod4 --models llama2_13b opt_30b --rounds 4
    python experiments/sim_calibrate.py --mapping serpentine --analytic-factors

For each model: plan as `python -m elkopt.run` does (plan tables cached), simulate, measure
every load's simulated over analytic duration, re-plan with those factors on the loads'
analytic costs, simulate again; up to `--rounds` re-plans, stopping when the simulated
latency improves by less than 0.1%. Printed per round: the analytic latency of the plan
(uncalibrated cost model), its simulated latency, and the mean and largest load factor it
was planned with; then the gain of the best plan over the first and the wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from elkopt.app import peak_rss_mb
from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir
from elkopt.sim.calibrate import calibrate
from elkopt.solve import SolverOptions

CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["llama2_13b"])
    parser.add_argument("--chip", default="mesh_pod4")
    parser.add_argument("--scheduler", default="elkopt")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mapping", default="dims", choices=("serpentine", "dims"),
                        help="where operators' cores sit on a grid (elkopt.sim.mapping)")
    parser.add_argument("--analytic-factors", action="store_true",
                        help="measure load factors over the analytic aggregate, not the routed delivery cost")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    chip = Chip(**yaml.safe_load((CONF / f"{args.chip}.yaml").read_text()))
    ms = 1e3 / chip.clock_hz
    print(f"{args.chip}, decode b{args.batch} KV {args.kv_len}, {args.scheduler}, up to {args.rounds} re-plans, "
          f"{args.mapping} mapping, factors over the {'analytic' if args.analytic_factors else 'routed'} cost")
    for name in args.models:
        start = time.perf_counter()
        out = calibrate(build_graph(name, "decode", args.batch, args.kv_len), chip, args.scheduler,
                        PlanningOptions(cache_dir=str(default_cache_dir()), plan_space=args.plan_space),
                        SolverOptions(max_nodes=200),
                        rounds=args.rounds, mapping=args.mapping, routed_delivery=not args.analytic_factors)
        print(f"{name}")
        print(f"  {'round':>5s} {'analytic ms':>12s} {'simulated ms':>13s} {'mean factor':>12s} {'max factor':>11s}")
        for r in out.rounds:
            print(f"  {r.round:5d} {r.analytic_cycles * ms:12.3f} {r.simulated_cycles * ms:13.3f} "
                  f"{r.mean_scale:12.3f} {r.max_scale:11.3f}")
        print(f"  best: round {out.best_round}, simulated {out.run.latency_cycles * ms:.3f} ms, "
              f"{100 * out.gain:.2f}% faster than the plan from the analytic model; "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
