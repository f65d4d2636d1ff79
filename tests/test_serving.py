"""elkopt.analysis.serving: the tables of the long_context, moe_batch and prefill_chunks sweeps,
on small synthetic results tables whose ratios are worked out by hand."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from elkopt.analysis import figures, serving

matplotlib.use("Agg")

RATE = 1e12  # chip HBM bytes per second: 1e9 bytes take 1 ms


def _long_context_results() -> pd.DataFrame:
    return pd.DataFrame({
        "job": ["0", "1", "2"], "status": ["ok", "ok", "error"],
        "config.model.name": ["m"] * 3, "config.workload.kv_len": [1000, 1000, 1000],
        "config.workload.batch": [2, 4, 8], "config.chip.hbm_bytes_per_s": [RATE] * 3,
        "latency_ms": [8.0, 5.5, np.nan], "lower_bound_ms": [6.0, 5.0, np.nan],
        "hbm_bytes_read": [3e9, 5e9, np.nan], "hbm_bytes_written": [1e9, 0.0, np.nan],
        "hbm_bytes_kv": [1e9, 3e9, np.nan],
    })


def test_long_context_table_ratios():
    table = serving.long_context_table(_long_context_results())
    assert list(table["batch"]) == [2, 4]  # the failed job is left out
    assert list(table["tokens_cached"]) == [2000, 4000]
    # (3e9 read + 1e9 written) / 1e12 B/s = 4 ms; 5e9 / 1e12 = 5 ms
    assert table["hbm_ms"].tolist() == pytest.approx([4.0, 5.0])
    assert table["latency_over_hbm"].tolist() == pytest.approx([2.0, 1.1])
    assert table["kv_share"].tolist() == pytest.approx([1 / 3, 0.6])
    assert table["hbm_gb_read"].tolist() == pytest.approx([3.0, 5.0])
    # lower bound 6 ms > HBM 4 ms: the fastest plans; 5 ms = HBM 5 ms: HBM
    assert list(table["bound_by"]) == ["plans", "hbm"]


def test_long_context_table_names_missing_column():
    with pytest.raises(ValueError, match="hbm_bytes_kv"):
        serving.long_context_table(_long_context_results().drop(columns="hbm_bytes_kv"))


def test_hbm_bound_from_is_past_the_last_plans_bound_job():
    table = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 2, "tokens_cached": [1, 2, 4, 8, 1, 2],
                          "bound_by": ["plans", "hbm", "plans", "hbm", "plans", "plans"]})
    found = serving.hbm_bound_from(table)
    assert found["a"] == 8  # 2 is HBM-bound but 4 is not again
    assert np.isnan(found["b"])


def _moe_results(**extra) -> pd.DataFrame:
    return pd.DataFrame({
        "job": ["0", "1", "2"], "status": ["ok", "ok", "ok"],
        "config.model.name": ["x", "x", "y"], "config.workload.batch": [4, 1, 2],
        "latency_ms": [4.0, 2.0, 3.0], "moe_experts_loaded": [1.75, 1.0, 1.5], **extra,
    })


def test_moe_table_per_token_without_optional_columns():
    table = serving.moe_table(_moe_results())
    assert list(zip(table["model"], table["batch"])) == [("x", 1), ("x", 4), ("y", 2)]
    assert table["latency_per_token_ms"].tolist() == pytest.approx([2.0, 1.0, 1.5])
    assert table["experts_loaded"].tolist() == pytest.approx([1.0, 1.75, 1.5])
    assert "wait_ms" not in table and "experts_preloaded" not in table


def test_moe_table_preload_gain():
    table = serving.moe_table(_moe_results(**{"stats.moe_wait_ms": [5.0, 2.0, 3.3],
                                              "stats.moe_experts_preloaded": [2, 0, 1]}))
    # waiting 5 ms against the chosen 4 ms: 25 % slower; equal when nothing was preloaded
    assert table["preload_gain"].tolist() == pytest.approx([0.0, 0.25, 0.1])
    assert table["experts_preloaded"].tolist() == [0, 2, 1]


def _prefill_results() -> pd.DataFrame:
    steps = [{"step": 0, "kv_len": 0, "latency_ms": 30.0, "hbm_bytes_read": 1e9, "hbm_bytes_written": 5e8,
              "hbm_bytes_kv": 0},
             {"step": 1, "kv_len": 1024, "latency_ms": 50.0, "hbm_bytes_read": 1.5e9, "hbm_bytes_written": 5e8,
              "hbm_bytes_kv": 5e8}]
    return pd.DataFrame({
        "job": ["0", "1", "2"], "status": ["ok", "ok", "ok"], "config.model.name": ["m"] * 3,
        "config.workload.seq_len": [2048] * 3, "config.workload.chunk": [1024, 2048, None],
        "config.chip.hbm_bytes_per_s": [RATE] * 3,
        "ttft_ms": [80.0, 100.0, 96.0], "lower_bound_ms": [70.0, 90.0, 90.0],
        "hbm_bytes_read": [2.5e9, 1e9, 1e9], "hbm_bytes_written": [1e9, 1e9, 1e9],
        "chunks": [json.dumps(steps), None, None],
    })


def test_prefill_table_ttft_and_traffic():
    # two models so the unchunked job (chunk None: the whole prompt) does not share a group
    results = _prefill_results()
    results.loc[2, "config.model.name"] = "n"
    table = serving.prefill_table(results)
    assert list(zip(table["model"], table["chunk"], table["steps"])) == [("m", 1024, 2), ("m", 2048, 1),
                                                                        ("n", 2048, 1)]
    # (2.5e9 read + 1e9 written) / 1e12 B/s = 3.5 ms
    assert table["hbm_ms"].tolist() == pytest.approx([3.5, 2.0, 2.0])
    assert table["longest_step_ms"].iloc[0] == 50.0 and np.isnan(table["longest_step_ms"].iloc[1])
    # the whole prompt (chunk 2048) takes 100 ms, chunks of 1024 take 80 ms
    assert table["speedup_vs_whole"].tolist() == pytest.approx([1.25, 1.0, 1.0])


def test_chunk_steps_one_row_per_step():
    steps = serving.chunk_steps(_prefill_results())
    assert list(steps["kv_len"]) == [0, 1024]
    assert steps["latency_ms"].sum() == 80.0
    assert steps["hbm_gb_read"].tolist() == pytest.approx([1.0, 1.5])
    assert steps["hbm_gb_kv"].tolist() == pytest.approx([0.0, 0.5])


def test_chunks_that_are_not_steps_raise():
    results = _prefill_results()
    results.loc[0, "chunks"] = json.dumps([1, 2])
    with pytest.raises(ValueError, match="chunks"):
        serving.prefill_table(results)


@pytest.mark.parametrize("experiment, results", [("long_context", _long_context_results()),
                                                 ("moe_batch", _moe_results(**{"stats.moe_wait_ms": [5.0, 2.0, 3.3]})),
                                                 ("prefill_chunks", _prefill_results())])
def test_figures_draw(experiment, results, tmp_path):
    written = figures.draw(experiment, results, tmp_path)
    assert [p.name for p in written] == [f"{experiment}.png"] and written[0].stat().st_size > 0


def test_figures_skip_a_sweep_with_no_finished_job(tmp_path):
    results = _moe_results()
    results["status"] = "error"
    assert figures.draw("moe_batch", results, tmp_path) == []


def test_load_or_none_skips_a_missing_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ELKOPT_RESULTS", str(tmp_path))
    assert serving.load_or_none("moe_batch") is None
    assert "moe_batch: no results table yet" in capsys.readouterr().out
    _moe_results().to_parquet(tmp_path / "moe_batch.parquet")
    found = serving.load_or_none("moe_batch")
    assert found.kind == "env" and len(found.table) == 3
