"""A graph as the published compiler's program: its operators with their published tables.

`elk_ops` writes every operator in the published form (`texpr_entry`), builds one
published cold-hot table per distinct form (the published compiler's unique expressions:
layers repeat) and names the operators ``Op_<i>_<type>`` as the published program does
(its layer detection compares these names).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from elkopt.elk.coldhot import ColdHotTable, ElkOp
from elkopt.elk.tables import build_cold_hot_table
from elkopt.elk.texpr import texpr_entry
from elkopt.graph.ir import Graph
from elkopt.progress import Ticker


def elk_ops(graph: Graph, cores: int, sram_bytes: int, drop_scalar_operands: bool = True,
            progress: Callable[[str], None] | None = None) -> list[ElkOp]:
    """`graph`'s operators with their published cold-hot tables on `cores` cores of
    `sram_bytes` each (the element size is the graph's)."""
    entries = [texpr_entry(op, drop_scalar_operands) for op in graph.ops]
    unique = list(dict.fromkeys(e.key for e in entries))
    tables: dict[tuple, ColdHotTable] = {}
    ticker = Ticker(progress, "published tables: unique operators", len(unique))
    start = time.perf_counter()
    for n, key in enumerate(unique, 1):
        op_type, dims, variables, ignore = key
        tables[key] = build_cold_hot_table(op_type, list(dims), [[list(s) for s in v] for v in variables],
                                           list(ignore), cores, sram_bytes, graph.elem_bytes)
        ticker.update(n)
    ticker.finish(f"{time.perf_counter() - start:.1f} s")
    return [ElkOp(f"Op_{i}_{op.label}", e.op_type, e.dims, e.key, tables[e.key])
            for i, (op, e) in enumerate(zip(graph.ops, entries))]


def published_hbm_GBps(hbm_bytes_per_s: float) -> float:
    """HBM bandwidth in the published unit ("GB/s": 2^20 bytes per millisecond x 1000)."""
    return hbm_bytes_per_s / (2**20 * 1000)
