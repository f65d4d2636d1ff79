"""Plan enumeration invariants, plan tables and their cache."""

import itertools
import math

import numpy as np
import pytest

from elkopt.chip import Chip, Topology
from elkopt.graph.ir import Dim, Operand, Operator, OpKind, Storage
from elkopt.graph.zoo import build_graph
from elkopt.plans.space import (
    OpShape,
    cost_plans,
    enumerate_plans,
    enumerate_spatial,
    enumerate_temporal,
    fit_ranking,
    min_hot_bytes,
    no_temporal,
    pruning_floors,
    replicas,
    select_splits,
)
from elkopt.plans.table import build_table, build_tables

HBM, CHIP = Storage.HBM, Storage.CHIP


def dot(b=8, n=96, k=64):
    return Operator(
        "dot", "Dot", OpKind.MATMUL, (Dim("b", b), Dim("n", n), Dim("k", k)),
        Operand("y", ("b", "n"), CHIP), (Operand("x", ("b", "k"), CHIP), Operand("w", ("k", "n"), HBM)),
        reduce="sum",
    )


SMALL = Chip(name="small", cores_per_chip=64, sram_bytes_per_core=64 * 1024)


def test_spatial_matches_brute_force():
    shape = OpShape.of(dot())
    got = {tuple(r) for r in enumerate_spatial(shape, SMALL.cores, plan_space="reference")}
    use, pad = pruning_floors(shape, SMALL.cores)
    want = set()
    for s in itertools.product(*(range(1, min(l, SMALL.cores) + 1) for l in shape.lengths)):
        p = math.prod(s)
        eff = math.prod(l / (math.ceil(l / x) * x) for l, x in zip(shape.lengths, s))
        if use * SMALL.cores <= p <= SMALL.cores and eff >= pad - 1e-12:
            want.add(s)
    assert got == want
    assert len(got) > 10


def test_mesh_limits_partitioned_dims():
    shape = OpShape.of(dot())
    rows = enumerate_spatial(shape, 64, max_split_dims=2, plan_space="reference")
    assert len(rows) and ((rows > 1).sum(axis=1) <= 2).all()
    assert ((enumerate_spatial(shape, 64, plan_space="reference") > 1).sum(axis=1) == 3).any()


def test_temporal_rules():
    shape = OpShape.of(dot())
    uses = shape.uses_array
    _, pad = pruning_floors(shape, 64)
    for split in enumerate_spatial(shape, 64, plan_space="reference")[:40]:
        reps = replicas(shape, split[None, :])[0]
        combos = enumerate_temporal(shape, split, pad)
        assert len(combos) >= 1
        assert (combos == 1).all(axis=(1, 2)).any()  # no temporal split is always a plan
        for t in combos:
            for v in range(len(uses)):
                assert (t[~uses[v], v] == 1).all()  # only on dims the operand uses
                assert reps[v] % np.prod(t[:, v]) == 0  # product divides the replicas
            for d in range(t.shape[0]):
                chain = sorted(t[d])
                assert all(b % a == 0 for a, b in zip(chain, chain[1:]))


def test_partial_sums_carried_in_time_by_hand():
    # y[b, n] = x[b, k] w[k, n], b=4, n=96, k=64 on 2 x 8 cores (n, k): every output tile
    # (4 x 48) has 8 replicas, one per k slice of 8. The output's factor 4 on its own dim
    # n carries the partial sums in time: 4 of the replicas hold a 4 x 12 piece each,
    # add their k slice's contribution and pass it on; after 4 iterations each piece
    # holds the sum over those 4 slices, and 8 / 4 = 2 replicas are left to reduce.
    shape = OpShape.of(dot(b=4, n=96, k=64))
    split = np.array([1, 2, 8])
    ring = np.ones((3, 3), dtype=np.int64)
    ring[1, 0] = 4  # dim n, operand 0 (the output)
    _, pad = pruning_floors(shape, SMALL.cores)
    assert any((t == ring).all() for t in enumerate_temporal(shape, split, pad))
    plan = cost_plans(shape, split[None, :], ring[None], SMALL, 2)
    shift = 2 * 0.28  # cycles per 2-byte element at the reference 5.5 GB/s per core
    assert SMALL.shift_cycles_per_byte == 0.28
    # 4 iterations of a (m=4, k=8, n=12) matmul: 24*ceil(4/6)*1*1 + 514 + 113 + 173 = 824
    compute = 4 * 824
    rotation = 2 * 118 * 3 + shift * 3 * 48  # 3 shifts of the 48-element piece
    relayout = shift * 48 + 6 * 118
    reduction = 2 * 118 + shift * 24 + (0.75 * 24 + 290)  # 2 replicas: half out, one add
    assert plan.exchange_cycles[0] == pytest.approx(rotation + relayout + reduction)
    assert plan.exec_cycles[0] == pytest.approx(compute + rotation + relayout + reduction)
    assert plan.exec_cycles[0] == pytest.approx(5376.96)
    # hot bytes: the rotating output piece twice (double-buffered), x's 4 x 8, w's 8 x 48
    assert plan.hot_bytes[0] == 2 * (2 * 48 + 32 + 384)


