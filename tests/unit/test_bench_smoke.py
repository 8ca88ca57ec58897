"""A smoke run of the benchmark suite keeps it from rotting (speed is never asserted).

What is checked is the shape of what ``make bench`` writes, and that its figures agree
with each other: every case measured for every system asked for, each median the
median of its runs, each target row reading the figure it judges.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dockkit

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ["dockkit", "pool"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--systems", ",".join(SYSTEMS), "--strict",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "benchmarks.json").read_text()), (out / "benchmarks.md").read_text()


def test_the_run_describes_itself(smoke):
    data, _ = smoke
    assert set(data) == {"meta", "systems", "cases", "results", "cluster", "engines", "scale", "targets"}
    meta = data["meta"]
    assert (meta["quick"], meta["complete"], meta["reps"], meta["cpus"]) == (True, False, 1, os.cpu_count())
    assert meta["command"].startswith("python -m benchmarks --quick")
    assert meta["wall_s"] > 0
    assert list(data["systems"]) == SYSTEMS
    assert all(s["available"] and s["reason"] is None for s in data["systems"].values())
    assert data["systems"]["dockkit"]["version"] == dockkit.__version__
    # a quick run skips the Docker section, and says so
    assert data["cluster"] == {"status": "skipped", "reason": "not part of a --quick run"}
    assert data["engines"] == {"status": "skipped", "reason": "not part of a --quick run"}
    assert data["scale"] == {"status": "skipped", "reason": "not part of a --quick run"}


def test_every_case_is_measured_for_every_system(smoke):
    data, _ = smoke
    cases = {case["id"]: case for case in data["cases"]}
    assert {case["workload"] for case in cases.values()} == {f"W{i}" for i in range(1, 8)}
    assert set(data["results"]) == set(cases)
    for case_id, row in data["results"].items():
        assert list(row) == SYSTEMS, case_id
        # dockkit goes first in a --quick run, so its cells are never cut by the deadline
        assert row["dockkit"]["status"] in ("ok", "too_slow"), (case_id, row["dockkit"])
        assert row["pool"]["status"] in ("ok", "too_slow", "skipped"), (case_id, row["pool"])
        for cell in row.values():
            if cell["status"] != "skipped":
                assert len(cell["runs"]) == 1 and cell["median"] == cell["runs"][0], (case_id, cell)


def test_the_figures_agree_with_each_other(smoke):
    data, _ = smoke
    cases = {case["id"]: case for case in data["cases"]}
    dk = {case_id: row["dockkit"]["median"] for case_id, row in data["results"].items()}
    assert math.isclose(dk["W1"]["tasks_per_s"], cases["W1"]["size"] / dk["W1"]["seconds"])
    # the large W1 case: the same map, more tasks, under a budget it does not reach here
    assert cases["W1-1M"]["size"] > cases["W1"]["size"] and cases["W1-1M"]["budget"] > 0
    assert math.isclose(dk["W1-1M"]["tasks_per_s"], cases["W1-1M"]["size"] / dk["W1-1M"]["seconds"])
    assert "too_slow" not in dk["W1-1M"]
    assert 1 <= dk["W2"]["workers_seen"] <= cases["W2"]["workers"]  # all of them, unless one started late
    assert 0 < dk["W2"]["efficiency"] <= 1.0 + 1e-9
    assert dk["W6-lambda"]["supported"] is True and dk["W6-closure"]["supported"] is True
    pool = data["results"]["W6-lambda"]["pool"]
    assert pool["status"] == "skipped" or pool["median"]["supported"] is False  # Pool can't pickle it
    for case_id in (c for c in cases if c.startswith("W7")):
        assert dk[case_id]["items"] == cases[case_id]["size"] or dk[case_id]["too_slow"]
    # each target row judges dockkit's own figure of the same run
    rows = {target["row"]: target for target in data["targets"]}
    assert rows["W1:tasks_per_s"]["value"] == dk["W1"]["tasks_per_s"]
    assert rows["W5:seconds"]["value"] == dk["W5"]["seconds"]
    assert rows["W1-1M:tasks_per_s"]["value"] == dk["W1-1M"]["tasks_per_s"]
    pool = data["results"]["W1-1M"]["pool"]
    if pool["status"] == "ok":  # the target is Pool.map's figure of the same case
        assert rows["W1-1M:tasks_per_s"]["threshold"] == pool["median"]["tasks_per_s"]
    for target in data["targets"]:
        assert isinstance(target["met"], bool), target


def test_the_page_shows_the_table_and_the_skipped_cluster(smoke):
    _, page = smoke
    assert "## Results" in page and "This is a partial run" in page
    assert "| W1 tiny · 2,000 tasks · tasks/s |" in page
    assert "| W1 tiny · 50,000 tasks · tasks/s |" in page
    assert "## Cluster (Docker)" in page and "**skipped**: not part of a --quick run" in page
    scale = page[page.index("## Scale"):]
    assert "This run: **skipped**: not part of a --quick run" in scale.split("\n## ")[0]


def test_table_only_measures_the_table_and_skips_every_section(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--table-only", "--reps", "1", "--systems", "dockkit",
         "--workloads", "W5", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["meta"]["complete"] is False and data["results"]["W5"]["dockkit"]["status"] == "ok"
    for name in ("cluster", "engines", "scale"):
        assert data[name] == {"status": "skipped", "reason": "not part of a --table-only run"}


def test_a_measured_cluster_stands_beside_local_workers():
    from benchmarks.markdown import _cluster

    pair = lambda key, cluster, local: {"cluster": {key: cluster}, "local": {key: local}}  # noqa: E731
    figures = {
        "small": {"nodes": 3, "workers": 6, "up_s": 1.2, "down_s": 0.7,
                  "T": {"cluster": {"run_s": 0.8, "first_results_s": 0.6}, "local": {"run_s": 0.4, "first_results_s": 0.3}},
                  "W1": pair("tasks_per_s", 4e6, 8e6), "W2": pair("efficiency", 0.97, 0.99),
                  "W2-busy": pair("efficiency", 0.94, 0.96),
                  "W4": {"cluster": {"error": "boom"}, "local": {"mb_per_s": 900.0}}},
        "large": {"nodes": 16, "workers": 64, "up_s": 4.0, "down_s": 1.5,
                  "T": {"cluster": {"run_s": 1.6, "first_results_s": 1.2}, "local": {"error": "x"}},
                  "W2": pair("efficiency", 0.95, 0.93)},
    }
    page = _cluster({"status": "measured", "reason": "r", "figures": figures})
    assert "| **3 nodes × 2**: `dockkit up` (image built) · s | 1.20 |" in page
    assert "| W1 tiny tasks, 1M (median of 5 maps) · tasks/s | 4,000,000 | 8,000,000 | 0.50× | ≥ 0.8× local |" in page
    assert "| W4 64 × 1 MiB (median of 5 maps) · MB/s | error | 900 |  | ≥ 0.6× local |" in page  # a failed job says so
    assert ("| the same beside one CPU-bound process a core (a busy machine) · efficiency | 0.940 | 0.960 | 0.98× "
            "| ≥ 0.93 |") in page
    assert "| **16 nodes × 4**: `dockkit up` (image built) · s | 4.00 |  |  | ≤ 5 s |" in page
    assert "| start to first results · s | 1.20 | error |  | ≤ 3 s |" in page
