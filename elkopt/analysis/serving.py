"""Serving workloads beyond the published study (issue 19): long-context decode, mixture of
experts against batch, chunked prefill. One table function and one plot function per sweep.

- `long_context_table`: a ``+experiment=long_context`` results table as one row per (model,
  KV length, batch), with the step's HBM time (bytes read and written over the chip's HBM
  bandwidth) and the KV cache's share of the bytes read;
- `moe_table`: a ``+experiment=moe_batch`` one as one row per (model, batch), with the
  latency per token and the expected distinct experts loaded per layer (and the speculative
  preload decision when the table reports it);
- `prefill_table` and `chunk_steps`: a ``+experiment=prefill_chunks`` one as one row per
  (model, chunk size), with the time to first token and the HBM traffic, or one row per
  chunk step (from the ``chunks`` column, JSON text in the results table).

`load_or_none` lets the notebook (notebooks/serving.ipynb) skip a sweep that has not run yet.

Bytes are bytes, times milliseconds, unless a column's name says otherwise (``_gb``: 1e9 B).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from elkopt.analysis.results import Results, finished, load

if TYPE_CHECKING:
    from matplotlib.axes import Axes

GB = 1e9
#: Relative tolerance when telling which term of the lower bound is the larger: the lower
#: bound is computed in cycles, the HBM time here from bytes, so equal terms differ by rounding.
_BOUND_RTOL = 1e-6


def _hbm_ms(done: pd.DataFrame) -> pd.Series:
    """HBM time of each job's step, ms: bytes read plus written (one channel carries both)
    over the chip's HBM bandwidth (``config.chip.hbm_bytes_per_s``, the whole system's)."""
    moved = done["hbm_bytes_read"] + done["hbm_bytes_written"].fillna(0)
    return moved / done["config.chip.hbm_bytes_per_s"] * 1e3


def load_or_none(sweep: str) -> Results | None:
    """`elkopt.analysis.results.load` of `sweep`, or None with a printed note when there is no
    table for it yet (a sweep not run here, nor copied to notebooks/data; under pytest, no
    fixture), so a notebook section can skip instead of failing."""
    try:
        return load(sweep)
    except FileNotFoundError:
        print(f"{sweep}: no results table yet, section skipped (run `python -m elkopt.run --multirun "
              f"+experiment={sweep}`, then `python experiments/notebook_tables.py {sweep}`)")
        return None


def _plain_ticks(ax: Axes, *axes: str) -> None:
    """Tick labels on log axes as plain numbers (4, 0.5) rather than powers (4 x 10^0)."""
    from matplotlib.ticker import FuncFormatter

    def minor(value: float, _) -> str:  # label 2 and 5 of each decade, so short ranges get labels
        return f"{value:g}" if value > 0 and round(value / 10 ** np.floor(np.log10(value))) in (2, 5) else ""

    for name in axes:
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(minor))


def long_context_table(results: pd.DataFrame) -> pd.DataFrame:
    """A ``+experiment=long_context`` results table (`elkopt.collect`) as one row per finished
    job: model, ``kv_len`` (tokens cached per request), ``batch``, ``tokens_cached`` (batch x
    kv_len), ``latency_ms`` (one decode step), ``lower_bound_ms``, ``hbm_ms`` (the step's HBM
    bytes read and written over the HBM bandwidth), ``latency_over_hbm`` (1: the step runs
    at the HBM's speed), ``kv_share`` (KV cache bytes over all bytes read), ``hbm_gb_read``,
    ``hbm_util`` and ``bound_by``: which term of the lower bound is the larger, ``hbm`` or
    ``plans`` (the sum of every operator's fastest plan)."""
    done = finished(results, need=("config.model.name", "config.workload.kv_len", "config.workload.batch",
                                   "config.chip.hbm_bytes_per_s", "latency_ms", "hbm_bytes_read",
                                   "hbm_bytes_written", "hbm_bytes_kv"))
    table = pd.DataFrame({
        "model": done["config.model.name"],
        "kv_len": done["config.workload.kv_len"].astype(int),
        "batch": done["config.workload.batch"].astype(int),
        "latency_ms": done["latency_ms"],
        "lower_bound_ms": done.get("lower_bound_ms", pd.Series(np.nan, index=done.index)),
        "hbm_ms": _hbm_ms(done),
        "kv_share": done["hbm_bytes_kv"] / done["hbm_bytes_read"],
        "hbm_gb_read": done["hbm_bytes_read"] / GB,
        "hbm_util": done.get("hbm_util", pd.Series(np.nan, index=done.index)),
    })
    table.insert(3, "tokens_cached", table["kv_len"] * table["batch"])
    table.insert(6, "latency_over_hbm", table["latency_ms"] / table["hbm_ms"])
    hbm_bound = table["hbm_ms"] >= table["lower_bound_ms"] * (1 - _BOUND_RTOL)
    table["bound_by"] = np.where(table["lower_bound_ms"].isna(), None, np.where(hbm_bound, "hbm", "plans"))
    return table.sort_values(["model", "kv_len", "batch"]).reset_index(drop=True)


def hbm_bound_from(table: pd.DataFrame) -> pd.Series:
    """Per model of a `long_context_table`, the fewest tokens cached from which every job
    with at least as many is bound by HBM (``bound_by == "hbm"``); NaN when none is."""
    def first(rows: pd.DataFrame) -> float:
        rows = rows.sort_values("tokens_cached")
        plans = rows.loc[rows["bound_by"] != "hbm", "tokens_cached"]
        above = rows[rows["tokens_cached"] > (plans.max() if len(plans) else -1)]
        return float(above["tokens_cached"].min()) if len(above) else np.nan

    return table.groupby("model")[["tokens_cached", "bound_by"]].apply(first).rename("tokens_cached")


def plot_long_context(table: pd.DataFrame, model: str, ax: Axes | None = None) -> Axes:
    """Step latency against tokens cached (batch x KV length; log-log), one line per KV
    length, and the step's HBM time (bytes over bandwidth, a function of the tokens cached
    alone) dashed: far below the latency while the fastest plans bound the step, on it
    once HBM does."""
    import matplotlib.pyplot as plt

    part = table[table["model"] == model]
    if part.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(table['model'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (kv_len, rows) in enumerate(part.groupby("kv_len", sort=True)):
        rows = rows.sort_values("tokens_cached")
        ax.plot(rows["tokens_cached"], rows["latency_ms"], "o-", color=f"C{k}", label=f"KV {kv_len:,}")
    hbm = part.groupby("tokens_cached")["hbm_ms"].mean().sort_index()
    ax.plot(hbm.index, hbm.values, "--", color="black", label="HBM time (bytes / bandwidth)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_ticks(ax, "y")
    ax.set_xlabel("tokens cached (batch x KV length)")
    ax.set_ylabel("decode step latency (ms)")
    ax.set_title(f"{model}: long-context decode")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


#: Optional columns of a moe_batch results table (the speculative preload decision) and their
#: names in `moe_table`.
MOE_OPTIONAL = {
    "stats.moe_experts_preloaded": "experts_preloaded",
    "stats.moe_experts_read": "experts_read",
    "stats.moe_wait_ms": "wait_ms",
    "lower_bound_ms": "lower_bound_ms",
    "hbm_bytes_read": "hbm_gb_read",
    "stats.moe_hbm_bytes_read": "chosen_hbm_gb_read",
}


def moe_table(results: pd.DataFrame) -> pd.DataFrame:
    """A ``+experiment=moe_batch`` results table as one row per finished job: model, batch,
    ``latency_ms`` (one decode step), ``latency_per_token_ms`` (latency over batch),
    ``experts_loaded`` (expected distinct routed experts read per layer). When the table has
    them (MOE_OPTIONAL): ``experts_preloaded`` (experts preloaded speculatively before the
    router ran), ``experts_read`` (experts read per layer with those preloads, misses
    included), ``wait_ms`` (the step's latency had every expert load waited for its router),
    ``preload_gain`` (wait_ms over latency_ms, minus 1), ``lower_bound_ms``, ``hbm_gb_read``
    (the step's bytes read with the expected experts) and ``chosen_hbm_gb_read`` (with the
    preloads chosen, speculative misses included)."""
    done = finished(results, need=("config.model.name", "config.workload.batch", "latency_ms",
                                   "moe_experts_loaded"))
    batch = done["config.workload.batch"].astype(int)
    table = pd.DataFrame({
        "model": done["config.model.name"], "batch": batch, "latency_ms": done["latency_ms"],
        "latency_per_token_ms": done["latency_ms"] / batch,
        "experts_loaded": done["moe_experts_loaded"].astype(float),
    })
    for column, name in MOE_OPTIONAL.items():
        if column in done.columns:
            table[name] = done[column].astype(float) / (GB if "hbm_bytes" in column else 1)
    if "wait_ms" in table:
        table.insert(table.columns.get_loc("wait_ms") + 1, "preload_gain", table["wait_ms"] / table["latency_ms"] - 1)
    return table.sort_values(["model", "batch"]).reset_index(drop=True)


def plot_moe(table: pd.DataFrame, axes: tuple[Axes, Axes] | None = None) -> tuple[Axes, Axes]:
    """Two panels against batch (log x), one colour per model: latency per token (log y;
    waiting for every router dashed when the table has ``wait_ms``), and the distinct
    experts loaded per layer."""
    import matplotlib.pyplot as plt

    if table.empty:
        raise ValueError("no rows to plot: the moe_batch table is empty")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    per_token, experts = axes
    for k, (model, rows) in enumerate(table.groupby("model", sort=True)):
        rows = rows.sort_values("batch")
        per_token.plot(rows["batch"], rows["latency_per_token_ms"], "o-", color=f"C{k}", label=model)
        if "wait_ms" in rows and rows["wait_ms"].notna().any():
            per_token.plot(rows["batch"], rows["wait_ms"] / rows["batch"], "--", color=f"C{k}", alpha=0.6,
                           label=f"{model}, waiting for the router")
        experts.plot(rows["batch"], rows["experts_loaded"], "o-", color=f"C{k}", label=model)
    per_token.set_yscale("log")
    _plain_ticks(per_token, "y")
    per_token.set_ylabel("latency per token (ms)")
    per_token.set_title("decode latency per token")
    experts.set_ylabel("distinct experts loaded per layer")
    experts.set_title("routed experts read from HBM")
    experts.set_ylim(bottom=0)
    _log2_x(axes, "batch")
    return per_token, experts


def prefill_table(results: pd.DataFrame) -> pd.DataFrame:
    """A ``+experiment=prefill_chunks`` results table as one row per finished job: model,
    ``prompt`` (tokens), ``chunk`` (tokens per step; the prompt when unchunked), ``steps``
    (chunk steps; from the ``chunks`` column when present, else prompt / chunk rounded up),
    ``ttft_ms`` (time to first token: the chunk steps one after another), ``lower_bound_ms``,
    ``hbm_gb_read``, ``hbm_gb_written``, ``hbm_ms`` (that traffic over the HBM bandwidth),
    ``longest_step_ms`` (the slowest chunk step: the stall a decode riding along would see;
    NaN without ``chunks``) and ``speedup_vs_whole`` (ttft of the model's largest chunk over
    this one's)."""
    done = finished(results, need=("config.model.name", "config.workload.chunk", "config.workload.seq_len",
                                   "config.chip.hbm_bytes_per_s", "ttft_ms", "hbm_bytes_read",
                                   "hbm_bytes_written"))
    prompt = done["config.workload.seq_len"].astype(int)
    chunk = done["config.workload.chunk"].fillna(prompt).astype(int)
    steps = -(-prompt // chunk)
    longest = pd.Series(np.nan, index=done.index)
    if "chunks" in done.columns:
        parsed = done["chunks"].map(_chunk_list)
        steps = parsed.map(len).where(parsed.map(len) > 0, steps)
        longest = parsed.map(lambda c: max((s["latency_ms"] for s in c), default=np.nan))
    table = pd.DataFrame({
        "model": done["config.model.name"], "prompt": prompt, "chunk": chunk, "steps": steps.astype(int),
        "ttft_ms": done["ttft_ms"],
        "lower_bound_ms": done.get("lower_bound_ms", pd.Series(np.nan, index=done.index)),
        "hbm_gb_read": done["hbm_bytes_read"] / GB, "hbm_gb_written": done["hbm_bytes_written"] / GB,
        "hbm_ms": _hbm_ms(done), "longest_step_ms": longest.astype(float),
    }).sort_values(["model", "prompt", "chunk"]).reset_index(drop=True)
    whole = table["ttft_ms"].where(table["chunk"] == table.groupby(["model", "prompt"])["chunk"].transform("max"))
    table["speedup_vs_whole"] = whole.groupby([table["model"], table["prompt"]]).transform("first") / table["ttft_ms"]
    return table


def _chunk_list(text) -> list[dict]:
    """The ``chunks`` entry of a results row (JSON text, as `elkopt.collect` stores lists) as
    a list of per-step dicts; [] for a missing entry."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    steps = json.loads(text) if isinstance(text, str) else list(text)
    if not all(isinstance(s, dict) and "latency_ms" in s for s in steps):
        raise ValueError("results column 'chunks' is not a list of chunk steps with latency_ms; is this a "
                         "+experiment=prefill_chunks results table (elkopt.prefill_run)?")
    return steps


def chunk_steps(results: pd.DataFrame) -> pd.DataFrame:
    """One row per chunk step of each finished job of a ``prefill_chunks`` results table:
    model, chunk, step, ``kv_len`` (tokens cached before the step), ``latency_ms``,
    ``lower_bound_ms``, ``hbm_gb_read``, ``hbm_gb_written``, ``hbm_gb_kv`` (KV cache read)."""
    done = finished(results, need=("config.model.name", "config.workload.chunk", "chunks"))
    rows = []
    for model, chunk, text in zip(done["config.model.name"], done["config.workload.chunk"], done["chunks"]):
        for k, step in enumerate(_chunk_list(text)):
            rows.append({
                "model": model, "chunk": chunk, "step": step.get("step", k), "kv_len": step.get("kv_len"),
                "latency_ms": step["latency_ms"], "lower_bound_ms": step.get("lower_bound_ms"),
                **{f"hbm_gb_{part}": (step[f"hbm_bytes_{part}"] / GB if step.get(f"hbm_bytes_{part}") is not None
                                      else np.nan) for part in ("read", "written", "kv")},
            })
    columns = ["model", "chunk", "step", "kv_len", "latency_ms", "lower_bound_ms", "hbm_gb_read",
               "hbm_gb_written", "hbm_gb_kv"]
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "chunk", "step"]).reset_index(drop=True)


def plot_prefill(table: pd.DataFrame, axes: tuple[Axes, Axes] | None = None) -> tuple[Axes, Axes]:
    """Two panels against chunk size (log x), one colour per (model, prompt): time to first
    token (lower bound dashed), and HBM gigabytes read (written dotted)."""
    import matplotlib.pyplot as plt

    if table.empty:
        raise ValueError("no rows to plot: the prefill_chunks table is empty")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    ttft, traffic = axes
    for k, ((model, prompt), rows) in enumerate(table.groupby(["model", "prompt"], sort=True)):
        rows = rows.sort_values("chunk")
        label = f"{model}, prompt {prompt:,}"
        ttft.plot(rows["chunk"], rows["ttft_ms"], "o-", color=f"C{k}", label=label)
        if rows["lower_bound_ms"].notna().any():
            ttft.plot(rows["chunk"], rows["lower_bound_ms"], "--", color=f"C{k}", alpha=0.6, label="lower bound")
        traffic.plot(rows["chunk"], rows["hbm_gb_read"], "o-", color=f"C{k}", label=f"{label}, read")
        traffic.plot(rows["chunk"], rows["hbm_gb_written"], ":", color=f"C{k}", label="written")
    ttft.set_ylabel("time to first token (ms)")
    ttft.set_title("chunked prefill: time to first token")
    ttft.set_ylim(bottom=0)
    traffic.set_ylabel("HBM traffic (GB)")
    traffic.set_title("HBM bytes per prompt")
    traffic.set_ylim(bottom=0)
    _log2_x(axes, "chunk (tokens per step)")
    return ttft, traffic


def _log2_x(axes, xlabel: str) -> None:
    """A base-2 log x axis with plain tick labels, a grid and a legend on every panel."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        _plain_ticks(ax, "x")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)


__all__ = ["MOE_OPTIONAL", "chunk_steps", "hbm_bound_from", "load_or_none", "long_context_table", "moe_table",
           "plot_long_context", "plot_moe", "plot_prefill", "prefill_table"]
