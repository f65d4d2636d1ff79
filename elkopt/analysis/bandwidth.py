"""Latency against HBM bandwidth per topology: tables of `experiments/sim_hbm_sweep.py`, or
a `+experiment=fig19_hbm_sweep` sweep's results.parquet through `from_results`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Columns a sweep table needs.
COLUMNS = ("model", "topology", "hbm_tb_s", "analytic_ms", "simulated_ms")


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table, or ValueError naming the missing columns."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"HBM sweep table lacks columns {missing}; it needs {list(COLUMNS)} "
                         f"(written by experiments/sim_hbm_sweep.py)")
    return table


def from_results(results: pd.DataFrame) -> pd.DataFrame:
    """A sweep's results.parquet table (`elkopt.collect`) as an HBM sweep table: its
    finished, simulated jobs, one row each."""
    from elkopt.chip import PUBLISHED_TB_PER_S

    need = ["status", "config.model.name", "config.chip.topology", "config.chip.hbm_bytes_per_s",
            "latency_ms", "simulated_ms"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}: not a sweep of simulated runs "
                         f"(run it with simulate=true, e.g. +experiment=fig19_hbm_sweep)")
    done = results[(results["status"] == "ok") & results["simulated_ms"].notna()]
    table = pd.DataFrame({
        "model": done["config.model.name"], "chip": done.get("config.chip.name"),
        "topology": done["config.chip.topology"],
        "hbm_tb_s": (done["config.chip.hbm_bytes_per_s"] / PUBLISHED_TB_PER_S).round(6),
        "analytic_ms": done["latency_ms"], "simulated_ms": done["simulated_ms"],
        "ideal_ms": done.get("ideal_ms"),
        "core_link_util": done.get("simulation.mean_core_link_utilisation"),
        "hbm_port_util": done.get("simulation.hbm_port_utilisation"),
    })
    return table.sort_values(["model", "topology", "hbm_tb_s"]).reset_index(drop=True)


def gains(table: pd.DataFrame, column: str = "simulated_ms") -> pd.DataFrame:
    """Per model and topology, latency at each HBM bandwidth relative to the lowest one
    (speed-up so far) and the gain of each step over the previous bandwidth."""
    rows = []
    for (model, topology), part in check_table(table).groupby(["model", "topology"], sort=True):
        part = part.sort_values("hbm_tb_s")
        first = part[column].iloc[0]
        previous = part[column].shift(1)
        rows.append(pd.DataFrame({
            "model": model, "topology": topology, "hbm_tb_s": part["hbm_tb_s"].to_numpy(),
            column: part[column].to_numpy(),
            "speedup_vs_lowest": (first / part[column]).to_numpy(),
            "step_gain": (previous / part[column] - 1).to_numpy(),
        }))
    return pd.concat(rows, ignore_index=True)


def plot_latency_vs_hbm(table: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Simulated (solid) and analytic (dashed) latency against HBM bandwidth, one colour
    per topology."""
    import matplotlib.pyplot as plt

    part = check_table(table)
    part = part[part["model"] == model]
    if part.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(table['model'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for k, (topology, rows) in enumerate(part.groupby("topology", sort=True)):
        rows = rows.sort_values("hbm_tb_s")
        colour = f"C{k}"
        ax.plot(rows["hbm_tb_s"], rows["simulated_ms"], "o-", color=colour, label=f"{topology}, simulated")
        ax.plot(rows["hbm_tb_s"], rows["analytic_ms"], "--", color=colour, alpha=0.6, label=f"{topology}, analytic")
    ax.set_xlabel("HBM bandwidth (TB/s)")
    ax.set_ylabel("latency per token (ms)")
    ax.set_title(f"{model}: latency vs HBM bandwidth")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


__all__ = ["COLUMNS", "check_table", "from_results", "gains", "plot_latency_vs_hbm"]
