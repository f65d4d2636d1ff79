"""Command-line smoke test: `python -m elkopt.run` end to end through the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

METRIC_KEYS = {
    "model", "workload", "chip", "scheduler", "latency_ms", "ideal_ms", "lower_bound_ms",
    "basic_ms", "static_ms", "hbm_util", "noc_util", "tflops", "n_ops", "compile_s",
    "peak_rss_mb", "breakdown", "stats", "elkopt_version", "config",
    "pct_of_ideal", "pct_of_lower_bound", "solve", "versions", "git_revision", "run_s", "simulated_ms",
}


def run_cli(tmp_path: Path, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "ELKOPT_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    # Run from tmp_path: the installed package is used, not a source folder on sys.path.
    return subprocess.run(
        [sys.executable, "-m", "elkopt.run", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path = tmp_path_factory.mktemp("cli")
    return run_cli(tmp_path, "model=tiny", "scheduler=inductive"), tmp_path / "run"


def test_tiny_run_writes_its_outputs(tiny_run):
    result, run_dir = tiny_run
    assert result.returncode == 0, result.stderr
    for name in ("metrics.json", "plan.json", "trace.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*.tmp"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["model"] == "tiny" and metrics["scheduler"] == "inductive"
    assert metrics["latency_ms"] > 0 and metrics["n_ops"] > 0
    assert 0 < metrics["pct_of_lower_bound"] <= 100 + 1e-9
    assert metrics["pct_of_ideal"] == pytest.approx(100 * metrics["ideal_ms"] / metrics["latency_ms"])
    assert metrics["solve"]["windows"] > 0 and metrics["solve"]["solve_s"] >= 0
    assert metrics["config"]["chip"]["name"] == "ipu_pod4"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert len(plan["ops"]) == metrics["n_ops"]
    trace = json.loads((run_dir / "trace.json").read_text())
    assert trace["traceEvents"]
    assert "this run (inductive)" in result.stdout  # the summary table


def test_unknown_chip_fails_naming_it(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "chip=nonexistent")
    assert result.returncode != 0
    first_line = result.stderr.strip().splitlines()[0]
    assert "chip/nonexistent" in first_line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_batch_fails_in_one_line(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "workload.batch=-1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "workload.batch" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert "workload.batch" in json.loads((tmp_path / "run" / "error.json").read_text())["error"]


def test_runs_from_the_repository_root():
    # `python -m` from the checkout imports elkopt from the source tree, which has
    # no elkopt/conf: the config must still be found (the README's quick start).
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "elkopt.run", "--cfg", "job"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "llama2_13b" in result.stdout and "ipu_pod4" in result.stdout


def test_simulate_adds_the_network_run(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "chip=mesh_pod4", "scheduler=static", "simulate=true",
                     "sim.top_links=3", "sim.mapping=dims")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sim = metrics["simulation"]
    assert metrics["simulated_ms"] == sim["simulated_ms"] > 0
    assert sim["simulated_over_analytic"] == pytest.approx(metrics["simulated_ms"] / metrics["latency_ms"])
    assert sim["topology"] == "mesh" and sim["mapping"] == "dims" and len(sim["hottest_links"]) == 3
    utilisation = [row["utilisation"] for row in sim["hottest_links"]]
    assert utilisation == sorted(utilisation, reverse=True) and 0 < utilisation[0] <= 1 + 1e-9
    assert sim["sram_peak_by_core_class"][0]["cores"].startswith("0-")
    assert (run_dir / "network.png").stat().st_size > 0
    trace = json.loads((run_dir / "trace.json").read_text())
    simulated = [e for e in trace["traceEvents"] if e.get("pid") == 2 and e["ph"] == "X"]
    assert {e["tid"] for e in simulated} >= {1, 3}  # executes and loads in simulated time
    assert "simulated (network)" in result.stdout


@pytest.mark.parametrize("override, message", [
    ("sim.bins=7", "sim.bins must be an even number"),
    ("sim.mapping=diagonal", "sim.mapping must be one of serpentine, dims"),
])
def test_bad_sim_field_fails_before_compiling(tmp_path, override, message):
    result = run_cli(tmp_path, "model=tiny", "simulate=true", override)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "cache").exists()  # nothing was planned


def test_calibration_rounds_are_recorded(tmp_path):
    result = run_cli(tmp_path, "model=tiny", "chip=mesh_pod4", "scheduler=static", "simulate=true",
                     "sim.calibrate_rounds=1", "sim.picture=false")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    calibration = metrics["simulation"]["calibration"]
    rounds = calibration["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[0]["mean_load_factor"] == 1.0
    assert metrics["simulated_ms"] == pytest.approx(min(r["simulated_ms"] for r in rounds))
    assert metrics["simulated_ms"] == pytest.approx(rounds[calibration["best_round"]]["simulated_ms"])
    assert not (tmp_path / "run" / "network.png").exists()


def test_a_sweep_with_a_broken_job_is_collected_and_resumes(tmp_path):
    import pandas as pd
    sweep = tmp_path / "sweep"
    args = ["model=tiny", "scheduler=static", "workload.batch=4,-1", f"hydra.sweep.dir={sweep}", "--multirun"]
    first = run_cli(tmp_path, *args)
    assert first.returncode == 1, first.stderr  # a job failed: the sweep says so, after its table
    assert "1 of 2 jobs did not finish" in first.stdout + first.stderr
    table = pd.read_parquet(sweep / "results.parquet")
    assert table["status"].tolist() == ["ok", "error"]
    assert table["config.workload.batch"].tolist() == [4, -1]
    assert "workload.batch must be > 0" in table.loc[1, "error"]
    done = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    again = run_cli(tmp_path, "fail_on_job_error=false", *args)  # resumed: the finished job is skipped
    assert again.returncode == 0, again.stderr
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == done
    assert "skipping" in again.stderr + again.stdout
    assert "tiny decode b4 kv2048 on ipu_pod4" in again.stdout  # the finished job's summary
    assert pd.read_parquet(sweep / "results.parquet")["status"].tolist() == ["ok", "error"]


@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],  # the SLURM launcher's code path
])
def test_sweeps_run_under_the_parallel_launchers(tmp_path, launcher):
    import pandas as pd
    sweep = tmp_path / "sweep"
    result = run_cli(tmp_path, "model=tiny", "scheduler=static", "workload.batch=4,8,-1",
                     f"hydra.sweep.dir={sweep}", *launcher, "--multirun")
    assert result.returncode == 1, result.stderr  # the third job fails
    table = pd.read_parquet(sweep / "results.parquet")
    assert table["status"].tolist() == ["ok", "ok", "error"]
    assert table["config.workload.batch"].tolist() == [4, 8, -1]  # each job ran its own config
    assert table.loc[0, "latency_ms"] != table.loc[1, "latency_ms"]


def test_the_slurm_launcher_preset_composes(tmp_path):
    result = subprocess.run([sys.executable, "-m", "elkopt.run", "hydra/launcher=slurm",
                             "hydra.launcher.partition=batch", "--cfg", "hydra"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "partition: batch" in result.stdout
    assert "timeout_min: 120" in result.stdout


def test_a_figure_experiments_sweep_ends_with_its_figure(tmp_path):
    """The Fig. 24 experiment, shrunk to the tiny model and two jobs from the command line
    (which beats the file's sweep params): the sweep folder gets the table and the figure."""
    import pandas as pd
    sweep = tmp_path / "sweep"
    result = run_cli(tmp_path, "+experiment=fig24_training", "model=tiny", "workload.seq_len=64",
                     "chip.hbm_bytes_per_s=4e11", "chip.compute_scale=1.0,1.5",
                     f"hydra.sweep.dir={sweep}", "--multirun")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(sweep / "results.parquet")
    assert table["status"].tolist() == ["ok", "ok"]
    assert table["config.chip.compute_scale"].tolist() == [1.0, 1.5]
    assert (sweep / "fig24_training.png").stat().st_size > 1000


def test_a_graph_file_plans_like_the_zoo_model_it_was_exported_from(tmp_path):
    from elkopt.graph.dump import write_einstein
    from elkopt.graph.zoo import build_graph
    dump = write_einstein(build_graph("tiny", "decode", 4, 64), tmp_path / "tiny_dump.json")
    zoo = run_cli(tmp_path, "model=tiny", "workload.batch=4", "workload.kv_len=64", "scheduler=static",
                  "hydra.run.dir=zoo")
    assert zoo.returncode == 0, zoo.stderr
    read = run_cli(tmp_path, "model=file", f"model.path={dump}", "scheduler=static", "hydra.run.dir=file")
    assert read.returncode == 0, read.stderr
    ours, theirs = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("zoo", "file"))
    assert theirs["latency_ms"] == ours["latency_ms"] and theirs["n_ops"] == ours["n_ops"]
    assert theirs["model"] == "tiny_dump" and theirs["workload"] == "shapes from tiny_dump.json"
    assert len(theirs["model_file_sha256"]) == 64
    missing = run_cli(tmp_path, "model=file", "hydra.run.dir=missing")
    assert missing.returncode == 2 and "model=file needs model.path" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([[0, ' - einstein_v2("output0[N] = input0[N", input_dict={}) ', "Relu", []]]))
    bad = run_cli(tmp_path, "model=file", f"model.path={broken}", "hydra.run.dir=bad")
    assert bad.returncode == 2 and "node 0 (Relu): expected ']'" in bad.stderr
    # placeholders: 99 is the batch and 66 the KV length of the workload, unless set
    sample = Path(__file__).parent / "dumps" / "decode_attention.json"
    sized = run_cli(tmp_path, "model=file", f"model.path={sample}", "workload.batch=4", "workload.kv_len=64",
                    "+model.placeholders.66=128", "scheduler=static", "hydra.run.dir=sized")
    assert sized.returncode == 0, sized.stderr
    metrics = json.loads((tmp_path / "sized" / "metrics.json").read_text())
    assert metrics["workload"] == "shapes from decode_attention.json (99 = 4, 66 = 128)"
    assert metrics["model_file_sizes"] == {"99": 4, "66": 128}
    named = run_cli(tmp_path, "model=file", f"model.path={sample}", "+model.placeholders.batch=4",
                    "hydra.run.dir=named")
    assert named.returncode == 2 and "model.placeholders.batch: an einstein dump's placeholders are sizes" in named.stderr



