"""Cutting operators into copies: the copies, the adds of a contracted cut, the per-operator decision."""

import re
from dataclasses import replace

import pytest

from elkopt.chip import Chip
from elkopt.graph.ir import Dim, Graph, Operand, OpKind, Operator, Storage
from elkopt.graph.split import (
    apply_cuts,
    choose_cuts,
    cut_cost,
    split_dim,
    split_dims,
    split_large_operators,
    split_operator,
)
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningError, PlanningOptions, choose_split, compile_model
from elkopt.plans.space import OpShape
from elkopt.plans.table import build_table


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
    # D is summed over and indexes the cache: it qualifies too, after the output's dims
    assert split_dims(op, 2) == ["S", "B", "H", "D"]
    # with a cost, the dim whose copies (and adds) are cheapest in total wins
    def lengths(part):
        return dict(zip((d.name for d in part.dims), part.dim_lengths))

    def cost(part):  # copies cut along B cost double, along H are infeasible, adds are free
        if part.kind == OpKind.BINARY:
            return 0.0
        if lengths(part)["H"] < 40:
            return float("inf")
        return part.iterations * (2.0 if lengths(part)["B"] < 48 else 1.0)
    assert split_dim(op, 2, cost) == "S"
    assert split_dim(op, 2, lambda part: cost(part) if lengths(part).get("S") == 50
                     and lengths(part).get("D", 128) == 128 else 1e12) == "B"
    assert split_dim(op, 2, lambda part: cost(part) if lengths(part).get("S") == 50 else 1e12) == "D"
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


def test_a_compilation_builds_each_plan_table_once_without_a_disk_cache(monkeypatch):
    # the cutting decision, the chosen graph and its runner-up share one table per operator
    # signature (elkopt.plans.table.TableMemo); they used to build their own
    import elkopt.plans.table as plan_tables

    built = []
    real = plan_tables.build_table

    def counting(shape, *args, **kwargs):
        built.append(shape)
        return real(shape, *args, **kwargs)

    monkeypatch.setattr(plan_tables, "build_table", counting)
    graph = build_graph("tiny", "decode", 8, 1024)
    chip = Chip(name="roomy", cores_per_chip=64, sram_bytes_per_core=64 * 1024, hbm_bytes_per_s=2e11)
    options = PlanningOptions(max_spatial_splits=64, split_fraction=0.05, max_copies=2, split_margin=1.0)
    result = compile_model(graph, chip, "static", options)
    assert "split_runner_up_ms" in result.stats  # both graphs were planned
    assert built and len(built) == len(set(built))
    assert set(built) >= {OpShape.of(op) for op in result.graph.ops}


def test_if_faster_keeps_the_faster_of_the_choice_and_its_runner_up():
    graph = build_graph("tiny", "decode", 8, 1024)
    chip = Chip(name="roomy", cores_per_chip=64, sram_bytes_per_core=64 * 1024, hbm_bytes_per_s=2e11)
    # every optional decision is close under a margin of 100%: the runner-up flips them all
    options = PlanningOptions(max_spatial_splits=64, split_fraction=0.05, max_copies=2, split_margin=1.0)
    choice = choose_split(graph, chip, options)
    assert choice.runner_up is not None and choice.flipped
    every = compile_model(graph, chip, "static", replace(options, split_policy="always"))
    assert every.graph.n_ops > graph.n_ops and every.stats["split_ops"] > 0
    chosen = compile_model(graph, chip, "static", replace(options, split_policy="per_op"))
    assert chosen.graph.n_ops == choice.graph.n_ops and "split_runner_up_ms" not in chosen.stats
    best = compile_model(graph, chip, "static", options)
    ms, runner_up = best.stats["split_choice_ms"], best.stats["split_runner_up_ms"]
    assert ms == pytest.approx(chosen.timeline.latency_ms)
    assert best.timeline.latency_ms == pytest.approx(min(ms, runner_up))
    assert best.stats["split_kept"] == ("choice" if ms <= runner_up else "runner-up")
    assert best.graph.n_ops == (choice.graph if ms <= runner_up else choice.runner_up[0]).n_ops
    with pytest.raises(ValueError, match="split_policy must be one of if_faster, per_op, always"):
        PlanningOptions(split_policy="sometimes")
    with pytest.raises(ValueError, match="planning.split_margin"):
        PlanningOptions(split_margin=-0.1)
    with pytest.raises(ValueError, match="split_estimate must be one of elk_dyn, ideal"):
        PlanningOptions(split_estimate="guess")


# -- cutting along a dim the operator sums over ------------------------------------------


def context(batch: int = 4, heads: int = 2, keys: int = 64, depth: int = 16) -> Operator:
    """Decode attention's context BatchMatMul: out[B,H,D] += probs[B,H,S] * v_cache[B,H,S,D]."""
    return Operator("ctx", "BatchMatMul", OpKind.MATMUL,
                    dims=(Dim("B", batch), Dim("H", heads), Dim("D", depth), Dim("S", keys)),
                    output=Operand("ctx", ("B", "H", "D"), Storage.CHIP),
                    inputs=(Operand("probs", ("B", "H", "S"), Storage.CHIP),
                            Operand("v_cache", ("B", "H", "S", "D"), Storage.HBM)),
                    reduce="sum")


