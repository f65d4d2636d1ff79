"""Typed schemas for the Hydra configuration, and their conversion to domain objects.

The YAML files in the top-level `conf/` folder (installed as the package
`elkopt.conf`) give the values; the dataclasses here give the types. Hydra
merges the YAML into `RunConfig`, so an unknown key or a value of the wrong
type fails when the config is composed, naming the field.

Schemas are plain mutable dataclasses that mirror, not replace, the frozen
domain objects: `to_chip`, `to_workload` and `to_planning_options` turn them
into the objects library code takes. Library code never sees a Hydra config.
Value checks (a batch > 0, a known topology) live in the domain objects and
in these converters, and raise `ValueError` naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from elkopt.chip import HBM_SIDES, PUBLISHED_GB_PER_S, Chip, Topology
from elkopt.conventions import Conventions

if TYPE_CHECKING:
    from elkopt.pipeline import PlanningOptions
    from elkopt.solve import SolverOptions


def config_path() -> str:
    """Where Hydra reads `conf/` from: the installed package `elkopt.conf`, or
    the checkout's `conf/` folder when elkopt is imported from a source tree
    (`python -m elkopt.run` in the repository root puts the checkout, which
    has no `elkopt/conf`, first on sys.path)."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if importlib.util.find_spec("elkopt.conf") is None and (checkout / "config.yaml").is_file():
        return str(checkout)
    return "pkg://elkopt.conf"


# -- schemas ------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Which architecture of the model zoo to build (`elkopt.graph.zoo.ARCHITECTURES`), or
    `name: file` to read a graph from `path` in `format` (einstein: an einstein-expression
    dump, `elkopt.graph.dump`; onnx: an ONNX model, `elkopt.graph.onnx_graph`).

    `placeholders` maps a file's symbolic sizes to values. In an einstein dump they are
    numbers: 99 stands for workload.batch and 66 for the sequence (decode: KV) length
    unless set here (`+model.placeholders.99=16`; a number mapped to itself is left
    alone). In an ONNX model they are the graph inputs' symbolic dim names
    (`+model.placeholders.seq=128`); the exporters' names have defaults from the workload
    (batch, past, total and new tokens: `elkopt.app._read_onnx`).

    `decode_from_prefill` says how a decode workload reads an einstein dump with no KV
    cache input (a prefill graph, as the published LLM graphs are): `published` (the
    published parser's rule: 1 new token, the attention BatchMatMuls read a KV cache of
    workload.kv_len; the scores' softmax path sized [B, H, 1, 1]), `exact` (the same, with
    the softmax path sized by the KV length, as a real decode step) or `off` (66 is
    workload.kv_len wherever it appears, as does `+model.placeholders.66=<n>`)."""

    name: str = MISSING
    path: Optional[str] = None
    format: str = "einstein"
    placeholders: Dict[str, int] = field(default_factory=dict)
    decode_from_prefill: str = "published"


@dataclass
class WorkloadConfig:
    """What the model runs: one decode step, a training forward pass, or a prefill step.

    kv_len (tokens of KV cache per request) is used by decode, seq_len
    (tokens per sequence) by forward; elem_bytes is the element size in bytes.
    prefill: seq_len is the prompt per request, its K and V written to HBM; with
    chunk, one chunk step of that many tokens after kv_len tokens of the same
    prompt already cached, `elkopt.graph.prefill`, or with kv_len null every chunk
    step of the prompt in one run (`elkopt.prefill_run`); decode_batch decode
    tokens ride along, each after decode_kv_len cached positions (default seq_len).
    """

    kind: str = MISSING
    batch: int = MISSING
    kv_len: Optional[int] = None
    seq_len: Optional[int] = None
    elem_bytes: int = 2
    chunk: Optional[int] = None
    decode_batch: int = 0
    decode_kv_len: Optional[int] = None
    # mixture of experts: how tokens spread over the routed experts, `elkopt.graph.moe`
    # (uniform, zipf:<s>, or loads:<l0>,<l1>,... one load per expert)
    routing: str = "uniform"


@dataclass
class ChipConfig:
    """Mirror of `elkopt.chip.Chip`; every quantity in SI units, unit in the name."""

    name: str = MISSING
    topology: str = "all_to_all"
    n_chips: int = MISSING
    cores_per_chip: int = MISSING
    sram_bytes_per_core: int = MISSING
    reserved_sram_bytes_per_core: int = 0
    clock_hz: float = MISSING
    core_link_bytes_per_s: float = MISSING
    hbm_bytes_per_s: float = MISSING
    inter_chip_exchange_factor: float = 1.25
    compute_scale: float = 1.0
    mesh_rows: int = 0
    mesh_cols: int = 0
    mesh_link_bytes_per_s: float = 0.0
    link_latency_cycles: float = 0.0
    hbm_controllers_per_chip: int = 4
    hbm_sides: List[str] = field(default_factory=lambda: list(HBM_SIDES))
    inter_chip_bytes_per_s: float = 640 * PUBLISHED_GB_PER_S


@dataclass
class SchedulerConfig:
    """Which scheduler runs: elkopt's basic, static, inductive or elkopt
    (`elkopt.pipeline.compile_model`), or a published design: elk_basic, elk_static,
    elk_dyn, elk_full, elk_ideal (`elkopt.elk.compile.compile_elk`). Under
    conventions.published_plans, elkopt is its search in the published model
    (`elkopt.elk.search`, run by `compile_elk`)."""

    name: str = MISSING


@dataclass
class SolverConfig:
    """MILP solver settings (HiGHS), converted by `to_solver_options`; the MILP
    schedulers use them, Basic and Static do not.

    options: any other HiGHS option by its HiGHS name
    (`+solver.options.mip_heuristic_effort=0.2`); each name and value is checked
    by HiGHS (a ValueError names `solver.options.<name>`). The options the
    fields above set (time_limit, mip_rel_gap, threads, random_seed, presolve,
    mip_max_nodes) are refused there."""

    name: str = "highs"
    time_limit_s: float = 60.0
    mip_rel_gap: float = 1e-4
    threads: int = 1
    seed: int = 0
    presolve: str = "choose"
    max_nodes: Optional[int] = None
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanningConfig:
    """Plan-table construction: cache folder (None = no cache) and pruning knobs."""

    cache_dir: Optional[str] = None
    max_spatial_splits: int = 256
    static_step_bytes: int = 10240
    layer_milp: bool = False
    split_fraction: Optional[float] = 0.25
    max_copies: int = 4
    split_policy: str = "if_faster"
    split_margin: float = 0.05
    split_estimate: str = "elk_dyn"
    plan_space: str = "full"
    moe_preload: str = "auto"
    layers: Optional[int] = None
    split_factor: Optional[int] = None


@dataclass
class SimConfig:
    """The network simulation of a run's plan (`simulate: true`), elkopt.sim."""

    exchange_first: bool = True
    bins: int = 256
    top_links: int = 10
    picture: bool = True
    calibrate_rounds: int = 0
    mapping: str = "dims"


