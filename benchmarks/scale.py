"""The scale section: W1 and W2 against the number of workers, locally and on a Docker cluster.

    python -m benchmarks.scale [docs/benchmarks.json]   # this section alone, stored into a saved run

Local: dockkit beside mp.Pool on 2, 8, 32 and 64 workers, each run a fresh child process
of the local table's harness (:mod:`benchmarks.child`), the median of :data:`REPS` runs,
interleaved so that drift hits both alike. Cluster: ``dockkit up --nodes N`` for 3, 8 and
16 nodes of :data:`PER_NODE` workers, running the cluster section's job
(``benchmarks/cluster_job.py``, the same sizes), then ``dockkit down``, failures included.
W1 is at a size that is not noise-bound (1M tasks); W2 is 4,000 sleeps of 10 ms.
Skipped with the reason in a ``--quick`` run; the cluster half without a Docker Engine.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from benchmarks import results
from benchmarks.cluster import cli, docker_env, job
from benchmarks.env import store_section
from benchmarks.spawn import child_command, run_child
from benchmarks.workloads import SCALE_SIZES, scale_case

LOCAL_WORKERS = (2, 8, 32, 64)
LOCAL_SYSTEMS = {"dockkit": "dockkit", "pool": "mp.Pool"}
CLUSTER_NODES = (3, 8, 16)
PER_NODE = 4
REPS = 3
#: The figure each workload contributes.
METRICS = {"W1": "tasks_per_s", "W2": "efficiency"}
#: Every cluster made here is named so; ``dockkit down`` removes it at the end.
NAME_PREFIX = "benchscale-"


def section(env: dict[str, str], *, quick: bool = False) -> dict:
    """Measure both halves, or return ``{"status": "skipped", "reason": …}``."""
    if quick:
        return {"status": "skipped", "reason": "not part of a --quick run"}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {"status": "measured",
            "reason": f"{date}, W1 {SCALE_SIZES['W1']:,} tasks, W2 {SCALE_SIZES['W2']:,} sleeps of 10 ms",
            "local": measure_local(env), "cluster": measure_cluster(env)}


def measure_local(env: dict[str, str], workers=LOCAL_WORKERS, *, reps: int = REPS,
                  quick: bool = False) -> dict:
    """Cells (as in the local table) by worker count, system and workload."""
    cells = {str(n): {s: {w: results.new_cell() for w in METRICS} for s in LOCAL_SYSTEMS}
             for n in workers}
    for _ in range(reps):
        for n in workers:
            for workload in METRICS:
                case = scale_case(workload, n, quick)
                for system in LOCAL_SYSTEMS:
                    outcome = run_child(child_command(system, case, quick), case.timeout, env)
                    results.add_run(cells[str(n)][system][workload], outcome)
    for by_system in cells.values():
        for by_workload in by_system.values():
            for cell in by_workload.values():
                results.finish(cell)
    return cells


def measure_cluster(env: dict[str, str], nodes=CLUSTER_NODES) -> dict:
    """One cluster per size, or ``{"status": "skipped", "reason": …}`` without Docker."""
    env, why_not = docker_env(env)
    if env is None:
        return {"status": "skipped", "reason": why_not}
    return {"status": "measured", "reason": f"{PER_NODE} workers per node",
            "figures": {str(n): _on_cluster(env, n) for n in nodes}}


def _on_cluster(env: dict[str, str], nodes: int) -> dict:
    name = f"{NAME_PREFIX}{uuid.uuid4().hex[:6]}"
    workers = nodes * PER_NODE
    figures: dict[str, object] = {"nodes": nodes, "workers": workers}
    try:
        up = cli("up", "--nodes", str(nodes), "--workers-per-node", str(PER_NODE), "--name", name,
                 env=env)
        if up.returncode != 0:
            figures["error"] = f"dockkit up failed: {up.stderr[-300:]}"
            return figures
        for workload in METRICS:
            figures[workload] = job(env, name, workers, workload)
    finally:
        down = cli("down", "--name", name, env=env)
        if down.returncode != 0:
            figures["down_error"] = down.stderr[-300:]
    return figures


def lines(scale: dict) -> list[dict]:
    """The section as table lines: ``workers``, ``where``, ``nodes`` and one figure (or
    ``None``) per ``"<system>:<workload>"``; ``reasons`` say why a figure is missing."""
    out = []
    for n, by_system in scale.get("local", {}).items():
        line = {"workers": int(n), "where": "local", "nodes": None, "reasons": []}
        for system in LOCAL_SYSTEMS:
            for workload, metric in METRICS.items():
                cell = by_system[system][workload]
                measured = cell["status"] == "ok"
                line[f"{system}:{workload}"] = cell["median"].get(metric) if measured else None
                if not measured:
                    line["reasons"].append(f"{LOCAL_SYSTEMS[system]} {workload} on {n}: "
                                           f"{cell['status']}: {cell.get('reason')}")
        out.append(line)
    for figures in scale.get("cluster", {}).get("figures", {}).values():
        line = {"workers": figures["workers"], "where": "cluster", "nodes": figures["nodes"],
                "reasons": [figures["error"]] if "error" in figures else []}
        for workload, metric in METRICS.items():
            measured = figures.get(workload, {})
            line[f"dockkit:{workload}"] = measured.get(metric)
            line[f"pool:{workload}"] = None
            if "error" in measured:
                line["reasons"].append(f"{workload} on {figures['nodes']} nodes: {measured['error']}")
        out.append(line)
    return out


if __name__ == "__main__":
    store_section("scale", section)
