"""Fig. 17 on the published graphs: the five published designs rebuilt, and elkopt, on the
published LLM graph files (sweep ``+experiment=fig17_published``).

An ``elk_full`` job runs every published design on its configuration and records each
(``basic_ms``, ``static_ms``, ``elk_dyn_ms``, ``elk_dyn_printed_ms``, ``elk_full_ms``,
``ideal_ms``; ``reference_designs: published``); an ``elkopt`` job records its own latency:
under ``conventions=published`` its search in the published model (which records the
published designs too), under elkopt's accounting with its own Ideal and lower bound.
Files are named by the zoo model whose published numbers they stand for
(`elkopt.published.PUBLISHED_GRAPHS`, by the SHA-256 of the file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from elkopt.analysis.latency import in_model_order, mean_ratios, plot_config_bars
from elkopt.analysis.results import finished
from elkopt.published import PUBLISHED_CONFIG, PUBLISHED_GRAPHS, PUBLISHED_MS, PUBLISHED_SUMMARY

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The published designs, slowest first: table column -> metrics.json field of an elk_full job.
DESIGNS = {"basic": "basic_ms", "static": "static_ms", "elk_dyn": "elk_dyn_ms",
           "elk_dyn_printed": "elk_dyn_printed_ms", "elk_full": "elk_full_ms", "ideal": "ideal_ms"}
#: How the paper and the plots name them.
LABELS = {"basic": "Basic", "static": "Static", "elk_dyn": "Elk-Dyn", "elk_dyn_printed": "Elk-Dyn (printed)",
          "elk_full": "Elk-Full", "ideal": "Ideal", "elkopt": "elkopt"}
#: Designs compared in the summary and the plots (Ideal is their reference).
COMPARED = ("basic", "static", "elk_dyn", "elk_dyn_printed", "elk_full", "elkopt")
#: The published value each stands beside, where it is not its own name.
PAPER_NAME = {"elk_dyn_printed": "elk_dyn", "elkopt": "elk_full"}

_KEYS = {"config.workload.batch": "batch", "config.workload.kv_len": "kv"}


def model_names(results: pd.DataFrame) -> pd.Series:
    """Per row, the zoo model a published graph file stands for (by its SHA-256), else the
    graph's own name (metrics.json ``model``)."""
    zoo = results["model_file_sha256"].map(PUBLISHED_GRAPHS)
    return zoo.fillna(results["model"]) if "model" in results.columns else zoo


def designs_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, batch, kv), latencies in ms: the published designs (``basic``,
    ``static``, ``elk_dyn``, ``elk_dyn_printed``, ``elk_full``, ``ideal``, ``lower_bound``:
    from the jobs that ran them, ``reference_designs == "published"``); each elkopt
    scheduler's latency under its name (``elkopt``), with elkopt's own Ideal and lower
    bound (``elkopt_ideal``, ``elkopt_lower_bound``) when it ran on its own accounting (in
    the published model, ``conventions.published_plans``, it has the published ones); and
    the published values (``published_<design>``) where the paper lists them: batch 32,
    KV 2048, beside jobs that ran its setup (their metrics carry ``published_ms``)."""
    need = (*_KEYS, "config.scheduler.name", "latency_ms", "model_file_sha256", "reference_designs")
    done = finished(results, need=need)
    keys = ["model", *_KEYS.values()]
    done = done.assign(model=model_names(done).to_numpy(),
                       **{short: done[column] for column, short in _KEYS.items()})
    elk = done[done["reference_designs"] == "published"]
    if elk.empty:
        raise ValueError("no finished job ran the published designs (scheduler=elk_full); is this the "
                         "fig17_published sweep?")
    fields = {name: field for name, field in {**DESIGNS, "lower_bound": "lower_bound_ms"}.items()
              if field in elk.columns}
    table = elk.groupby(keys)[list(fields.values())].first()  # the first non-null value of each
    table.columns = list(fields)
    ours = done[~done["config.scheduler.name"].str.startswith("elk_")]
    if not ours.empty:
        latency = ours.pivot_table(index=keys, columns="config.scheduler.name", values="latency_ms",
                                   aggfunc="first")
        table = table.join(latency, how="outer")
        own_accounting = ours[ours["reference_designs"] != "published"]
        own = {f"elkopt_{field.removesuffix('_ms')}": field for field in ("ideal_ms", "lower_bound_ms")
               if field in own_accounting.columns}
        if not own_accounting.empty and own:
            references = own_accounting.groupby(keys)[list(own.values())].min()
            references.columns = list(own)
            table = table.join(references, how="outer")
    table.columns.name = None
    table = table.reset_index()
    return in_model_order(_with_published(table, results), keys)


def _with_published(table: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """`table` with the published values beside the configurations that ran their setup."""
    keys = ["model", "batch", "kv"]
    published = pd.DataFrame([
        {"model": m, "batch": PUBLISHED_CONFIG[0], "kv": PUBLISHED_CONFIG[1],
         **{f"published_{k}": v for k, v in values.items()}}
        for m, values in PUBLISHED_MS.items()])
    if "published_ms.ideal" in results.columns:  # only jobs in the published setup carry published_ms
        ran = finished(results)
        ran = ran[ran["published_ms.ideal"].notna()]
        setups = set(zip(model_names(ran), ran["config.workload.batch"], ran["config.workload.kv_len"]))
        published = published[[tuple(r) in setups for r in published[keys].itertuples(index=False)]]
    return table.merge(published, on=keys, how="left")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per design, over the configurations where every design of the table has a latency:
    mean Ideal / achieved (%, Ideal the published design's), mean Ideal / achieved under
    the design's own accounting (``pct_of_own_ideal``: elkopt's against its own Ideal,
    ``elkopt_ideal``, when the table has it), mean speed-ups over Basic and Static, and
    against Elk-Full: the mean gain (Elk-Full / design, above 1 is faster), its smallest
    and largest, and how many configurations are faster. The published Elk-Full averages
    beside."""
    designs = [d for d in COMPARED if d in table.columns]
    full = table.dropna(subset=[*designs, "ideal"])
    if full.empty:
        raise ValueError("no configuration has a latency from every design")
    rows = []
    for d in designs:
        gain = full["elk_full"] / full[d] if "elk_full" in full.columns else None
        # elkopt on its own accounting has its own Ideal; in the published model, the published one
        own_ideal = full["elkopt_ideal"] if d not in DESIGNS and "elkopt_ideal" in full.columns else full["ideal"]
        row = {"design": d, "configurations": len(full), **mean_ratios(full, d),
               "pct_of_own_ideal": float((own_ideal / full[d]).mean() * 100)}
        if gain is not None:
            row.update(gain_vs_elk_full=float(gain.mean()), min_gain_vs_elk_full=float(gain.min()),
                       max_gain_vs_elk_full=float(gain.max()),
                       faster_than_elk_full=int((full[d] < full["elk_full"]).sum()))
        rows.append(row)
    rows.append({"design": "published elk_full", "configurations": 24, **PUBLISHED_SUMMARY})
    out = pd.DataFrame(rows)
    if "faster_than_elk_full" in out.columns:  # a count, missing on the published row
        out["faster_than_elk_full"] = out["faster_than_elk_full"].astype("Int64")
    return out


