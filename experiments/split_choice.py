"""Cutting decided per operator, against the capacity rule: the options, their costs, and
what each rule gives when scheduled.

    python experiments/split_choice.py                                 # Llama2-13B b32 KV 2048, 1 x 736 cores, 16 TB/s
    python experiments/split_choice.py --hbm-tb-s 2 --compile          # HBM in proportion to the cores (Fig. 23)
    python experiments/split_choice.py --n-chips 4 --cores-per-chip 1472 --kv-len 4096 --compile

For each distinct operator `elkopt.graph.split.choose_cuts` decides (those that fit in no
plan whole, and those reading more than `--fraction` of the SRAM from HBM): every option
weighed, with its execution (the fastest plans of the whole operator, or of its copies and
adds, summed over the operator's layers) and the estimated graph latency with it (the
decision's last pass), the choice marked. Then the sum of every operator's fastest plan,
the execution a graph costs before any waiting, for: the capacity rule of earlier versions
(`planning.split_policy=always`, as `if_faster` cut when the whole graph could not be
planned), the compulsory cuts alone in their cheapest option, and the per-operator choice;
and, for the KV BatchMatMuls cut in k copies, along the heads against along the KV length.
With `--compile`, elkopt's latency for the policies always, per_op and if_faster.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from elkopt.chip import PUBLISHED_TB_PER_S, Chip
from elkopt.graph.split import apply_cuts, split_large_operators
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, choose_split, compile_model
from elkopt.plans.table import cached_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama2_13b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--n-chips", type=int, default=1)
    parser.add_argument("--cores-per-chip", type=int, default=736)
    parser.add_argument("--hbm-tb-s", type=float, default=16.0, help="HBM bandwidth, published TB/s")
    parser.add_argument("--fraction", type=float, default=PlanningOptions.split_fraction)
    parser.add_argument("--estimate", default=PlanningOptions.split_estimate, choices=("elk_dyn", "ideal"))
    parser.add_argument("--compile", action="store_true", help="schedule the graphs with elkopt too")
    args = parser.parse_args()
    chip = Chip(name="ipu", n_chips=args.n_chips, cores_per_chip=args.cores_per_chip,
                hbm_bytes_per_s=args.hbm_tb_s * PUBLISHED_TB_PER_S)
    cache = os.environ.get("ELKOPT_CACHE", os.path.expanduser("~/.cache/elkopt"))
    options = PlanningOptions(cache_dir=f"{cache}/plan_tables", split_fraction=args.fraction,
                              split_estimate=args.estimate)
    graph = build_graph(args.model, "decode", args.batch, args.kv_len)
    to_ms = 1e3 / chip.clock_hz

    def fastest(op) -> float:
        table, _hit = cached_table(op, chip, graph.elem_bytes, options.max_spatial_splits, options.cache_dir,
                                   options.plan_space)
        return float(table.total_cycles.min()) if len(table) else float("inf")

    print(f"{args.model} decode b{args.batch} KV {args.kv_len} on {chip.cores} cores, {args.hbm_tb_s:g} TB/s; "
          f"options weighed by {args.estimate}")
    start = time.perf_counter()
    choice = choose_split(graph, chip, options)
    print(f"decided in {time.perf_counter() - start:.1f} s, {choice.evaluations} graphs weighed, "
          f"{choice.passes} passes{'' if choice.converged else ' (not converged)'}")
    for c in choice.candidates:
        print(f"{c.label}")
        for option, execution, latency in c.options:
            what = "whole" if option is None else f"{option[1]} copies along {option[0]}"
            mark = "  <-" if option == c.chosen else ""
            print(f"    {what:<22} execution {execution * len(c.names) * to_ms:8.3f} ms   "
                  f"estimate {latency * to_ms:8.3f} ms{mark}")
    if choice.flipped:
        print(f"runner-up: {', '.join(choice.flipped)} the other way")

    def compute_ms(g) -> float:
        return sum(fastest(op) for op in g.ops) * to_ms

    capacity, _report = split_large_operators(graph, chip.total_sram_bytes, args.fraction, options.max_copies, fastest)
    compulsory = {name: min(c.options, key=lambda option: option[1])[0]  # the cheapest execution
                  for c in choice.candidates if c.must for name in c.names}
    must_only, _r = apply_cuts(graph, compulsory)
    print("sum of the fastest plans:")
    for name, g in (("whole", graph), ("capacity rule (always)", capacity), ("compulsory cuts only", must_only),
                    ("per-operator choice", choice.graph)):
        print(f"    {name:<24} {compute_ms(g):8.3f} ms  ({g.n_ops} operators)")
    kv = [op for op in graph.ops if op.label == "BatchMatMul"]
    for copies in (2, 3, 4):
        along = {}
        for dim in ("Hkv", "S"):
            if all(dim in {d.name for d in op.dims} for op in kv):
                along[dim] = compute_ms(apply_cuts(graph, {op.name: (dim, copies) for op in kv})[0])
        if len(along) == 2:
            print(f"    KV BatchMatMuls in {copies} copies, the rest whole: along the heads {along['Hkv']:.3f} ms, "
                  f"along the KV length {along['S']:.3f} ms")
    if not args.compile:
        return
    for policy in ("always", "per_op", "if_faster"):
        start = time.perf_counter()
        result = compile_model(graph, chip, "elkopt", replace(options, split_policy=policy))
        kept = result.stats.get("split_kept", "")
        print(f"elkopt, split_policy={policy}: {result.timeline.latency_ms:.3f} ms ({result.graph.n_ops} operators"
              f"{', kept the ' + kept if kept else ''}; Ideal {result.references['ideal']:.3f} ms), "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