def test_footprints_by_hand():
    shape = OpShape.of(dot(b=8, n=96, k=64))
    plans = enumerate_plans(shape, SMALL, 2, max_splits=10_000)
    for s, t, hot in zip(plans.spatial[:200], plans.temporal[:200], plans.hot_bytes[:200]):
        tile = [math.ceil(l / x) for l, x in zip(shape.lengths, s)]
        total = 0
        for v, used in enumerate(shape.uses):
            piece = math.prod(math.ceil(tile[d] / t[d][v]) for d in range(3) if used[d])
            total += piece * (2 if (t[:, v] > 1).any() else 1)
        assert hot == 2 * total


def test_table_rows_are_not_dominated_and_min_cold_is_unique_data():
    op = dot(b=8, n=96, k=64)
    table = build_table(op, SMALL, 2, max_splits=10_000)
    assert len(table) > 0
    pts = np.stack([table.cold_bytes, table.hot_bytes, table.total_cycles], axis=1)
    for i, p in enumerate(pts):
        dominated = (pts <= p).all(axis=1) & (pts < p).any(axis=1)
        assert not dominated.any(), f"row {i} dominated"
    # no replication in the smallest preload layout: every core holds a distinct piece
    assert table.min_cold_bytes * SMALL.cores >= 96 * 64 * 2
    assert table.min_cold_bytes <= math.ceil(96 * 64 / (0.9 * SMALL.cores)) * 2 * 1.25
    assert (table.cold_bytes <= table.hot_bytes).all()
    front = table.front[np.argsort(table.hot_bytes[table.front])]
    assert (np.diff(table.hot_bytes[front]) > 0).all() and (np.diff(table.exec_cycles[front]) < 0).all()


def test_distribution_cost_follows_the_spec():
    table = build_table(dot(b=8, n=96, k=64), SMALL, 2, max_splits=10_000)
    for row in np.flatnonzero(table.distribution_cycles > 0)[:20]:
        opt = table.option(int(row))
        h = np.prod(np.array(opt.plan.temporal)[:, 2])
        m = opt.cold_split[0] // h
        assert m > 1 and opt.cold_split[0] % h == 0
        piece = opt.cold_bytes // 2
        assert opt.distribution_cycles == pytest.approx(m * piece * 0.56 + 118 * m)


def test_identical_operators_share_tables_and_cache(tmp_path):
    graph = build_graph("tiny", "decode", 4, 128)
    first = build_tables(graph, SMALL, 64, cache_dir=tmp_path)
    assert first.unique_ops < graph.n_ops and first.cache_hits == 0
    again = build_tables(graph, SMALL, 64, cache_dir=tmp_path)
    assert again.cache_hits == again.unique_ops
    for a, b in zip(first.tables, again.tables):
        assert np.array_equal(a.hot_bytes, b.hot_bytes) and np.array_equal(a.total_cycles, b.total_cycles)
    # a different chip misses the cache
    other = Chip(name="other", cores_per_chip=32, sram_bytes_per_core=64 * 1024)
    assert build_tables(graph, other, 64, cache_dir=tmp_path).cache_hits == 0


def test_exchange_factor_when_spanning_chips():
    one = Chip(name="one", cores_per_chip=64)
    two = Chip(name="two", cores_per_chip=32, n_chips=2)
    shape = OpShape.of(dot())
    a = enumerate_plans(shape, one, 2, 10_000)
    b = enumerate_plans(shape, two, 2, 10_000)
    ia = {(tuple(s), t.tobytes()): e for s, t, e in zip(a.spatial, a.temporal, a.exchange_cycles)}
    checked = 0
    for s, t, e in zip(b.spatial, b.temporal, b.exchange_cycles):
        key = (tuple(s), t.tobytes())
        if key in ia and np.prod(s) > 32:
            assert e == pytest.approx(1.25 * ia[key])
            checked += 1
    assert checked > 0


