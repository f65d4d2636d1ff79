"""A graph as the published compiler's program: its operators with their published tables.

`elk_ops` writes every operator in the published form (`texpr_entry`), builds one
published cold-hot table per distinct form (the published compiler's unique expressions:
layers repeat) and names the operators ``Op_<i>_<type>`` as the published program does
(its layer detection compares these names).

With a capacity (`capacity_mb`, the published parser's CAP_MB = cores // split_factor),
operators too large for it are first halved as the published parser halves them
(`capacity_split`, ELK_REFERENCE 2.2 step 8): a BatchMatMul whose four largest dims hold
more than CAP_MB MiB of 2-byte elements, or a two-input operator whose two largest dims do,
loses half of its largest dim (the first such, rounded down) and is followed by a copy of
itself, until none is. The copies are identical (they share a table); partial sums along a
halved contracted dim are not added, as published.

On elkopt's accounting the operators get elkopt's plan tables instead, as cold-hot tables
(`cold_hot_table`, `elk_ops_from_plans`, `elkopt_problem`). `published_machine` says how
the published model sees a chip (or which field it cannot describe), `count_layers` how
often a graph's layer repeats (the published ``--layers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from math import prod

import numpy as np

from elkopt.chip import PUBLISHED_GB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S, Chip, Topology
from elkopt.elk.coldhot import ColdHotTable, ElkOp
from elkopt.elk.enumerate import PlanRules
from elkopt.elk.lookup import ALL_TO_ALL, CYCLES_PER_MS, Interconnect
from elkopt.elk.schedulers import Problem
from elkopt.elk.tables import build_cold_hot_table
from elkopt.elk.texpr import TExprEntry, published_type, texpr_entry
from elkopt.graph.ir import Graph
from elkopt.plans.table import PlanTable, TableSet
from elkopt.progress import Ticker
from elkopt.schedule.layers import find_layers


def capacity_split(entries: list[TExprEntry], is_batch_matmul: list[bool],
                   capacity_mb: int) -> list[tuple[int, TExprEntry]]:
    """The entries after the published capacity split (module doc), each with the index
    of the entry it came from; copies follow their original."""
    if capacity_mb < 1:
        raise ValueError(f"the published capacity must be at least 1 MiB, got {capacity_mb}")
    cap = capacity_mb * 2**20 // 2
    out = []
    for i, (entry, bmm) in enumerate(zip(entries, is_batch_matmul)):
        largest = 4 if bmm else 2 if len(entry.variables) == 3 else 0
        dims = list(entry.dims)
        copies = 1
        while largest and len(dims) >= largest and prod(sorted(dims)[-largest:]) > cap:
            d = dims.index(max(dims))
            if dims[d] < 2:
                break
            dims[d] //= 2
            copies *= 2
        halved = replace(entry, dims=tuple(dims))
        out.extend((i, halved) for _ in range(copies))
    return out


def entry_hbm_bytes(entry: TExprEntry, elem_bytes: int) -> int:
    """The unique bytes an operator in the published form reads from HBM: its inputs not
    on chip, whole."""
    return sum(prod(entry.dims[slot[0]] for slot in var)
               for var, on_chip in zip(entry.variables[1:], entry.ignore) if not on_chip) * elem_bytes


def elk_ops(graph: Graph, cores: int, sram_bytes: int, drop_scalar_operands: bool = True,
            capacity_mb: int | None = None, rules: PlanRules = PlanRules(), padded_hbm_bytes: bool = True,
            progress: Callable[[str], None] | None = None) -> list[ElkOp]:
    """`graph`'s operators with their published cold-hot tables on `cores` cores of
    `sram_bytes` each (the element size is the graph's), built under `rules`; with
    `capacity_mb`, after the published capacity split. A load streams the smallest cold
    size x cores (`padded_hbm_bytes`) or the unique bytes (`entry_hbm_bytes`). Each
    `ElkOp.source` is the graph operator it came from."""
    entries = [texpr_entry(op, drop_scalar_operands) for op in graph.ops]
    sources = list(range(len(entries)))
    if capacity_mb is not None:
        split = capacity_split(entries, [op.label == "BatchMatMul" for op in graph.ops], capacity_mb)
        sources, entries = [i for i, _ in split], [e for _, e in split]
    unique = list(dict.fromkeys(e.key for e in entries))
    tables: dict[tuple, ColdHotTable] = {}
    ticker = Ticker(progress, "published tables: unique operators", len(unique))
    start = time.perf_counter()
    for n, key in enumerate(unique, 1):
        op_type, dims, variables, ignore = key
        table = build_cold_hot_table(op_type, list(dims), [[list(s) for s in v] for v in variables],
                                     list(ignore), cores, sram_bytes, graph.elem_bytes, rules)
        if not padded_hbm_bytes:
            entry = TExprEntry(op_type, dims, variables, ignore)
            table = replace(table, hbm_bytes=entry_hbm_bytes(entry, graph.elem_bytes))
        tables[key] = table
        ticker.update(n)
    ticker.finish(f"{time.perf_counter() - start:.1f} s")
    return [ElkOp(f"Op_{i}_{graph.ops[src].label}", e.op_type, e.dims, e.key, tables[e.key], src)
            for i, (src, e) in enumerate(zip(sources, entries))]


def cold_hot_table(table: PlanTable, hbm_bytes: int) -> ColdHotTable:
    """An elkopt plan table as a published cold-hot table: per (cold, hot) pair its
    fastest row (hot plan + distribution from the cold layout; ties to the lower row),
    the hot Pareto front as the hot set, and `hbm_bytes` as what its load streams (the
    operator's unique bytes; -1: the smallest cold size x cores, as published)."""
    if not len(table):
        raise ValueError("an empty plan table has no cold-hot pairs")
    total = table.total_cycles
    order = np.lexsort((np.arange(len(table)), total, table.hot_bytes, table.cold_bytes))
    pairs = np.column_stack([table.cold_bytes[order], table.hot_bytes[order]])
    first = np.r_[True, (pairs[1:] != pairs[:-1]).any(axis=1)]
    rows = order[first]
    front = np.asarray(table.front, dtype=np.int64)
    front = front[np.argsort(table.hot_bytes[front], kind="stable")]
    exe, exchange = table.exec_cycles, table.exchange_cycles
    return ColdHotTable(
        cold=table.cold_bytes[rows].astype(np.int64), hot=table.hot_bytes[rows].astype(np.int64),
        total=total[rows], exe=exe[rows], comp=(exe - exchange)[rows], shift=exchange[rows],
        hot_set_mem=table.hot_bytes[front], hot_set_total=exe[front],
        hot_set_comp=(exe - exchange)[front], hot_set_shift=exchange[front],
        row=rows.astype(np.int64), hbm_bytes=int(hbm_bytes))


def elk_ops_from_plans(graph: Graph, tables: TableSet, padded_hbm_bytes: bool = False) -> list[ElkOp]:
    """`graph`'s operators with cold-hot tables made from elkopt's plan tables
    (`cold_hot_table`): the published schedulers on elkopt's accounting. A load streams the
    operator's unique HBM bytes, or (`padded_hbm_bytes`) its smallest cold size x cores.
    Operators that share a plan table share a cold-hot table and a key."""
    converted: dict[int, ColdHotTable] = {}
    ops = []
    for i, (op, table) in enumerate(zip(graph.ops, tables.tables)):
        if id(table) not in converted:
            converted[id(table)] = cold_hot_table(table, -1 if padded_hbm_bytes else op.hbm_bytes(graph.elem_bytes))
        ops.append(ElkOp(f"Op_{i}_{op.label}", published_type(op), op.dim_lengths, op.signature,
                         converted[id(table)], i))
    return ops


def published_machine(chip: Chip) -> tuple[float, Interconnect]:
    """The chip as the published schedulers see it: (HBM in published GB/s, knobs);
    ValueError naming the field the published model cannot represent."""
    if chip.clock_hz != CYCLES_PER_MS * 1e3:
        raise ValueError(f"chip.clock_hz: the published schedulers count cycles at 1.325 GHz, the chip "
                         f"runs at {chip.clock_hz / 1e9:g} GHz; use an elkopt scheduler, or clock_hz=1325000000")
    if chip.topology is not Topology.ALL_TO_ALL:
        raise ValueError(f"chip.topology: the published schedulers model an all-to-all exchange, the chip is "
                         f"a {chip.topology.value}; use an elkopt scheduler (they time mesh and torus routes)")
    comm = chip.core_link_bytes_per_s / REFERENCE_CORE_LINK_BYTES_PER_S
    return published_hbm_GBps(chip.hbm_bytes_per_s), Interconnect(0.0, comm, chip.compute_scale)


def count_layers(graph: Graph) -> int:
    """How many times the graph's layer repeats (1 if none repeats): operators compared by
    their type only, since the published graphs' layers differ in a few shapes."""
    block = find_layers([(op.label, published_type(op)) for op in graph.ops])
    return block.count if block is not None else 1


def elkopt_problem(graph: Graph, tables: TableSet, chip: Chip, layers: int | None = None,
                   padded_hbm_bytes: bool = False, published_delivery: bool = False,
                   noc_thresholds: bool = False) -> Problem:
    """The published schedulers' problem on elkopt's accounting: `graph`'s operators with
    its plan tables as cold-hot tables (loads of their unique bytes unless
    `padded_hbm_bytes`), every design delivering loads at the chip's per-core link rate
    (unless `published_delivery`; elkopt's plan costs hold COMM and COMP already), loads
    free to take the whole NoC (unless `noc_thresholds`); `layers` by default counted
    (`count_layers`). ValueError when the chip is not one the published model describes
    (`published_machine`)."""
    hbm_GBps, _knobs = published_machine(chip)
    return Problem(elk_ops_from_plans(graph, tables, padded_hbm_bytes), hbm_GBps, chip.cores,
                   chip.usable_sram_bytes_per_core, layers or count_layers(graph), ALL_TO_ALL,
                   None if published_delivery else chip_noc_gbps(chip), noc_thresholds)


def chip_noc_gbps(chip: Chip) -> float:
    """The chip's per-core link rate in the published unit (GB/s of 2^30 bytes)."""
    return chip.core_link_bytes_per_s / PUBLISHED_GB_PER_S


def published_hbm_GBps(hbm_bytes_per_s: float) -> float:
    """HBM bandwidth in the published unit ("GB/s": 2^20 bytes per millisecond x 1000)."""
    return hbm_bytes_per_s / (2**20 * 1000)
