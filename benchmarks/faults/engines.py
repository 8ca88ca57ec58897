"""An engine lost mid-run: the Docker Engine that holds one node of a cluster spread over two dies.

Each trial has a cluster and an engine of its own, since the fault takes the engine. The
engine is the test suite's engine bed (tests/integration/engines.py) with one engine: a
container running its own dockerd, with its own image store, so ``dockkit up`` ships the
worker image to it each time. The cluster is made as a user would, ``dockkit up --nodes 3
--docker-host unix:///var/run/docker.sock --docker-host tcp://…``: node0 (the head) and node2
on this machine's engine, node1 on the bed's. Once the map is under way the trial kills the
engine's container, and dockerd and node1 die at once, as when a machine goes down (though
the kernel closes the connections of what it kills, so the head hears of it at once). Then
``dockkit down``, which must clean this machine's engine and name the one that is gone;
then the bed goes, with its iptables rules, and the cluster's state, which ``down`` keeps
for an engine that may come back.

The tasks record themselves through a listener of the trial's on docker0's gateway, which
the nodes of both engines reach: ``--volume`` binds a directory of this machine only on this
machine's engine (a remote engine's nodes get a named volume there, which dies with it).
"""

from __future__ import annotations

import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.env import ROOT, child_env
from benchmarks.faults.cluster import (ITEMS, NODES, NOTICE_TIMEOUT_S, UNDER_WAY, VICTIM, WORKERS,
                                       ClusterUnavailable, anonymous, dockkit_processes, node_lost, run_trial)
from benchmarks.faults.job import LISTENER
from benchmarks.faults.local import BOTH
from benchmarks.faults.trial import Fault, Outcome, Trial

HERE = "unix:///var/run/docker.sock"
ENGINE = "tcp://ENGINE:2375"  # how the report names the trial's engine and cluster, made anew each time
CLUSTER = "chaos-…"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 64  # every worker of the cluster may connect at once


class TaskListener:
    """Appends the line each connection sends (one task's record) to the task log."""

    def __init__(self, address: str, log: Path):
        lock = threading.Lock()

        class Record(socketserver.StreamRequestHandler):
            timeout = 10  # a node that died mid-send sends nothing more

            def handle(self) -> None:
                try:
                    line = self.rfile.readline()
                except OSError:
                    return
                if line.endswith(b"\n"):
                    with lock, log.open("ab") as tasks:
                        tasks.write(line)

        self._server = _Server((address, 0), Record)
        self.url = f"{LISTENER}{address}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="chaos-task-listener", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ListenedTrial(Trial):
    """A trial whose tasks record themselves through a :class:`TaskListener` at ``address``."""

    def __init__(self, address: str, **options):
        super().__init__(**options)
        self.listener = TaskListener(address, self.log.path)
        self.job_log = self.listener.url

    def __exit__(self, *exc) -> None:
        self.listener.close()
        super().__exit__(*exc)


