"""Golden metrics of the reference setup: latencies within a tolerance, never plans.

Slow (a full Llama2-13B compile, about 30 s): run with `pytest -m slow`.
The values are those reported in experiments/README.md.
"""

import pytest

from elkopt.chip import Chip
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.schedule.checker import check_schedule


@pytest.mark.slow
def test_llama2_13b_reference_setup(tmp_path):
    chip = Chip(name="ipu_pod4", n_chips=4)
    graph = build_graph("llama2_13b", "decode", 32, 2048)
    result = compile_model(graph, chip, "elkopt", PlanningOptions(cache_dir=str(tmp_path), plan_space="reference"))
    deps = [graph.dependencies(i) for i in range(graph.n_ops)]
    assert check_schedule(result.schedule, chip, deps, result.timeline) == []
    refs = result.references
    assert refs["static"] == pytest.approx(7.117, rel=2e-3)
    assert refs["ideal"] == pytest.approx(6.866, rel=2e-3)
    assert refs["lower_bound"] == pytest.approx(6.843, rel=2e-3)
    # the induction alone; the inductive scheduler keeps Static's answer, which is faster here
    assert result.solve_stats["induction_ms"] == pytest.approx(7.290, rel=5e-3)
    assert result.solve_stats["inductive_ms"] == pytest.approx(refs["static"])
    assert result.solve_stats["inductive_start"] == "static"
    assert result.timeline.latency_ms == pytest.approx(6.950, rel=5e-3)
    assert result.timeline.latency_ms >= refs["lower_bound"]
