"""Splitting operators with large HBM data into copies (the capacity rule)."""

from dataclasses import replace

import pytest

from elkopt.chip import Chip
from elkopt.graph.ir import Dim, Graph, Operand, OpKind, Operator, Storage
from elkopt.graph.split import split_dim, split_large_operators, split_operator
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningError, PlanningOptions, compile_model


def dot(name: str, x: str, n: int, k: int, batch: int = 4) -> Operator:
    return Operator(
        name, "Dot", OpKind.MATMUL,
        dims=(Dim("B", batch), Dim("N", n), Dim("K", k)),
        output=Operand(name, ("B", "N"), Storage.CHIP),
        inputs=(Operand(x, ("B", "K"), Storage.CHIP),
                Operand(f"{name}.weight", ("K", "N"), Storage.HBM)),
        reduce="sum",
    )


def relu(name: str, x: str, n: int, batch: int = 4) -> Operator:
    return Operator(name, "Relu", OpKind.UNARY, dims=(Dim("B", batch), Dim("N", n)),
                    output=Operand(name, ("B", "N"), Storage.CHIP),
                    inputs=(Operand(x, ("B", "N"), Storage.CHIP),))


def mlp() -> Graph:
    # a small Dot, a big one (4096 x 4096 weights = 32 MiB), and a consumer of the big one
    return Graph("mlp", (dot("up", "x", 4096, 64), relu("act", "up", 4096),
                         dot("big", "act", 4096, 4096), relu("out", "big", 4096)),
                 graph_inputs={"x"})


def test_split_dim_cuts_along_the_weight_output_dim():
    big = mlp().ops[2]
    # B indexes no weight, K is contracted: only N qualifies
    assert split_dim(big, 3) == "N"
    assert split_dim(big, 5000) is None  # longer than any dim
    assert split_dim(relu("r", "x", 8), 2) is None  # no HBM operand


def test_split_dim_prefers_a_dim_the_copies_divide():
    # the K cache of decode attention: B, heads and keys all index output and cache
    op = Operator("scores", "BatchMatMul", OpKind.MATMUL,
                  dims=(Dim("B", 48), Dim("H", 40), Dim("S", 50), Dim("D", 128)),
                  output=Operand("scores", ("B", "H", "S"), Storage.CHIP),
                  inputs=(Operand("q", ("B", "H", "D"), Storage.CHIP),
                          Operand("k_cache", ("B", "H", "S", "D"), Storage.HBM)),
                  reduce="sum")
    assert split_dim(op, 2) == "S"  # longest, and even
    assert split_dim(op, 4) == "B"  # S = 50 is not a multiple of 4, B = 48 is the longest that is
    assert split_dim(op, 7) == "S"  # none divides: the longest
    # with a cost, the dim whose copies are cheapest in total wins
    def cost(part):  # copies cut along B cost double, along H are infeasible
        lengths = dict(zip((d.name for d in part.dims), part.dim_lengths))
        if lengths["H"] < 40:
            return float("inf")
        return part.iterations * (2.0 if lengths["B"] < 48 else 1.0)
    assert split_dim(op, 2, cost) == "S"
    assert split_dim(op, 2, lambda part: cost(part) if part.dim_lengths[2] == 50 else 1e12) == "B"
    assert split_dim(op, 2, lambda part: float("inf")) is None


def test_copies_conserve_work_and_bytes():
    big = mlp().ops[2]
    parts = split_operator(big, "N", 3)
    assert [p.name for p in parts] == ["big.part0", "big.part1", "big.part2"]
    assert [p.part for p in parts] == [(0, 3), (1, 3), (2, 3)]
    assert [p.dim_lengths[1] for p in parts] == [1366, 1365, 1365]
    assert sum(p.flops for p in parts) == big.flops
    assert sum(p.hbm_bytes(2) for p in parts) == big.hbm_bytes(2)
    # each copy loads its own slice of the weights; all write the same output tensor
    assert {p.inputs[1].tensor for p in parts} == {"big.weight.part0", "big.weight.part1",
                                                    "big.weight.part2"}
    assert {p.output.tensor for p in parts} == {"big"}
    # equal slices share a signature (and so a plan table); the odd one does not
    assert parts[1].signature == parts[2].signature != parts[0].signature
    with pytest.raises(ValueError, match="already a part"):
        split_operator(parts[0], "N", 2)
    with pytest.raises(ValueError, match="cannot cut dim 'B' of length 4 into 5"):
        split_operator(big, "B", 5)