def attention_tail() -> Graph:
    out = Operator("proj", "Relu", OpKind.UNARY, dims=(Dim("B", 4), Dim("H", 2), Dim("D", 16)),
                   output=Operand("proj", ("B", "H", "D"), Storage.CHIP),
                   inputs=(Operand("ctx", ("B", "H", "D"), Storage.CHIP),))
    return Graph("tail", (context(), out), graph_inputs={"probs"})


def test_a_contracted_cut_gives_partial_sums_and_adds():
    graph = attention_tail()
    whole = graph.ops[0]
    # the output's dims first (H is shorter than 3), then S: summed over, indexed by the cache
    assert split_dims(whole, 3) == ["D", "B", "S"]
    cut, report = apply_cuts(graph, {"ctx": ("S", 3)})
    names = [op.name for op in cut.ops]
    # each copy right before the add that takes it in, the last add writing the output
    assert names == ["ctx.part0", "ctx.part1", "ctx.add1", "ctx.part2", "ctx.add2", "proj"]
    parts = [op for op in cut.ops if ".part" in op.name]
    adds = [op for op in cut.ops if ".add" in op.name]
    assert [dict(zip((d.name for d in p.dims), p.dim_lengths))["S"] for p in parts] == [22, 21, 21]
    assert all(p.part is None and p.output.dims == whole.output.dims for p in parts)
    assert [p.output.tensor for p in parts] == ["ctx.part0", "ctx.part1", "ctx.part2"]
    assert [p.inputs[1].tensor for p in parts] == ["v_cache.part0", "v_cache.part1", "v_cache.part2"]
    assert all(a.kind == OpKind.BINARY and a.label == "Add" for a in adds)
    assert [a.output.tensor for a in adds] == ["ctx.sum1", "ctx"]
    assert [tuple(x.tensor for x in a.inputs) for a in adds] == [("ctx.part0", "ctx.part1"),
                                                                  ("ctx.sum1", "ctx.part2")]
    # the result: the same tensor, shape and consumer; HBM bytes unchanged; FLOPs + the adds
    assert adds[-1].output == whole.output
    assert cut.dependencies(names.index("proj")) == (names.index("ctx.add2"),)
    assert cut.hbm_bytes == graph.hbm_bytes
    out_elements = whole.elements(whole.output)
    assert cut.total_flops == graph.total_flops + 2 * out_elements
    assert sum(a.flops for a in adds) == 2 * out_elements
    assert report.splits == {"ctx": ("S", 3)} and report.adds == 2 and report.added_ops == 4
    # a max reduction is combined by a Maximum
    peak = replace(whole, reduce="max")
    assert {op.label for op in split_operator(peak, "S", 2) if op.kind == OpKind.BINARY} == {"Maximum"}
    # a dim some HBM operand does not index would load its data twice
    with pytest.raises(ValueError, match="does not index every HBM operand"):
        split_operator(mlp().ops[2], "B", 2)


def test_a_contracted_cut_is_costed_by_the_copies_and_the_adds():
    # real plan tables: the adds are binary element-wise operators of the output's shape
    chip = Chip(name="small", cores_per_chip=16, sram_bytes_per_core=64 * 1024, hbm_bytes_per_s=1e11)
    whole = context()

    def fastest(op):
        table = build_table(op, chip, 2, 64)
        return float(table.total_cycles.min())

    pieces = split_operator(whole, "S", 2)
    add = pieces[-1]
    assert add.kind == OpKind.BINARY and fastest(add) > 0
    assert cut_cost(whole, "S", 2, fastest) == pytest.approx(sum(fastest(p) for p in pieces))
    assert cut_cost(whole, "S", 2, fastest) > sum(fastest(p) for p in pieces[:2])
    # the dim chosen for k copies is the cheapest by copies + adds
    for copies in (2, 4):
        dims = split_dims(whole, copies)
        assert split_dim(whole, copies, fastest) == min(dims, key=lambda d: (cut_cost(whole, d, copies, fastest),
                                                                             dims.index(d)))


# -- the per-operator decision -------------------------------------------------------------


