"""What cutting an operator into copies costs, per dim and number of copies.

    python experiments/split_dims.py                                  # Llama2-13B b32 KV 4096
    python experiments/split_dims.py --model opt_30b --batch 64 --kv-len 2048
    python experiments/split_dims.py --kv-len 2048 --n-chips 1 --cores-per-chip 736   # one chip of 736 cores

For every distinct operator whose HBM data exceeds `--fraction` of the chip's SRAM (the
cutting threshold, `planning.split_fraction`; 0: every operator reading HBM): its fastest
plan whole ("no plan" when it fits in none), then for 2, 3 and 4 copies along each dim that
may be cut, the copies' fastest plans summed, with the adds of partial sums for a dim the
operator sums over (marked "summed"), and their ratio to the whole operator.
`elkopt.graph.split` cuts along the cheapest dim for each number of copies.
"""

from __future__ import annotations

import argparse

from elkopt.chip import Chip
from elkopt.graph.split import contracted, split_dims, split_operator
from elkopt.graph.zoo import build_graph
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import build_table


def fastest(op, chip: Chip, elem_bytes: int, max_splits: int, plan_space: str) -> float:
    table = build_table(op, chip, elem_bytes, max_splits, plan_space)
    return float(table.total_cycles.min()) if len(table) else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=4096)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--max-spatial-splits", type=int, default=256)
    parser.add_argument("--n-chips", type=int, default=4)
    parser.add_argument("--cores-per-chip", type=int, default=1472)
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    chip = Chip(name="ipu", n_chips=args.n_chips, cores_per_chip=args.cores_per_chip)
    graph = build_graph(args.model, "decode", args.batch, args.kv_len)
    limit = args.fraction * chip.total_sram_bytes
    seen = set()
    for op in graph.ops:
        if not op.hbm_bytes(graph.elem_bytes) or op.hbm_bytes(graph.elem_bytes) <= limit or op.signature in seen:
            continue
        seen.add(op.signature)
        whole = fastest(op, chip, graph.elem_bytes, args.max_spatial_splits, args.plan_space)
        dims = {d.name: d.length for d in op.dims}
        print(f"{op.name} ({op.label}, dims {dims}): HBM data "
              f"{op.hbm_bytes(graph.elem_bytes) / chip.total_sram_bytes:.2f} of the SRAM; "
              f"whole {f'{whole:,.0f} cycles' if whole < float('inf') else 'no plan'}")
        for copies in (2, 3, 4):
            for dim in split_dims(op, copies):
                parts = split_operator(op, dim, copies)
                total = sum(fastest(p, chip, graph.elem_bytes, args.max_spatial_splits, args.plan_space) for p in parts)
                summed = " (summed)" if contracted(op, dim) else ""
                ratio = f" ({total / whole:.2f} x whole)" if whole < float("inf") else ""
                print(f"  {copies} copies along {dim}{summed}: {total:,.0f} cycles{ratio}")


if __name__ == "__main__":
    main()
