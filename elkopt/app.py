"""One compile from typed config to files on disk: the body of `python -m elkopt.run`.

`main(run_config, output_dir)` builds the graph and the chip, runs
`elkopt.pipeline.compile_model`, and writes into `output_dir`:

- plan.json: the schedule (see `elkopt.report.schedule_to_dict`);
- trace.json: a Chrome trace of the timeline (open in https://ui.perfetto.dev);
- metrics.json: latencies, utilisations, compile statistics and the resolved config.

With `simulate: true` the schedule is also run over the chip's network
(`elkopt.sim`): metrics.json gains `simulated_ms` and a `simulation` section (link
utilisation, hottest links, SRAM peaks per core class), trace.json a simulated
process, and network.png shows the links (heat maps on a mesh or torus). With
`sim.calibrate_rounds: N` the plan is also re-planned up to N times with load costs
calibrated by the simulation (`elkopt.sim.calibrate`) and the fastest simulated plan is
written; metrics.json records every round.

A chunked prompt (`workload=prefill workload.chunk=C`, workload.kv_len null) plans every
chunk step, one subfolder each, and reports the time to first token: `elkopt.prefill_run`.

Every file is written atomically and metrics.json last, so a folder with a
metrics.json holds a finished run. Bad input ends in one line on stderr (and
error.json) with exit status 2.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import elkopt
from elkopt.analysis.bound import bound_metrics, format_bound_table, named_kv_cache, scheduled_operators
from elkopt.chip import PUBLISHED_TB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S, Chip, Topology
from elkopt.config import (
    ModelConfig, RunConfig, SimConfig, Workload, WorkloadKind, to_chip, to_planning_options, to_plain_dict,
    to_conventions, to_run_config, to_solver_options, to_workload,
)
from elkopt.conventions import Conventions
from elkopt.elk.compile import ElkRun, compile_elk, runs_published_model
from elkopt.elk.timing import ELK_CHECKS
from elkopt.graph import zoo
from elkopt.graph.dump_import import ImportNotes
from elkopt.graph.ir import Graph, OpKind, Storage
from elkopt.pipeline import PlanningError, RunResult, compile_model
from elkopt.published import (DEFAULT_SPLIT_FACTOR, PUBLISHED_GRAPHS, PUBLISHED_LAYERS, PUBLISHED_MS,
                               PUBLISHED_SPLIT_FACTOR)
from elkopt.report import (
    plan_json_text, schedule_to_dict, write_json_atomic, write_text_atomic,
)
from elkopt.plans.space import OpShape
from elkopt.prefill_run import chunk_lines, is_chunked_prompt, run_chunk_steps
from elkopt.schedule.checker import CHECKS
from elkopt.schedule.trace import timeline_trace, write_chrome_trace
from elkopt.sim.mapping import MAPPINGS

if TYPE_CHECKING:
    from elkopt.sim.calibrate import Calibrated
    from elkopt.solve import SolverOptions

log = logging.getLogger(__name__)

#: Exit status for input the program cannot run (bad value, no feasible plan).
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class RunInputs:
    """The typed inputs of one compile, converted and checked."""

    model: str
    workload: Workload
    chip: Chip
    graph: Graph
    source: str | None = None  # the file of model=file
    source_sha256: str | None = None  # its digest, taken when it was read
    sizes: dict[Any, int] | None = None  # the file's placeholders met -> the sizes they stood for
    notes: ImportNotes | None = None  # what reading an einstein dump resolved

    def describe_workload(self) -> str:
        """The workload's label; for a graph read from a file, the file (whose shapes hold)
        and the sizes its placeholders stood for, or the decode step made of it."""
        if self.source is None:
            return self.workload.describe()
        name = Path(self.source).name
        if self.notes is not None and self.notes.decode_from_prefill:
            return (f"{self.workload.describe()} from {name} "
                    f"(a prefill graph, {self.notes.decode_from_prefill} rule)")
        sizes = ", ".join(f"{k} = {v}" for k, v in (self.sizes or {}).items())
        return f"shapes from {name}" + (f" ({sizes})" if sizes else "")


def run_job(cfg: Any, output_dir: str | os.PathLike, multirun: bool = False) -> int:
    """One job of `python -m elkopt.run`: the composed Hydra config checked and converted,
    then `main`. A bad config is one line and error.json (exit status 2). In a sweep an
    unexpected exception becomes the job's error.json instead of stopping the sweep (the
    end-of-sweep collector then reports the job as failed)."""
    try:
        run_config = to_run_config(cfg)
    except ValueError as error:
        return _fail(Path(output_dir), None, error)
    if not multirun:
        return main(run_config, output_dir)
    try:
        return main(run_config, output_dir)
    except Exception as error:  # noqa: BLE001 - every failure becomes a result row
        record_crash(Path(output_dir), run_config, error)
        return 1


def main(run_config: RunConfig, output_dir: str | os.PathLike) -> int:
    """Compile one model, write plan.json, trace.json and metrics.json; return an exit status.

    0 on success, EXIT_BAD_INPUT (2) when the input cannot run: the reason is
    printed as one line on stderr and written to output_dir/error.json.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done = finished_with(out, run_config) if run_config.resume else None
    if done is not None:
        log.info("%s already holds the results of this config; skipping (resume=false recomputes)", out)
        print(format_summary(done))
        return 0
    # Results of an earlier run in this folder would mark this one finished (or failed).
    for stale in ("metrics.json", "error.json", "network.png"):
        (out / stale).unlink(missing_ok=True)
    calibrated = None
    phase = ["reading the inputs"]  # the last progress line, named if the run is cut short

    def say(line: str) -> None:
        phase[0] = line
        log.info(line)

    try:
        if is_chunked_prompt(run_config):  # every chunk step of a prompt, one folder each
            print(format_summary(run_chunk_steps(run_config, out, say, began)))
            return 0
        inputs = build_inputs(run_config)
        say(f"compiling {inputs.model} ({inputs.graph.n_ops} ops, {inputs.describe_workload()}) on "
            f"{inputs.chip.name} with the {run_config.scheduler.name} scheduler")
        conventions = to_conventions(run_config.conventions)
        if runs_published_model(run_config.scheduler.name, conventions):
            published = published_model(inputs)
            split_factor = (run_config.planning.split_factor
                            or PUBLISHED_SPLIT_FACTOR.get(published, DEFAULT_SPLIT_FACTOR))
            layers = run_config.planning.layers or PUBLISHED_LAYERS.get(published)
            result = compile_elk(inputs.graph, inputs.chip, run_config.scheduler.name, conventions, layers=layers,
                                 split_factor=split_factor, options=to_planning_options(run_config.planning),
                                 progress=say)
        elif run_config.simulate and run_config.sim.calibrate_rounds > 0:
            from elkopt.sim.calibrate import calibrate

            calibrated = calibrate(inputs.graph, inputs.chip, run_config.scheduler.name,
                                   to_planning_options(run_config.planning), solver_options(run_config),
                                   rounds=run_config.sim.calibrate_rounds,
                                   exchange_first=run_config.sim.exchange_first, bins=run_config.sim.bins,
                                   mapping=run_config.sim.mapping, progress=say)
            result = calibrated.result
        else:
            result = compile_model(inputs.graph, inputs.chip, run_config.scheduler.name,
                                   to_planning_options(run_config.planning), progress=say,
                                   solver=solver_options(run_config), routing=inputs.workload.routing)
        metrics = build_metrics(run_config, inputs, result)
        extra_events: list[dict] = []
        if run_config.simulate:
            phase[0] = "simulating the plan over the network"
            extra_events = simulate_run(run_config, result, metrics, out, calibrated)
        metrics["run_s"] = time.perf_counter() - began
        write_outputs(out, result, metrics, extra_events)
    except ValueError as error:  # includes PlanningError and the domain objects' checks
        return _fail(out, run_config, error)
    except KeyboardInterrupt:
        return _interrupted(out, run_config, phase[0], time.perf_counter() - began)
    print(format_summary(metrics))
    return 0