def test_only_what_must_be_cut_is_cut_when_cutting_does_not_pay():
    # the tiny model's attention BatchMatMuls fit in no plan on this chip; its gate-up Dot
    # and LM head read more than half the SRAM but plan whole, and cutting them buys nothing
    graph = build_graph("tiny", "decode", 8, 1024)
    chip = Chip(name="cramped", cores_per_chip=16, sram_bytes_per_core=40 * 1024, hbm_bytes_per_s=2e11)
    options = PlanningOptions(max_spatial_splits=64, split_fraction=0.5, split_policy="per_op")
    lines = []
    choice = choose_split(graph, chip, options, lines.append)
    decided = {c.names[0]: c for c in choice.candidates}
    assert set(decided) == {"layer0.attn.scores", "layer0.attn.context", "layer0.mlp.gate_up", "lm_head"}
    assert decided["layer0.attn.scores"].must and decided["layer0.attn.context"].must
    assert not decided["lm_head"].must and decided["lm_head"].chosen is None
    assert decided["layer0.mlp.gate_up"].chosen is None
    must = {f"layer{i}.attn.{name}" for i in (0, 1) for name in ("scores", "context")}
    assert set(choice.report.splits) == must == choice.report.must
    # every option was weighed; the one taken is the lowest latency of its last pass
    for c in choice.candidates:
        assert c.latency == min(latency for _o, _e, latency in c.options)
    assert any("fits in no plan whole" in line for line in lines)
    result = compile_model(graph, chip, "elkopt", options)
    assert result.graph.hbm_bytes == graph.hbm_bytes
    adds = [op for op in result.graph.ops if re.search(r"\.attn\.(scores|context)\.add\d$", op.name)]
    # the contexts' partial sums: 7 copies each (the streamed count, ceil(bytes / (0.5 x SRAM)),
    # beats 2 to 4 here), so 6 Adds per layer
    assert len(adds) == result.stats["split_adds"] == 12
    added = sum(op.flops for op in adds)
    assert result.graph.total_flops == graph.total_flops + added
    assert result.stats["split_ops"] == 4 and "layer0.attn.scores (x2)" in result.stats["split_choices"]


def test_choose_cuts_weighs_each_operator_on_its_own():
    # three Dots reading weights from HBM: "big" fits in no plan whole, "mid" is above the
    # threshold but its cut costs latency, "small" is below it
    graph = Graph("three", (dot("small", "x", 64, 64), dot("mid", "small", 2048, 64),
                            dot("big", "mid", 4096, 2048)), graph_inputs={"x"})

    def cost(op):  # whole "big" fits nowhere; a cut costs 10% more execution
        if op.name == "big":
            return float("inf")
        return op.iterations * (1.1 if op.name.count(".part") or op.kind == OpKind.BINARY else 1.0)

    def latency(g):  # cuts of "mid" lose, "big" in 3 copies along N is best
        n = {op.name for op in g.ops}
        return (sum(cost(op) for op in g.ops) + (1e6 if "mid.part0" in n else 0)
                - (3e6 if "big.part2" in n and "big.part3" not in n and "big.add1" not in n else 0))

    choice = choose_cuts(graph, total_sram_bytes=10 * 2**20, fraction=0.02, max_copies=4,
                         cost=cost, evaluate=latency)
    assert choice.choices == {"big": ("N", 3)}
    assert choice.report.splits == {"big": ("N", 3)} and choice.report.must == {"big"}
    assert [c.names for c in choice.candidates] == [("mid",), ("big",)]
    assert choice.converged and choice.runner_up is not None and choice.flipped == ("mid",)
    # the runner-up takes the close decision the other way and keeps the compulsory cut
    assert {op.name for op in choice.runner_up[0].ops} >= {"mid.part0", "big.part2"}
    # with no margin nothing is close: no runner-up
    strict = choose_cuts(graph, 10 * 2**20, 0.02, 4, cost, latency, margin=0.0)
    assert strict.runner_up is None and strict.choices == choice.choices
    # without a threshold only what must be cut is a candidate
    assert [c.names for c in choose_cuts(graph, 10 * 2**20, None, 4, cost, latency).candidates] == [("big",)]


def test_the_runner_up_turns_the_close_decisions_one_way():
    # "mid" is best whole and "wide" best cut, both by a close margin: the runner-up turns
    # them all towards a cut or all towards whole, whichever the estimate rates better
    graph = Graph("four", (dot("mid", "x", 2048, 64), dot("wide", "mid", 4096, 64),
                           dot("big", "wide", 4096, 2048)), graph_inputs={"x"})

    def cost(op):
        return float("inf") if op.name == "big" else float(op.iterations)

    def latency(g, cut_mid=0.5e6):
        n = {op.name for op in g.ops}
        return (3e7 + sum(cost(op) for op in g.ops) + (cut_mid if "mid.part0" in n else 0)
                + (0 if "wide.part0" in n else 1e6))

    choice = choose_cuts(graph, 10 * 2**20, 0.02, 2, cost, latency)
    assert choice.choices.keys() == {"wide", "big"} and choice.flipped == ("mid",)
    assert {op.name for op in choice.runner_up[0].ops} >= {"mid.part0", "wide.part0", "big.part0"}
    dearer = choose_cuts(graph, 10 * 2**20, 0.02, 2, cost, lambda g: latency(g, cut_mid=2e6))
    assert dearer.flipped == ("wide",)
    assert not {"mid.part0", "wide.part0"} & {op.name for op in dearer.runner_up[0].ops}