@dataclass
class ConventionsConfig:
    """Mirror of `elkopt.conventions.Conventions`: which published accounting rules apply
    (`conventions=elkopt`: none, `conventions=published`: all; one at a time with
    `conventions.<rule>=true`)."""

    name: str = "elkopt"
    reload_activations: bool = False
    slice_input_shape: bool = False
    drop_scalar_operands: bool = False
    published_plans: bool = False
    temporal_sort: bool = False
    inter_chip_always: bool = False
    slice_compute: bool = False
    reduce_ladder: bool = False
    capacity_split: bool = False
    padded_hbm_bytes: bool = False
    published_delivery: bool = False
    noc_thresholds: bool = False


@dataclass
class RunConfig:
    """The primary config: one compile of one model on one chip."""

    model: ModelConfig = MISSING
    workload: WorkloadConfig = MISSING
    chip: ChipConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    solver: SolverConfig = field(default_factory=SolverConfig)
    conventions: ConventionsConfig = field(default_factory=ConventionsConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    simulate: bool = False
    sim: SimConfig = field(default_factory=SimConfig)
    resume: bool = True
    fail_on_job_error: bool = True


def to_run_config(cfg: Any) -> RunConfig:
    """The typed `RunConfig` of a composed config. Hydra's `+key=value` adds keys that no
    schema has (`+workload.bach=4`), which the conversion would drop in silence: they are
    a ValueError naming the key and the closest field."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False), RunConfig)
    if unknown:
        raise ValueError("; ".join(unknown))
    return OmegaConf.to_object(cfg)


def unknown_keys(values: Any, schema: type, prefix: str = "") -> list[str]:
    """Messages for the keys of `values` (nested dicts) that `schema` (a dataclass) lacks;
    dict-valued fields (placeholders, solver options) take any key."""
    if not isinstance(values, dict):
        return []
    hints = typing.get_type_hints(schema)
    problems = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            fields = list(hints)
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            where = prefix.rstrip(".") or "the config"
            problems.append(f"{name} is not a setting ({where} has {', '.join(fields)}){hint}")
        elif dataclasses.is_dataclass(hints[key]):
            problems += unknown_keys(value, hints[key], f"{name}.")
    return problems


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent).

    `conf/config.yaml` lists `config_schema` first in its defaults, so every
    group option is merged into a typed node of `RunConfig`.
    """
    ConfigStore.instance().store(name="config_schema", node=RunConfig)
    if not OmegaConf.has_resolver("elkopt.mul"):
        OmegaConf.register_new_resolver("elkopt.mul", multiply)


def multiply(*factors: Any) -> float:
    """The `${elkopt.mul:a,b,...}` resolver: the product of its arguments, for one chip
    field that scales with another (HBM bandwidth proportional to the number of cores:
    `chip.hbm_bytes_per_s: ${elkopt.mul:${chip.n_chips},${chip.cores_per_chip},2.85e9}`)."""
    product = 1.0
    for factor in factors:
        try:
            product *= float(factor)
        except (TypeError, ValueError):
            raise ValueError(f"elkopt.mul takes numbers, got {factor!r}") from None
    return product


register_configs()


# -- domain objects and conversion ----------------------------------------------
class WorkloadKind(StrEnum):
    DECODE = "decode"  # one new token per request, KV cache read from HBM
    FORWARD = "forward"  # training forward pass over whole sequences
    PREFILL = "prefill"  # a prompt (or one chunk of it) per request, its KV cache written to HBM


@dataclass(frozen=True)
class Workload:
    """A validated workload: kind, batch (requests or sequences), tokens, element bytes.

    tokens is the KV length for decode and the sequence length for forward and prefill.
    Prefill only: chunk (tokens of one chunk step, None: the whole prompt), cached
    (workload.kv_len: tokens of the prompt already cached before the chunk; None with a
    chunk: every chunk step of the prompt, `chunk_steps`), decode_batch (decode tokens
    riding along) and decode_kv_len (their cached positions, None: seq_len).
    """

    kind: WorkloadKind
    batch: int
    tokens: int
    elem_bytes: int = 2
    chunk: int | None = None
    cached: int | None = 0
    decode_batch: int = 0
    decode_kv_len: int | None = None
    routing: str = "uniform"  # workload.routing of a mixture of experts (`elkopt.graph.moe`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", WorkloadKind(self.kind))
        from elkopt.graph.moe import parse_routing

        parse_routing(self.routing)  # ValueError naming workload.routing and its forms
        token_field = "kv_len" if self.kind is WorkloadKind.DECODE else "seq_len"
        for name, value in (("batch", self.batch), (token_field, self.tokens),
                            ("elem_bytes", self.elem_bytes)):
            if not value > 0:
                raise ValueError(f"workload.{name} must be > 0, got {value}")
        if self.cached is None and self.chunk is None:  # no chunk: the whole prompt, nothing cached
            object.__setattr__(self, "cached", 0)
        if self.kind is WorkloadKind.PREFILL:
            from elkopt.graph.prefill import check_prefill

            check_prefill(self.batch, self.tokens, self.chunk, self.cached or 0, self.elem_bytes,
                          decode_batch=self.decode_batch, decode_kv_len=self.decode_kv_len)
        elif self.chunk is not None:
            raise ValueError(f"workload.chunk={self.chunk} cuts a prompt into chunks: it needs "
                             f"workload.kind=prefill (workload=prefill), not {self.kind}")
        elif self.decode_batch or self.decode_kv_len is not None:
            raise ValueError(f"workload.decode_batch and workload.decode_kv_len add decode tokens to a prefill "
                             f"step: they need workload.kind=prefill (workload=prefill), not {self.kind}")

    @property
    def chunk_steps(self) -> tuple[int, ...]:
        """The cached tokens (kv_len) of every step this workload plans: one step, (cached,),
        unless it is every chunk step of a prompt (chunk set, cached None): 0, chunk, 2 chunk,
        ... up to seq_len - chunk."""
        if self.cached is not None:
            return (self.cached,)
        return tuple(range(0, self.tokens, self.chunk))

    def describe(self) -> str:
        """A short label, e.g. "decode b32 kv2048", "prefill b1 seq2048 chunk512 kv1024",
        "prefill b1 seq2048 chunk512 x4" (every chunk step of the prompt)."""
        tokens = "kv" if self.kind is WorkloadKind.DECODE else "seq"
        label = f"{self.kind} b{self.batch} {tokens}{self.tokens}"
        if self.chunk is not None:
            label += f" chunk{self.chunk} kv{self.cached}" if self.cached is not None else \
                f" chunk{self.chunk} x{len(self.chunk_steps)}"
        if self.decode_batch:
            label += f" +decode b{self.decode_batch} kv{self.decode_kv_len or self.tokens}"
        if self.routing != "uniform":
            label += f" routing {self.routing}"
        return label


def to_workload(cfg: WorkloadConfig) -> Workload:
    """Check and convert a workload schema; ValueError names the bad field."""
    kinds = [k.value for k in WorkloadKind]
    if cfg.kind not in kinds:
        raise ValueError(f"workload.kind must be one of {kinds}, got {cfg.kind!r}")
    token_field = "kv_len" if cfg.kind == WorkloadKind.DECODE else "seq_len"
    tokens = getattr(cfg, token_field)
    if tokens is None:
        raise ValueError(f"workload.{token_field} must be set for a {cfg.kind} workload")
    if cfg.kind == WorkloadKind.PREFILL:  # kv_len: the tokens cached before the chunk; None: every chunk step
        return Workload(WorkloadKind(cfg.kind), cfg.batch, tokens, cfg.elem_bytes, chunk=cfg.chunk,
                        cached=cfg.kv_len, routing=cfg.routing, decode_batch=cfg.decode_batch,
                        decode_kv_len=cfg.decode_kv_len)
    return Workload(WorkloadKind(cfg.kind), cfg.batch, tokens, cfg.elem_bytes, chunk=cfg.chunk, routing=cfg.routing,
                    decode_batch=cfg.decode_batch, decode_kv_len=cfg.decode_kv_len)


def to_conventions(cfg: ConventionsConfig) -> Conventions:
    """Convert the conventions group to `elkopt.conventions.Conventions`."""
    return Conventions(**dataclasses.asdict(cfg))


def to_chip(cfg: ChipConfig) -> Chip:
    """Check and convert a chip schema; ValueError names the bad field."""
    topologies = [t.value for t in Topology]
    if cfg.topology not in topologies:
        raise ValueError(f"chip.topology must be one of {topologies}, got {cfg.topology!r}")
    return Chip(**dataclasses.asdict(cfg))


def to_planning_options(cfg: PlanningConfig) -> PlanningOptions:
    """Convert the planning node to `elkopt.pipeline.PlanningOptions`."""
    from elkopt.pipeline import PlanningOptions  # the pipeline is heavy; import on use

    for name in ("max_spatial_splits", "static_step_bytes"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"planning.{name} must be > 0, got {getattr(cfg, name)}")
    return PlanningOptions(
        cache_dir=cfg.cache_dir or None,
        max_spatial_splits=cfg.max_spatial_splits,
        static_step_bytes=cfg.static_step_bytes,
        layer_milp=cfg.layer_milp,
        split_fraction=cfg.split_fraction,
        max_copies=cfg.max_copies,
        split_policy=cfg.split_policy,
        split_margin=cfg.split_margin,
        split_estimate=cfg.split_estimate,
        plan_space=cfg.plan_space,
        moe_preload=str(cfg.moe_preload),
    )


def to_solver_options(cfg: SolverConfig) -> SolverOptions:
    """Convert the solver group to `elkopt.solve.SolverOptions` (checks the values)."""
    from elkopt.solve import SolverOptions  # imports Pyomo: only when a solver is needed

    if cfg.name != "highs":
        raise ValueError(f"solver.name must be 'highs' (the only solver), got {cfg.name!r}")
    return SolverOptions(
        time_limit_s=cfg.time_limit_s,
        mip_rel_gap=cfg.mip_rel_gap,
        threads=cfg.threads,
        seed=cfg.seed,
        presolve=cfg.presolve,
        max_nodes=cfg.max_nodes,
        extra=dict(cfg.options),
    )


def to_plain_dict(run_config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-ready data (for metrics.json)."""
    return dataclasses.asdict(run_config)
