"""What each published accounting rule is worth: every rule of `elkopt.conventions` turned
on alone, on the four published graph files (decode, batch 32, KV 2048, IPU-POD4).

    python experiments/convention_rules.py ELK/models/original
    python experiments/convention_rules.py ELK/models/original --models llama2-13 --no-elkopt

ELK is a checkout of the published artifact (its graph files are not in this repository).
Per file and setting (elkopt's accounting, each rule alone, every rule): the operators
scheduled, the GB the graph reads from HBM, Elk-Full's latency (scheduler=elk_full: on
elkopt's plans and timeline unless published_plans is on, then the published tables and
timing) and elkopt's (scheduler=elkopt: with published_plans on, its search in the
published model, beside Elk-Full on the same tables and timing; off, its own pipeline on
its plans and timeline, which only the graph rules reach: the load rules leave it
unchanged and are not run for it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from elkopt.chip import Chip
from elkopt.conventions import RULES, Conventions
from elkopt.elk.compile import compile_elk
from elkopt.graph.dump import PrefillDecode, read_dump
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.published import PUBLISHED_FILES, PUBLISHED_LAYERS, PUBLISHED_SPLIT_FACTOR

#: Rules that change the graph (the ones elkopt's scheduler reads).
GRAPH_RULES = ("reload_activations", "slice_input_shape", "drop_scalar_operands")


def settings() -> list[Conventions]:
    """elkopt's accounting, each rule alone, and every rule (published)."""
    return [Conventions(), *(Conventions().only(rule) for rule in RULES), Conventions.published()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the artifact's models/original folder")
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED_FILES))
    parser.add_argument("--no-elkopt", action="store_true", help="skip elkopt's scheduler (the slow part)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/elkopt/plan_tables"))
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    chip = Chip(name="ipu_pod4", n_chips=4)
    options = PlanningOptions(cache_dir=args.cache_dir, plan_space=args.plan_space)
    rows = []
    for stem in args.models:
        zoo = PUBLISHED_FILES[stem]
        for conv in settings():
            start = time.perf_counter()
            graph = read_dump(args.folder / f"{stem}.json", placeholders={99: 32, 66: 2048},
                              decode=PrefillDecode(2048), conventions=conv).graph
            # in the published model elkopt's search runs Elk-Full first: one run gives both
            search = conv.published_plans and not args.no_elkopt
            elk = compile_elk(graph, chip, "elkopt" if search else "elk_full", conv, layers=PUBLISHED_LAYERS[zoo],
                              split_factor=PUBLISHED_SPLIT_FACTOR[zoo], options=options)
            row = {"model": zoo, "conventions": conv.name, "ops": elk.timeline.n_ops,
                   "hbm_GB": graph.hbm_bytes / 1e9, "elk_full_ms": elk.references["elk_full"]}
            if search:
                row["elkopt_ms"] = elk.timeline.latency_ms
            elif not args.no_elkopt and set(conv.active) <= set(GRAPH_RULES):
                row["elkopt_ms"] = compile_model(graph, chip, "elkopt", options).timeline.latency_ms
            row["s"] = time.perf_counter() - start
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    base = table[table["conventions"] == "elkopt"].set_index("model")
    for column in ("hbm_GB", "elk_full_ms", "elkopt_ms"):
        if column in table:
            table[f"{column}_diff_%"] = [100 * (r[column] / base.loc[r["model"], column] - 1)
                                        for _, r in table.iterrows()]
    print("\ndecode b32 KV 2048, ipu_pod4; diffs against elkopt's accounting")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