def test_a_prefill_dump_plans_as_a_decode_step_and_says_what_it_resolved(tmp_path):
    from elkopt.graph.dump import PrefillDecode, read_dump
    sample = Path(__file__).parent / "dumps" / "prefill_attention.json"
    sizes = ("workload.batch=4", "workload.kv_len=64", "scheduler=static")
    run = run_cli(tmp_path, "model=file", f"model.path={sample}", *sizes, "hydra.run.dir=decode")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "decode" / "metrics.json").read_text())
    assert metrics["workload"] == "decode b4 kv64 from prefill_attention.json (a prefill graph, published rule)"
    assert metrics["model_file_sizes"] == {"99": 4, "66": 1, "66 (KV)": 64}
    read = metrics["model_file_import"]
    assert (read["operators"], read["decode_from_prefill"], read["attention_matmuls"]) == (21, "published", 2)
    graph = read_dump(sample, placeholders={99: 4, 66: 64}, decode=PrefillDecode(64)).graph
    assert (metrics["flops"], metrics["hbm_bytes"]) == (graph.total_flops, graph.hbm_bytes)
    assert "read prefill_attention: 44 nodes -> 21 operators" in run.stdout
    assert metrics["published_ms"] is None  # not one of the published graphs
    forward = run_cli(tmp_path, "model=file", f"model.path={sample}", "workload=forward", "workload.batch=2",
                      "workload.seq_len=8", "scheduler=static", "hydra.run.dir=forward")
    assert forward.returncode == 0, forward.stderr
    metrics = json.loads((tmp_path / "forward" / "metrics.json").read_text())
    assert metrics["model_file_import"]["operators"] == 22 and metrics["model_file_sizes"] == {"99": 2, "66": 8}
    wrong = run_cli(tmp_path, "model=file", f"model.path={sample}", "model.decode_from_prefill=sideways",
                    "hydra.run.dir=wrong")
    assert wrong.returncode == 2
    assert "model.decode_from_prefill must be one of published, exact, off, got 'sideways'" in wrong.stderr


