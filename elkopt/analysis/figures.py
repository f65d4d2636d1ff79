"""The published evaluation's figures, one function per experiment of `conf/experiment/`,
and those of the serving sweeps beyond it (issue 19: `long_context`, `moe_batch`,
`prefill_chunks`; tables in `elkopt.analysis.serving`).

Each takes the sweep's results table (`elkopt.collect`) and returns its figures by name.
The notebooks call them, and a sweep of one of these experiments draws them into its
folder when it ends (`draw`, called by `elkopt.collect`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from elkopt.analysis import bandwidth, latency, published, scaling, serving

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def _grid(n: int, width: float, height: float, rows: bool = False):
    import matplotlib.pyplot as plt

    shape = (n, 1) if rows else (1, n)
    fig, axes = plt.subplots(*shape, figsize=(width * shape[1], height * shape[0]), squeeze=False)
    return fig, axes.ravel()


def fig17_latency(results: pd.DataFrame) -> dict[str, Figure]:
    """Latency per scheduler and configuration, one panel per model."""
    return {"fig17_latency": _model_panels(latency.latency_table(results), latency.plot_latency)}


def _model_panels(table: pd.DataFrame, plot: Callable) -> Figure:
    """One row of bars per model of `table`, each drawn by `plot(table, model, ax=ax)`."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _grid(len(models), 9, 3.2, rows=True)
    for ax, model in zip(axes, models):
        plot(table, model, ax=ax)
    fig.tight_layout()
    return fig


def fig17_published(results: pd.DataFrame) -> dict[str, Figure]:
    """The published designs and elkopt on the published graphs, one panel per model; and
    batch 32, KV 2048 beside the published values (when the sweep holds it)."""
    import matplotlib.pyplot as plt

    table = published.designs_table(results)
    figures = {"fig17_published": _model_panels(table, published.plot_designs)}
    if not published.against_published(table).empty:
        reference, ax = plt.subplots(figsize=(10, 3.5))
        published.plot_against_published(table, ax=ax)
        reference.tight_layout()
        figures["fig17_published_reference"] = reference
    return figures


def fig17_equal_terms(results: pd.DataFrame) -> dict[str, Figure]:
    """The published designs' decisions and elkopt on the published graphs, all on elkopt's
    plans and timeline, one panel per model; the published values (on the published
    accounting) as diamonds for reference. No second figure beside the published bars."""
    return {"fig17_equal_terms": _model_panels(published.designs_table(results), published.plot_designs)}


def fig18_breakdown(results: pd.DataFrame) -> dict[str, Figure]:
    """The time breakdown, and the utilisations and TFLOP/s, per model and scheduler."""
    import matplotlib.pyplot as plt

    table = latency.breakdown_table(results)
    height = 0.32 * len(table) + 1
    breakdown, ax = plt.subplots(figsize=(9, height))
    latency.plot_breakdown(table, ax=ax)
    breakdown.tight_layout()
    utilisation, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    latency.plot_utilisation(table, axes=axes)
    utilisation.tight_layout()
    return {"fig18_breakdown": breakdown, "fig18_utilisation": utilisation}


def _per_model(table: pd.DataFrame, plot, width: float) -> Figure:
    """One panel per model of `table`, each drawn by `plot(table, model, ax=...)`."""
    models = sorted(table["model"].unique())
    fig, axes = _grid(len(models), width, 4)
    for ax, model in zip(axes, models):
        plot(table, model, ax=ax)
    fig.tight_layout()
    return fig


def fig19_hbm_sweep(results: pd.DataFrame) -> dict[str, Figure]:
    """Latency against HBM bandwidth, one panel per model, a line per topology."""
    return {"fig19_hbm_sweep": _per_model(bandwidth.hbm_table(results), bandwidth.plot_latency_vs_hbm, 6)}


def fig22_noc_sweep(results: pd.DataFrame) -> dict[str, Figure]:
    """Latency against HBM bandwidth, a line per interconnect scale."""
    return {"fig22_noc_sweep": _per_model(bandwidth.noc_table(results), bandwidth.plot_noc, 6.5)}


def fig23_core_sweep(results: pd.DataFrame) -> dict[str, Figure]:
    """Speed-up against cores: the LLMs in one panel, DiT-XL/2 in another."""
    table = scaling.core_table(results)
    llms = [m for m in table["model"].unique() if m != "dit_xl_2"]
    groups = [g for g in (llms, ["dit_xl_2"]) if table["model"].isin(g).any()]
    fig, axes = _grid(len(groups), 6, 4)
    for ax, group in zip(axes, groups):
        scaling.plot_cores(table, group, ax=ax)
    fig.tight_layout()
    return {"fig23_core_sweep": fig}


def fig24_training(results: pd.DataFrame) -> dict[str, Figure]:
    """The training forward pass against compute, a line per HBM bandwidth."""
    fig, axes = _grid(1, 6, 4)
    scaling.plot_training(scaling.training_table(results), ax=axes[0])
    fig.tight_layout()
    return {"fig24_training": fig}


def long_context(results: pd.DataFrame) -> dict[str, Figure]:
    """Long-context decode: step latency against tokens cached, a line per KV length, with
    the step's HBM time; one panel per model."""
    return {"long_context": _per_model(serving.long_context_table(results), serving.plot_long_context, 6.5)}


def moe_batch(results: pd.DataFrame) -> dict[str, Figure]:
    """Mixture-of-experts decode against batch: latency per token, and distinct experts loaded."""
    fig, axes = _grid(2, 5.5, 4)
    serving.plot_moe(serving.moe_table(results), axes=axes)
    fig.tight_layout()
    return {"moe_batch": fig}


def prefill_chunks(results: pd.DataFrame) -> dict[str, Figure]:
    """Chunked prefill: time to first token, and HBM traffic, against chunk size."""
    fig, axes = _grid(2, 5.5, 4)
    serving.plot_prefill(serving.prefill_table(results), axes=axes)
    fig.tight_layout()
    return {"prefill_chunks": fig}


#: Experiment name -> its figures.
FIGURES: dict[str, Callable[[pd.DataFrame], dict[str, Figure]]] = {
    f.__name__: f for f in (fig17_latency, fig17_published, fig17_equal_terms, fig18_breakdown, fig19_hbm_sweep,
                            fig22_noc_sweep, fig23_core_sweep, fig24_training, long_context, moe_batch,
                            prefill_chunks)
}


def draw(experiment: str, results: pd.DataFrame, folder: Path) -> list[Path]:
    """Write the figures of `experiment` drawn from `results` into `folder` as PNG; the
    paths written. Nothing for an experiment without figures; a table the figures cannot
    be drawn from (every job failed, say) is logged, not raised, so the table stays."""
    if experiment not in FIGURES:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        figures = FIGURES[experiment](results)
    except ValueError as error:
        log.warning("no figures for %s: %s", experiment, error)
        return []
    written = []
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


__all__ = ["FIGURES", "draw", *FIGURES]
