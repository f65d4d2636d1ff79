"""Published Figs. 17 and 18: decode latency per scheduler, and where the time goes.

Tables come from the sweeps ``+experiment=fig17_latency`` and ``+experiment=fig18_breakdown``
(`elkopt.collect` results); the published values are the spec's section 7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from elkopt.analysis.results import finished
from elkopt.published import PUBLISHED_CONFIG, PUBLISHED_MS, PUBLISHED_SUMMARY

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: elkopt's schedulers, slowest first, and the published scheduler each stands beside.
SCHEDULERS = ("basic", "static", "inductive", "elkopt")
PUBLISHED_NAME = {"basic": "basic", "static": "static", "inductive": "elk_dyn", "elkopt": "elk_full",
                  "ideal": "ideal"}

_KEYS = {"config.model.name": "model", "config.workload.batch": "batch", "config.workload.kv_len": "kv"}


def latency_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, batch, kv): each scheduler's latency (ms), Ideal and the lower
    bound, and the published values where the spec lists them (``published_<name>``):
    only beside jobs that ran the published setup (the chip of spec section 7; their
    metrics carry ``published_ms``) when the table says so.

    Every job computes Ideal and the lower bound on the graph it planned; with large
    operators cut (`planning.split_policy=if_faster`) the jobs of one configuration may
    keep different graphs, so the table takes the smallest of each over the jobs."""
    done = finished(results, need=(*_KEYS, "config.scheduler.name", "latency_ms", "ideal_ms"))
    done = pd.DataFrame({
        **{short: done[column] for column, short in _KEYS.items()},
        "scheduler": done["config.scheduler.name"], "latency_ms": done["latency_ms"],
        "ideal_ms": done["ideal_ms"], "lower_bound_ms": done.get("lower_bound_ms"),
    })
    keys = list(_KEYS.values())
    table = done.pivot_table(index=keys, columns="scheduler", values="latency_ms", aggfunc="first")
    table = table[[s for s in SCHEDULERS if s in table.columns]]
    table.columns.name = None
    references = done.groupby(keys)[["ideal_ms", "lower_bound_ms"]].min()
    table = table.join(references.rename(columns={"ideal_ms": "ideal", "lower_bound_ms": "lower_bound"}))
    table = table.reset_index()
    published = pd.DataFrame([
        {"model": m, "batch": PUBLISHED_CONFIG[0], "kv": PUBLISHED_CONFIG[1],
         **{f"published_{k}": v for k, v in values.items()}}
        for m, values in PUBLISHED_MS.items()])
    if "published_ms.ideal" in results.columns:  # metrics.json says which jobs ran the published setup
        ran = finished(results)
        ran = ran[ran["published_ms.ideal"].notna()]
        setups = set(zip(ran["config.model.name"], ran["config.workload.batch"], ran["config.workload.kv_len"]))
        published = published[[tuple(r) in setups for r in published[keys].itertuples(index=False)]]
    table = table.merge(published, on=keys, how="left")
    return in_model_order(table, ["model", "batch", "kv"])


#: Sort ranks: models as the spec lists them, schedulers slowest first (others after, by name).
_RANKS = {"model": list(PUBLISHED_MS), "scheduler": list(SCHEDULERS)}


