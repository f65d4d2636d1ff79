"""A chunked prefill as one job: every chunk step of a prompt, and its time to first token.

`workload=prefill workload.chunk=C` with `workload.kv_len` unset (null) plans each chunk
step of the prompt, kv_len = 0, C, 2C, ..., seq_len - C (`Workload.chunk_steps`), one after
another, each exactly as the one-step run with that `workload.kv_len` plans it
(`elkopt.app`: the same graph, scheduler, references and checker). Steps share plan tables
through the cache: the weight Dots, norms and MLP of every step have the same shapes, only
the attention over the cache grows. The time to first token, `ttft_ms`, is the sum of the
steps' latencies: a serving system runs them back to back, and the last one produces the
first token.

The run folder holds:

- `step<i>_kv<P>/` for step i (from 0) after P cached tokens: its plan.json, trace.json and
  metrics.json, as `workload.kv_len=P` writes them (a resumed run reuses finished steps);
- trace.json: the steps on one time axis, step i starting where step i-1 ends, each event's
  args naming its step, and a "chunk steps" process with one span per step;
- plan.json: the last step's plan (the step that ends the prompt and runs the LM head);
- metrics.json, written last: the totals over the steps (`total_metrics`: latencies and
  references summed, `ttft_ms` = `latency_ms`, bytes and FLOPs summed, utilisations
  weighted by latency) and `chunks`, one entry per step (`CHUNK_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from elkopt.analysis.bound import sum_demand
from elkopt.config import RunConfig, to_conventions, to_plain_dict, to_planning_options, to_workload
from elkopt.report import write_json_atomic

log = logging.getLogger(__name__)

#: The per-step entries of metrics.json `chunks`, taken from each step's metrics.json.
CHUNK_FIELDS = ("kv_len", "latency_ms", "lower_bound_ms", "ideal_ms", "hbm_bytes_read", "hbm_bytes_written",
                "hbm_bytes_kv", "flops", "compile_s", "breakdown")
#: Top-level metrics summed over the steps (None if any step has None).
SUMMED = ("latency_ms", "latency_cycles", "ideal_ms", "lower_bound_ms", "basic_ms", "static_ms", "flops",
          "hbm_bytes", "hbm_bytes_read", "hbm_bytes_written", "hbm_bytes_kv", "hbm_bytes_weights", "n_ops",
          "compile_s")
#: Top-level metrics averaged over the steps, weighted by their latencies.
LATENCY_WEIGHTED = ("hbm_util", "noc_util", "tflops")
#: Trace process of the per-step spans (the timeline's own process is 1, `elkopt.schedule.trace`).
STEPS_PID = 2


def is_chunked_prompt(run_config: RunConfig) -> bool:
    """True for every chunk step of a prompt in one run: a prefill with workload.chunk set and
    workload.kv_len null."""
    workload = run_config.workload
    return workload.kind == "prefill" and workload.chunk is not None and workload.kv_len is None


def step_folder(index: int, kv_len: int) -> str:
    """The subfolder of step `index` (from 0) after `kv_len` cached tokens."""
    return f"step{index:02d}_kv{kv_len}"


def run_chunk_steps(run_config: RunConfig, out: Path, say: Callable[[str], None], began: float) -> dict[str, Any]:
    """Plan every chunk step of the prompt (module doc), write the step folders, trace.json,
    plan.json and metrics.json into `out`; return the metrics. ValueError on bad input."""
    from elkopt import app  # app dispatches here: imported late

    workload = to_workload(run_config.workload)
    kv_lens = workload.chunk_steps
    steps: list[dict[str, Any]] = []
    for index, kv_len in enumerate(kv_lens):
        step_config = dataclasses.replace(run_config, workload=dataclasses.replace(run_config.workload,
                                                                                   kv_len=kv_len))
        folder = out / step_folder(index, kv_len)
        label = f"chunk step {index + 1}/{len(kv_lens)} ({workload.chunk} tokens after kv_len {kv_len})"
        done = app.finished_with(folder, step_config) if run_config.resume else None
        if done is None:
            step_began = time.perf_counter()
            inputs = app.build_inputs(step_config)
            say(f"{label}: compiling {inputs.model} ({inputs.graph.n_ops} ops) on {inputs.chip.name} "
                f"with the {run_config.scheduler.name} scheduler")
            result = compile_step(step_config, inputs.graph, inputs.chip, say)
            done = app.build_metrics(step_config, inputs, result)
            done["run_s"] = time.perf_counter() - step_began
            folder.mkdir(parents=True, exist_ok=True)
            app.write_outputs(folder, result, done)
        else:
            say(f"{label}: reusing the finished step in {folder}")
        log.info("%s: %.3f ms (lower bound %.3f ms), %.2f GB read, %.2f GB written, compiled in %.1f s",
                 label, done["latency_ms"], done["lower_bound_ms"] or float("nan"), done["hbm_bytes_read"] / 1e9,
                 done["hbm_bytes_written"] / 1e9, done["compile_s"])
        steps.append(done)
    metrics = total_metrics(steps, kv_lens)
    metrics["workload"] = workload.describe()
    metrics["config"] = to_plain_dict(run_config)
    folders = [out / step_folder(i, p) for i, p in enumerate(kv_lens)]
    shutil.copyfile(folders[-1] / "plan.json", out / "plan.json.tmp")
    (out / "plan.json.tmp").replace(out / "plan.json")
    write_json_atomic(out / "trace.json", combined_trace(folders, steps), indent=None)
    metrics["run_s"] = time.perf_counter() - began
    write_json_atomic(out / "metrics.json", metrics)
    log.info("wrote %d step folders, plan.json (the last step's), trace.json (all steps) and metrics.json to %s",
             len(folders), out)
    return metrics


def compile_step(run_config: RunConfig, graph: Any, chip: Any, say: Callable[[str], None]) -> Any:
    """Compile one chunk step with elkopt's schedulers (`elkopt.pipeline.compile_model`)."""
    from elkopt.app import solver_options
    from elkopt.elk.compile import runs_published_model
    from elkopt.pipeline import compile_model

    name = run_config.scheduler.name
    if runs_published_model(name, to_conventions(run_config.conventions)):
        raise ValueError(f"scheduler={name}: the published designs model no HBM writes, and every chunk step of "
                         "a prefill writes its KV cache; choose scheduler=basic|static|inductive|elkopt (without "
                         "conventions.published_plans)")
    return compile_model(graph, chip, name, to_planning_options(run_config.planning), progress=say,
                         solver=solver_options(run_config))


