"""Basic, Static, Ideal and the lower bound beside the published numbers (spec section 7).

    python experiments/published_baselines.py            # 4 LLMs, batch 32, KV 2048, IPU-POD4, 16 TB/s

The published graphs as they are: every operator planned whole (`planning.split_fraction`
null; scheduler_matrix.py shows the effect of cutting large operators). Plan tables are
cached under $ELKOPT_CACHE (default ~/.cache/elkopt/plan_tables).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir
from elkopt.published import PUBLISHED_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED_MS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    cache = default_cache_dir()
    chip = Chip(name="ipu_pod4", n_chips=4)
    rows = []
    for name in args.models:
        graph = build_graph(name, "decode", args.batch, args.kv_len)
        start = time.perf_counter()
        options = PlanningOptions(cache_dir=str(cache), split_fraction=None, plan_space=args.plan_space)
        result = compile_model(graph, chip, "static", options)
        ref = result.references
        pub = PUBLISHED_MS.get(name, {})
        nan = float("nan")
        rows.append(
            {
                "model": name,
                "n_ops": graph.n_ops,
                "basic_ms": ref["basic"],
                "pub_basic_ms": pub.get("basic", nan),
                "static_ms": ref["static"],
                "pub_static_ms": pub.get("static", nan),
                "ideal_ms": ref["ideal"],
                "pub_ideal_ms": pub.get("ideal", nan),
                "ideal_gap_%": 100 * (ref["ideal"] / pub.get("ideal", nan) - 1),
                "lower_bound_ms": ref["lower_bound"],
                "compile_s": time.perf_counter() - start,
            }
        )
        print(f"{name}: done in {rows[-1]['compile_s']:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    print(f"\nbatch {args.batch}, KV {args.kv_len}, {chip.cores} cores, 16 TB/s HBM, all-to-all")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
