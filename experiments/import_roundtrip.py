"""The zoo's graphs written as einstein dumps and read back: same operators, same latency.

    python experiments/import_roundtrip.py                       # 4 LLMs b32 KV 2048, DiT-XL/2
    python experiments/import_roundtrip.py --models llama2_13b --scheduler static

For each model: build the zoo graph, write it with `elkopt.graph.dump.write_einstein`,
read the file back with the placeholders `model=file` would use for that workload (99 the
batch, 66 the tokens), and compare operator signatures, labels, storage and dependencies.
Then plan both graphs on the chip and compare their latencies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from elkopt.app import peak_rss_mb
from elkopt.chip import Chip
from elkopt.graph.dump import (
    BATCH_PLACEHOLDER,
    SEQUENCE_PLACEHOLDER,
    read_einstein,
    write_einstein,
)
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.space import PLAN_SPACES
from elkopt.plans.table import default_cache_dir

CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"
WORKLOADS = {"dit_xl_2": ("forward", 2, 256)}  # others: decode at --batch, --kv-len


def same_graph(a, b) -> bool:
    return (a.n_ops == b.n_ops
            and all((x.signature, x.label, [i.storage for i in x.inputs])
                    == (y.signature, y.label, [i.storage for i in y.inputs]) for x, y in zip(a.ops, b.ops))
            and all(a.dependencies(i) == b.dependencies(i) for i in range(a.n_ops)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*",
                        default=["llama2_13b", "gemma2_27b", "opt_30b", "llama2_70b", "dit_xl_2"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kv-len", type=int, default=2048)
    parser.add_argument("--chip", default="ipu_pod4")
    parser.add_argument("--scheduler", default="elkopt")
    parser.add_argument("--plan-space", choices=PLAN_SPACES, default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    chip = Chip(**yaml.safe_load((CONF / f"{args.chip}.yaml").read_text()))
    options = PlanningOptions(cache_dir=str(default_cache_dir()), plan_space=args.plan_space)
    to_ms = 1e3 / chip.clock_hz
    print(f"{args.chip}, {args.scheduler} schedules")
    print(f"{'model':12s} {'workload':16s} {'ops':>5s} {'dump MB':>8s} {'write s':>8s} {'read s':>7s} "
          f"{'same ops':>9s} {'zoo ms':>10s} {'dump ms':>10s} {'same ms':>8s}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            kind, batch, tokens = WORKLOADS.get(name, ("decode", args.batch, args.kv_len))
            graph = build_graph(name, kind, batch, tokens)
            start = time.perf_counter()
            path = write_einstein(graph, Path(folder) / f"{name}.json")
            written = time.perf_counter()
            back = read_einstein(path, placeholders={BATCH_PLACEHOLDER: batch, SEQUENCE_PLACEHOLDER: tokens})
            read = time.perf_counter()
            zoo_ms, dump_ms = (compile_model(g, chip, args.scheduler, options).timeline.latency_cycles * to_ms
                               for g in (graph, back))
            print(f"{name:12s} {f'{kind} b{batch} {tokens}':16s} {graph.n_ops:5d} "
                  f"{path.stat().st_size / 1e6:8.2f} {written - start:8.2f} {read - written:7.2f} "
                  f"{str(same_graph(graph, back)):>9s} {zoo_ms:10.6f} {dump_ms:10.6f} {str(zoo_ms == dump_ms):>8s}",
                  flush=True)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
