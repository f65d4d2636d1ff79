"""Preloads routed over the real network against the analytic load time of the timeline.

    python experiments/sim_preloads.py                     # Llama2-13B b32 KV 2048
    python experiments/sim_preloads.py --model opt_30b

For each chip (the all-to-all IPU-POD4 and the same 5888 cores as a 64 x 92 mesh), the model
is planned with the Static scheduler (fast; any scheduler's loads would do) and each
distinct load of a middle layer is simulated alone (`elkopt.sim.preload`): HBM ports and
per-core deliveries as max-min fair flows. Printed per load: HBM bytes, cores, cold bytes
per core, the analytic duration the timeline charges (max of HBM time and interconnect
delivery time), the simulated duration, and their ratio; then the wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir
from elkopt.schedule.periodic import find_layers
from elkopt.schedule.timeline import load_duration_and_rate
from elkopt.sim.network import network_from_chip
from elkopt.sim.preload import simulate_preload

CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--chips", nargs="*", default=["ipu_pod4", "mesh_pod4"])
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    for preset in args.chips:
        chip = Chip(**yaml.safe_load((CONF / f"{preset}.yaml").read_text()))
        graph = build_graph(args.model, "decode", args.batch, args.kv_len)
        result = compile_model(graph, chip, "static", PlanningOptions(cache_dir=str(cache), plan_space=args.plan_space))
        schedule, graph = result.schedule, result.graph
        duration, _rate = load_duration_and_rate(schedule, chip)
        network = network_from_chip(chip)
        block = find_layers([op.signature for op in graph.ops])
        first = block.start + (block.count // 2) * block.period
        print(f"\n{preset} ({chip.topology}, {network.n_controllers} HBM controllers): "
              f"{graph.name}, loads of {graph.ops[first].name.split('.')[0]}")
        print(f"{'operator':28s} {'HBM MB':>8s} {'cores':>6s} {'cold B':>8s} {'analytic':>10s} "
              f"{'simulated':>10s} {'ratio':>6s} {'s':>5s}")
        for j in range(first, first + block.period):
            op = schedule.ops[j]
            if not op.has_load:
                continue
            start = time.perf_counter()
            sim = simulate_preload(network, op.hbm_bytes, op.option.cores_used, op.option.cold_bytes)
            print(f"{graph.ops[j].name:28s} {op.hbm_bytes / 1e6:8.2f} {op.option.cores_used:6d} "
                  f"{op.option.cold_bytes:8d} {duration[j]:10.0f} {sim.makespan:10.0f} "
                  f"{sim.makespan / duration[j]:6.2f} {time.perf_counter() - start:5.1f}")


if __name__ == "__main__":
    main()
