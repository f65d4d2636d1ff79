"""Published Figs. 23 and 24: latency as the chip grows (cores with HBM in proportion) and
as its compute grows (the training forward pass).

`core_table` reads a ``+experiment=fig23_core_sweep`` results table, `training_table` a
``+experiment=fig24_training`` one (`elkopt.collect` results).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from elkopt.analysis.results import finished, speedup_over
from elkopt.chip import PUBLISHED_TB_PER_S

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Published HBM "GB/s" (2^20 B per ms), as the training experiment names its bandwidths.
PUBLISHED_HBM_GB_PER_S = PUBLISHED_TB_PER_S / 1000


def core_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, cores): HBM bandwidth (TB/s), latency, Ideal, % of Ideal, the
    speed-up over the model's fewest cores and the scaling efficiency (that speed-up over
    the growth in cores; 1 scales perfectly)."""
    done = finished(results, need=("config.model.name", "config.chip.n_chips", "config.chip.cores_per_chip",
                                   "config.chip.hbm_bytes_per_s", "latency_ms", "ideal_ms"))
    table = pd.DataFrame({
        "model": done["config.model.name"],
        "cores": (done["config.chip.n_chips"] * done["config.chip.cores_per_chip"]).astype(int),
        "hbm_tb_s": (done["config.chip.hbm_bytes_per_s"] / PUBLISHED_TB_PER_S).round(4),
        "latency_ms": done["latency_ms"], "ideal_ms": done["ideal_ms"],
    }).sort_values(["model", "cores"]).reset_index(drop=True)
    table["pct_of_ideal"] = table["ideal_ms"] / table["latency_ms"] * 100
    table["speedup_vs_fewest"] = speedup_over(table, ["model"], "cores")
    fewest = table.groupby("model")["cores"].transform("min")
    table["scaling_efficiency"] = table["speedup_vs_fewest"] / (table["cores"] / fewest)
    return table


def plot_cores(table: pd.DataFrame, models: list[str], ax: Axes | None = None) -> Axes:
    """Speed-up over the fewest cores against the number of cores, one line per model,
    the proportional speed-up dotted."""
    import matplotlib.pyplot as plt

    part = table[table["model"].isin(models)]
    if part.empty:
        raise ValueError(f"no rows for models {models}; the table has {sorted(table['model'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for k, (model, rows) in enumerate(part.groupby("model", sort=True)):
        ax.plot(rows["cores"], rows["speedup_vs_fewest"], "o-", color=f"C{k}", label=model)
    cores = sorted(part["cores"].unique())
    ax.plot(cores, [c / cores[0] for c in cores], ":", color="grey", label="proportional")
    ax.set_xlabel("cores (HBM bandwidth in proportion)")
    ax.set_ylabel(f"speed-up over {cores[0]} cores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def training_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (HBM GB/s, compute scale): latency, Ideal, the speed-up over compute
    x1 at the same HBM bandwidth, HBM utilisation and TFLOP/s."""
    done = finished(results, need=("config.chip.hbm_bytes_per_s", "config.chip.compute_scale",
                                   "latency_ms", "hbm_util", "tflops"))
    table = pd.DataFrame({
        "hbm_gb_s": (done["config.chip.hbm_bytes_per_s"] / PUBLISHED_HBM_GB_PER_S).round(3),
        "compute_scale": done["config.chip.compute_scale"],
        "latency_ms": done["latency_ms"], "ideal_ms": done.get("ideal_ms"),
        "hbm_util": done["hbm_util"], "tflops": done["tflops"],
    }).sort_values(["hbm_gb_s", "compute_scale"]).reset_index(drop=True)
    table["speedup_vs_x1"] = speedup_over(table, ["hbm_gb_s"], "compute_scale", at=1.0)
    return table


def plot_training(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Latency against the compute scale, one line per HBM bandwidth."""
    import matplotlib.pyplot as plt

    if table.empty:
        raise ValueError("empty training table")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for k, (hbm, rows) in enumerate(table.groupby("hbm_gb_s", sort=True)):
        ax.plot(rows["compute_scale"], rows["latency_ms"], "o-", color=f"C{k}", label=f"HBM {hbm:g} GB/s")
    ax.set_xlabel("compute throughput (x IPU MK2)")
    ax.set_ylabel("forward pass (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


__all__ = ["core_table", "plot_cores", "plot_training", "training_table"]
