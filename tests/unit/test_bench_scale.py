"""The scale section (speed is never asserted): its local half runs for real at quick
sizes on one worker count; its cluster half is rendered from given figures (the Docker
run belongs to ``python -m benchmarks.scale``).
"""

import importlib.util
import math

import pytest

from benchmarks import scale
from benchmarks.env import child_env
from benchmarks.markdown import _scale
from benchmarks.workloads import SCALE_QUICK_SIZES, SCALE_SIZES, find_case, scale_case


def test_scale_cases_are_found_by_id_and_match_the_cluster_job():
    from benchmarks import cluster_job

    assert (SCALE_SIZES["W1"], SCALE_SIZES["W2"]) == (cluster_job.W1_TASKS, cluster_job.W2_TASKS)
    case = scale_case("W2", 32)
    assert find_case(case.id) == case and (case.workload, case.workers) == ("W2", 32)
    assert find_case("W1-1M", quick=True).size == 50_000


@pytest.fixture(scope="module")
def local_half():
    return scale.measure_local(child_env(), workers=(2,), reps=1, quick=True)


def test_the_local_half_measures_dockkit_and_pool_at_each_worker_count(local_half):
    assert list(local_half) == ["2"]
    for system in ("dockkit", "pool"):
        w1, w2 = local_half["2"][system]["W1"], local_half["2"][system]["W2"]
        assert w1["status"] == w2["status"] == "ok", (system, w1, w2)
        assert math.isclose(w1["median"]["tasks_per_s"], SCALE_QUICK_SIZES["W1"] / w1["median"]["seconds"])
        assert 0 < w2["median"]["efficiency"] <= 1.0 + 1e-9
        assert w2["median"]["workers_seen"] <= 2


def test_the_section_renders_local_and_cluster_lines_and_names_failures(local_half):
    cluster = {"status": "measured", "reason": "4 workers per node", "figures": {
        "3": {"nodes": 3, "workers": 12, "W1": {"tasks_per_s": 9.5e6}, "W2": {"seconds": 3.5, "efficiency": 0.952}},
        "16": {"nodes": 16, "workers": 64, "W1": {"error": "boom"}, "W2": {"seconds": 0.7, "efficiency": 0.9}},
    }}
    page = _scale({"status": "measured", "reason": "r", "local": local_half, "cluster": cluster}, None)
    dk = local_half["2"]["dockkit"]["W1"]["median"]["tasks_per_s"]
    assert f"| 2 | {dk:,.0f} |" in page and page.count("| local |") == 1
    assert "| 12 | 9,500,000 |  | 0.952 |  | Docker, 3 nodes |" in page
    assert "| 64 | error |  | 0.900 |  | Docker, 16 nodes |" in page
    assert "- W1 on 16 nodes: boom" in page and "benchmarks-scale.png" not in page


def test_without_docker_the_cluster_half_says_why_and_the_local_half_stands(local_half):
    skipped = {"status": "skipped", "reason": "no Docker Engine (x)"}
    page = _scale({"status": "measured", "reason": "r", "local": local_half, "cluster": skipped}, "drawn")
    assert "the cluster half **skipped**: no Docker Engine (x)." in page
    assert "Docker," not in page and "![dockkit against the number of workers](benchmarks-scale.png)" in page


def test_the_scale_chart_is_drawn_beside_the_others_or_says_why_not(local_half, tmp_path):
    from benchmarks.chart import draw_scale

    section = {"status": "measured", "reason": "r", "local": local_half,
               "cluster": {"status": "skipped", "reason": "x"}}
    drawn = draw_scale(section, tmp_path / "benchmarks-scale.png")
    if importlib.util.find_spec("matplotlib") is None:  # the 'bench' extra is not installed
        assert drawn == "not drawn: No module named 'matplotlib' (pip install the 'bench' extra)"
        assert not (tmp_path / "benchmarks-scale.png").exists()
    else:
        assert drawn == "drawn" and (tmp_path / "benchmarks-scale.png").stat().st_size > 0
    assert draw_scale({"status": "skipped"}, tmp_path / "none.png").startswith("not drawn")