def test_an_onnx_file_plans_with_its_symbolic_dims_from_the_workload_and_placeholders(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [numpy_helper.from_array(np.zeros((64, 128), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "mlp.onnx")
    run = run_cli(tmp_path, "model=file", "model.format=onnx", f"model.path={tmp_path / 'mlp.onnx'}",
                  "workload.batch=4", "+model.placeholders.seq=8", "scheduler=static", "hydra.run.dir=onnx")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    assert metrics["workload"] == "shapes from mlp.onnx (batch = 4, seq = 8)"
    assert metrics["model_file_sizes"] == {"batch": 4, "seq": 8} and metrics["n_ops"] == 2
    assert metrics["latency_ms"] > 0
    unsized = run_cli(tmp_path, "model=file", "model.format=onnx", f"model.path={tmp_path / 'mlp.onnx'}",
                      "hydra.run.dir=unsized")
    assert unsized.returncode == 2
    assert "graph input 'x': symbolic dim 'seq' (axis 1) has no size; set it with +model.placeholders.seq" in unsized.stderr
    wrong = run_cli(tmp_path, "model=file", "model.format=tflite", f"model.path={tmp_path / 'mlp.onnx'}",
                    "hydra.run.dir=wrong")
    assert wrong.returncode == 2 and "model.format must be one of einstein, onnx" in wrong.stderr


def test_an_exported_prompt_with_its_cache_plans_as_a_prefill(tmp_path):
    fixtures = Path(__file__).parent / "fixtures" / "onnx"
    common = ("model=file", "model.format=onnx", "workload=prefill", "workload.seq_len=6", "workload.batch=2",
              "scheduler=static")
    run = run_cli(tmp_path, *common, f"model.path={fixtures / 'ts_llama_prefill_cache.onnx'}", "hydra.run.dir=pf")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "pf" / "metrics.json").read_text())
    # the K and V of 2 layers, 2 requests x 6 tokens x 2 KV heads x 16, written once
    assert metrics["hbm_bytes_written"] == 2 * 2 * 2 * 6 * 32 * 2
    plain = run_cli(tmp_path, *common, f"model.path={fixtures / 'ts_llama_prefill.onnx'}", "hydra.run.dir=plain")
    assert plain.returncode == 2 and "ts_llama_prefill.onnx writes nothing to HBM" in plain.stderr
