"""Rebuild the published cold-hot tables of a dump of the Elk artifact and compare.

    python experiments/elk_tables.py DUMP.json [DUMP.json ...] [--quiet]

A dump is a JSON file written outside this repository from the artifact's pickled program
(`<out>/<cores>cores/<model>-b<batch>/program.pickle`, loaded with the artifact's own code):
{"ops": [{"name", "op_type", "expr"}], "exprs": [{"op_type", "dims", "variables", "ignore",
"num_cores", "min_cold", "cold_hot": [[cold, hot, cold_spatial, cold_temporal,
hot_spatial, hot_temporal, hot_mem, hot_exe, hot_comp, hot_sync_shift_shuffle, total],
...], "hot_set": [[spatial, temporal, hot_mem, total, comp, sss], ...]}], "num_cores",
"sram"}: per unique operator its TExpr form, the cold-hot table and the hot set. For
each unique operator this rebuilds both with `elkopt.elk.tables` and reports whether the
rows (cold, hot sizes) and their order agree, the largest relative difference of
total / exe / comp / shift, whether the chosen plans agree, and the time taken.
Exits with status 1 when a table differs beyond 1e-9.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from elkopt.app import peak_rss_mb
from elkopt.elk.enumerate import ElkExpr
from elkopt.elk.tables import search_published

TOLERANCE = 1e-9


def relative_difference(mine: np.ndarray, theirs: np.ndarray) -> float:
    """Largest |a - b| / max(|b|, 1) (0 for empty)."""
    if not len(theirs):
        return 0.0
    return float(np.max(np.abs(mine - theirs) / np.maximum(np.abs(theirs), 1.0)))


def compare_expr(entry: dict, cores: int, sram: int) -> dict:
    """Rebuild one unique operator of a dump and compare it with the artifact's table."""
    expr = ElkExpr.of(entry["op_type"], entry["dims"], entry["variables"], entry["ignore"][1:], cores, sram)
    start = time.perf_counter()
    search = search_published(expr)
    table = search.table()
    seconds = time.perf_counter() - start

    ref = entry["cold_hot"]
    ref_keys = [(r[0], r[1]) for r in ref]
    keys = list(zip(table.cold.tolist(), table.hot.tolist()))
    same_rows = keys == ref_keys
    result = {"dims": entry["dims"], "type": entry["op_type"], "plans": len(search.plans), "seconds": seconds,
              "rows": len(keys), "ref_rows": len(ref_keys), "same_rows": same_rows}
    if same_rows:
        ref_cols = np.array([r[7:11] for r in ref], dtype=np.float64).reshape(-1, 4)
        for i, name in enumerate(("exe", "comp", "shift", "total")):
            result[name] = relative_difference(getattr(table, name), ref_cols[:, i])
        result["same_plans"] = all(
            _plan(search, c) == (r[2], r[3]) and _plan(search, h) == (r[4], r[5])
            for c, h, r in zip(search.cold_plan, search.hot_plan, ref)
        )
    hot = entry["hot_set"]
    result["same_hot_set"] = len(hot) == len(search.hot_set) and all(
        _plan(search, p) == (r[0], r[1]) for p, r in zip(search.hot_set, hot)
    )
    if result["same_hot_set"]:
        ref_hot = np.array([r[2:6] for r in hot], dtype=np.float64)
        columns = (table.hot_set_mem, table.hot_set_total, table.hot_set_comp, table.hot_set_shift)
        mine_hot = np.column_stack(columns)
        result["hot_set_diff"] = relative_difference(mine_hot.ravel(), ref_hot.ravel())
    result["min_cold_ok"] = table.min_cold == entry["min_cold"]
    return result


def _plan(search, index: int) -> tuple[list, list]:
    spatial = search.plans.spatial[search.plans.split[index]].tolist()
    return spatial, search.plans.temporal(index).tolist()


def exact(result: dict) -> bool:
    """The rebuilt table and hot set agree with the artifact's within TOLERANCE."""
    diffs = [result.get(k, np.inf) for k in ("exe", "comp", "shift", "total", "hot_set_diff")]
    return result["same_rows"] and result["same_hot_set"] and result["min_cold_ok"] and max(diffs) <= TOLERANCE


def compare_dump(path: str, quiet: bool = False) -> bool:
    """Compare every unique operator of one dump; print a line per operator and a summary."""
    dump = json.load(open(path))
    cores, sram = int(np.prod(dump["num_cores"])), dump["sram"]
    print(f"{path}: {len(dump['ops'])} operators, {len(dump['exprs'])} unique, {cores} cores, SRAM {sram} B")
    start = time.perf_counter()
    results = [compare_expr(entry, cores, sram) for entry in dump["exprs"]]
    seconds = time.perf_counter() - start
    for i, r in enumerate(results):
        if quiet and exact(r):
            continue
        diffs = " ".join(f"{k} {r[k]:.1e}" for k in ("total", "exe", "comp", "shift") if k in r)
        print(
            f"  #{i:<3} type {r['type']} {str(r['dims']):<28} plans {r['plans']:>7}"
            f" rows {r['rows']:>4}/{r['ref_rows']:<4} rows {'same' if r['same_rows'] else 'DIFFER'},"
            f" hot set {'same' if r['same_hot_set'] else 'DIFFERS'},"
            f" plans {'same' if r.get('same_plans') else 'differ'}; {diffs}; {r['seconds']:.2f} s"
        )
    n_exact = sum(exact(r) for r in results)
    plans = sum(r["plans"] for r in results)
    print(
        f"  {n_exact}/{len(results)} unique operators exact (rows, order, hot set, values within {TOLERANCE:g});"
        f" {sum(r.get('same_plans', False) for r in results)} with the same chosen plans;"
        f" {plans} plans in {seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB"
    )
    return n_exact == len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--quiet", action="store_true", help="print only operators that differ")
    args = parser.parse_args()
    ok = [compare_dump(path, args.quiet) for path in args.dumps]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
