"""Models written by real ONNX exporters, imported from the raw files and compared with the zoo.

    python experiments/onnx_exporters.py                      # every fixture, batch 2, past 8
    python experiments/onnx_exporters.py --batch 8 --past 511 --no-plan
    python experiments/onnx_exporters.py --only optimum_llama optimum_gpt2

The files are tests/fixtures/onnx/*.onnx (tiny Hugging Face models exported by torch.onnx with
dynamo and with TorchScript, by optimum with and without ``--optimize O2``, and by
onnxruntime-genai's model builder;
tests/fixtures/onnx/export.py regenerates them). Each is read as `python -m elkopt.run
model=file model.format=onnx` reads it: only the free symbolic dims are given (batch, past
length, prompt length), the dims named by expressions are computed, onnxruntime's shape
inference completes what ONNX's cannot, and the exported graph is rewritten
(`elkopt.graph.onnx_rewrites`). The zoo's graph of the same config is built beside it (a
decode step with a KV cache of past + 1 positions, or a forward pass of the prompt), and both
are planned on the chip with the same options.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from elkopt.chip import Chip
from elkopt.graph.arch import Architecture
from elkopt.graph.ir import Graph, OpKind
from elkopt.graph.onnx_graph import OnnxImportError, load_onnx, read_onnx, symbolic_dims
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans.table import default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "onnx"
CONF = ROOT / "conf" / "chip"
KINDS = (OpKind.MATMUL, OpKind.BINARY, OpKind.UNARY, OpKind.REDUCE, OpKind.SLICE, OpKind.GATHER)

#: The configs of tests/fixtures/onnx/export.py (hidden 64, 4 heads of 16, 2 layers, MLP 128, vocab 256;
#: Mixtral: 4 experts of MLP 128, top 2).
FIXTURE_LLAMA = Architecture("fixture_llama", n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, head_dim=16,
                             ffn=128, vocab=256, gated=True, activation="silu", norm="rmsnorm",
                             positional="rotary")
FIXTURE_MIXTRAL = Architecture("fixture_mixtral", n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, head_dim=16,
                               ffn=128, vocab=256, gated=True, activation="silu", norm="rmsnorm",
                               positional="rotary", n_experts=4, experts_per_token=2, expert_ffn=128,
                               renormalize_gates=True)
FIXTURE_GPT2 = Architecture("fixture_gpt2", n_layers=2, hidden=64, n_heads=4, n_kv_heads=4, head_dim=16,
                            ffn=128, vocab=256, gated=False, activation="gelu", norm="layernorm",
                            positional="learned", bias=True, fused_qkv_bias=True)


def fixture_architecture(stem: str) -> Architecture | None:
    if "gpt2" in stem:
        return FIXTURE_GPT2
    if "mixtral" in stem:
        return FIXTURE_MIXTRAL
    if "llama" in stem:
        return FIXTURE_LLAMA
    return None


def fixture_sizes(path: Path, batch: int, past: int, prompt: int) -> dict[str, int]:
    """The free symbolic dims of a fixture: batch, past length, and the new tokens (1 in a
    decode step, `prompt` in a prefill); TorchScript's and onnxruntime-genai's independent total
    length is past + 1, and genai's `kv_cache_dim` the head size."""
    decode = "prefill" not in path.stem
    values = {"batch": batch, "batch_size": batch, "past_sequence": past, "past_sequence_length": past,
              "total_sequence": past + 1, "total_sequence_length": past + 1, "sequence": 1 if decode else prompt,
              "sequence_length": 1 if decode else prompt, "kv_cache_dim": FIXTURE_LLAMA.head_dim}
    dims = symbolic_dims(load_onnx(path))
    return {name: values[name] for name in dims if name in values}


def zoo_graph(stem: str, batch: int, past: int, prompt: int) -> Graph | None:
    arch = fixture_architecture(stem)
    if arch is None:
        return None
    if "prefill_cache" in stem:  # the prompt's K and V written to HBM for the cache
        return build_graph(arch, "prefill", batch, prompt)
    if "prefill" in stem:
        return build_graph(arch, "forward", batch, prompt)
    return build_graph(arch, "decode", batch, past + 1)


def kind_counts(graph: Graph) -> Counter:
    return Counter(op.kind for op in graph.ops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="fixture stems (default: all)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--past", type=int, default=8, help="cached positions before the step (decode)")
    parser.add_argument("--prompt", type=int, default=6, help="prompt length (prefill files)")
    parser.add_argument("--chip", default="ipu_pod4")
    parser.add_argument("--scheduler", default="elkopt")
    parser.add_argument("--no-plan", action="store_true", help="skip planning (no latency)")
    args = parser.parse_args(argv)
    chip = Chip(**yaml.safe_load((CONF / f"{args.chip}.yaml").read_text()))
    options = PlanningOptions(cache_dir=str(default_cache_dir()))
    print(f"batch {args.batch}, past {args.past}, prompt {args.prompt}; {args.chip}, {args.scheduler} schedules")
    kinds = "".join(f" {k.value:>6s}" for k in KINDS)
    print(f"{'file':22s} {'graph':6s} {'ops':>4s}{kinds} {'FLOPs':>9s} {'HBM bytes':>10s} {'import s':>8s} "
          f"{'latency ms':>11s}")
    failed = 0
    for path in sorted(FIXTURES.glob("*.onnx")):
        if args.only and path.stem not in args.only:
            continue
        start = time.perf_counter()
        try:
            ours = read_onnx(path, sizes=fixture_sizes(path, args.batch, args.past, args.prompt))
        except OnnxImportError as error:
            failed += 1
            print(f"{path.stem:22s} refused: {error}")
            continue
        imported = time.perf_counter() - start
        zoo = zoo_graph(path.stem, args.batch, args.past, args.prompt)
        rows = []
        for graph, label, seconds in ((zoo, "zoo", math.nan), (ours, "onnx", imported)):
            if graph is None:
                continue
            latency = math.nan
            if not args.no_plan:
                result = compile_model(graph, chip, args.scheduler, options)
                latency = result.timeline.latency_cycles * 1e3 / chip.clock_hz
            counts = kind_counts(graph)
            rows.append((graph, latency))
            print(f"{path.stem:22s} {label:6s} {graph.n_ops:4d}" + "".join(f" {counts[k]:6d}" for k in KINDS)
                  + f" {graph.total_flops:9d} {graph.hbm_bytes:10d} {seconds:8.2f} {latency:11.6f}", flush=True)
        if len(rows) == 2:
            (z, z_ms), (o, o_ms) = rows
            print(f"{path.stem:22s} {'ratio':6s} {o.n_ops / z.n_ops:4.2f}{'':{7 * len(KINDS)}s} "
                  f"{o.total_flops / z.total_flops:9.6f} {o.hbm_bytes / z.hbm_bytes:10.6f} {'':8s} "
                  f"{o_ms / z_ms:11.6f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