def simulate_run(run_config: RunConfig, result: RunResult, metrics: dict[str, Any], out: Path,
                 calibrated: Calibrated | None = None) -> list[dict]:
    """Simulate the schedule on the chip's network (or take the calibration loop's
    simulation of it): fill metrics["simulated_ms"] and metrics["simulation"], draw
    network.png; return the trace events of the simulated run."""
    import time

    from elkopt.sim.network import network_from_chip
    from elkopt.sim.report import draw_network, simulation_metrics, trace_events
    from elkopt.sim.step import simulate_schedule

    chip, cfg = result.chip, run_config.sim
    network = network_from_chip(chip)
    start = time.perf_counter()
    if calibrated is None:
        log.info("simulating the schedule over the %s network (%d links)", network.topology, network.n_links)
        run = simulate_schedule(result.schedule, chip, network, progress=log.info,
                                exchange_first=cfg.exchange_first, bins=cfg.bins,
                                shapes=[OpShape.of(op) for op in result.graph.ops], mapping=cfg.mapping)
    else:
        run = calibrated.run
    section = simulation_metrics(run, result.schedule, network, chip, result.timeline.latency_cycles,
                                 top=cfg.top_links)
    # the calibration loop's simulations are inside its compile_s
    section["simulate_s"] = time.perf_counter() - start if calibrated is None else None
    section["exchange_first"] = cfg.exchange_first
    section["mapping"] = cfg.mapping
    if calibrated is not None:
        ms = 1e3 / chip.clock_hz
        section["calibration"] = {
            "best_round": calibrated.best_round,
            "gain": calibrated.gain,
            "rounds": [{"round": r.round, "analytic_ms": r.analytic_cycles * ms,
                        "simulated_ms": r.simulated_cycles * ms, "mean_load_factor": r.mean_scale,
                        "max_load_factor": r.max_scale} for r in calibrated.rounds],
        }
    metrics["simulated_ms"] = section["simulated_ms"]
    metrics["simulation"] = section
    op_names = [op.name for op in result.graph.ops]
    if cfg.picture:
        draw_network(run, network, chip, out / "network.png",
                     title=f"{metrics['model']} {metrics['workload']} on {chip.name}, {metrics['scheduler']}: "
                           f"simulated {section['simulated_ms']:.3f} ms")
    return trace_events(run, result.schedule, network, chip, op_names)


