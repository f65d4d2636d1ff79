"""The published latency table (spec section 7) recomputed from the published graph files
with the published compiler rebuilt in elkopt (`elkopt.elk`): 20 numbers.

    python experiments/published_table.py ELK/models/original
    python experiments/published_table.py ELK/models/original --batch 16 --kv-len 4096 --hbm 8000

ELK is a checkout of the published artifact (its graph files are not in this repository).
Each file is read under `conventions=published` (its graph rules) as one decode step, its
operators get the published plan tables (after the published capacity split, cores //
split factor MiB), and the five published designs run as the published launch script runs
them (`elkopt.elk.suite.run_published`), on 5888 cores of 624 KiB, all-to-all. Layers and
split factors per model as the published scripts pass them (`elkopt.published`).
The same runs from the command line: `python -m elkopt.run model=file
model.path=ELK/models/original/llama2-13.json conventions=published scheduler=elk_full`.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import pandas as pd

from elkopt.conventions import Conventions
from elkopt.elk.program import elk_ops
from elkopt.elk.suite import run_published
from elkopt.graph.dump import PrefillDecode, read_dump
from elkopt.published import PUBLISHED_FILES, PUBLISHED_LAYERS, PUBLISHED_MS, PUBLISHED_SPLIT_FACTOR

DESIGNS = {"Basic": "basic", "Static": "static", "Elk-Dyn": "elk_dyn", "Elk-Full": "elk_full", "Ideal": "ideal"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the artifact's models/original folder")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--hbm", type=float, default=16000, help="HBM bandwidth, published GB/s")
    parser.add_argument("--cores", type=int, default=5888)
    parser.add_argument("--models", nargs="*", default=list(PUBLISHED_FILES))
    args = parser.parse_args()
    rows = []
    for stem in args.models:
        zoo = PUBLISHED_FILES[stem]
        layers, capacity = PUBLISHED_LAYERS[zoo], args.cores // PUBLISHED_SPLIT_FACTOR[zoo]
        start = time.perf_counter()
        graph = read_dump(args.folder / f"{stem}.json", placeholders={99: args.batch, 66: args.kv_len},
                          decode=PrefillDecode(args.kv_len), conventions=Conventions.published()).graph
        ops = elk_ops(graph, args.cores, 624 * 1024, capacity_mb=capacity)
        tables_s = time.perf_counter() - start
        results = run_published(ops, args.hbm, args.cores, 624 * 1024, layers)
        total_s = time.perf_counter() - start
        ms = results.latency_ms()
        setup = (args.batch, args.kv_len, args.hbm, args.cores)
        published = PUBLISHED_MS[zoo] if setup == (32, 2048, 16000, 5888) else {}
        for design, key in DESIGNS.items():
            ours = ms[design]
            theirs = published.get(key)
            rows.append({"model": zoo, "design": design, "ms": ours, "published_ms": theirs,
                         "diff_%": 100 * (ours / theirs - 1) if theirs else None})
        rows.append({"model": zoo, "design": "Elk-Dyn (printed)", "ms": results.elk_dyn.printed_ms,
                     "published_ms": published.get("elk_dyn")})
        print(f"{stem}: {len(ops)} operators, tables {tables_s:.1f} s, all five designs {total_s:.1f} s, "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
    table = pd.DataFrame(rows)
    print(f"\ndecode b{args.batch} KV {args.kv_len}, {args.cores} cores, {args.hbm:g} GB/s, all-to-all")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
