"""The Docker-cluster section: ``dockkit up`` / ``down`` times and W1, W2, W4 over 3 nodes.

Kept apart from the local table on purpose: three containers on the same machine,
reached through SSH tunnels, are not comparable with the local pools. Everything
goes through the CLI, as a user would type it: ``dockkit up --nodes 3`` (timed with
the worker image already built), ``dockkit run benchmarks/cluster_job.py`` per
workload, ``dockkit down`` (timed). Skipped with the reason when there is no
Docker Engine, or in a ``--quick`` run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.env import ROOT, child_env

NODES = 3
RUNS = {"W1": 6, "W2": 16, "W4": 6}  # workers (-n) per workload


def _cli(*args, env, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def section(env: dict[str, str], *, quick: bool = False) -> dict:
    """Measure the cluster, or return ``{"status": "skipped", "reason": …}``."""
    if quick:
        return {"status": "skipped", "reason": "not part of a --quick run"}
    probe = subprocess.run([sys.executable, "-c", "from dockkit.cluster.engine import docker_client; docker_client()"],
                           env=env, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        return {"status": "skipped", "reason": f"no Docker Engine ({lines[-1] if lines else 'unknown'})"}
    env = dict(env, DOCKKIT_STATE_DIR=tempfile.mkdtemp(prefix="dockkit-bench-"))
    name = f"bench{uuid.uuid4().hex[:6]}"
    build = _cli("image", "build", env=env)  # not timed: `up` is measured with the image built
    if build.returncode != 0:
        return {"status": "skipped", "reason": f"the worker image did not build: {build.stderr[-300:]}"}
    figures: dict[str, object] = {}
    try:
        started = time.perf_counter()
        up = _cli("up", "--nodes", str(NODES), "--name", name, env=env)
        figures["up_s"] = round(time.perf_counter() - started, 2)
        if up.returncode != 0:
            return {"status": "failed", "reason": f"dockkit up failed: {up.stderr[-300:]}"}
        for workload, workers in RUNS.items():
            run = _cli("run", "--name", name, "benchmarks/cluster_job.py", "-n", str(workers), workload,
                       env=env)
            line = next((l for l in run.stdout.splitlines() if l.startswith("BENCH ")), None)
            figures[workload] = json.loads(line[6:]) if line else {"error": run.stderr[-300:]}
    finally:
        started = time.perf_counter()
        _cli("down", "--name", name, env=env)
        figures["down_s"] = round(time.perf_counter() - started, 2)
    return {"status": "measured", "reason": f"{NODES} nodes on this machine's Docker Engine, one run each",
            "figures": figures}


def main() -> None:
    """``python -m benchmarks.cluster [docs/benchmarks.json]``: measure the cluster section
    alone and store it into a saved run (then redraw with ``--from-json``)."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "benchmarks.json")
    data = json.loads(path.read_text())
    data["cluster"] = section(child_env())
    path.write_text(json.dumps(data, indent=1))
    print(json.dumps(data["cluster"], indent=1))


if __name__ == "__main__":
    main()
