"""The ONNX decode step written by experiments/onnx_decoder.py imports to the zoo's graph: HBM
bytes to the byte, FLOPs within 1e-3 (equal with SiLU; Gelu is one operator where the zoo
has two), two Concat parts more per rotary."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import onnx

from elkopt.graph.onnx_graph import read_onnx
from elkopt.graph.zoo import get_architecture

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "onnx_decoder.py"
# relative; measured: 0 with SiLU, 1.6e-5 for Gemma2 b32 KV 2048, 3.4e-4 for tiny with Gelu
FLOP_TOLERANCE = 1e-3


def load_script():
    spec = importlib.util.spec_from_file_location("onnx_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_decode_step_in_onnx_reads_the_zoos_hbm_bytes_and_flops(tmp_path):
    script = load_script()
    tiny = get_architecture("tiny")  # GQA: 4 query heads on 2 KV heads
    batch, kv_len = 4, 64
    for arch in (tiny, dataclasses.replace(tiny, name="tiny_gelu", activation="gelu")):
        model = script.decode_step_onnx(arch, kv_len=kv_len)
        assert model.ByteSize() < 100_000  # weights are external and never materialised
        onnx.save(model, tmp_path / f"{arch.name}.onnx")
        ours = read_onnx(tmp_path / f"{arch.name}.onnx", sizes=script.onnx_sizes(batch, kv_len))
        zoo = script.zoo_graph(arch, batch, kv_len)
        assert ours.hbm_bytes == zoo.hbm_bytes, arch.name
        assert abs(ours.total_flops / zoo.total_flops - 1) <= FLOP_TOLERANCE, arch.name
        # the only FLOPs apart: the Multiply of the zoo's two-operator GELU, B x F per layer
        gelu = batch * arch.ffn * arch.n_layers if arch.activation == "gelu" else 0
        assert zoo.total_flops - ours.total_flops == gelu, arch.name
        # rotate_half's Concat is two parts on q and on k; Gelu is one operator, not two
        extra = 4 - (arch.activation == "gelu")
        assert ours.n_ops == zoo.n_ops + extra * arch.n_layers, arch.name