def in_model_order(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """`table` sorted by the columns `by`, models and schedulers in their `_RANKS`."""
    def rank(column: pd.Series) -> pd.Series:
        known = _RANKS.get(column.name)
        if known is None:
            return column
        ranks = column.map({v: k for k, v in enumerate(known)}).fillna(len(known))
        return pd.Series(list(zip(ranks, column)), index=column.index)

    return table.sort_values(by, key=rank).reset_index(drop=True)


def summary(latency: pd.DataFrame) -> pd.DataFrame:
    """Per scheduler, over the configurations every scheduler finished: mean Ideal /
    achieved (%), and mean speed-ups over Basic and Static; the published Elk-Full row
    beside."""
    schedulers = [s for s in SCHEDULERS if s in latency.columns]
    full = latency.dropna(subset=[*schedulers, "ideal"])
    if full.empty:
        raise ValueError("no configuration has a latency from every scheduler")
    rows = [{"scheduler": s, "configurations": len(full), **mean_ratios(full, s)} for s in schedulers]
    rows.append({"scheduler": "published elk_full", "configurations": 24, **PUBLISHED_SUMMARY})
    return pd.DataFrame(rows)


def mean_ratios(full: pd.DataFrame, column: str) -> dict[str, float]:
    """Over the rows of `full`: mean Ideal / `column` (%, ``pct_of_ideal``) and the mean
    speed-ups of `column` over Basic and Static (``speedup_vs_basic``, ``_static``) where
    the table has them."""
    out = {"pct_of_ideal": float((full["ideal"] / full[column]).mean() * 100)}
    for base in ("basic", "static"):
        if base in full.columns:
            out[f"speedup_vs_{base}"] = float((full[base] / full[column]).mean())
    return out


def against_published(latency: pd.DataFrame) -> pd.DataFrame:
    """The configurations with published values: elkopt's latency beside the published
    one per scheduler, and their ratio (ours / published; below 1 is faster)."""
    part = latency.dropna(subset=["published_ideal"])
    rows = []
    for _, r in part.iterrows():
        for ours in (*SCHEDULERS, "ideal"):
            if ours in part.columns and not pd.isna(r[ours]):
                theirs = r[f"published_{PUBLISHED_NAME[ours]}"]
                rows.append({"model": r["model"], "scheduler": ours,
                             "published_as": PUBLISHED_NAME[ours], "elkopt_ms": r[ours],
                             "published_ms": theirs, "ratio": r[ours] / theirs})
    return pd.DataFrame(rows)


def plot_latency(latency: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Bars of each scheduler's latency per (batch, KV), Ideal as a black tick, the
    published values (batch 32, KV 2048) as hollow diamonds."""
    schedulers = [s for s in SCHEDULERS if s in latency.columns]
    return plot_config_bars(latency, model, {s: s for s in schedulers},
                            {s: f"published_{PUBLISHED_NAME[s]}" for s in schedulers}, ax=ax)


def plot_config_bars(table: pd.DataFrame, model: str, bars: dict[str, str], published: dict[str, str],
                     ax: Axes | None = None, title: str | None = None, hatched: tuple[str, ...] = (),
                     legend_columns: int = 3) -> Axes:
    """`model`'s rows of `table` as groups of bars per (batch, KV): one bar per column of
    `bars` (column -> legend label; `hatched` ones hatched), Ideal as a black tick, and
    where `published` names a column of published values for a bar, hollow diamonds on it."""
    import matplotlib.pyplot as plt

    part = table[table["model"] == model].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(table['model'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    columns = [c for c in bars if c in part.columns]
    width = 0.8 / len(columns)
    x = np.arange(len(part))
    for k, c in enumerate(columns):
        offset = (k - (len(columns) - 1) / 2) * width
        hatch = c in hatched
        ax.bar(x + offset, part[c], width, color=f"C{k}", label=bars[c],
               hatch="//" if hatch else None, edgecolor="white" if hatch else None)
        values = part.get(published[c]) if c in published else None
        if values is not None and values.notna().any():
            ax.plot(x + offset, values, "D", mfc="none", color="black", ms=5,
                    label="published" if k == 0 else None)
    ax.hlines(part["ideal"], x - 0.45, x + 0.45, color="black", lw=1.5, label="Ideal")
    ax.set_xticks(x, [f"b{b}\nKV {kv}" for b, kv in zip(part["batch"], part["kv"])])
    ax.set_ylabel("latency per token (ms)")
    ax.set_title(model if title is None else title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=legend_columns)
    return ax


#: The breakdown's parts (metrics.json "breakdown", ms), in stacking order.
BREAKDOWN = ("execute_only_ms", "overlapped_ms", "preload_only_ms", "interconnect_stall_ms", "idle_ms")


def breakdown_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, batch, KV, scheduler): latency, its breakdown (ms), HBM and interconnect
    utilisation, TFLOP/s, and the simulated latency and utilisation when the jobs were
    simulated."""
    need = ("config.model.name", "config.scheduler.name", "latency_ms",
            *(f"breakdown.{b}" for b in BREAKDOWN), "hbm_util", "noc_util", "tflops")
    done = finished(results, need=need)
    table = pd.DataFrame({
        "model": done["config.model.name"], "batch": done.get("config.workload.batch"),
        "kv": done.get("config.workload.kv_len"), "scheduler": done["config.scheduler.name"],
        "latency_ms": done["latency_ms"],
        **{b: done[f"breakdown.{b}"] for b in BREAKDOWN},
        "hbm_util": done["hbm_util"], "noc_util": done["noc_util"], "tflops": done["tflops"],
    })
    simulated = {"simulated_ms": "simulated_ms",
                 "sim_core_link_util": "simulation.mean_core_link_utilisation",
                 "sim_hbm_port_util": "simulation.hbm_port_utilisation"}
    for name, column in simulated.items():
        if column in done.columns:
            table[name] = done[column].to_numpy()
    return in_model_order(table, ["model", "batch", "kv", "scheduler"])


def plot_breakdown(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Stacked horizontal bars of each (model, scheduler)'s time breakdown."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 1))
    y = np.arange(len(table))[::-1]
    left = np.zeros(len(table))
    for k, part in enumerate(BREAKDOWN):
        values = table[part].fillna(0).to_numpy()
        ax.barh(y, values, left=left, color=f"C{k}", label=part.removesuffix("_ms").replace("_", " "))
        left += values
    ax.set_yticks(y, [f"{m} {s}" for m, s in zip(table["model"], table["scheduler"])], fontsize=7)
    ax.set_xlabel("time per token (ms)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(BREAKDOWN))
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_utilisation(table: pd.DataFrame, axes: tuple[Axes, Axes] | None = None) -> tuple[Axes, Axes]:
    """Per (model, scheduler): HBM and interconnect utilisation (analytic bars, simulated
    core-link utilisation as dots when present) on the left, TFLOP/s on the right."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(table) + 1), sharey=True)
    left, right = axes
    y = np.arange(len(table))[::-1]
    left.barh(y + 0.2, table["hbm_util"] * 100, 0.4, label="HBM busy")
    left.barh(y - 0.2, table["noc_util"] * 100, 0.4, label="interconnect busy")
    if "sim_core_link_util" in table.columns:
        left.plot(table["sim_core_link_util"] * 100, y - 0.2, "k.", label="simulated mean core link")
    left.set_yticks(y, [f"{m} {s}" for m, s in zip(table["model"], table["scheduler"])], fontsize=7)
    left.set_xlabel("% of the step")
    left.legend(fontsize=7)
    right.barh(y, table["tflops"], color="C2")
    right.set_xlabel("TFLOP/s")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    return left, right


__all__ = ["BREAKDOWN", "PUBLISHED_MS", "PUBLISHED_SUMMARY", "SCHEDULERS", "against_published",
           "breakdown_table", "latency_table", "plot_breakdown", "plot_latency", "plot_utilisation",
           "summary"]