class SpreadCluster:
    """The fault's context: for each trial, an engine and a cluster over it and this machine's engine.

    Both are made by the trial that needs them (:meth:`trial`) and taken down after it
    (:meth:`renew`, or on exit, whatever happens). Entering fails with
    :class:`ClusterUnavailable`, saying why, where the bed cannot run.
    """

    def __init__(self, name: str | None = None):
        self.prefix = name or f"chaos-{uuid.uuid4().hex[:6]}"
        self.name: str | None = None  # the cluster of the trial under way
        self.bed = None
        self.bed_s = self.up_s = None  # how long the trial's engine, then its cluster, took to make
        self.shipped = False
        self.setups_failed: list[str] = []  # why making the trial's engine or cluster failed
        self._made = 0
        self._made_at = 0.0
        self._state: Path | None = None
        self._client = None

    def __enter__(self) -> "SpreadCluster":
        if os.geteuid() != 0 or shutil.which("iptables") is None:
            raise ClusterUnavailable("the engine bed needs root and iptables")
        from dockkit.cluster.engine import docker_client
        from dockkit.errors import DockkitError

        try:
            self._client = docker_client()
        except DockkitError as exc:
            raise ClusterUnavailable(f"no Docker Engine ({exc})") from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._take_down()
        finally:
            self._client.close()

    def _cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], cwd=ROOT,
                              env={**child_env(), "DOCKKIT_STATE_DIR": str(self._state)},
                              capture_output=True, text=True, timeout=timeout)

    def _make(self) -> None:
        from tests.integration.engines import EngineBed

        self._made += 1
        self.name = f"{self.prefix}-{self._made}"
        self._state = Path(tempfile.mkdtemp(prefix="chaos-state-"))
        self._made_at = time.perf_counter()
        self.bed = EngineBed(self._client, 1, self.name, log=lambda message: print(message, file=sys.stderr))
        try:
            self.bed.__enter__()
        except Exception as exc:  # it removed what it had started
            raise ClusterUnavailable(f"the engine bed did not start: {str(exc).splitlines()[0]}") from exc
        started = time.perf_counter()
        self.bed_s = started - self._made_at
        made = self._cli("up", "--nodes", str(NODES), "--name", self.name,
                         "--docker-host", HERE, "--docker-host", self.engine.tcp_url)
        self.up_s = time.perf_counter() - started
        self.shipped = "copying" in made.stderr
        if made.returncode != 0:
            lines = [line for line in made.stderr.splitlines() if line.strip()]
            raise ClusterUnavailable(f"`dockkit up` failed: {lines[-1] if lines else made.returncode}")

    @property
    def engine(self):
        """The bed's engine, which holds node1 (tests.integration.engines.Engine)."""
        return self.bed.engines[0]

    def trial(self) -> ListenedTrial:
        if self.bed is None:
            try:
                self._make()
            except ClusterUnavailable as exc:  # once more, on a fresh engine; the report says why
                self.setups_failed.append(self.anonymous(str(exc)))
                self._take_down()
                self._make()
        gateway = self.engine.container.attrs["NetworkSettings"]["Gateway"]  # this machine, on docker0
        return ListenedTrial(gateway, env={"DOCKKIT_STATE_DIR": str(self._state)})

    def dockkit_processes(self) -> int:
        """Processes whose command line names dockkit, in the nodes on this machine's engine."""
        from dockkit.cluster.nodes import labelled_containers

        return sum(dockkit_processes(container) for container in labelled_containers(self._client, self.name))

    def renew(self) -> dict:
        """``dockkit down``, what it said and left here; then the engine and cluster go, for the next
        trial's own."""
        started = time.perf_counter()
        down = self._cli("down", "--name", self.name)
        said = [line for line in down.stderr.splitlines() if line.strip()]
        detail = {"bed_s": self.bed_s, "up_s": self.up_s, "shipped": self.shipped,
                  "down_s": time.perf_counter() - started, "down_status": down.returncode,
                  "down_lines": len(said), "down_named": self.engine.tcp_url in down.stderr,
                  "down_said": self.anonymous(said[-1]) if said else None,
                  "containers_left": self._labelled(), "setups_failed": self.setups_failed}
        self.setups_failed = []
        self._take_down()
        detail["trial_s"] = time.perf_counter() - self._made_at
        return detail

    def anonymous(self, message: str) -> str:
        """``message`` without the cluster's name and the engine's address, new in each trial."""
        if self.bed and self.bed.engines:
            message = message.replace(self.engine.tcp_url, ENGINE)
        return message.replace(self.name, CLUSTER)

    def _labelled(self) -> int:
        """Containers, networks and volumes that this machine's engine holds with the cluster's label."""
        from dockkit.cluster.nodes import CLUSTER_LABEL

        label = {"label": f"{CLUSTER_LABEL}={self.name}"}
        return (len(self._client.containers.list(all=True, filters=label))
                + len(self._client.networks.list(filters=label))
                + len(self._client.volumes.list(filters=label)))

    def _take_down(self) -> None:
        """Remove what is left of the trial's cluster, engine and state, failures included: ``down``
        cleans this machine's engine even with the other gone (its status says so, and is not needed)."""
        if self.bed is None:
            return
        try:
            if self._state is not None and self._labelled():
                self._cli("down", "--name", self.name)
        finally:
            self.bed.close()
            self.bed = None
            shutil.rmtree(self._state, ignore_errors=True)


def _kill_engine(spread: SpreadCluster):
    spread.engine.kill()
    return node_lost(VICTIM), lambda: None


def _after_loss(_spread: SpreadCluster, _trial, run) -> dict:
    """The first line that named the loss, without what changes from run to run."""
    lost = [line for _, line in run.lines() if node_lost(VICTIM).search(line)]
    return {"lost_said": anonymous(lost[0]) if lost else None}


def engine_lost(spread: SpreadCluster, max_retries: int) -> Outcome:
    return run_trial(_kill_engine, spread, max_retries, after=_after_loss)


FAULT = Fault(
    "engine-lost", "engines: the Docker Engine of a node lost mid-map", engine_lost, retries=BOTH,
    docker=True, context=SpreadCluster,
    does=f"Each trial starts a Docker Engine of its own (a container running dockerd, with its own image "
         f"store) and makes a cluster over it and this machine's engine, as a user would: `dockkit up "
         f"--nodes {NODES} --docker-host {HERE} --docker-host tcp://…:2375`, which ships the worker image "
         f"to the new engine; {VICTIM} runs there, node0 (the head) and node2 here. `dockkit run -n "
         f"{WORKERS}` runs two maps of {ITEMS} tasks of 10 ms that record themselves through a listener "
         f"of the trial's on this machine. Once {UNDER_WAY} tasks have, the trial kills the engine's "
         f"container: its dockerd and {VICTIM} die at once, as when a machine goes down (though here the "
         "kernel closes the connections of the processes it kills, so the head may hear of it at once; "
         "a machine silent without a word is what the node pause and cut measure). After the run, "
         "`dockkit down`, then a count of what this machine's engine still holds with the cluster's "
         "label (containers, networks, volumes); then the engine and its firewall rules go.",
    noticed=f"from the engine's kill to the first line that names {VICTIM} or its workers as lost "
            f"(within {NOTICE_TIMEOUT_S:.0f} s)")
