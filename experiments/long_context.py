"""Long-context decode: compile time with cold plan tables, and where the HBM bytes go.

    python experiments/long_context.py                                  # 8B and 70B, KV 8k and 128k, batch 1 and 32
    python experiments/long_context.py --models llama3_8b --kv 131072 --batch 32 --timeout 300

Runs `python -m elkopt.run` once per configuration on the default chip (IPU-POD4) with
`planning.cache_dir=null` (every plan table built afresh: the compile time a first run
pays) and prints, per configuration: latency_ms, ideal_ms, lower_bound_ms, compile_s, the
run's wall and CPU seconds (the machine may be shared: CPU seconds are what an idle machine
would take, near enough, for this single-threaded compile), the HBM bytes read per step
split into KV cache and weights (metrics.json `hbm_bytes_kv`, `hbm_bytes_weights`) and the
cutting decisions. A configuration that does not finish within `--timeout` seconds is
reported as such. Outputs go under `--out` (one folder per configuration).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def run_one(model: str, kv: int, batch: int, out: Path, timeout: float) -> dict:
    """One cold compile through the CLI; its metrics (or the reason it has none) and times."""
    folder = out / f"{model}_b{batch}_kv{kv}"
    command = [sys.executable, "-m", "elkopt.run", f"model={model}", f"workload.batch={batch}",
               f"workload.kv_len={kv}", "planning.cache_dir=null", f"hydra.run.dir={folder}",
               "hydra/job_logging=disabled"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    row = {"model": model, "kv_len": kv, "batch": batch}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"not finished in {timeout:.0f} s"}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row.update(wall_s=time.perf_counter() - began,
               cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    if done.returncode != 0:
        return {**row, "status": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    metrics = json.loads((folder / "metrics.json").read_text())
    keys = ("latency_ms", "ideal_ms", "lower_bound_ms", "compile_s", "hbm_bytes_kv", "hbm_bytes_weights", "n_ops")
    return {**row, "status": "ok", **{k: metrics.get(k) for k in keys},
            "split_choices": metrics["stats"].get("split_choices", "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["llama3_8b", "llama3_70b"])
    parser.add_argument("--kv", nargs="+", type=int, default=[8192, 131072])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=Path("outputs/long_context"))
    args = parser.parse_args()
    print("model kv batch | latency ideal bound ms | compile_s wall_s cpu_s | KV GB weights GB KV share | cuts")
    for model, kv, batch in itertools.product(args.models, args.kv, args.batch):
        r = run_one(model, kv, batch, args.out, args.timeout)
        if r["status"] != "ok":
            print(f"{model} {kv} {batch} | {r['status']}", flush=True)
            continue
        kv_gb, w_gb = r["hbm_bytes_kv"] / 1e9, r["hbm_bytes_weights"] / 1e9
        print(f"{model} {kv} {batch} | {r['latency_ms']:.3f} {r['ideal_ms']:.3f} {r['lower_bound_ms']:.3f} | "
              f"{r['compile_s']:.1f} {r['wall_s']:.1f} {r['cpu_s']:.1f} | {kv_gb:.2f} {w_gb:.2f} "
              f"{kv_gb / (kv_gb + w_gb):.1%} | {r['split_choices']}", flush=True)


if __name__ == "__main__":
    main()