def against_published(table: pd.DataFrame) -> pd.DataFrame:
    """The configurations with published values: each rebuilt design beside the published
    one, and their ratio (rebuilt / published); elkopt beside the published Elk-Full."""
    if "published_ideal" not in table.columns:
        return pd.DataFrame(columns=["model", "design", "published_as", "rebuilt_ms", "published_ms",
                                     "ratio"])
    part = table.dropna(subset=["published_ideal"])
    rows = []
    for _, r in part.iterrows():
        for design in COMPARED + ("ideal",):
            paper = PAPER_NAME.get(design, design)
            if design in part.columns and not pd.isna(r[design]):
                theirs = r[f"published_{paper}"]
                rows.append({"model": r["model"], "design": design, "published_as": paper,
                             "rebuilt_ms": r[design], "published_ms": theirs, "ratio": r[design] / theirs})
    return pd.DataFrame(rows)


def plot_designs(table: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Bars of each design's latency per (batch, KV), elkopt last (hatched), Ideal as a
    black tick, the published values (batch 32, KV 2048) as hollow diamonds on the bar of
    the design they stand for."""
    designs = [d for d in COMPARED if d in table.columns and d != "elk_dyn_printed"]
    return plot_config_bars(table, model, {d: LABELS[d] for d in designs},
                            {d: f"published_{d}" for d in designs}, ax=ax, title=f"{model} (published graph)",
                            hatched=("elkopt",), legend_columns=4)


def plot_against_published(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Batch 32, KV 2048: per model, each published design rebuilt (solid) beside the
    paper's value (hollow), and elkopt (hatched) beside Elk-Full."""
    import matplotlib.pyplot as plt

    rows = against_published(table)
    if rows.empty:
        raise ValueError("no configuration of the table has published values (batch 32, KV 2048 on the "
                         "reference chip)")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.5))
    designs = [d for d in COMPARED + ("ideal",) if d in set(rows["design"]) and d != "elk_dyn_printed"]
    models = list(dict.fromkeys(rows["model"]))
    slot = 0.85 / len(designs)
    for k, d in enumerate(designs):
        part = rows[rows["design"] == d].set_index("model").reindex(models)
        x = np.arange(len(models)) + (k - (len(designs) - 1) / 2) * slot
        if d == "elkopt":  # its paper counterpart is Elk-Full's hollow bar, drawn already
            ax.bar(x, part["rebuilt_ms"], slot / 2, color=f"C{k}", label=LABELS[d], hatch="//", edgecolor="white")
            continue
        ax.bar(x - slot / 4, part["rebuilt_ms"], slot / 2, color=f"C{k}", label=LABELS[d])
        ax.bar(x + slot / 4, part["published_ms"], slot / 2, color="none", edgecolor=f"C{k}",
               label="published" if k == 0 else None)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_ylabel("latency per token (ms)")
    ax.set_title("batch 32, KV 2048: rebuilt (solid) and published (hollow)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    return ax


__all__ = ["COMPARED", "DESIGNS", "LABELS", "PAPER_NAME", "against_published", "designs_table", "model_names",
           "plot_against_published", "plot_designs", "summary"]
