"""Published Figs. 19 and 22: latency against HBM bandwidth per topology, and against HBM
and interconnect bandwidth together.

`hbm_table` turns a ``+experiment=fig19_hbm_sweep`` results table into one row per
(model, topology, HBM bandwidth); `noc_table` a ``+experiment=fig22_noc_sweep`` one into
one row per (HBM bandwidth, interconnect scale). Both keep the analytic latency (the plan's
timeline) and the simulated one (`elkopt.sim`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from elkopt.analysis.results import finished, speedup_over
from elkopt.chip import PUBLISHED_TB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Columns a sweep table needs.
COLUMNS = ("model", "topology", "hbm_tb_s", "analytic_ms", "simulated_ms")


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table, or ValueError naming the missing columns."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"HBM sweep table lacks columns {missing}; it needs {list(COLUMNS)} "
                         f"(hbm_table of a +experiment=fig19_hbm_sweep results table)")
    return table


def hbm_table(results: pd.DataFrame) -> pd.DataFrame:
    """A ``+experiment=fig19_hbm_sweep`` results table (`elkopt.collect`) as an HBM sweep
    table: its finished, simulated jobs, one row each."""
    done = _simulated(results, ("config.model.name", "config.chip.topology", "config.chip.hbm_bytes_per_s"))
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


def _simulated(results: pd.DataFrame, need: tuple[str, ...]) -> pd.DataFrame:
    """The finished jobs of a sweep of simulated runs; ValueError when it is not one."""
    if "simulated_ms" not in results.columns:
        raise ValueError("results table lacks columns ['simulated_ms']: not a sweep of simulated "
                         "runs (run it with simulate=true, as the fig19 and fig22 experiments do)")
    done = finished(results, need=(*need, "latency_ms", "simulated_ms"))
    return done[done["simulated_ms"].notna()]


def gains(table: pd.DataFrame, column: str = "simulated_ms") -> pd.DataFrame:
    """Per model and topology, latency at each HBM bandwidth relative to the lowest one
    (speed-up so far) and the gain of each step over the previous bandwidth."""
    keys = ["model", "topology"]
    out = check_table(table).sort_values([*keys, "hbm_tb_s"])[[*keys, "hbm_tb_s", column]].reset_index(drop=True)
    out["speedup_vs_lowest"] = speedup_over(out, keys, "hbm_tb_s", column=column)
    out["step_gain"] = out.groupby(keys)[column].shift(1) / out[column] - 1
    return out


def plot_latency_vs_hbm(table: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Simulated (solid) and analytic (dashed) latency against HBM bandwidth, one colour
    per topology."""
    ax = _against_hbm(check_table(table), model, "topology", str, ax)
    ax.set_title(f"{model}: latency vs HBM bandwidth")
    ax.set_ylim(bottom=0)
    return ax


def _against_hbm(table: pd.DataFrame, model: str, by: str, label, ax: Axes | None) -> Axes:
    """The model's simulated (solid) and analytic (dashed) latency against HBM bandwidth,
    one colour per value of column `by` (named by `label(value)`)."""
    import matplotlib.pyplot as plt

    part = table[table["model"] == model]
    if part.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(table['model'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for k, (value, rows) in enumerate(part.groupby(by, sort=True)):
        rows = rows.sort_values("hbm_tb_s")
        ax.plot(rows["hbm_tb_s"], rows["simulated_ms"], "o-", color=f"C{k}", label=f"{label(value)}, simulated")
        ax.plot(rows["hbm_tb_s"], rows["analytic_ms"], "--", color=f"C{k}", alpha=0.6,
                label=f"{label(value)}, analytic")
    ax.set_xlabel("HBM bandwidth (TB/s)")
    ax.set_ylabel("latency per token (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def noc_table(results: pd.DataFrame) -> pd.DataFrame:
    """A ``+experiment=fig22_noc_sweep`` results table as one row per (model, HBM TB/s,
    interconnect scale: core link bandwidth over the published 5.5 GB/s), with the
    analytic and simulated latency and utilisations, and each latency's speed-up over
    scale 1 at the same HBM bandwidth (``speedup_vs_x1``; NaN without a scale-1 job)."""
    done = _simulated(results, ("config.model.name", "config.chip.hbm_bytes_per_s",
                                "config.chip.core_link_bytes_per_s"))
    table = pd.DataFrame({
        "model": done["config.model.name"],
        "hbm_tb_s": (done["config.chip.hbm_bytes_per_s"] / PUBLISHED_TB_PER_S).round(6),
        "link_scale": (done["config.chip.core_link_bytes_per_s"] / REFERENCE_CORE_LINK_BYTES_PER_S).round(6),
        "analytic_ms": done["latency_ms"], "simulated_ms": done["simulated_ms"],
        "ideal_ms": done.get("ideal_ms"),
        "core_link_util": done.get("simulation.mean_core_link_utilisation"),
        "hbm_port_util": done.get("simulation.hbm_port_utilisation"),
    }).sort_values(["model", "hbm_tb_s", "link_scale"]).reset_index(drop=True)
    table["speedup_vs_x1"] = speedup_over(table, ["model", "hbm_tb_s"], "link_scale", at=1.0, column="simulated_ms")
    return table


def plot_noc(table: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Simulated (solid) and analytic (dashed) latency against HBM bandwidth, one colour
    per interconnect scale."""
    ax = _against_hbm(table, model, "link_scale", lambda scale: f"links x{scale:g}", ax)
    ax.set_title(f"{model}: HBM and interconnect bandwidth")
    ax.legend(fontsize=7, ncol=2)
    return ax


__all__ = ["COLUMNS", "check_table", "gains", "hbm_table", "noc_table", "plot_latency_vs_hbm", "plot_noc"]
