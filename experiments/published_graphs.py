"""The published Elk graph files, read as they ship, beside the zoo's models.

    python experiments/published_graphs.py ELK/models/original           # the four LLM graphs
    python experiments/published_graphs.py ELK/models/original --all     # all 23 files plan

ELK is a checkout of the published artifact (github.com/platformxlab/elk, head 8c6e814);
its graph files are not part of this repository. Every job is the command a user runs,
``python -m elkopt.run model=file model.path=<file> ...`` (or ``model=<zoo model>``), on
the default chip (IPU-POD4, 16 TB/s) with the default scheduler (elkopt); the numbers come
from its metrics.json.

Default: for Llama2-13B, Gemma2-27B, OPT-30B and Llama2-70B (decode, batch 32, KV 2048)
three graphs each: the zoo's model, the published file read as a decode step by the
published parser's rule, and by the exact rule (the softmax path sized by the KV length).
Printed beside them: the published parser's totals for the file (ELK_REFERENCE section
2.4) and the published latencies.

--all: every file of the folder imports and plans: the LLM and single-operator files as a
decode step (batch 32, KV 2048), the vision, BERT and ResNet files as a forward pass
(workload=forward: batch 2, sequence 2048).

Results go to --out (a table per mode, CSV, and each job's folder); plan tables are
cached under $ELKOPT_CACHE as for any run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from elkopt.published import PUBLISHED_FILES, PUBLISHED_MS, PUBLISHED_PARSER_TOTALS

FORWARD_PREFIXES = ("vit", "bert", "resnet")


def run(out: Path, name: str, *overrides: str) -> dict:
    """One `python -m elkopt.run` job in out/name; its metrics (or its error) as a dict."""
    folder = out / name
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "elkopt.run", *overrides, f"hydra.run.dir={folder}"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        print(f"  {name}: FAILED ({error})", flush=True)
        return {"job": name, "status": "failed", "error": error, "wall_s": wall}
    metrics = json.loads((folder / "metrics.json").read_text())
    print(f"  {name}: {metrics['latency_ms']:.3f} ms, {metrics['n_ops']} ops, compiled in "
          f"{metrics['compile_s']:.1f} s ({wall:.0f} s in all)", flush=True)
    return {"job": name, "status": "ok", "wall_s": wall, **metrics}


def row(label: str, metrics: dict, zoo: str) -> dict:
    published = PUBLISHED_MS[zoo]
    ops, gflop, gb = PUBLISHED_PARSER_TOTALS[zoo]
    return {
        "model": zoo, "graph": label,
        "ops": metrics["n_ops"] - metrics["stats"].get("split_copies_added", 0),  # before any cutting
        "GFLOP": metrics["flops"] / 1e9,
        "HBM_GB": metrics["hbm_bytes"] / 1e9,
        "basic_ms": metrics["basic_ms"], "static_ms": metrics["static_ms"], "elkopt_ms": metrics["latency_ms"],
        "ideal_ms": metrics["ideal_ms"], "lower_bound_ms": metrics["lower_bound_ms"],
        "pct_of_ideal": metrics["pct_of_ideal"], "compile_s": metrics["compile_s"], "wall_s": metrics["wall_s"],
        "parser_ops": ops, "parser_GFLOP": gflop, "parser_HBM_GB": gb,
        "pub_basic_ms": published["basic"], "pub_static_ms": published["static"],
        "pub_elk_full_ms": published["elk_full"], "pub_ideal_ms": published["ideal"],
    }


def llm_table(folder: Path, out: Path, plan_space: str) -> pd.DataFrame:
    rows = []
    for stem, zoo in PUBLISHED_FILES.items():
        path = folder / f"{stem}.json"
        print(f"{stem}.json and the zoo's {zoo}", flush=True)
        jobs = [("zoo", f"{zoo}", (f"model={zoo}",)),
                ("file, published rule", f"{stem}_published", ("model=file", f"model.path={path}")),
                ("file, exact rule", f"{stem}_exact",
                 ("model=file", f"model.path={path}", "model.decode_from_prefill=exact"))]
        for label, name, overrides in jobs:
            metrics = run(out, name, *overrides, f"planning.plan_space={plan_space}")
            if metrics["status"] == "ok":
                rows.append(row(label, metrics, zoo))
    return pd.DataFrame(rows)


def all_files(folder: Path, out: Path, plan_space: str) -> pd.DataFrame:
    rows = []
    for path in sorted(folder.glob("*.json")):
        forward = path.stem.startswith(FORWARD_PREFIXES)
        overrides = ["model=file", f"model.path={path}"] + (["workload=forward"] if forward else [])
        metrics = run(out, f"all_{path.stem}", *overrides, f"planning.plan_space={plan_space}")
        rows.append({
            "file": path.name, "status": metrics["status"],
            "workload": metrics.get("workload", metrics.get("error")),
            "ops": metrics.get("n_ops"), "GFLOP": metrics.get("flops", float("nan")) / 1e9,
            "HBM_GB": metrics.get("hbm_bytes", float("nan")) / 1e9,
            "elkopt_ms": metrics.get("latency_ms"), "ideal_ms": metrics.get("ideal_ms"),
            "compile_s": metrics.get("compile_s"), "wall_s": metrics["wall_s"],
        })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the artifact's models/original folder")
    parser.add_argument("--all", action="store_true", help="plan every file of the folder")
    parser.add_argument("--out", type=Path, default=None, help="where the jobs and tables go (default: a temp dir)")
    parser.add_argument("--plan-space", choices=("reference", "full"), default="reference",
                        help="planning.plan_space (experiments/README's numbers for this script were "
                             "measured in reference, the default before full)")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder (expected the artifact's models/original)")
    out = args.out or Path(tempfile.mkdtemp(prefix="published_graphs_"))
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    if args.all:
        table = all_files(args.folder, out, args.plan_space)
        name = "all_files.csv"
    else:
        missing = [f"{stem}.json" for stem in PUBLISHED_FILES if not (args.folder / f"{stem}.json").is_file()]
        if missing:
            parser.error(f"{args.folder} lacks {', '.join(missing)}")
        table = llm_table(args.folder, out, args.plan_space)
        name = "llm_graphs.csv"
    table.to_csv(out / name, index=False)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nwritten: {out / name}")


if __name__ == "__main__":
    main()
