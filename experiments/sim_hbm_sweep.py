"""Latency against HBM bandwidth on all-to-all and on a 2-D mesh, analytic and simulated (issue 4).

    python experiments/sim_hbm_sweep.py                              # Llama2-13B b32 KV 2048, 4..16 TB/s
    python experiments/sim_hbm_sweep.py --models llama2_70b --tb 4 8 16 --out /tmp/sweep.csv

For every model, chip (`ipu_pod4`: all-to-all; `mesh_pod4`: 64 x 92 mesh with HBM
controllers on all four edges) and HBM bandwidth, the model is planned as
`python -m elkopt.run` does (elkopt scheduler, plan tables cached) with only the chip's
`hbm_bytes_per_s` changed (the network stays as built: the mesh's links are sized for
16 TB/s), then its schedule is simulated over the chip's network (`elkopt.sim.step`).
Printed and written per point: analytic and simulated latency (ms), mean core-link and
HBM-port utilisation in the simulation, compile and simulation seconds; then this
process's peak memory. The table is read by `notebooks/sim_hbm_sweep.ipynb`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import yaml

from elkopt.app import peak_rss_mb
from elkopt.chip import PUBLISHED_TB_PER_S, Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import OpShape
from elkopt.plans.table import default_cache_dir
from elkopt.sim.network import network_from_chip
from elkopt.sim.report import simulation_metrics
from elkopt.sim.step import simulate_schedule
from elkopt.solve import SolverOptions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["llama2_13b"])
    parser.add_argument("--chips", nargs="*", default=["ipu_pod4", "mesh_pod4"])
    parser.add_argument("--tb", nargs="*", type=float, default=[4, 6, 8, 10, 12, 14, 16],
                        help="HBM bandwidths in published TB/s")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--mapping", default="dims", choices=("serpentine", "dims"),
                        help="where operators' cores sit on the mesh (elkopt.sim.mapping)")
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks" / "data" / "sim_hbm_sweep.csv")
    args = parser.parse_args()
    rows = []
    print(f"{'model':12s} {'chip':10s} {'TB/s':>5s} {'analytic ms':>12s} {'simulated ms':>13s} "
          f"{'links':>6s} {'ports':>6s} {'compile s':>10s} {'sim s':>6s}")
    for model in args.models:
        graph = build_graph(model, "decode", args.batch, args.kv_len)
        for chip_name in args.chips:
            base = Chip(**yaml.safe_load((ROOT / "conf" / "chip" / f"{chip_name}.yaml").read_text()))
            for tb in args.tb:
                chip = dataclasses.replace(base, hbm_bytes_per_s=tb * PUBLISHED_TB_PER_S)
                start = time.perf_counter()
                result = compile_model(graph, chip, "elkopt", PlanningOptions(cache_dir=str(default_cache_dir())),
                                       solver=SolverOptions(max_nodes=200))
                compiled = time.perf_counter() - start
                network = network_from_chip(chip)
                start = time.perf_counter()
                run = simulate_schedule(result.schedule, chip, network, mapping=args.mapping,
                                        shapes=[OpShape.of(op) for op in result.graph.ops])
                simulated = time.perf_counter() - start
                sim = simulation_metrics(run, result.schedule, network, chip, result.timeline.latency_cycles)
                row = {
                    "model": model, "chip": chip_name, "topology": str(chip.topology), "hbm_tb_s": tb,
                    "batch": args.batch, "kv_len": args.kv_len,
                    "analytic_ms": result.timeline.latency_ms, "simulated_ms": sim["simulated_ms"],
                    "ideal_ms": result.references.get("ideal"),
                    "core_link_util": sim["mean_core_link_utilisation"], "hbm_port_util": sim["hbm_port_utilisation"],
                    "compile_s": compiled, "simulate_s": simulated,
                }
                rows.append(row)
                print(f"{model:12s} {chip_name:10s} {tb:5.0f} {row['analytic_ms']:12.3f} {row['simulated_ms']:13.3f} "
                      f"{row['core_link_util']:6.2f} {row['hbm_port_util']:6.2f} {compiled:10.1f} {simulated:6.1f}",
                      flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(args.out)
    print(f"wrote {args.out}; peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
