"""Every notebook's code cells run, in order, from the notebooks folder (with the
committed data tables), and draw what they promise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from elkopt.analysis import hbm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(path: Path) -> dict:
    """Execute the notebook's code cells in one namespace; return it."""
    matplotlib.use("Agg")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for k, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{path.name}[{k}]", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(path):
    namespace = run_notebook(path)
    import matplotlib.pyplot as plt
    figures = [plt.figure(n) for n in plt.get_fignums()]
    assert figures and all(ax.lines for fig in figures for ax in fig.axes)
    plt.close("all")
    assert "table" in namespace and not namespace["table"].empty


def test_hbm_gains_and_a_clear_error_for_a_wrong_table():
    table = pd.DataFrame({
        "model": ["m"] * 4, "topology": ["mesh", "mesh", "all_to_all", "all_to_all"],
        "hbm_tb_s": [4, 8, 4, 8], "analytic_ms": [10, 8, 10, 6], "simulated_ms": [10.0, 8.0, 10.0, 5.0],
    })
    out = hbm.gains(table).set_index(["topology", "hbm_tb_s"])
    assert out.loc[("mesh", 8), "speedup_vs_lowest"] == pytest.approx(1.25)
    assert out.loc[("all_to_all", 8), "step_gain"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"lacks columns \['simulated_ms'\]"):
        hbm.gains(table.drop(columns="simulated_ms"))
    with pytest.raises(ValueError, match="no rows for model 'x'"):
        hbm.plot_latency_vs_hbm(table, "x")


def test_a_sweeps_results_become_an_hbm_table():
    from elkopt.chip import PUBLISHED_TB_PER_S
    results = pd.DataFrame({
        "job": ["0", "1", "2"], "status": ["ok", "ok", "error"],
        "config.model.name": ["llama2_13b"] * 3, "config.chip.name": ["mesh_pod4", "ipu_pod4", "ipu_pod4"],
        "config.chip.topology": ["mesh", "all_to_all", "all_to_all"],
        "config.chip.hbm_bytes_per_s": [8 * PUBLISHED_TB_PER_S, 4 * PUBLISHED_TB_PER_S, 16 * PUBLISHED_TB_PER_S],
        "latency_ms": [10.8, 18.9, None], "simulated_ms": [11.4, 18.95, None],
        "simulation.mean_core_link_utilisation": [0.18, 0.23, None],
        "simulation.hbm_port_utilisation": [0.83, 1.0, None],
    })
    table = hbm.from_results(results)
    assert table[["topology", "hbm_tb_s", "simulated_ms"]].values.tolist() == [
        ["all_to_all", 4.0, 18.95], ["mesh", 8.0, 11.4]]  # the failed job is left out
    assert table["hbm_port_util"].tolist() == [1.0, 0.83]
    with pytest.raises(ValueError, match="not a sweep of simulated runs"):
        hbm.from_results(results.drop(columns="simulated_ms"))