def test_mesh_chip_validates_its_shape():
    with pytest.raises(ValueError, match="mesh_rows"):
        Chip(name="m", topology=Topology.MESH, cores_per_chip=64, mesh_rows=4, mesh_cols=8, mesh_link_bytes_per_s=1e9)


def test_full_plan_space_drops_only_the_core_use_floor():
    shape = OpShape.of(dot())
    reference = {tuple(r) for r in enumerate_spatial(shape, SMALL.cores, plan_space="reference")}
    full = {tuple(r) for r in enumerate_spatial(shape, SMALL.cores, plan_space="full")}
    _, pad = pruning_floors(shape, SMALL.cores)
    want = set()
    for s in itertools.product(*(range(1, min(l, SMALL.cores) + 1) for l in shape.lengths)):
        eff = math.prod(l / (math.ceil(l / x) * x) for l, x in zip(shape.lengths, s))
        if math.prod(s) <= SMALL.cores and eff >= pad - 1e-12:  # any number of cores
            want.add(s)
    assert full == want and reference < full and (1, 1, 1) in full - reference
    with pytest.raises(ValueError, match="planning.plan_space must be one of reference, full"):
        enumerate_spatial(shape, SMALL.cores, plan_space="wide")


def norm_sum(h=4096):
    """A decode step's RMSNorm sum at batch 1: [1, h] summed over h."""
    return Operator("norm.sum", "Sum", OpKind.REDUCE, (Dim("b", 1), Dim("h", h)),
                    Operand("s", ("b",), CHIP), (Operand("x", ("b", "h"), CHIP),), reduce="sum")


def test_a_small_reduction_runs_on_few_cores_in_the_full_space():
    # the reference floor makes a 4096-element sum use a fifth of 5888 cores and pay
    # their reduction; in the full space its fastest plan uses a handful
    chip = Chip(name="pod4", n_chips=4, cores_per_chip=1472)
    reference = build_table(norm_sum(), chip, 2, 256, plan_space="reference")
    full = build_table(norm_sum(), chip, 2, 256, plan_space="full")
    ref_best, full_best = np.argmin(reference.total_cycles), np.argmin(full.total_cycles)
    assert reference.spatial[:, 1].min() > 1000
    assert full.spatial[full_best, 1] < 64
    assert full.total_cycles[full_best] < reference.total_cycles[ref_best] / 10


def test_each_plan_space_has_its_own_cache_entries(tmp_path):
    graph = build_graph("tiny", "decode", 1, 128)
    reference = build_tables(graph, SMALL, 64, cache_dir=tmp_path, plan_space="reference")
    full = build_tables(graph, SMALL, 64, cache_dir=tmp_path, plan_space="full")
    assert reference.cache_hits == 0 and full.cache_hits == 0
    assert build_tables(graph, SMALL, 64, cache_dir=tmp_path, plan_space="full").cache_hits == full.unique_ops
    assert build_tables(graph, SMALL, 64, cache_dir=tmp_path, plan_space="reference").cache_hits == reference.unique_ops
    # the full space holds every reference split; here no operator's fastest plan is slower
    for a, b in zip(reference.tables, full.tables):
        assert b.total_cycles.min() <= a.total_cycles.min() * (1 + 1e-12)


def test_the_full_space_keeps_the_splits_the_reference_chooses():
    # a forward pass's context BatchMatMul has more splits than the budget of 256 in both
    # spaces; the budget's sample of the longer full front once missed the reference's
    # fastest plan (190,144 against 322,118 cycles)
    graph = build_graph("llama2_13b", "forward", 2, 2048)
    op = next(op for op in graph.ops if op.name == "layer0.attn.context")
    chip = Chip(name="pod4", n_chips=4, cores_per_chip=1472)
    shape = OpShape.of(op)
    reference = enumerate_plans(shape, chip, 2, 256, "reference")
    full = enumerate_plans(shape, chip, 2, 256, "full")
    assert len(enumerate_spatial(shape, chip.cores, plan_space="reference")) > 256
    assert {tuple(r) for r in reference.spatial} <= {tuple(r) for r in full.spatial}
    ref_table = build_table(op, chip, 2, 256, plan_space="reference")
    full_table = build_table(op, chip, 2, 256, plan_space="full")
    assert full_table.total_cycles.min() <= ref_table.total_cycles.min()