def total_metrics(steps: list[dict[str, Any]], kv_lens: tuple[int, ...]) -> dict[str, Any]:
    """metrics.json of the whole prompt from its steps' metrics (module doc): the last step's
    descriptive fields, SUMMED summed, LATENCY_WEIGHTED weighted by latency, peak SRAM the
    largest, numeric `stats` and every (nested) dict of `_ms` times (breakdown, bound,
    ... by part) summed per key, the demand by `elkopt.analysis.bound.sum_demand`,
    ttft_ms, pct_of_ideal and pct_of_lower_bound of the totals, and `chunks`."""
    from elkopt.app import percent_of

    metrics = dict(steps[-1])
    for key in SUMMED:
        values = [step.get(key) for step in steps]
        metrics[key] = None if any(v is None for v in values) else sum(values)
    latency = metrics["latency_ms"]
    for key in LATENCY_WEIGHTED:
        values = [step.get(key) for step in steps]
        metrics[key] = None if any(v is None for v in values) or latency <= 0 else \
            sum(v * step["latency_ms"] for v, step in zip(values, steps)) / latency
    metrics["peak_sram_bytes"] = max(step["peak_sram_bytes"] for step in steps)
    for key, value in steps[-1].items():
        if _is_times(value):  # the breakdown, the critical-path bound, and by part
            metrics[key] = _sum_times([step.get(key) or {} for step in steps])
    metrics.update(sum_demand(steps))  # the resource demand, its bounds recomputed from the sums
    metrics["stats"] = _sum_numbers([step.get("stats") or {} for step in steps])
    metrics["solve"] = {}  # per step in the step folders' metrics.json
    metrics["peak_rss_mb"] = max(step.get("peak_rss_mb") or 0.0 for step in steps)
    metrics["ttft_ms"] = latency
    metrics["pct_of_ideal"] = percent_of(metrics["ideal_ms"], latency)
    metrics["pct_of_lower_bound"] = percent_of(metrics["lower_bound_ms"], latency)
    metrics["chunks"] = [{"step": i, "folder": step_folder(i, kv_len),
                          **{key: step.get(key) for key in CHUNK_FIELDS if key != "kv_len"}, "kv_len": kv_len}
                         for i, (kv_len, step) in enumerate(zip(kv_lens, steps))]
    return metrics


