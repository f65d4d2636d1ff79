"""Copy the figure sweeps' results tables to where the notebooks and tests read them.

    python experiments/notebook_tables.py          # every sweep under sweeps/ that has run
    python experiments/notebook_tables.py fig17_latency

For each sweep with a `sweeps/<name>/results.parquet` (`python -m elkopt.run --multirun
+experiment=<name>`), writes

- `notebooks/data/<name>.parquet`: the measured table the report's figures are drawn from
  (every row; the machine-specific plan-table cache path left out);
- `tests/fixtures/<name>.parquet`: a few of its rows and only the columns the notebooks read,
  which `pytest` runs the notebooks against (notebooks/conftest.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from elkopt.analysis.results import shrink
from elkopt.published import PUBLISHED_GRAPHS

ROOT = Path(__file__).resolve().parents[1]
#: Columns (exact names, or prefixes ending in a dot) a fixture keeps.
FIXTURE_COLUMNS = (
    "error", "config.model.name", "config.workload.", "config.chip.", "config.scheduler.name",
    "latency_ms", "ideal_ms", "lower_bound_ms", "simulated_ms", "breakdown.", "hbm_util", "noc_util",
    "tflops", "simulation.mean_core_link_utilisation", "simulation.hbm_port_utilisation", "published_ms.",
)
#: Per sweep, the further columns its fixture keeps.
_DESIGN_COLUMNS = ("model", "model_file_sha256", "reference_designs", "basic_ms", "static_ms", "elk_dyn_ms",
                   "elk_dyn_printed_ms", "elk_full_ms")
_HBM_COLUMNS = ("hbm_bytes_read", "hbm_bytes_written", "hbm_bytes_kv", "hbm_bytes_weights")
FIXTURE_EXTRA_COLUMNS = {
    "fig17_published": _DESIGN_COLUMNS, "fig17_equal_terms": _DESIGN_COLUMNS,
    # elkopt.analysis.serving reads these (the stats.moe_* ones are optional there)
    "long_context": _HBM_COLUMNS,
    "moe_batch": (*_HBM_COLUMNS, "moe_experts_loaded", "stats.moe_experts_preloaded", "stats.moe_experts_read",
                  "stats.moe_wait_ms", "stats.moe_chosen_ms", "stats.moe_hbm_bytes_read"),
    "prefill_chunks": (*_HBM_COLUMNS, "ttft_ms", "chunks"),
}
#: Per sweep, the rows its fixture keeps.
FIXTURE_ROWS = {
    "fig17_latency": lambda t: t["config.model.name"].isin(["llama2_13b", "llama2_70b"])
    & (t["config.workload.batch"] == 32),
    "fig17_published": lambda t: t["model_file_sha256"].map(PUBLISHED_GRAPHS).isin(["llama2_13b", "opt_30b"])
    & (t["config.workload.batch"] == 32),
    "fig17_equal_terms": lambda t: t["model_file_sha256"].map(PUBLISHED_GRAPHS).isin(["llama2_13b", "opt_30b"])
    & (t["config.workload.batch"] == 32),
    "fig18_breakdown": lambda t: t["config.model.name"].isin(["llama2_13b", "opt_30b"]),
    "fig19_hbm_sweep": lambda t: (t["config.chip.hbm_bytes_per_s"] / 1.048576e12).round(3).isin([4, 8, 16]),
    "fig22_noc_sweep": lambda t: (t["config.chip.hbm_bytes_per_s"] / 1.048576e12).round(3).isin([8, 14])
    & (t["config.chip.core_link_bytes_per_s"] / 5905580032).round(3).isin([0.75, 1, 1.5]),
    "fig23_core_sweep": lambda t: t["config.model.name"].isin(["llama2_13b", "dit_xl_2"])
    & t["config.chip.cores_per_chip"].isin([552, 920, 1472]),
    "fig24_training": lambda t: t["job"] == t["job"],
    "long_context": lambda t: t["config.workload.kv_len"].isin([8192, 131072])
    & t["config.workload.batch"].isin([1, 32]),
    "moe_batch": lambda t: t["config.workload.batch"].isin([1, 16, 256]),
    "prefill_chunks": lambda t: t["config.workload.chunk"].isin([256, 1024, 4096]),
}


def fixture(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """The fixture of sweep `name`: FIXTURE_ROWS of the table, FIXTURE_COLUMNS (and its
    FIXTURE_EXTRA_COLUMNS) of those."""
    keep = (*FIXTURE_COLUMNS, *FIXTURE_EXTRA_COLUMNS.get(name, ()))
    columns = [c for c in table.columns if any(c == k or (k.endswith(".") and c.startswith(k)) for k in keep)]
    return shrink(table, columns, FIXTURE_ROWS[name](table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="*", default=list(FIXTURE_ROWS), help="sweep names (default: all)")
    args = parser.parse_args()
    for name in args.sweeps:
        if name not in FIXTURE_ROWS:
            parser.error(f"unknown sweep {name!r}; choose from {', '.join(FIXTURE_ROWS)}")
        source = ROOT / "sweeps" / name / "results.parquet"
        if not source.is_file():
            print(f"{name}: no {source.relative_to(ROOT)} (run the sweep first); skipped")
            continue
        table = pd.read_parquet(source)
        data = table.drop(columns=[c for c in table.columns if c == "config.planning.cache_dir"])
        for path, part in ((ROOT / "notebooks" / "data" / f"{name}.parquet", data),
                           (ROOT / "tests" / "fixtures" / f"{name}.parquet", fixture(name, table))):
            path.parent.mkdir(parents=True, exist_ok=True)
            part.to_parquet(path, index=False)
            print(f"{name}: {len(part)} rows x {part.shape[1]} columns -> {path.relative_to(ROOT)} "
                  f"({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
