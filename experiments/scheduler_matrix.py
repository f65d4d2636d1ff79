"""Every scheduler on the published matrix: 4 LLMs x batch {16, 32, 64} x KV {2048, 4096}.

    python experiments/scheduler_matrix.py                       # the 24 configurations
    python experiments/scheduler_matrix.py --models llama2_13b --batches 32 --kv-lens 2048
    python experiments/scheduler_matrix.py --csv matrix.csv      # also save the table

IPU-POD4 (5888 cores), 16 TB/s HBM, all-to-all. Per configuration: Basic,
Static, inductive, elkopt, Ideal and the lower bound (ms), Ideal / achieved
for Static, inductive and elkopt, the published Elk-Full latency where the
spec lists one, the compile time of one `scheduler=elkopt` run (plan tables,
the three references, the inductive scheduler and elkopt's layer timing) and
the window MILPs solved. Operators are cut into copies as `python -m elkopt.run` does
(decided per operator, planning.split_fraction and split_policy; `--no-split` plans every
operator whole); "ops" counts the operators of the graph kept, and the references are
computed on it; "choice / runner-up" gives elkopt's latency on the per-operator choice and
on the runner-up graph where both were planned. The last lines give the mean Ideal / achieved per
scheduler, the whole run's wall time and this process's peak memory. Plan tables are cached under $ELKOPT_CACHE (default
~/.cache/elkopt/plan_tables): run once to fill the cache, then again to time
compiles with cached tables.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd

from elkopt.app import peak_rss_mb
from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import (
    SPLIT_POLICIES,
    PlanningError,
    PlanningOptions,
    compile_model,
)
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir
from elkopt.published import PUBLISHED_MS
from elkopt.solve import SolverOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED_MS))
    parser.add_argument("--batches", nargs="*", type=int, default=[16, 32, 64])
    parser.add_argument("--kv-lens", nargs="*", type=int, default=[2048, 4096])
    parser.add_argument("--csv", type=Path, help="also write the table here")
    parser.add_argument("--layer-milp", action="store_true", help="elkopt with the layer MILP polish")
    parser.add_argument("--split-fraction", type=float, default=PlanningOptions.split_fraction,
                        help="cut operators reading more than this fraction of the SRAM from HBM "
                             "into copies (planning.split_fraction, default %(default)s)")
    parser.add_argument("--no-split", action="store_true", help="never cut operators")
    parser.add_argument("--split-policy", choices=SPLIT_POLICIES, default=PlanningOptions.split_policy,
                        help="planning.split_policy (default %(default)s)")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    chip = Chip(name="ipu_pod4", n_chips=4)
    rows = []
    begin = time.perf_counter()
    for name, batch, kv in itertools.product(args.models, args.batches, args.kv_lens):
        graph = build_graph(name, "decode", batch, kv)
        start = time.perf_counter()
        options = PlanningOptions(cache_dir=str(cache), layer_milp=args.layer_milp, plan_space=args.plan_space,
                                  split_fraction=None if args.no_split else args.split_fraction,
                                  split_policy=args.split_policy)
        try:
            result = compile_model(graph, chip, "elkopt", options, solver=SolverOptions(max_nodes=200))
        except PlanningError as error:  # an operator that fits in no plan: a row of its own
            print(f"{name} b{batch} kv{kv}: cannot be planned: {error}", flush=True)
            rows.append({"model": name, "batch": batch, "kv": kv, "note": "an operator fits in no plan"})
            continue
        ref = result.references
        elkopt = result.timeline.latency_ms
        inductive = result.solve_stats["inductive_ms"]
        published = PUBLISHED_MS.get(name, {}) if (batch, kv) == (32, 2048) else {}
        rows.append({
            "model": name,
            "batch": batch,
            "kv": kv,
            "basic": ref["basic"],
            "static": ref["static"],
            "inductive": inductive,
            "elkopt": elkopt,
            "ideal": ref["ideal"],
            "lower_bound": ref["lower_bound"],
            "ideal/static": ref["ideal"] / ref["static"],
            "ideal/inductive": ref["ideal"] / inductive,
            "ideal/elkopt": ref["ideal"] / elkopt,
            "pub_elk_full": published.get("elk_full", float("nan")),
            "compile_s": time.perf_counter() - start,
            "milps": result.solve_stats["milps_solved"],
            "ops": result.graph.n_ops,
            "choice_ms": result.stats.get("split_choice_ms", float("nan")),
            "runner_up_ms": result.stats.get("split_runner_up_ms", float("nan")),
            "note": "",
        })
        print(f"{name} b{batch} kv{kv}: elkopt {elkopt:.3f} ms, inductive {inductive:.3f} ms, "
              f"static {ref['static']:.3f} ms, ideal {ref['ideal']:.3f} ms "
              f"({rows[-1]['compile_s']:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{chip.cores} cores, 16 TB/s HBM, all-to-all; latencies in ms")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nmean Ideal/achieved: static {table['ideal/static'].mean():.4f}, "
          f"inductive {table['ideal/inductive'].mean():.4f}, elkopt {table['ideal/elkopt'].mean():.4f}")
    slower = table["elkopt"] / table["pub_elk_full"] - 1
    for row, excess in zip(rows, slower):
        if excess == excess:  # the published row
            print(f"{row['model']}: elkopt {100 * excess:+.1f}% against published Elk-Full")
    print(f"matrix wall time {time.perf_counter() - begin:.0f} s, peak RSS {peak_rss_mb():.0f} MB")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