def test_split_graph_only_cuts_what_exceeds_the_limit():
    graph = mlp()
    weight = graph.ops[2].hbm_bytes(2)  # 32 MiB; the small Dot reads 512 KiB
    split, report = split_large_operators(graph, total_sram_bytes=4 * weight, fraction=0.1,
                                          max_copies=8)
    # 32 MiB over a limit of 0.4 x 32 MiB: 3 copies
    assert report.splits == {"big": ("N", 3)} and report.added_ops == 2
    assert [op.name for op in split.ops] == ["up", "act", "big.part0", "big.part1", "big.part2",
                                             "out"]
    assert split.hbm_bytes == graph.hbm_bytes and split.total_flops == graph.total_flops
    # the consumer waits for every copy
    assert split.dependencies(5) == (2, 3, 4)
    # capped by max_copies; nothing over the limit leaves the graph as it was
    assert split_large_operators(graph, 4 * weight, 0.01, 2)[1].splits == {"big": ("N", 2)}
    same, none = split_large_operators(graph, 4 * weight, 0.5, 4)
    assert same is graph and none.splits == {}
    with pytest.raises(ValueError, match="fraction"):
        split_large_operators(graph, weight, 0.0, 4)


def test_graph_rejects_reading_a_tensor_before_all_its_parts():
    parts = split_operator(mlp().ops[2], "N", 2)
    base = mlp().ops[:2]
    with pytest.raises(ValueError, match=r"read before all its parts are produced \(1 of 2\)"):
        Graph("g", (*base, parts[0], relu("out", "big", 4096), parts[1]), graph_inputs={"x"})
    with pytest.raises(ValueError, match=r"missing parts: 'big' \(1 of 2\)"):
        Graph("g", (*base, parts[0]), graph_inputs={"x"})
    with pytest.raises(ValueError, match="clashes"):
        twice = parts[0].__class__(**{**parts[0].__dict__, "name": "again"})
        Graph("g", (*base, parts[0], twice), graph_inputs={"x"})
    with pytest.raises(ValueError, match="part must be"):
        dot("p", "x", 8, 8).__class__(**{**dot("p", "x", 8, 8).__dict__, "part": (2, 2)})


def test_splitting_makes_an_oversized_operator_plannable():
    # the tiny model's KV operators do not fit this chip whole; cut in two they do
    graph = build_graph("tiny", "decode", 8, 1024)
    chip = Chip(name="cramped", cores_per_chip=16, sram_bytes_per_core=40 * 1024,
                hbm_bytes_per_s=2e11)
    with pytest.raises(PlanningError, match="fits in no plan"):
        compile_model(graph, chip, "static", PlanningOptions(max_spatial_splits=64, split_fraction=None))
    options = PlanningOptions(max_spatial_splits=64, split_fraction=0.5)
    result = compile_model(graph, chip, "elkopt", options)
    names = [op.name for op in result.graph.ops]
    assert result.graph.n_ops > graph.n_ops
    assert any(name.endswith(".part1") for name in names)
    assert result.graph.hbm_bytes == graph.hbm_bytes
    # compile_model checked the plan independently; its latency respects the true bound
    assert result.timeline.latency_ms >= result.references["lower_bound"] * (1 - 1e-9)


def test_if_faster_keeps_the_faster_of_whole_and_cut():
    graph = build_graph("tiny", "decode", 8, 1024)
    chip = Chip(name="roomy", cores_per_chip=64, sram_bytes_per_core=64 * 1024, hbm_bytes_per_s=2e11)
    options = PlanningOptions(max_spatial_splits=64, split_fraction=0.05, max_copies=2)
    cut = compile_model(graph, chip, "static", replace(options, split_policy="always"))
    assert cut.graph.n_ops > graph.n_ops and cut.stats["split_ops"] > 0
    best = compile_model(graph, chip, "static", options)
    whole, with_cut = best.stats["split_whole_ms"], best.stats["split_cut_ms"]
    assert with_cut == pytest.approx(cut.timeline.latency_ms)
    assert best.timeline.latency_ms == pytest.approx(min(whole, with_cut))
    assert (best.graph.n_ops == graph.n_ops) == (whole <= with_cut)
    with pytest.raises(ValueError, match="split_policy must be one of if_faster, always"):
        PlanningOptions(split_policy="sometimes")
