"""The ONNX decode step written by experiments/onnx_decoder.py imports to the zoo's graph: HBM
bytes to the byte (with HF's repeat_kv too), FLOPs equal (Gelu is read as the zoo's Sigmoid and
Multiply), the zoo's operators (rotate_half's Concat folds)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import onnx

from elkopt.graph.ir import OpKind
from elkopt.graph.onnx_graph import read_onnx
from elkopt.graph.zoo import get_architecture

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "onnx_decoder.py"
def load_script():
    spec = importlib.util.spec_from_file_location("onnx_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_decode_step_in_onnx_reads_the_zoos_hbm_bytes_and_flops(tmp_path):
    script = load_script()
    tiny = get_architecture("tiny")  # GQA: 4 query heads on 2 KV heads
    batch, kv_len = 4, 64
    for arch, gqa in ((tiny, "broadcast"), (tiny, "repeat"),
                      (dataclasses.replace(tiny, name="tiny_gelu", activation="gelu"), "broadcast")):
        case = f"{arch.name} {gqa}"
        model = script.decode_step_onnx(arch, kv_len=kv_len, gqa=gqa)
        assert model.ByteSize() < 100_000  # weights are external and never materialised
        onnx.save(model, tmp_path / f"{arch.name}_{gqa}.onnx")
        ours = read_onnx(tmp_path / f"{arch.name}_{gqa}.onnx", sizes=script.onnx_sizes(batch, kv_len))
        zoo = script.zoo_graph(arch, batch, kv_len)
        assert ours.hbm_bytes == zoo.hbm_bytes, case  # repeat_kv too: each cache is read once
        assert ours.total_flops == zoo.total_flops, case
        # rotate_half's Concat folds as in the zoo; Gelu is two operators, as the zoo's
        assert ours.n_ops == zoo.n_ops, case
        assert script.kind_counts(ours)[OpKind.SLICE] == script.kind_counts(zoo)[OpKind.SLICE], case