def test_the_full_plan_space_plans_a_batch_1_decode_step_faster():
    from elkopt.pipeline import PlanningOptions, compile_model

    chip = Chip(name="pod4", n_chips=4, cores_per_chip=1472)
    graph = build_graph("tiny", "decode", 1, 2048)
    reference = compile_model(graph, chip, "static", PlanningOptions(plan_space="reference"))
    full = compile_model(graph, chip, "static", PlanningOptions())  # the default: the full space
    assert full.timeline.latency_ms < 0.5 * reference.timeline.latency_ms
    assert full.references["lower_bound"] < reference.references["lower_bound"]
    with pytest.raises(ValueError, match="planning.plan_space must be one of reference, full, got 'wide'"):
        PlanningOptions(plan_space="wide")


def test_no_plan_is_smaller_than_every_operand_spread_over_all_cores():
    # the bound build_table uses to skip enumerating operators that cannot fit
    for b, n, k in ((8, 96, 64), (1, 7, 5), (64, 256, 512), (3, 1000, 48)):
        shape = OpShape.of(dot(b, n, k))
        plans = enumerate_plans(shape, SMALL, 2, 256, "full")
        bound = min_hot_bytes(shape, SMALL.cores, 2)
        assert bound == (-(-b * k // 64) + -(-k * n // 64) + -(-b * n // 64)) * 2
        assert plans.hot_bytes.min() >= bound


def test_an_operator_above_the_bound_gets_an_empty_table_without_enumerating(monkeypatch):
    tiny = Chip(name="tiny_sram", cores_per_chip=4, sram_bytes_per_core=1024)
    shape = OpShape.of(dot(64, 256, 512))  # 2 x (64*512 + 512*256 + 64*256) / 4 elements per core
    assert min_hot_bytes(shape, tiny.cores, 2) > tiny.usable_sram_bytes_per_core
    monkeypatch.setattr("elkopt.plans.table.enumerate_plans", lambda *a, **k: pytest.fail("enumerated"))
    assert len(build_table(shape, tiny, 2, 256)) == 0


def test_where_no_fast_split_fits_as_it_is_splits_are_ranked_by_plans_that_fit():
    chip = Chip(name="cramped", cores_per_chip=64, sram_bytes_per_core=32 * 1024)
    sram = chip.usable_sram_bytes_per_core
    shape = OpShape.of(dot(64, 512, 512))
    spatial = enumerate_spatial(shape, chip.cores, None, "full")
    stage1 = cost_plans(shape, spatial, no_temporal(shape, len(spatial)), chip, 2)
    assert (stage1.hot_bytes[np.argsort(stage1.exec_cycles, kind="stable")[:8]] > sram).all()  # the premise
    ranking = fit_ranking(shape, spatial, stage1, chip, 2, 8)
    _, pad = pruning_floors(shape, chip.cores)

    def fastest_fitting(splits):
        rows = [(split, t) for split in spatial[splits] for t in enumerate_temporal(shape, split, pad)]
        plans = cost_plans(shape, np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), chip, 2)
        return plans.exec_cycles[plans.hot_bytes <= sram].min()

    # a ranked split's figure is a plan of its own that fits, and the best of them is found
    for i in np.argsort(ranking, kind="stable")[:8]:
        assert fastest_fitting([i]) <= ranking[i]
    ranked = fastest_fitting(select_splits(shape, stage1, 16, ranking))
    by_cost_alone = fastest_fitting(select_splits(shape, stage1, 16))
    assert ranked < 0.75 * by_cost_alone  # 14,468 against 21,246 cycles
    costed = enumerate_plans(shape, chip, 2, 16, "full")
    assert costed.exec_cycles[costed.hot_bytes <= sram].min() == pytest.approx(ranked)
    # the reference space ranks by the cost alone, as published
    reference = enumerate_plans(shape, chip, 2, 16, "reference")
    assert reference.exec_cycles[reference.hot_bytes <= sram].min() > ranked
    # where a fast split fits as it is, the ranking is the cost alone
    roomy = Chip(name="roomy", cores_per_chip=64, sram_bytes_per_core=1024 * 1024)
    roomy_stage1 = cost_plans(shape, spatial, no_temporal(shape, len(spatial)), roomy, 2)
    assert fit_ranking(shape, spatial, roomy_stage1, roomy, 2, 8) is None
