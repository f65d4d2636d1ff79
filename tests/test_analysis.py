"""elkopt.analysis: the logic behind the figure notebooks (the notebooks themselves run
under nbmake against tests/fixtures; see notebooks/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from elkopt.analysis import bandwidth, figures, latency, published, results, scaling
from elkopt.chip import PUBLISHED_TB_PER_S, REFERENCE_CORE_LINK_BYTES_PER_S

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


def test_load_takes_the_env_folder_then_the_sweep_then_the_report_data(tmp_path, monkeypatch):
    monkeypatch.delenv(results.ENV, raising=False)
    (tmp_path / "notebooks" / "data").mkdir(parents=True)
    (tmp_path / "sweeps" / "s").mkdir(parents=True)
    pd.DataFrame({"status": ["ok"], "v": ["data"]}).to_parquet(tmp_path / "notebooks" / "data" / "s.parquet")
    assert results.load("s", root=tmp_path).kind == "data"
    pd.DataFrame({"status": ["ok", "error"], "v": ["sweep", None]}).to_parquet(
        tmp_path / "sweeps" / "s" / "results.parquet")
    loaded = results.load("s", root=tmp_path)
    assert (loaded.kind, loaded.table["v"][0]) == ("sweep", "sweep")
    assert "1 of 2 jobs ok" in repr(loaded)
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv(results.ENV, str(env))
    with pytest.raises(FileNotFoundError, match=r"\+experiment=s"):  # no fallback under $ELKOPT_RESULTS
        results.load("s", root=tmp_path)
    pd.DataFrame({"status": ["ok"], "v": ["env"]}).to_parquet(env / "s.parquet")
    assert results.load("s", root=tmp_path).table["v"][0] == "env"


def test_checkout_is_found_from_the_notebooks_folder():
    assert results.checkout(ROOT / "notebooks") == ROOT
    assert results.checkout(ROOT) == ROOT


def test_figures_are_saved_only_from_measured_tables(tmp_path):
    import matplotlib.pyplot as plt
    fig = plt.figure()
    table = pd.DataFrame({"status": ["ok"]})
    assert results.save_figure(fig, "f", results.Results(table, tmp_path / "x", "env"), root=tmp_path) is None
    path = results.save_figure(fig, "f", results.Results(table, tmp_path / "x", "sweep"), root=tmp_path)
    assert path == tmp_path / "notebooks" / "figures" / "f.png" and path.stat().st_size > 0
    plt.close("all")


def test_finished_names_missing_columns_and_an_all_failed_sweep():
    with pytest.raises(ValueError, match=r"lacks columns \['latency_ms'\]"):
        results.finished(pd.DataFrame({"status": ["ok"]}), need=("latency_ms",))
    with pytest.raises(ValueError, match=r"no finished job .*'error': 2"):
        results.finished(pd.DataFrame({"status": ["error", "error"], "latency_ms": [None, None]}))


def _fig17_rows() -> pd.DataFrame:
    """Two configurations x four schedulers; one job failed."""
    rows = []
    for batch, ideal in ((16, 5.0), (32, 6.0)):
        for scheduler, ms in zip(latency.SCHEDULERS, (10.0, 8.0, 7.0, 6.25)):
            rows.append({"status": "ok", "config.model.name": "llama2_13b", "config.workload.batch": batch,
                         "config.workload.kv_len": 2048, "config.scheduler.name": scheduler,
                         "latency_ms": ms * ideal / 5.0, "ideal_ms": ideal, "lower_bound_ms": ideal - 0.1,
                         "model": "llama2_13b"})  # metrics.json's own "model" field as well
    rows.append({**rows[-1], "status": "error", "config.workload.kv_len": 4096, "latency_ms": None})
    return pd.DataFrame(rows)


def test_latency_table_pivots_schedulers_and_puts_the_published_values_beside():
    table = latency.latency_table(_fig17_rows())
    assert table[["batch", "kv"]].values.tolist() == [[16, 2048], [32, 2048]]  # the failed job is left out
    assert table.loc[1, ["basic", "static", "inductive", "elkopt", "ideal"]].tolist() == [12.0, 9.6, 8.4, 7.5, 6.0]
    assert table.loc[1, "published_elk_full"] == 6.72 and pd.isna(table.loc[0, "published_elk_full"])
    summary = latency.summary(table).set_index("scheduler")
    assert summary.loc["elkopt", "pct_of_ideal"] == pytest.approx(80.0)
    assert summary.loc["elkopt", "speedup_vs_basic"] == pytest.approx(1.6)
    assert summary.loc["static", "speedup_vs_static"] == pytest.approx(1.0)
    assert summary.loc["published elk_full", "pct_of_ideal"] == 94.84
    published = latency.against_published(table).set_index("scheduler")
    assert published.loc["elkopt", "published_as"] == "elk_full"
    assert published.loc["elkopt", "ratio"] == pytest.approx(7.5 / 6.72)
    assert published.loc["ideal", "ratio"] == pytest.approx(6.0 / 6.70)
    other_chip = _fig17_rows().assign(**{"published_ms.ideal": None})  # jobs off the published setup
    assert latency.latency_table(other_chip)["published_elk_full"].isna().all()
    reference = _fig17_rows().assign(**{"published_ms.ideal": 6.70})
    assert latency.latency_table(reference).loc[1, "published_elk_full"] == 6.72


LLAMA2_13_SHA = "cc5d648c0998320b18932e675da218c9476ada58ad005b91ada81e242fef0a38"  # published llama2-13.json


def _fig17_published_rows() -> pd.DataFrame:
    """Two configurations of the published llama2-13 file (an elk_full and an elkopt job
    each), one of another file, and a failed job."""
    designs = {16: (12.0, 9.0, 8.0, 8.0, 6.4, 6.0, 5.9), 32: (12.5, 9.2, 8.3, 8.4, 6.8, 6.7, 6.6)}
    elkopt = {16: (6.0, 5.0, 4.9), 32: (7.2, 6.4, 6.3)}
    rows = []
    for batch in (16, 32):
        basic, static, dyn, printed, full, ideal, bound = designs[batch]
        base = {"status": "ok", "model": "llama2-13", "model_file_sha256": LLAMA2_13_SHA,
                "config.workload.batch": batch, "config.workload.kv_len": 2048,
                "published_ms.ideal": 6.70 if batch == 32 else None}
        rows.append({**base, "config.scheduler.name": "elk_full", "reference_designs": "published",
                     "latency_ms": full, "basic_ms": basic, "static_ms": static, "elk_dyn_ms": dyn,
                     "elk_dyn_printed_ms": printed, "elk_full_ms": full, "ideal_ms": ideal,
                     "lower_bound_ms": bound})
        latency_ms, own_ideal, own_bound = elkopt[batch]
        rows.append({**base, "config.scheduler.name": "elkopt", "reference_designs": "elkopt",
                     "latency_ms": latency_ms, "basic_ms": 20.0, "static_ms": 10.0, "ideal_ms": own_ideal,
                     "lower_bound_ms": own_bound})
    rows.append({**rows[0], "model": "mine", "model_file_sha256": "0" * 64})  # not a published file
    rows.append({**rows[1], "status": "error", "config.workload.kv_len": 4096, "latency_ms": None})
    return pd.DataFrame(rows)


def test_designs_table_puts_every_published_design_beside_elkopt():
    table = published.designs_table(_fig17_published_rows())
    assert table[["model", "batch", "kv"]].values.tolist() == [
        ["llama2_13b", 16, 2048], ["llama2_13b", 32, 2048], ["mine", 16, 2048]]  # by SHA-256; failed job left out
    row = table.iloc[1]
    designs = ["basic", "static", "elk_dyn", "elk_dyn_printed", "elk_full", "ideal", "lower_bound"]
    assert row[designs].tolist() == [12.5, 9.2, 8.3, 8.4, 6.8, 6.7, 6.6]  # the elk_full job's, not elkopt's
    assert row[["elkopt", "elkopt_ideal", "elkopt_lower_bound"]].tolist() == [7.2, 6.4, 6.3]
    assert row["published_elk_full"] == 6.72 and row["published_elk_dyn"] == 8.27
    assert table["published_ideal"].isna().tolist() == [True, False, True]  # only batch 32, KV 2048
    assert pd.isna(table.loc[2, "elkopt"])  # the other file has no elkopt job
    off_setup = _fig17_published_rows().assign(**{"published_ms.ideal": None})  # e.g. another chip
    assert published.designs_table(off_setup)["published_ideal"].isna().all()
    with pytest.raises(ValueError, match="ran the published designs"):
        published.designs_table(_fig17_published_rows().query("`config.scheduler.name` == 'elkopt'"))
    with pytest.raises(ValueError, match=r"lacks columns \['model_file_sha256'\]"):
        published.designs_table(_fig17_published_rows().drop(columns="model_file_sha256"))


def test_designs_table_with_elkopt_in_the_published_model():
    # under conventions=published an elkopt job carries the published designs' latencies
    # too (reference_designs: published): its own latency is elkopt's, its Ideal the published one
    rows = _fig17_published_rows()
    ours = rows["config.scheduler.name"] == "elkopt"
    rows.loc[ours, "reference_designs"] = "published"
    for field in ("basic_ms", "static_ms", "elk_dyn_ms", "elk_dyn_printed_ms", "elk_full_ms", "ideal_ms",
                  "lower_bound_ms"):
        rows.loc[ours, field] = rows.loc[rows.index[ours] - 1, field].to_numpy()
    table = published.designs_table(rows)
    assert "elkopt_ideal" not in table.columns
    assert table.loc[1, ["elkopt", "elk_full", "ideal"]].tolist() == [7.2, 6.8, 6.7]
    summary = published.summary(table).set_index("design")
    assert summary.loc["elkopt", "pct_of_own_ideal"] == summary.loc["elkopt", "pct_of_ideal"]


def test_published_summary_and_the_published_values():
    table = published.designs_table(_fig17_published_rows())
    summary = published.summary(table).set_index("design")
    assert summary.loc["elkopt", "configurations"] == 2  # "mine" lacks elkopt
    assert summary.loc["elkopt", "pct_of_ideal"] == pytest.approx((6.0 / 6.0 + 6.7 / 7.2) / 2 * 100)
    assert summary.loc["elkopt", "pct_of_own_ideal"] == pytest.approx((5.0 / 6.0 + 6.4 / 7.2) / 2 * 100)
    assert summary.loc["elk_full", "pct_of_own_ideal"] == summary.loc["elk_full", "pct_of_ideal"]
    assert summary.loc["elkopt", "gain_vs_elk_full"] == pytest.approx((6.4 / 6.0 + 6.8 / 7.2) / 2)
    assert summary.loc["elkopt", ["min_gain_vs_elk_full", "max_gain_vs_elk_full"]].tolist() == pytest.approx(
        [6.8 / 7.2, 6.4 / 6.0])
    assert summary.loc["elkopt", "faster_than_elk_full"] == 1
    assert summary.loc["elk_full", "speedup_vs_basic"] == pytest.approx((12.0 / 6.4 + 12.5 / 6.8) / 2)
    assert summary.loc["published elk_full", "pct_of_ideal"] == 94.84
    versus = published.against_published(table).set_index("design")
    assert versus.loc["elkopt", "published_as"] == "elk_full"
    assert versus.loc["elkopt", "ratio"] == pytest.approx(7.2 / 6.72)
    assert versus.loc["elk_dyn_printed", ["published_as", "published_ms"]].tolist() == ["elk_dyn", 8.27]
    assert len(versus) == 7  # batch 32, KV 2048 only: five designs, Elk-Dyn as printed, Ideal


def test_fig17_published_pictures():
    import matplotlib.pyplot as plt
    table = published.designs_table(_fig17_published_rows())
    ax = published.plot_designs(table, "llama2_13b")
    assert len(ax.patches) == 2 * 5  # two configurations x (Basic, Static, Elk-Dyn, Elk-Full, elkopt)
    diamonds = [line.get_ydata() for line in ax.lines]  # published values: Basic, Static, Elk-Dyn, Elk-Full
    assert len(diamonds) == 4 and pd.isna(diamonds[0][0]) and diamonds[0][1] == 12.5 and diamonds[3][1] == 6.72
    with pytest.raises(ValueError, match="no rows for model 'x'"):
        published.plot_designs(table, "x")
    ax = published.plot_against_published(table)
    assert len(ax.patches) == 6 + 5  # four designs, Ideal and elkopt; published beside all but elkopt
    drawn = figures.fig17_published(_fig17_published_rows())
    assert sorted(drawn) == ["fig17_published", "fig17_published_reference"]
    no_reference = _fig17_published_rows().assign(**{"published_ms.ideal": None})
    assert sorted(figures.fig17_published(no_reference)) == ["fig17_published"]
    plt.close("all")


def test_breakdown_table_and_its_pictures():
    import matplotlib.pyplot as plt
    rows = _fig17_rows()
    for part in latency.BREAKDOWN:
        rows[f"breakdown.{part}"] = 1.0
    rows = rows.assign(hbm_util=0.5, noc_util=0.8, tflops=100.0, simulated_ms=7.0)
    rows["simulation.mean_core_link_utilisation"] = 0.4
    table = latency.breakdown_table(rows)
    assert len(table) == 8 and table["scheduler"].tolist()[:4] == list(latency.SCHEDULERS)
    assert table["sim_core_link_util"].tolist() == [0.4] * 8 and "sim_hbm_port_util" not in table
    ax = latency.plot_breakdown(table)
    assert len(ax.patches) == 8 * len(latency.BREAKDOWN)
    latency.plot_utilisation(table)
    with pytest.raises(ValueError, match=r"lacks columns \['tflops'\]"):
        latency.breakdown_table(rows.drop(columns="tflops"))
    plt.close("all")


def test_hbm_gains_and_a_clear_error_for_a_wrong_table():
    table = pd.DataFrame({
        "model": ["m"] * 4, "topology": ["mesh", "mesh", "all_to_all", "all_to_all"],
        "hbm_tb_s": [4, 8, 4, 8], "analytic_ms": [10, 8, 10, 6], "simulated_ms": [10.0, 8.0, 10.0, 5.0],
    })
    out = bandwidth.gains(table).set_index(["topology", "hbm_tb_s"])
    assert out.loc[("mesh", 8), "speedup_vs_lowest"] == pytest.approx(1.25)
    assert out.loc[("all_to_all", 8), "step_gain"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"lacks columns \['simulated_ms'\]"):
        bandwidth.gains(table.drop(columns="simulated_ms"))
    with pytest.raises(ValueError, match="no rows for model 'x'"):
        bandwidth.plot_latency_vs_hbm(table, "x")


def test_a_sweeps_results_become_an_hbm_table():
    rows = pd.DataFrame({
        "job": ["0", "1", "2"], "status": ["ok", "ok", "error"],
        "config.model.name": ["llama2_13b"] * 3, "config.chip.name": ["mesh_pod4", "ipu_pod4", "ipu_pod4"],
        "config.chip.topology": ["mesh", "all_to_all", "all_to_all"],
        "config.chip.hbm_bytes_per_s": [8 * PUBLISHED_TB_PER_S, 4 * PUBLISHED_TB_PER_S, 16 * PUBLISHED_TB_PER_S],
        "latency_ms": [10.8, 18.9, None], "simulated_ms": [11.4, 18.95, None],
        "simulation.mean_core_link_utilisation": [0.18, 0.23, None],
        "simulation.hbm_port_utilisation": [0.83, 1.0, None],
    })
    table = bandwidth.hbm_table(rows)
    assert table[["topology", "hbm_tb_s", "simulated_ms"]].values.tolist() == [
        ["all_to_all", 4.0, 18.95], ["mesh", 8.0, 11.4]]  # the failed job is left out
    assert table["hbm_port_util"].tolist() == [1.0, 0.83]
    with pytest.raises(ValueError, match="not a sweep of simulated runs"):
        bandwidth.hbm_table(rows.drop(columns="simulated_ms"))


def test_noc_table_compares_each_link_scale_with_x1_at_the_same_hbm():
    import matplotlib.pyplot as plt
    grid = [(hbm, scale) for hbm in (8, 14) for scale in (0.75, 1.0, 1.5)]
    simulated = {(8, 0.75): 18.0, (8, 1.0): 16.0, (8, 1.5): 15.0, (14, 0.75): 16.0, (14, 1.0): 12.0, (14, 1.5): 10.0}
    rows = pd.DataFrame({
        "status": "ok", "config.model.name": "llama2_70b",
        "config.chip.hbm_bytes_per_s": [h * PUBLISHED_TB_PER_S for h, _ in grid],
        "config.chip.core_link_bytes_per_s": [s * REFERENCE_CORE_LINK_BYTES_PER_S for _, s in grid],
        "latency_ms": [simulated[g] - 1 for g in grid], "simulated_ms": [simulated[g] for g in grid],
    })
    table = bandwidth.noc_table(rows).set_index(["hbm_tb_s", "link_scale"])
    assert table.loc[(14, 1.5), "speedup_vs_x1"] == pytest.approx(1.2)
    assert table.loc[(8, 0.75), "speedup_vs_x1"] == pytest.approx(16 / 18)
    ax = bandwidth.plot_noc(table.reset_index(), "llama2_70b")
    assert len(ax.lines) == 6  # simulated and analytic per scale
    plt.close("all")


def test_core_table_speedups_and_scaling_efficiency():
    rows = pd.DataFrame({
        "status": "ok", "config.model.name": ["m", "m", "m", "d"],
        "config.chip.n_chips": [4, 4, 4, 1], "config.chip.cores_per_chip": [552, 1104, 1472, 552],
        "config.chip.hbm_bytes_per_s": [552 * 4 * 2.85e9, 1104 * 4 * 2.85e9, 1472 * 4 * 2.85e9, 552 * 2.85e9],
        "latency_ms": [20.0, 12.5, 10.0, 3.0], "ideal_ms": [18.0, 12.0, 9.0, 2.0],
    })
    table = scaling.core_table(rows).set_index(["model", "cores"])
    assert table.loc[("m", 4416), "speedup_vs_fewest"] == pytest.approx(1.6)
    assert table.loc[("m", 4416), "scaling_efficiency"] == pytest.approx(0.8)
    assert table.loc[("m", 5888), "pct_of_ideal"] == pytest.approx(90.0)
    assert table.loc[("d", 552), "speedup_vs_fewest"] == 1.0
    assert table.loc[("m", 5888), "hbm_tb_s"] == pytest.approx(5888 * 2.85e9 / PUBLISHED_TB_PER_S, abs=1e-4)


def test_training_table_relates_each_compute_scale_to_x1():
    rows = pd.DataFrame({
        "status": "ok", "config.chip.hbm_bytes_per_s": [300 * 1.048576e9] * 3 + [400 * 1.048576e9] * 2,
        "config.chip.compute_scale": [0.75, 1.0, 1.5, 1.0, 1.5],
        "latency_ms": [300.0, 250.0, 200.0, 249.0, 199.2], "hbm_util": 0.1, "tflops": 500.0,
    })
    table = scaling.training_table(rows).set_index(["hbm_gb_s", "compute_scale"])
    assert table.loc[(300, 1.5), "speedup_vs_x1"] == pytest.approx(1.25)
    assert table.loc[(400, 1.5), "speedup_vs_x1"] == pytest.approx(1.25)
    assert table.loc[(300, 0.75), "speedup_vs_x1"] == pytest.approx(250 / 300)
    one = scaling.training_table(rows.iloc[3:])  # one HBM bandwidth only
    assert one["speedup_vs_x1"].tolist() == pytest.approx([1.0, 249 / 199.2])
    no_x1 = scaling.training_table(rows.iloc[[0, 2]])
    assert no_x1["speedup_vs_x1"].isna().all()


def test_every_notebook_has_its_fixture_tables():
    """nbmake runs the notebooks against tests/fixtures; each sweep a notebook loads has one."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        sweeps = re.findall(r'results\.load\(\\"(\w+)\\"\)', notebook.read_text())
        assert sweeps, notebook.name
        for sweep in sweeps:
            assert (ROOT / "tests" / "fixtures" / f"{sweep}.parquet").is_file(), (notebook.name, sweep)
            assert (ROOT / "conf" / "experiment" / f"{sweep}.yaml").is_file(), (notebook.name, sweep)


def test_shrink_keeps_job_status_and_the_named_columns_of_the_chosen_rows():
    table = pd.DataFrame({"job": ["0", "1", "2"], "status": "ok", "a": [1, 2, 3], "b": [4, 5, 6]})
    small = results.shrink(table, ["b", "missing"], table["a"] > 1)
    assert small.columns.tolist() == ["job", "status", "b"] and small["b"].tolist() == [5, 6]
