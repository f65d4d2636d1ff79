"""The sweep collector: one row per job folder, whatever state the job is in."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from elkopt.collect import RESULTS, collect, collect_and_draw, experiment_of, flatten, main


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_every_job_becomes_a_row_with_its_status(tmp_path):
    config = {"model": {"name": "tiny"}, "workload": {"batch": 4}}
    write(tmp_path / "0" / "metrics.json", {"latency_ms": 1.5, "breakdown": {"idle_ms": 0.1},
                                            "published_ms": None, "config": config})
    write(tmp_path / "10" / "error.json", {"error": "workload.batch must be > 0, got -1", "type": "ValueError",
                                           "config": {**config, "workload": {"batch": -1}}})
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # a job still running: only Hydra's config
    (tmp_path / "2" / ".hydra" / "config.yaml").write_text("model:\n  name: tiny\nworkload:\n  batch: 8\n")
    (tmp_path / "notes").mkdir()  # not a job
    table = collect(tmp_path)
    assert table["job"].tolist() == ["0", "2", "10"]
    assert table["status"].tolist() == ["ok", "incomplete", "error"]
    assert table["config.workload.batch"].tolist() == [4, 8, -1]
    assert table.loc[0, "breakdown.idle_ms"] == 0.1 and pd.isna(table.loc[1, "latency_ms"])
    assert table.loc[2, "error"].startswith("workload.batch must be > 0")
    assert pd.read_parquet(tmp_path / RESULTS).equals(table)
    assert not list(tmp_path.glob(".*.tmp"))


def test_flatten_and_the_command_line(tmp_path, capsys):
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    write(tmp_path / "0" / "metrics.json", {"latency_ms": 2.0, "config": {}})
    assert main([str(tmp_path)]) == 0
    assert "1 jobs (1 ok)" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="does not exist"):
        collect(tmp_path / "missing")


def test_a_crashed_job_becomes_an_error_row_with_its_traceback(tmp_path):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from elkopt.app import record_crash
    with initialize_config_module(config_module="elkopt.conf", version_base="1.3"):
        run_config = OmegaConf.to_object(compose(config_name="config", overrides=["model=tiny"]))
    try:
        raise RuntimeError("a bug")
    except RuntimeError as error:
        record_crash(tmp_path / "0", run_config, error)
    saved = json.loads((tmp_path / "0" / "error.json").read_text())
    assert saved["type"] == "RuntimeError" and "raise RuntimeError" in saved["traceback"]
    row = collect(tmp_path).iloc[0]
    assert row["status"] == "error" and row["error"] == "a bug" and row["config.model.name"] == "tiny"


def test_a_figure_experiments_sweep_gets_its_figures(tmp_path, capsys):
    (tmp_path / "multirun.yaml").write_text("hydra:\n  runtime:\n    choices:\n      experiment: fig24_training\n")
    assert experiment_of(tmp_path) == "fig24_training" and experiment_of(tmp_path / "0") is None
    for job, (hbm, scale, ms) in enumerate([(300, 1.0, 250.0), (300, 1.5, 200.0), (400, 1.0, 249.0)]):
        config = {"chip": {"hbm_bytes_per_s": hbm * 1.048576e9, "compute_scale": scale}}
        write(tmp_path / str(job) / "metrics.json",
              {"latency_ms": ms, "hbm_util": 0.2, "tflops": 400.0, "config": config})
    write(tmp_path / "3" / "error.json", {"error": "bad", "config": {}})
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 jobs (1 error, 3 ok)" in out and f"figure -> {tmp_path / 'fig24_training.png'}" in out
    assert (tmp_path / "fig24_training.png").stat().st_size > 1000
    # a sweep whose every job failed keeps its table, without figures
    for job in ("0", "1", "2"):
        (tmp_path / job / "metrics.json").unlink()
        write(tmp_path / job / "error.json", {"error": "bad", "config": {}})
    (tmp_path / "fig24_training.png").unlink()
    table, figures = collect_and_draw(tmp_path)
    assert figures == [] and table["status"].tolist() == ["error"] * 4
    assert not (tmp_path / "fig24_training.png").exists()
