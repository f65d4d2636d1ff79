"""Hydra config: every group option and experiment composes and converts; bad input fails early."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import elkopt.config  # noqa: F401  (registers the schemas)
from elkopt.chip import PUBLISHED_TB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S, Chip, Topology
from elkopt.config import (
    ChipConfig, RunConfig, Workload, WorkloadKind, multiply, to_chip, to_planning_options, to_workload,
)

REPO = Path(__file__).resolve().parents[1]
CONF = resources.files("elkopt.conf")
GROUPS = ("model", "workload", "chip", "scheduler", "solver")


def options(group: str) -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in CONF.joinpath(group).iterdir()
                  if p.name.endswith(".yaml"))


@pytest.fixture(autouse=True)
def hydra_context():
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        yield


def compose_run(*overrides: str) -> RunConfig:
    cfg = compose(config_name="config", overrides=list(overrides))
    run_config = OmegaConf.to_object(cfg)
    assert isinstance(run_config, RunConfig)
    return run_config


def error_text(excinfo: pytest.ExceptionInfo) -> str:
    error = excinfo.value
    return f"{error} {error.__cause__}"


def test_groups_have_the_documented_options():
    assert options("model") == sorted(
        ["llama2_13b", "llama2_70b", "gemma2_27b", "opt_30b", "dit_xl_2", "tiny", "file", "llama3_8b",
         "llama3_70b", "mixtral_8x7b", "deepseek_v2_lite"])
    assert options("workload") == ["decode", "forward", "prefill"]
    assert options("chip") == ["ipu_mk2", "ipu_pod4", "mesh_pod4", "torus_pod4"]
    assert options("scheduler") == ["basic", "elk_basic", "elk_dyn", "elk_full", "elk_ideal", "elk_static",
                                    "elkopt", "inductive", "static"]
    assert options("solver") == ["highs"]


def test_defaults_are_the_reference_setup():
    run = compose_run()
    assert (run.model.name, run.scheduler.name, run.solver.name) == ("llama2_13b", "elkopt", "highs")
    assert to_workload(run.workload) == Workload(WorkloadKind.DECODE, 32, 2048, 2)
    chip = to_chip(run.chip)
    assert chip.cores == 5888 and chip.topology is Topology.ALL_TO_ALL
    assert chip.hbm_bytes_per_s == 16 * PUBLISHED_TB_PER_S == 16777216000000.0
    assert chip.core_link_bytes_per_s == REFERENCE_CORE_LINK_BYTES_PER_S == 5905580032.0
    # The preset spells out the same numbers as the Chip defaults (spec section 1).
    defaults = Chip(name="ipu_pod4", n_chips=4)
    assert chip == defaults
    assert (run.planning.max_spatial_splits, run.planning.static_step_bytes) == (256, 10240)


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_converts(group):
    for option in options(group):
        run = compose_run(f"{group}={option}")
        chip = to_chip(run.chip)
        workload = to_workload(run.workload)
        assert chip.cores > 0 and workload.batch > 0
        if group == "model":
            assert run.model.name == option  # option file name = zoo key
        if group == "chip":
            assert chip.name == option


def test_chip_presets():
    by_name = {name: to_chip(compose_run(f"chip={name}").chip) for name in options("chip")}
    assert by_name["ipu_mk2"].cores == 1472
    assert by_name["ipu_mk2"].hbm_bytes_per_s == 4194304000000.0
    for name, topology in (("mesh_pod4", Topology.MESH), ("torus_pod4", Topology.TORUS)):
        chip = by_name[name]
        assert chip.topology is topology
        assert (chip.mesh_rows, chip.mesh_cols, chip.cores) == (64, 92, 5888)
        # the edge links into the grid carry the whole HBM bandwidth, no more
        assert chip.hbm_delivery_bytes_per_s == pytest.approx(chip.hbm_bytes_per_s, rel=1e-9)
        assert chip.hbm_bytes_per_s == by_name["ipu_pod4"].hbm_bytes_per_s


def test_forward_workload_uses_seq_len():
    workload = to_workload(compose_run("workload=forward").workload)
    assert workload == Workload(WorkloadKind.FORWARD, 2, 2048, 2)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    run = compose_run(f"+experiment={experiment}")
    to_chip(run.chip)
    to_workload(run.workload)
    to_planning_options(run.planning)


def sweep_axes(experiment: str) -> list[list[str]]:
    """An experiment's declared sweep: per param, its overrides (`key=value`, one per value)."""
    cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    return [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists of every job of an experiment's declared sweep (basic sweeper:
    the cartesian product of its params)."""
    axes = sweep_axes(experiment)
    return [[f"+experiment={experiment}", *job] for job in itertools.product(*axes)] if axes else []


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_value_of_every_declared_sweep_composes(experiment):
    axes = sweep_axes(experiment)
    for k, axis in enumerate(axes):  # each value once, the other params at their first value
        for value in axis:
            overrides = [f"+experiment={experiment}", *(a[0] for a in axes[:k]), value,
                         *(a[0] for a in axes[k + 1:])]
            run = compose_run(*overrides)
        to_chip(run.chip)
        to_workload(run.workload)


def test_declared_sweeps_cover_the_published_figures():
    counts = {e: len(sweep_jobs(e)) for e in options("experiment")}
    assert counts == {"batch_sweep": 63, "fig17_latency": 96, "fig17_published": 48, "fig17_equal_terms": 48,
                      "fig18_breakdown": 16, "fig19_hbm_sweep": 14,
                      "fig22_noc_sweep": 16, "fig23_core_sweep": 30, "fig24_training": 8, "llama_mesh": 0,
                      "long_context": 30, "moe_batch": 18, "prefill_chunks": 5}
    fig17 = {tuple(o[1:]) for o in sweep_jobs("fig17_latency")}
    assert ("model=opt_30b", "workload.batch=64", "workload.kv_len=4096", "scheduler=inductive") in fig17


def test_the_published_graph_sweep_reads_its_files_from_elk_models(monkeypatch):
    files = ["llama2-13.json", "gemma2.json", "opt-30.json", "llama2-70.json"]
    monkeypatch.setenv("ELK_MODELS", "/artifact/models/original")
    axes = sweep_axes("fig17_published")
    assert axes[0] == [f"model.path=/artifact/models/original/{f}" for f in files]
    run = compose_run(*sweep_jobs("fig17_published")[-1])
    assert (run.model.name, run.model.path, run.conventions.name) == (
        "file", "/artifact/models/original/llama2-70.json", "published")
    assert (run.workload.batch, run.workload.kv_len, run.scheduler.name) == (64, 4096, "elkopt")
    monkeypatch.delenv("ELK_MODELS")  # unset: each job's one-line error names the variable
    assert all(value.startswith("model.path=ELK_MODELS-is-unset") for value in sweep_axes("fig17_published")[0])


def test_core_sweep_scales_hbm_with_the_cores():
    per_core = 16 * PUBLISHED_TB_PER_S / 5888
    cores = {}
    for overrides in sweep_jobs("fig23_core_sweep"):
        if overrides[1] not in ("+fig23=llama2_70b", "+fig23=dit_xl_2"):
            continue
        run = compose_run(*overrides)
        chip = to_chip(run.chip)
        assert chip.hbm_bytes_per_s == pytest.approx(chip.cores * per_core, rel=1e-12)
        cores.setdefault(run.model.name, []).append(chip.cores)
    assert cores["llama2_70b"] == [2208, 2944, 3680, 4416, 5152, 5888]
    assert cores["dit_xl_2"] == [552, 736, 920, 1104, 1288, 1472]
    reference = compose_run("+experiment=fig23_core_sweep", "+fig23=opt_30b")
    assert to_chip(reference.chip).hbm_bytes_per_s == pytest.approx(16 * PUBLISHED_TB_PER_S)
    assert to_workload(compose_run("+experiment=fig23_core_sweep", "+fig23=dit_xl_2").workload) == Workload(
        WorkloadKind.FORWARD, 32, 256, 2)


def test_noc_sweep_scales_the_gateways_with_the_core_links():
    run = compose_run("+experiment=fig22_noc_sweep", "chip.core_link_bytes_per_s=2e9")
    assert run.chip.inter_chip_bytes_per_s == pytest.approx(2e9 * 640 / 5.5)


def test_the_product_resolver_names_a_bad_factor():
    assert multiply(2, "3", 1.5) == 9.0
    with pytest.raises(ValueError, match="elkopt.mul takes numbers, got 'x'"):
        multiply(2, "x")


def test_llama_mesh_experiment_and_command_line_precedence():
    run = compose_run("+experiment=llama_mesh")
    assert run.model.name == "llama2_13b" and run.chip.name == "mesh_pod4"
    assert to_workload(run.workload) == Workload(WorkloadKind.DECODE, 32, 2048, 2)
    assert compose_run("+experiment=llama_mesh", "workload.batch=16").workload.batch == 16


def test_planning_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ELKOPT_CACHE", str(tmp_path))
    run = compose_run()
    assert run.planning.cache_dir == f"{tmp_path}/plan_tables"
    options_ = to_planning_options(run.planning)
    assert options_.cache_dir == f"{tmp_path}/plan_tables"
    assert to_planning_options(compose_run("planning.cache_dir=null").planning).cache_dir is None


def test_planning_cache_dir_defaults_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("ELKOPT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compose_run().planning.cache_dir == f"{tmp_path}/.cache/elkopt/plan_tables"


def test_typo_fails_at_composition_naming_the_field():
    with pytest.raises(ConfigCompositionException) as excinfo:
        compose(config_name="config", overrides=["chip.hbm_bytes_per_sec=1"])
    assert "hbm_bytes_per_sec" in error_text(excinfo)


def test_wrong_type_fails_at_composition_naming_the_field():
    with pytest.raises(ConfigCompositionException) as excinfo:
        compose(config_name="config", overrides=["workload.batch=abc"])
    assert "workload.batch" in error_text(excinfo)


@pytest.mark.parametrize("override, field", [
    ("workload.batch=-1", "workload.batch"),
    ("workload.kv_len=0", "workload.kv_len"),
    ("workload.kind=prefil", "workload.kind"),
    ("workload.kv_len=null", "workload.kv_len"),
])
def test_bad_workload_values_name_the_field(override, field):
    with pytest.raises(ValueError, match=field):
        to_workload(compose_run(override).workload)


@pytest.mark.parametrize("override, field", [
    ("chip.topology=ring", "chip.topology"),
    ("chip.hbm_bytes_per_s=0", "hbm_bytes_per_s"),
    ("chip.mesh_rows=3", "mesh_rows"),
])
def test_bad_chip_values_name_the_field(override, field):
    chip = "chip=mesh_pod4" if "mesh" in override else "chip=ipu_pod4"
    with pytest.raises(ValueError, match=field):
        to_chip(compose_run(chip, override).chip)


def test_chip_schema_mirrors_the_chip():
    from elkopt.chip import CALIBRATION_FIELDS
    schema = {f.name for f in dataclasses.fields(ChipConfig)}
    domain = {f.name for f in dataclasses.fields(Chip)}
    assert schema == domain - set(CALIBRATION_FIELDS)


def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand (conf/ is remapped); a new subpackage must be added."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "elkopt").rglob("*.py") if "__pycache__" not in p.parts}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"
    assert pyproject["tool"]["setuptools"]["package-dir"]["elkopt.conf"] == "conf"
    # package-data ships conf/*.yaml, conf/<group>/*.yaml, ...: one glob per depth in use
    depths = {glob.count("/") + 1 for glob in pyproject["tool"]["setuptools"]["package-data"]["elkopt.conf"]}
    for path in (REPO / "conf").rglob("*.yaml"):
        depth = len(path.relative_to(REPO / "conf").parts)
        assert depth in depths, f"add a package-data glob for {path.relative_to(REPO)}"


def test_solver_group_converts_and_checks():
    from elkopt.config import to_solver_options

    options = to_solver_options(compose_run().solver)
    assert (options.time_limit_s, options.mip_rel_gap, options.threads, options.seed) == (60.0, 1e-4, 1, 0)
    with pytest.raises(ValueError, match="solver.presolve"):
        to_solver_options(compose_run("solver.presolve=sometimes").solver)


def test_conventions_options_convert_to_their_rules():
    from elkopt.config import to_conventions
    from elkopt.conventions import RULES, Conventions

    assert options("conventions") == ["elkopt", "published", "published_graphs"]
    by_name = {name: to_conventions(compose_run(f"conventions={name}").conventions)
               for name in options("conventions")}
    assert by_name["elkopt"] == Conventions()
    assert by_name["published"] == Conventions.published() and by_name["published"].active == tuple(RULES)
    assert by_name["published_graphs"].active == ("reload_activations", "slice_input_shape",
                                                  "drop_scalar_operands")
    with pytest.raises(ValueError, match="published_plans=true"):
        to_conventions(compose_run("conventions=published", "conventions.published_plans=false").conventions)
