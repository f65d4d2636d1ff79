"""Benchmark: plan tables of every unique operator of one model, cold (no disk cache).

    python experiments/bench_plan_tables.py                      # Llama2-13B decode, IPU-POD4
    python experiments/bench_plan_tables.py --max-spatial-splits 1000000   # no stage-1 pruning
    python experiments/bench_plan_tables.py --plan-space full              # planning.plan_space=full

Prints wall time and peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import time

from elkopt.app import peak_rss_mb
from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import build_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--max-spatial-splits", type=int, default=256)
    parser.add_argument("--plan-space", default="reference", choices=PLAN_SPACES)
    args = parser.parse_args()

    graph = build_graph(args.model, "decode", args.batch, args.kv_len)
    chip = Chip(name="ipu_pod4", n_chips=4)
    start = time.perf_counter()
    tables = build_tables(graph, chip, args.max_spatial_splits, cache_dir=None, plan_space=args.plan_space)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    rows = tables.total_rows
    print(f"model {graph.name}: {graph.n_ops} operators, {tables.unique_ops} unique, {chip.cores} cores")
    print(f"plan space {args.plan_space}, max_spatial_splits {args.max_spatial_splits}: {rows} table rows kept")
    print(f"plan tables: {seconds:.2f} s wall, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
