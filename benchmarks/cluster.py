"""The Docker-cluster section: clusters of 3 and 16 nodes beside the same jobs on local workers.

Kept apart from the local table on purpose: containers on the same machine are not
comparable with the local pools, so each cluster figure stands beside the same job
run with ``dockkit run --local`` and as many local workers, in the same run.
Everything goes through the CLI, as a user would type it: ``dockkit up`` (timed with
the worker image already built), ``dockkit run benchmarks/cluster_job.py`` per
workload (see there), W2 again beside one CPU-bound process a core (a busy machine,
:func:`cpu_load`), ``dockkit down`` (timed). Beside ``up`` and ``down`` stands what the
engine alone takes to start and remove as many bare containers (:func:`engine_alone`): the
floor under both on this machine. Skipped with the reason when there is no Docker
Engine, or in a ``--quick`` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from benchmarks.env import ROOT, store_section

# (nodes, workers per node) and the workloads measured on each; BUSY is W2 on a busy machine
BUSY = "W2-busy"
CLUSTERS = {"small": (3, 2, ("W1", "W2", BUSY, "W4")), "large": (16, 4, ("W2",))}
TRIVIAL_RUNS = 5  # a trivial run's figures are the median of this many


def cli(*args, env, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def docker_env(env: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """The environment for ``dockkit`` commands on this machine's Docker Engine, with the
    worker image built (not timed: ``up`` is measured with it built); or ``None`` and why."""
    probe = subprocess.run([sys.executable, "-c", "from dockkit.cluster.engine import docker_client; docker_client()"],
                           env=env, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        return None, f"no Docker Engine ({lines[-1] if lines else 'unknown'})"
    env = dict(env, DOCKKIT_STATE_DIR=tempfile.mkdtemp(prefix="dockkit-bench-"))
    build = cli("image", "build", env=env)
    if build.returncode != 0:
        return None, f"the worker image did not build: {build.stderr[-300:]}"
    return env, ""


def section(env: dict[str, str], *, quick: bool = False) -> dict:
    """Measure the clusters, or return ``{"status": "skipped", "reason": …}``."""
    if quick:
        return {"status": "skipped", "reason": "not part of a --quick run"}
    env, why_not = docker_env(env)
    if env is None:
        return {"status": "skipped", "reason": why_not}
    figures = {size: _measure(env, nodes, per_node, workloads)
               for size, (nodes, per_node, workloads) in CLUSTERS.items()}
    return {"status": "measured",
            "reason": "clusters of 3 and 16 nodes on this machine's Docker Engine, "
                      + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "figures": figures}


def _measure(env, nodes: int, per_node: int, workloads) -> dict:
    name = f"bench{uuid.uuid4().hex[:6]}"
    workers = nodes * per_node
    figures: dict[str, object] = {"nodes": nodes, "workers": workers}
    try:
        started = time.perf_counter()
        up = cli("up", "--nodes", str(nodes), "--workers-per-node", str(per_node), "--name", name, env=env)
        figures["up_s"] = round(time.perf_counter() - started, 2)
        if up.returncode != 0:
            figures["error"] = f"dockkit up failed: {up.stderr[-300:]}"
            return figures
        figures["T"] = {where: trivial(env, name, workers, local=where == "local") for where in ("cluster", "local")}
        for workload in workloads:
            with cpu_load() if workload == BUSY else contextlib.nullcontext():
                figures[workload] = {where: job(env, name, workers, workload.removesuffix("-busy"),
                                                local=where == "local")
                                     for where in ("cluster", "local")}
    finally:
        started = time.perf_counter()
        cli("down", "--name", name, env=env)
        figures["down_s"] = round(time.perf_counter() - started, 2)
    figures["engine_alone"] = engine_alone(env, nodes)
    return figures


@contextlib.contextmanager
def cpu_load(processes: int | None = None):
    """A busy machine: one CPU-bound process per core (or ``processes``) beside the measured
    run, at the same priority, as other jobs on a shared machine would be."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(processes or os.cpu_count() or 1)]
    try:
        time.sleep(0.5)  # every spinner running before the clock starts
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def engine_alone(env, count: int) -> dict:
    """Seconds the engine alone takes to start, then remove, ``count`` containers shaped like
    nodes (the worker image, a network of their own, port 22 published on loopback, all at
    once) that run nothing but ``sleep``: the floor under ``up`` and ``down`` here."""
    import docker

    from dockkit.cluster.image import ensure_worker_image

    client = docker.from_env(environment=env)
    image = ensure_worker_image(client, log=lambda message: None)  # built already: only its tag
    name = f"bench-engine-{uuid.uuid4().hex[:6]}"
    labels = {"org.dockkit.managed": "true", "dockkit.bench": name}
    containers = []

    def start(index: int) -> None:
        container = client.containers.create(image, name=f"{name}-{index}", entrypoint=["sleep", "infinity"],
                                              labels=labels, network=name, ports={"22/tcp": ("127.0.0.1", None)})
        containers.append(container)
        container.start()

    try:
        started = time.perf_counter()
        network = client.networks.create(name, driver="bridge", labels=labels)
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(start, range(count)))
        figures = {"start_s": round(time.perf_counter() - started, 2)}
        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda container: container.remove(force=True), containers))
        containers.clear()
        network.remove()
        figures["remove_s"] = round(time.perf_counter() - started, 2)
        return figures
    finally:  # a failure above leaves nothing behind
        for container in containers:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        for leftover in client.networks.list(names=[name]):
            with contextlib.suppress(docker.errors.APIError):
                leftover.remove()


def job(env, name: str, workers: int, workload: str, *, local: bool = False) -> dict:
    run = cli("run", "--name", name, *(["--local"] if local else []), "benchmarks/cluster_job.py",
               "-n", str(workers), workload, env=env)
    line = next((line for line in run.stdout.splitlines() if line.startswith("BENCH ")), None)
    return json.loads(line[6:]) if line else {"error": run.stderr[-300:]}


def trivial(env, name: str, workers: int, *, local: bool = False) -> dict:
    """A trivial run's wall time and the time to its first results, from the command's start."""
    walls, firsts = [], []
    for _ in range(TRIVIAL_RUNS):
        started_at, started = time.time(), time.perf_counter()
        figure = job(env, name, workers, "T", local=local)
        walls.append(time.perf_counter() - started)
        if "first_results_at" not in figure:
            return figure
        firsts.append(figure["first_results_at"] - started_at)
    return {"run_s": statistics.median(walls), "first_results_s": statistics.median(firsts)}


if __name__ == "__main__":
    store_section("cluster", section)
