"""Over separate Docker Engines: ``dockkit up`` and runs across this machine's engine and two more.

The two extra engines are containers running their own dockerd, the test suite's engine
bed (tests/integration/engines.py): each has its own image store, so the worker image
really travels (cold: the engines lack it; warm: they hold it), and nodes on different
engines reach each other through SSH tunnels, encrypted. The two also form a Docker
Swarm, on which a ``dockkit up --swarm`` cluster is measured the same way: its nodes talk
straight over the swarm's overlay, encrypted by CurveZMQ. Everything else goes through
the CLI, as a user would type it. Skipped with the reason in a ``--quick`` run, without
a Docker Engine, or without the root and iptables the bed needs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

from benchmarks.cluster import cli, job, trivial

SIZES = (3, 6, 12)  # nodes, spread over the 3 engines in turn
PER_NODE = 2  # workers per node


def section(env: dict[str, str], *, quick: bool = False) -> dict:
    """Measure clusters over 3 engines, or return ``{"status": "skipped", "reason": …}``."""
    if quick:
        return {"status": "skipped", "reason": "not part of a --quick run"}
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return {"status": "skipped", "reason": "the engine bed needs root and iptables"}
    from dockkit.cluster.engine import docker_client
    from dockkit.errors import DockkitError
    from tests.integration.engines import EngineBed

    try:
        client = docker_client()
    except DockkitError as exc:
        return {"status": "skipped", "reason": f"no Docker Engine ({exc})"}
    env = dict(env, DOCKKIT_STATE_DIR=tempfile.mkdtemp(prefix="dockkit-bench-"))
    build = cli("image", "build", env=env)
    if build.returncode != 0:
        return {"status": "skipped", "reason": f"the worker image did not build: {build.stderr[-300:]}"}
    started = time.perf_counter()
    with EngineBed(client, 2, f"bench{uuid.uuid4().hex[:6]}", log=lambda message: None, swarm=True) as bed:
        figures: dict[str, object] = {"bed_s": round(time.perf_counter() - started, 1)}
        hosts = ["unix:///var/run/docker.sock", *(engine.tcp_url for engine in bed.engines)]
        for nodes in SIZES:
            figures[str(nodes)] = _measure(env, hosts, nodes, runs=nodes == SIZES[0])
        swarm_hosts = [engine.tcp_url for engine in bed.engines]  # engine0 manages the swarm
        figures["swarm"] = _measure(env, swarm_hosts, SIZES[0], runs=True, swarm=True)
        figures["swarm-warm"] = _measure(env, swarm_hosts, SIZES[0], runs=False, swarm=True)
    return {"status": "measured",
            "reason": f"this machine's engine and {len(bed.engines)} engines in containers (dockerd "
                      f"with its own image store); {PER_NODE} workers per node", "figures": figures}


def _measure(env, hosts: list[str], nodes: int, *, runs: bool, swarm: bool = False) -> dict:
    """``up`` (cold the first time: the image travels), runs on the first size, ``down``."""
    name = f"bench{uuid.uuid4().hex[:6]}"
    docker_hosts = [word for host in hosts for word in ("--docker-host", host)]
    figures: dict[str, object] = {}
    try:
        started = time.perf_counter()
        up = cli("up", "--nodes", str(nodes), "--workers-per-node", str(PER_NODE), "--name", name,
                 *docker_hosts, *(["--swarm"] if swarm else []), env=env)
        figures["up_s"] = round(time.perf_counter() - started, 2)
        figures["image_shipped"] = "copying" in up.stderr or "loading" in up.stderr
        if up.returncode != 0:
            figures["error"] = f"dockkit up failed: {up.stderr[-300:]}"
            return figures
        if runs:
            workers = nodes * PER_NODE
            figures["T"] = trivial(env, name, workers)
            for workload in ("W2", "W4"):
                figures[workload] = job(env, name, workers, workload)
    finally:
        started = time.perf_counter()
        cli("down", "--name", name, *docker_hosts, env=env)
        figures["down_s"] = round(time.perf_counter() - started, 2)
    return figures


if __name__ == "__main__":
    from benchmarks.env import store_section

    store_section("engines", section)