def finished_with(out: Path, run_config: RunConfig) -> dict[str, Any] | None:
    """The metrics of a finished run of exactly this config in `out`, or None."""
    try:
        done = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if _results_config(done.get("config")) != _results_config(json.loads(json.dumps(to_plain_dict(run_config)))):
        return None
    if run_config.model.name == "file" and done.get("model_file_sha256") != model_file_digest(run_config):
        return None  # the same path, another graph
    return done


#: Settings that change how a run behaves, not its results: a finished run with other
#: values of them still holds this config's results.
NOT_RESULTS = ("resume", "fail_on_job_error")


def _results_config(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    return {key: value for key, value in config.items() if key not in NOT_RESULTS}


def model_file_digest(run_config: RunConfig) -> str | None:
    """SHA-256 of model=file's graph file (None for zoo models or a missing file)."""
    path = run_config.model.path
    if run_config.model.name != "file" or not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Command-line keys naming a folder Hydra creates before the run starts.
OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_places(argv: list[str]) -> None:
    """Create the run or sweep folder named on the command line, or exit with one line
    saying why it cannot be (Hydra would fail later with a traceback). Folders whose name
    Hydra interpolates (``${now:...}``) are left to Hydra."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") not in OUTPUT_KEYS or not value or "${" in value:
            continue
        try:
            Path(value).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"elkopt: error: {key}={value}: cannot create that folder ({error.strerror or error}); "
                  "choose a writable place", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


def record_crash(out: Path, run_config: RunConfig, error: BaseException) -> None:
    """error.json for an unexpected exception (a bug, not bad input), with its traceback."""
    log.error("the job failed: %s: %s\n%s", type(error).__name__, error, traceback.format_exc())
    _write_error(out, run_config, _one_line(error), type(error).__name__, traceback=traceback.format_exc())


#: Exit status of a run cut short by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _interrupted(out: Path, run_config: RunConfig, phase: str, seconds: float) -> int:
    """A run cut short: say where, leave error.json (never a metrics.json); EXIT_INTERRUPTED."""
    message = f"interrupted after {seconds:.0f} s, during: {phase}"
    print(f"elkopt: {message}; no results written", file=sys.stderr)
    _write_error(out, run_config, message, "KeyboardInterrupt")
    return EXIT_INTERRUPTED


def _fail(out: Path, run_config: RunConfig | None, error: ValueError) -> int:
    """Report input the program cannot run: one line on stderr, error.json; EXIT_BAD_INPUT.
    `run_config` is None when the config itself could not be converted."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    message = _one_line(error)
    print(f"elkopt: error: {message}", file=sys.stderr)
    _write_error(out, run_config, message, type(error).__name__,
                 planning_error=isinstance(error, PlanningError))
    return EXIT_BAD_INPUT


def _write_error(out: Path, run_config: RunConfig | None, message: str, error_type: str,
                 planning_error: bool = False, **extra: Any) -> None:
    """error.json, the record of a job that did not finish (read back by `elkopt.collect`)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "error.json", {
        "error": message, "type": error_type, "planning_error": planning_error, **extra,
        "config": None if run_config is None else to_plain_dict(run_config),
    })


def build_inputs(run_config: RunConfig) -> RunInputs:
    """Convert the config to domain objects and build the graph; ValueError on bad input."""
    model = run_config.model.name
    if model != "file" and model not in zoo.ARCHITECTURES:
        raise ValueError(f"model.name {model!r} is not in the model zoo; "
                         f"known: {', '.join(sorted(zoo.ARCHITECTURES))} (or file, with model.path)")
    if model != "file" and run_config.model.placeholders:
        keys = ", ".join(str(k) for k in run_config.model.placeholders)
        raise ValueError(f"model.placeholders ({keys}) size a graph file's symbolic dims (model=file); the zoo "
                         f"model {model} has none: set its sizes with workload.batch, workload.kv_len, "
                         "workload.seq_len")
    workload = to_workload(run_config.workload)
    chip = to_chip(run_config.chip)
    source = digest = sizes = notes = None
    if model == "file":
        prefill = workload.kind is WorkloadKind.PREFILL
        if prefill and (run_config.model.format != "onnx" or workload.chunk is not None or workload.decode_batch):
            raise ValueError("workload=prefill builds a zoo model's prefill step with its KV-cache writes; of a "
                             "graph file (model=file) only an ONNX prompt that returns its K and V (present.* "
                             "outputs) has them, one whole prompt (no workload.chunk or decode_batch): choose a zoo "
                             "model, or workload=forward for the file")
        graph, sizes, notes = read_model_file(run_config.model, workload, to_conventions(run_config.conventions))
        if prefill and not graph.stores:
            raise ValueError(f"workload=prefill: {Path(run_config.model.path).name} writes nothing to HBM (no "
                             "present.* output computed on chip); export the prompt with its KV cache, or use "
                             "workload=forward")
        model, source, digest = graph.name, run_config.model.path, model_file_digest(run_config)
    else:
        graph = zoo.build_graph(model, str(workload.kind), workload.batch, workload.tokens,
                                elem_bytes=workload.elem_bytes, chunk=workload.chunk, kv_len=workload.cached,
                                routing=workload.routing, decode_batch=workload.decode_batch,
                                decode_kv_len=workload.decode_kv_len)
        if to_conventions(run_config.conventions).reload_activations:
            from elkopt.graph.reload import reload_activations
            # the same operators and outputs: the KV-cache writes still hold
            graph = reload_activations(graph)
    if run_config.simulate:  # fail before compiling, not after
        if runs_published_model(run_config.scheduler.name, to_conventions(run_config.conventions)):
            raise ValueError(f"simulate: the network simulator runs elkopt plans; {run_config.scheduler.name} "
                             "in the published model keeps no per-core plan to simulate (set simulate=false, "
                             "or choose scheduler=basic|static|inductive|elkopt without conventions.published_plans)")
        check_sim_config(run_config.sim)
        from elkopt.sim.network import network_from_chip
        network_from_chip(chip)
    return RunInputs(model=model, workload=workload, chip=chip, graph=graph, source=source,
                     source_sha256=digest, sizes=sizes, notes=notes)


#: model.format values `read_model_file` reads.
MODEL_FORMATS = ("einstein", "onnx")
#: ONNX symbolic dims that stand for workload.batch unless model.placeholders says otherwise.
ONNX_BATCH_DIMS = ("batch", "batch_size")
#: ONNX symbolic dims of the cached tokens: workload.kv_len - 1 in a decode workload (the
#: zoo's KV length counts the new token).
ONNX_PAST_DIMS = ("past_sequence_length", "past_sequence", "past_seq_len")
#: ONNX symbolic dims of the cached and new tokens (TorchScript's mask): workload.kv_len in decode.
ONNX_TOTAL_DIMS = ("total_sequence_length", "total_sequence")
#: ONNX symbolic dims of the new tokens: 1 in a decode workload, workload.seq_len otherwise.
ONNX_SEQUENCE_DIMS = ("sequence_length", "sequence", "seq_len")


def read_model_file(model: ModelConfig, workload: Workload, conventions: Conventions | None = None
                    ) -> tuple[Graph, dict[Any, int], ImportNotes | None]:
    """The graph of `model=file`, the file at model.path in model.format, the sizes its
    placeholders stood for and (einstein dumps) the notes of what reading it resolved. Its
    shapes are used as they are, placeholders substituted (a prefill dump read as a decode
    step by model.decode_from_prefill); the workload gives the element size and the
    placeholders' defaults."""
    if model.format not in MODEL_FORMATS:
        raise ValueError(f"model.format must be one of {', '.join(MODEL_FORMATS)}, got {model.format!r}")
    if not model.path:
        raise ValueError("model=file needs model.path=<the graph file>")
    if not Path(model.path).is_file():
        raise ValueError(f"model.path {model.path!r} is not a file (relative paths start at the folder "
                         f"elkopt.run is started from, {os.getcwd()})")
    log.info("reading %s (%s); the workload gives the element size (%d bytes)", model.path,
             model.format, workload.elem_bytes)
    notes = None
    if model.format == "onnx":
        graph, sizes = _read_onnx(model, workload)
    else:
        graph, notes = _read_einstein(model, workload, conventions)
        sizes = dict(notes.sizes)
        log.info("read %s: %s", Path(model.path).name, notes.summary())
    if sizes:
        log.info("placeholders: %s", ", ".join(f"{k} stands for {v}" for k, v in sizes.items()))
    return graph, sizes, notes


#: model.decode_from_prefill values.
DECODE_FROM_PREFILL = ("published", "exact", "off")


def _read_einstein(model: ModelConfig, workload: Workload,
                   conventions: Conventions | None = None) -> tuple[Graph, ImportNotes]:
    from elkopt.graph.dump import SEQUENCE_PLACEHOLDER, PrefillDecode, read_dump

    if model.decode_from_prefill not in DECODE_FROM_PREFILL:
        raise ValueError(f"model.decode_from_prefill must be one of {', '.join(DECODE_FROM_PREFILL)}, "
                         f"got {model.decode_from_prefill!r}")
    decode = None
    explicit = str(SEQUENCE_PLACEHOLDER) in {str(k) for k in model.placeholders}
    if workload.kind is WorkloadKind.DECODE and model.decode_from_prefill != "off" and not explicit:
        decode = PrefillDecode(workload.tokens, model.decode_from_prefill)
    read = read_dump(model.path, workload.elem_bytes, placeholders=model_placeholders(model, workload),
                     decode=decode, conventions=conventions)
    held = list(dict.fromkeys(key.split()[0] for key in read.notes.sizes))
    for key in model.placeholders:
        if str(key) not in held:
            raise ValueError(f"model.placeholders.{key}: {Path(model.path).name} holds no placeholder {key} "
                             f"(it holds {', '.join(held) or 'none'})")
    return read.graph, read.notes


def _read_onnx(model: ModelConfig, workload: Workload) -> tuple[Graph, dict[Any, int]]:
    """An ONNX file: its symbolic dims take model.placeholders (by name; a free dim or an
    expression dim such as ``past_sequence + 1``), where those leave a name undetermined the
    workload's defaults (ONNX_BATCH_DIMS the batch; in a decode step ONNX_SEQUENCE_DIMS 1,
    ONNX_PAST_DIMS the KV length - 1 and ONNX_TOTAL_DIMS the KV length, which counts the new
    token as the zoo's does; ONNX_SEQUENCE_DIMS the sequence otherwise), and
    expression dims are computed (`elkopt.graph.onnx_shapes.resolve_sizes`). Returns the
    graph and every size used, computed ones included."""
    from elkopt.graph.onnx_graph import import_onnx, load_onnx, symbolic_dims
    from elkopt.graph.onnx_shapes import free_dims, resolve_sizes

    proto = load_onnx(model.path)
    dims = list(dict.fromkeys([*symbolic_dims(proto), *free_dims(proto)]))
    for key, value in model.placeholders.items():
        _check_size(key, value)
        if key not in dims:
            raise ValueError(f"model.placeholders.{key}: {Path(model.path).name} has no symbolic dim {key!r} "
                             f"(its graph inputs have {', '.join(map(repr, dims)) or 'none'})")
    decode = workload.kind is WorkloadKind.DECODE
    # a decode step's KV length counts the new token, as the zoo's: past = kv_len - 1, total = kv_len
    past = workload.tokens - 1 if decode and workload.tokens > 1 else None
    defaults = {**{name: workload.batch for name in ONNX_BATCH_DIMS},  # taken in this order
                **{name: 1 if decode else workload.tokens for name in ONNX_SEQUENCE_DIMS},
                **{name: past for name in ONNX_PAST_DIMS if past is not None},
                **{name: workload.tokens for name in ONNX_TOTAL_DIMS if decode}}
    sizes = resolve_sizes(proto, dict(model.placeholders), defaults)
    return import_onnx(proto, Path(model.path).stem, workload.elem_bytes, sizes, routing=workload.routing), sizes


def model_placeholders(model: ModelConfig, workload: Workload) -> dict[int, int]:
    """The sizes an einstein dump's placeholders stand for: 99 the batch, 66 the tokens
    (the KV length of a decode step, the sequence of a forward pass), then model.placeholders."""
    from elkopt.graph.dump import BATCH_PLACEHOLDER, SEQUENCE_PLACEHOLDER

    values = {BATCH_PLACEHOLDER: workload.batch, SEQUENCE_PLACEHOLDER: workload.tokens}
    for key, value in model.placeholders.items():
        if not str(key).isdigit() or int(key) < 2:
            raise ValueError(f"model.placeholders.{key}: an einstein dump's placeholders are sizes "
                             f"(numbers above 1, such as 99), got {key!r}")
        _check_size(key, value)
        values[int(key)] = value
    return values


def _check_size(key: Any, value: Any) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ValueError(f"model.placeholders.{key} must be a positive int, got {value!r}")


#: At most this many time bins per link in the simulation's traffic record (a mesh of
#: 5888 cores has about 24,000 links; 4096 bins of float32 each is 0.4 GB).
MAX_SIM_BINS = 4096


def check_sim_config(cfg: SimConfig) -> None:
    """ValueError naming the sim.* field that cannot work."""
    if not 2 <= cfg.bins <= MAX_SIM_BINS or cfg.bins % 2:
        raise ValueError(f"sim.bins must be an even number from 2 to {MAX_SIM_BINS} (a link's traffic is "
                         f"recorded in that many time bins), got {cfg.bins}")
    if cfg.top_links < 0:
        raise ValueError(f"sim.top_links must be >= 0, got {cfg.top_links}")
    if cfg.mapping not in MAPPINGS:
        raise ValueError(f"sim.mapping must be one of {', '.join(MAPPINGS)}, got {cfg.mapping!r}")
    if cfg.calibrate_rounds < 0:
        raise ValueError(f"sim.calibrate_rounds must be >= 0 (0: no re-planning), got {cfg.calibrate_rounds}")


def solver_options(run_config: RunConfig) -> SolverOptions | None:
    """The solver group as SolverOptions, for the MILP schedulers only (None
    otherwise: Basic and Static never import Pyomo)."""
    if run_config.scheduler.name in ("basic", "static"):
        if run_config.solver.options:  # checked all the same: a typo should not wait for another scheduler
            to_solver_options(run_config.solver)
        return None
    return to_solver_options(run_config.solver)


def percent_of(reference: float | None, latency: float) -> float | None:
    """reference / latency in percent: 100 = as fast as the reference."""
    if reference is None or latency <= 0:
        return None
    return 100.0 * reference / latency


def published_model(inputs: RunInputs) -> str | None:
    """The zoo model whose published numbers this run's graph stands beside: the zoo model
    itself, or for a file the published graph it is, byte for byte, read as the published
    parser reads it (a decode step by the published rule)."""
    if inputs.source is None:
        return inputs.model
    if inputs.notes is not None and inputs.notes.decode_from_prefill == "published":
        return PUBLISHED_GRAPHS.get(inputs.source_sha256 or "")
    return None


def published_ms(model: str | None, workload: Workload, chip: Chip) -> dict[str, float] | None:
    """The published latencies for this exact setup, or None if it is not a published one."""
    reference_setup = (
        workload.kind is WorkloadKind.DECODE and workload.batch == 32 and workload.tokens == 2048
        and workload.elem_bytes == 2 and chip.topology is Topology.ALL_TO_ALL
        and chip.cores == 5888 and chip.hbm_bytes_per_s == 16 * PUBLISHED_TB_PER_S
        and chip.core_link_bytes_per_s == REFERENCE_CORE_LINK_BYTES_PER_S
        and chip.clock_hz == 1.325e9 and chip.compute_scale == 1.0
    )
    return PUBLISHED_MS.get(model) if reference_setup else None


#: Substrings of a tensor name that mark a weight (`kv_cache_bytes`; KV cache: `named_kv_cache`).
WEIGHT_NAMES = ("weight", "bias")


def kv_cache_bytes(graph: Graph) -> int:
    """Bytes of a step's HBM reads that are KV cache (metrics.json `hbm_bytes_kv`; the rest,
    `hbm_bytes_weights`, is weights, biases, norm scales and rotary tables).

    An HBM operand is KV cache when its tensor's name says so (contains "cache" or "past":
    the zoo's `*.k_cache`, `*.v_cache` and `*.kv_cache.*`, an ONNX decoder's past keys and
    values, a dump's `*.cache`); not when it names a weight or bias (MLA's per-head absorbed
    `kv_b.*_weight` are batched over heads like a cache); else when its operator is a
    MatMul whose other input indexes one of its dims that the output indexes too, the batch
    dim of a batched product (an einstein dump's caches, named by node ids). Limitation: an
    unnamed weight batched over heads or experts would count as KV cache.
    """
    total = 0
    for op in graph.ops:
        for i, x in enumerate(op.inputs):
            if x.storage is not Storage.HBM:
                continue
            if named_kv_cache(x.tensor):
                kv = True
            elif any(word in x.tensor.lower() for word in WEIGHT_NAMES) or op.kind is not OpKind.MATMUL or len(op.inputs) != 2:
                kv = False
            else:
                other = op.inputs[1 - i]
                kv = bool(set(x.dims) & set(other.dims) & set(op.output.dims))
            total += op.elements(x) * graph.elem_bytes if kv else 0
    return total


def moe_experts_loaded(inputs: Any) -> float | None:
    """Expected distinct routed experts read per expert layer in a decode step
    (`elkopt.graph.moe.experts_loaded`, by workload.routing); None for a dense model, a
    graph file or another workload."""
    from elkopt.graph.moe import experts_loaded

    if inputs.workload.kind is not WorkloadKind.DECODE or inputs.model not in zoo.ARCHITECTURES:
        return None
    return experts_loaded(zoo.ARCHITECTURES[inputs.model], inputs.workload.routing, inputs.workload.batch)


def build_metrics(run_config: RunConfig, inputs: RunInputs, result: RunResult | ElkRun) -> dict[str, Any]:
    """The metrics.json content; latencies in ms, utilisations as fractions of the latency.
    For a published design (`ElkRun`), basic_ms, static_ms and ideal_ms are the published
    designs' (`reference_designs` says which), and elk_dyn_ms, elk_dyn_printed_ms and
    elk_full_ms (when it ran) are added."""
    timeline = result.timeline
    ms_per_cycle = 1e3 / inputs.chip.clock_hz
    latency_ms = timeline.latency_cycles * ms_per_cycle
    refs = result.references
    elk = isinstance(result, ElkRun)
    kv_bytes = kv_cache_bytes(inputs.graph)
    return {
        "model": inputs.model,
        "workload": inputs.describe_workload(),
        "model_file_sha256": inputs.source_sha256,
        "model_file_sizes": {str(k): v for k, v in (inputs.sizes or {}).items()} or None,
        "model_file_import": inputs.notes.to_dict() if inputs.notes is not None else None,
        "flops": inputs.graph.total_flops,
        "hbm_bytes": inputs.graph.hbm_bytes,  # read, as hbm_bytes_read (the name of earlier runs)
        "hbm_bytes_read": inputs.graph.hbm_bytes,
        "hbm_bytes_written": inputs.graph.hbm_bytes_written,  # a prefill step's KV cache; 0 otherwise
        "hbm_bytes_kv": kv_bytes,  # of hbm_bytes_read: the KV cache (kv_cache_bytes), the rest weights
        "hbm_bytes_weights": inputs.graph.hbm_bytes - kv_bytes,
        "moe_experts_loaded": moe_experts_loaded(inputs),  # expected distinct experts per layer; None: dense
        "chip": inputs.chip.name,
        "scheduler": run_config.scheduler.name,
        "latency_ms": latency_ms,
        # time to first token: a whole prompt's latency (every chunk step's: elkopt.prefill_run)
        "ttft_ms": latency_ms if inputs.workload.kind is WorkloadKind.PREFILL and inputs.workload.cached == 0
        and (inputs.workload.chunk or inputs.workload.tokens) == inputs.workload.tokens else None,
        "latency_cycles": timeline.latency_cycles,
        "ideal_ms": refs.get("ideal"),
        "lower_bound_ms": refs.get("lower_bound"),
        "basic_ms": refs.get("basic"),
        "static_ms": refs.get("static"),
        "pct_of_ideal": percent_of(refs.get("ideal"), latency_ms),
        "pct_of_lower_bound": percent_of(refs.get("lower_bound"), latency_ms),
        "reference_designs": "published" if elk else "elkopt",
        "elk_dyn_ms": refs.get("elk_dyn"),
        "elk_dyn_printed_ms": refs.get("elk_dyn_printed"),
        "elk_full_ms": refs.get("elk_full"),
        "published_ms": published_ms(published_model(inputs), inputs.workload, inputs.chip),
        "simulated_ms": None,  # with simulate: true, filled by simulate_run
        "hbm_util": timeline.hbm_util,
        "noc_util": timeline.noc_util,
        "tflops": timeline.tflops,
        "peak_sram_bytes": timeline.peak_sram_bytes,
        "verified": True,  # compile_model and compile_elk raise unless their checker passes
        # a published design: its model's schedule, and on elkopt's tables its plan on elkopt's checker too
        "verified_checks": [*(ELK_CHECKS if elk else ()), *(CHECKS if not elk or result.plan is not None else ())],
        "n_ops": result.timeline.n_ops,  # as planned: after any operator splitting
        "compile_s": result.compile_s,
        "peak_rss_mb": peak_rss_mb(),
        "breakdown": {f"{part}_ms": cycles * ms_per_cycle
                      for part, cycles in timeline.breakdown().items()},
        **bound_metrics(timeline, scheduled_operators(result)),  # bound, bound_by_part: compute/interconnect/HBM
        "stats": dict(result.stats),
        "solve": {} if elk else dict(result.solve_stats),
        "elkopt_version": elkopt.__version__,
        "versions": versions(),
        "git_revision": git_revision(),
        "config": to_plain_dict(run_config),
    }


def write_outputs(out: Path, result: RunResult | ElkRun, metrics: dict[str, Any],
                  extra_events: list[dict] = ()) -> None:
    """plan.json, trace.json, then metrics.json: each atomic, metrics last."""
    # a published design on the published tables has no elkopt plan; on elkopt's tables it does
    schedule = result.plan if isinstance(result, ElkRun) else result.schedule
    if schedule is None:
        write_text_atomic(out / "plan.json", plan_json_text(result.plan_dict()))
        write_json_atomic(out / "trace.json", timeline_trace(result.timeline, result.op_names, result.chip,
                                                             *result.trace_args(), extra_events), indent=None)
    else:
        op_names = [op.name for op in result.graph.ops]
        write_text_atomic(out / "plan.json", plan_json_text(schedule_to_dict(schedule, op_names)))
        write_chrome_trace(out / "trace.json", result.timeline, schedule, op_names, result.chip, extra_events)
    write_json_atomic(out / "metrics.json", metrics)
    log.info("wrote plan.json, trace.json and metrics.json to %s", out)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("numpy", "pandas", "pyomo", "highspy", "hydra-core"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit of the elkopt source tree this run used (with "+dirty" for uncommitted
    changes), or None outside a git checkout (an installed wheel)."""
    source = Path(elkopt.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")  # written as null
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def format_summary(metrics: dict[str, Any]) -> str:
    """A short table: this run's latency against elkopt's references and the published ones."""
    latency = metrics["latency_ms"]
    ours = "Elk" if metrics.get("reference_designs") == "published" else "elkopt"
    rows: list[tuple[str, float | None]] = [
        (f"this run ({metrics['scheduler']})", latency),
        (f"{ours} Basic", metrics["basic_ms"]),
        (f"{ours} Static", metrics["static_ms"]),
        ("Elk-Dyn", metrics.get("elk_dyn_ms")),
        ("Elk-Dyn, as printed", None if metrics.get("elk_dyn_printed_ms") == metrics.get("elk_dyn_ms")
         else metrics.get("elk_dyn_printed_ms")),
        ("Elk-Full", metrics.get("elk_full_ms")),
        (f"{ours} Ideal", metrics["ideal_ms"]),
        ("lower bound", metrics["lower_bound_ms"]),
    ]
    published = metrics["published_ms"] or {}
    names = {"basic": "Basic", "static": "Static", "elk_dyn": "Elk-Dyn", "elk_full": "Elk-Full", "ideal": "Ideal"}
    rows += [(f"published {label}", published[key]) for key, label in names.items() if key in published]
    if metrics.get("simulated_ms") is not None:
        rows.insert(1, ("simulated (network)", metrics["simulated_ms"]))
    lines = [
        f"{metrics['model']} {metrics['workload']} on {metrics['chip']}: "
        f"{latency:.3f} ms, HBM {metrics['hbm_util']:.0%}, interconnect {metrics['noc_util']:.0%}, "
        f"compiled in {metrics['compile_s']:.1f} s",
    ]
    if metrics.get("flops") is not None:  # absent in the metrics of older runs
        written = metrics.get("hbm_bytes_written") or 0
        kv = metrics.get("hbm_bytes_kv") or 0
        lines.append(f"  {metrics['flops'] / 1e9:.1f} GFLOP, "
                     f"{metrics['hbm_bytes'] / 1e9:.2f} GB read from HBM"
                     + (f" ({kv / 1e9:.2f} GB of it KV cache)" if kv else "")
                     + (f", {written / 1e9:.2f} GB written" if written else ""))
    if metrics.get("model_file_import"):
        lines.append(f"  read {metrics['model']}: {ImportNotes(**metrics['model_file_import']).summary()}")
    moe = metrics.get("stats") or {}
    if moe.get("moe_preload"):  # the routed experts' loads (elkopt.pipeline.choose_moe_preload)
        preloaded = moe["moe_experts_preloaded"]
        how = ("routed experts loaded after their router" if not preloaded else
               f"all {preloaded} experts per layer preloaded, none waits for the router"
               if preloaded >= moe["moe_experts_read"] else
               f"{preloaded} experts per layer preloaded before the router, the misses after it")
        wait = f", waiting {moe['moe_wait_ms']:.3f} ms" if moe.get("moe_wait_ms") is not None and preloaded else ""
        lines.append(f"  mixture of experts: {how} ({moe['moe_experts_read']:.2f} experts read per layer, "
                     f"{moe['moe_hbm_bytes_read'] / 1e9:.2f} GB in all{wait})")
    if metrics.get("chunks"):  # every chunk step of a prompt: one line each, then the total
        lines += chunk_lines(metrics)
    lines.append(f"  {'':<24}{'latency ms':>12}{'run / ref':>12}")
    for label, value in rows:
        if value is None:
            continue
        ratio = f"{latency / value:.3f}x" if value > 0 else "-"
        lines.append(f"  {label:<24}{value:>12.3f}{ratio:>12}")
    lines += format_bound_table(metrics)  # none for runs from before it existed
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__