def _is_times(value: Any) -> bool:
    """A non-empty dict of times (keys ending in `_ms`), or of such dicts."""
    return isinstance(value, dict) and bool(value) and all(
        _is_times(v) if isinstance(v, dict) else key.endswith("_ms") for key, v in value.items())


def _sum_times(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key (nested), the sum of the steps' times (a key missing in a step counts 0)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(key for d in dicts for key in d):
        values = [d[key] for d in dicts if key in d]
        out[key] = _sum_times(values) if all(isinstance(v, dict) for v in values) else sum(v or 0.0 for v in values)
    return out


def _sum_numbers(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the sum of the numeric values (bools and others: the last dict's value)."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key in out \
                    and isinstance(out[key], (int, float)):
                out[key] += value
            else:
                out[key] = value
    return out


def combined_trace(folders: list[Path], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The steps' Chrome traces on one time axis (module doc); ts and dur in microseconds."""
    events: list[dict[str, Any]] = [{"ph": "M", "pid": STEPS_PID, "name": "process_name",
                                     "args": {"name": "chunk steps"}}]
    offset_us = 0.0
    for index, (folder, step) in enumerate(zip(folders, steps)):
        trace = json.loads((folder / "trace.json").read_text())
        kv_len = step["config"]["workload"]["kv_len"]
        for event in trace["traceEvents"]:
            if event.get("ph") == "M":
                if index == 0:
                    events.append(event)
                continue
            event = {**event, "args": {**(event.get("args") or {}), "chunk_step": index, "kv_len": kv_len}}
            if "ts" in event:
                event["ts"] += offset_us
            events.append(event)
        duration_us = step["latency_ms"] * 1e3
        events.append({"ph": "X", "pid": STEPS_PID, "tid": 1, "name": f"step {index} (kv_len {kv_len})",
                       "ts": offset_us, "dur": duration_us,
                       "args": {"latency_ms": step["latency_ms"], "lower_bound_ms": step["lower_bound_ms"],
                                "folder": folder.name}})
        offset_us += duration_us
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def chunk_lines(metrics: dict[str, Any]) -> list[str]:
    """Summary lines of a chunked prompt: one per chunk step, then the total."""
    head = f"  {'chunk step':<14}{'kv_len':>8}{'latency ms':>12}{'bound ms':>10}{'GB read':>9}{'GB written':>12}" \
           f"{'compile s':>11}"
    lines = [head]
    chunks = metrics["chunks"]

    def row(label: str, kv: str, c: dict[str, Any]) -> str:
        bound = c.get("lower_bound_ms")
        return (f"  {label:<14}{kv:>8}{c['latency_ms']:>12.3f}{'-' if bound is None else f'{bound:.3f}':>10}"
                f"{c['hbm_bytes_read'] / 1e9:>9.2f}{c['hbm_bytes_written'] / 1e9:>12.2f}{c['compile_s']:>11.1f}")

    for c in chunks:
        lines.append(row(f"{c['step'] + 1}/{len(chunks)}", str(c["kv_len"]), c))
    lines.append(row("total (TTFT)", "", metrics))
    return lines
