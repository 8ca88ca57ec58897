"""Faults in the nodes of a Docker cluster: a worker killed, a node killed, paused, cut off or
dropping packets, a task past the nodes' memory limit.

One cluster serves the whole section, made and removed as a user would
(``dockkit up --nodes 3 --name chaos-…``, ``dockkit down``; the memory fault gets a
cluster of 2 nodes with ``--memory`` of its own), with a scratch directory
of this machine mounted at ``/chaos`` in every node for the task log. Each trial is
one ``dockkit run --name chaos-… -n 6`` of :mod:`benchmarks.faults.job` from this
machine; the fault goes through the Docker Engine, on node1 (node0 holds the run's
root). What a run leaves behind is counted here (the ``dockkit run`` process) and in
every running node (``ps`` lines that name dockkit).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from benchmarks.env import ROOT, child_env
from benchmarks.faults.local import BOTH, finish, interruptible, maps_correct
from benchmarks.faults.job import REPORT_MARK
from benchmarks.faults.trial import ERROR, Fault, Outcome, Trial
from dockkit.launch.supervisor import OUT_OF_MEMORY, WORKER_PROCESS_NAME
from dockkit.launch.warm import PS_ARGV, run_processes

NODES = 3
WORKERS = 6
ITEMS = 600
UNDER_WAY = 30
VICTIM = "node1"
PAUSE_S = 20.0
CUT_S = 5.0
CUT_ITEMS = 3000  # maps of 5 s on 6 workers: the second starts after the cut node is back
LOSS = 0.3  # share of node1's packets dropped, each way
LOSSY_S = 10.0  # as long as the heartbeat timeout
LOSSY_ITEMS = 6000  # maps of 10 s on 6 workers: the first runs through the loss, the second after it
MEMORY = "256m"
MEMORY_NODES = 2
OOM_WORKERS = 4
NOTICE_TIMEOUT_S = 60.0
MOUNTED_AT = PurePosixPath("/chaos")
DROPPED = "dockkit broker: dropping "  # the broker's word for a peer it cut off as malformed


class ClusterUnavailable(Exception):
    """No cluster could be made here (no Docker Engine, or ``dockkit up`` failed); says why."""


class ChaosCluster:
    """A cluster of NODES nodes for the section: ``up`` on entry, ``down`` on exit, whatever happens."""

    def __init__(self, name: str | None = None, *, memory: str | None = None):
        self.name = name or f"chaos-{uuid.uuid4().hex[:6]}"
        self.memory = memory
        self.nodes = MEMORY_NODES if memory else NODES
        self._state = Path(tempfile.mkdtemp(prefix="chaos-state-"))
        self.volume = Path(tempfile.mkdtemp(prefix="chaos-tasks-"))
        self.volume.chmod(0o777)  # the nodes' users write their task logs here
        self.containers_left: int | None = None
        self.cut: dict = {}  # what the network cut of the trial under way saw
        self.loss: dict = {}  # when the packet loss of the trial under way began and ended
        self._client = None

    def __enter__(self) -> "ChaosCluster":
        try:
            self.up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.down()
        finally:
            shutil.rmtree(self._state, ignore_errors=True)
            shutil.rmtree(self.volume, ignore_errors=True)

    def _cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    @property
    def ssh_config(self) -> Path:
        """The ``ssh_config`` ``dockkit up`` wrote: it reaches every node from here (Host node0…)."""
        return self._state / "clusters" / self.name / "ssh_config"

    @property
    def env(self) -> dict[str, str]:
        return {**child_env(), "DOCKKIT_STATE_DIR": str(self._state)}

    def up(self) -> str:
        """Make the cluster, or bring back the nodes a trial killed; what ``dockkit up`` said."""
        limit = ["--memory", self.memory] if self.memory else []
        made = self._cli("up", "--nodes", str(self.nodes), "--name", self.name,
                         "--volume", f"{self.volume}:{MOUNTED_AT}", *limit)
        if made.returncode != 0:
            lines = [line for line in made.stderr.splitlines() if line.strip()]
            raise ClusterUnavailable(f"`dockkit up` failed: {lines[-1] if lines else made.returncode}")
        return made.stdout + made.stderr

    def down(self) -> None:
        self._cli("down", "--name", self.name)
        if self._client is not None:
            from dockkit.cluster.nodes import labelled_containers

            self.containers_left = len(labelled_containers(self._client, self.name))

    def ship(self, path: str) -> None:
        """Copy a file of this checkout to the same path in every node, as plain SSH hosts need it."""
        copied = self._cli("cp", "--name", self.name, path, f"all:{path}", timeout=120)
        if copied.returncode != 0:
            raise RuntimeError(f"`dockkit cp {path} all:{path}` failed: {copied.stderr.strip()}")

    def node(self, name: str):
        """The container of node ``name`` (docker-py)."""
        from dockkit.cluster.engine import docker_client
        from dockkit.cluster.nodes import NODE_LABEL, labelled_containers

        self._client = self._client or docker_client()
        return next(container for container in labelled_containers(self._client, self.name)
                    if container.labels.get(NODE_LABEL) == name)

    def network(self):
        """The cluster's network (docker-py), as ``dockkit up`` made it."""
        self.node(VICTIM)  # connects the client
        return self._client.networks.get(f"dockkit-{self.name}")

    def dockkit_processes(self) -> int:
        """Processes whose command line names dockkit, in every running node."""
        return sum(dockkit_processes(self.node(f"node{index}")) for index in range(self.nodes))

    def renew(self) -> dict:
        """Make again a node the trial's fault took, for the next trial: whether sshd's port moved."""
        return {"port_moved": "ssh_config updated" in self.up()}

    def trial(self) -> Trial:
        return Trial(self.volume, seen_as=MOUNTED_AT, env={"DOCKKIT_STATE_DIR": str(self._state)})


def dockkit_processes(container) -> int:
    """Processes of runs whose command line names dockkit in a node's container (roots, agents,
    workers; not the node's own warm agent server); 0 if it is not running."""
    container.reload()
    if container.status != "running":
        return 0
    return len(run_processes(container.exec_run(list(PS_ARGV)).output.decode(errors="replace")))


def node_lost(node: str) -> re.Pattern:
    return re.compile(rf"dockkit: (?:worker \S+ \(pid \d+\) on {node} |host {node} lost)")


def kill_worker(cluster: ChaosCluster):
    node = cluster.node(VICTIM)
    # agents fork their workers, which take the name dockkit-worker (their command line is the agent's)
    pid = node.exec_run(["pgrep", "-x", WORKER_PROCESS_NAME]).output.split()[0].decode()
    node.exec_run(["kill", "-9", pid])
    return re.compile(rf"dockkit: worker \S+ \(pid {pid}\) on {VICTIM} "), lambda: None


def _kill_node(cluster: ChaosCluster):
    cluster.node(VICTIM).kill()
    return node_lost(VICTIM), lambda: None


def _pause_node(cluster: ChaosCluster):
    node = cluster.node(VICTIM)
    node.pause()
    paused_at = time.monotonic()

    def resume() -> None:
        time.sleep(max(0.0, paused_at + PAUSE_S - time.monotonic()))
        node.unpause()

    return node_lost(VICTIM), resume


def _cut_node(cluster: ChaosCluster):
    """node1 off the cluster's network for CUT_S, then back on it under its name, as ``up`` put it."""
    node, network = cluster.node(VICTIM), cluster.network()
    cluster.cut = {"address": _address(node, network.name)}
    network.disconnect(node)
    cut_at = time.monotonic()

    def reconnect() -> None:
        time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))
        network.connect(node, aliases=[VICTIM])  # the other nodes find it by this name
        cluster.cut.update(back_at=time.time(), new_address=_address(node, network.name))

    back = threading.Thread(target=reconnect, name="chaos-reconnect")
    back.start()
    return node_lost(VICTIM), back.join


def _in_netns(node, *argv: str) -> str:
    """Run a command of this machine in the node's network namespace (its own firewall): its output."""
    node.reload()
    return subprocess.run(["nsenter", "-t", str(node.attrs["State"]["Pid"]), "-n", *argv], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def _lossy_node(cluster: ChaosCluster):
    """node1 drops LOSS of its packets each way for LOSSY_S (iptables' random match in its own
    namespace: this kernel has no netem), then none."""
    node = cluster.node(VICTIM)
    rules = [[chain, "-m", "statistic", "--mode", "random", "--probability", str(LOSS), "-j", "DROP"]
             for chain in ("INPUT", "OUTPUT")]
    for rule in rules:
        _in_netns(node, "iptables", "-I", *rule)
    cluster.loss = {"from": time.time()}
    lossy_at = time.monotonic()

    def heal() -> None:
        time.sleep(max(0.0, lossy_at + LOSSY_S - time.monotonic()))
        for rule in rules:  # each was inserted first in its chain: `-L CHAIN 1` lists its counters
            counters = _in_netns(node, "iptables", "-L", rule[0], "1", "-v", "-n", "-x").split()
            cluster.loss[f"dropped_{rule[0].lower()}"] = int(counters[0])
            _in_netns(node, "iptables", "-D", *rule)
        cluster.loss["to"] = time.time()

    healer = threading.Thread(target=heal, name="chaos-heal")
    healer.start()
    return node_lost(VICTIM), healer.join


def _after_loss(cluster: ChaosCluster, trial: Trial, run) -> dict:
    """node1's share of the tasks during the loss, and the tasks it ran after it."""
    loss = cluster.loss
    if "to" not in loss:
        return {}
    during = trial.log.ran_on(None, after=loss["from"], before=loss["to"])
    return {"lossy_share": trial.log.ran_on(VICTIM, after=loss["from"], before=loss["to"]) / during
            if during else None,
            "healed_ran": trial.log.ran_on(VICTIM, after=loss["to"]),
            "dropped": loss["dropped_input"] + loss["dropped_output"]}


def _address(node, network: str) -> str | None:
    node.reload()
    return (node.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress")


def _after_cut(cluster: ChaosCluster, trial: Trial, run) -> dict:
    """Whether node1 came back: tasks it ran once reconnected, its name and address, what was said."""
    cut = cluster.cut
    if "back_at" not in cut:
        return {"rejoined": None}
    lost = [line for _, line in run.lines() if node_lost(VICTIM).search(line)]
    return {"rejoined": trial.log.ran_on(VICTIM, after=cut["back_at"]),
            "resolves": cluster.node("node0").exec_run(["getent", "hosts", VICTIM]).exit_code == 0,
            "readdressed": cut["new_address"] != cut["address"],
            "left_unheard": any(f"on {VICTIM}: the broker" in line and "has been silent" in line
                                for _, line in run.lines()),
            "lost_said": re.sub(r"(w)\d+ \(pid \d+\)", r"\1N (pid N)", lost[0]) if lost else None}


@dataclass(frozen=True)
class RunShape:
    """How a trial's run is started, and what it may leave in the nodes.

    By default a cluster run (``dockkit run --name … -n WORKERS``), whose leftovers are the
    processes naming dockkit in the nodes; :mod:`benchmarks.faults.ssh` runs over ``--hosts``.
    """

    options: list[str]
    leftovers: Callable[[], int]

    @classmethod
    def cluster_run(cls, cluster: "ChaosCluster") -> "RunShape":
        return cls(["--name", cluster.name, "-n", str(WORKERS)], cluster.dockkit_processes)

    def start(self, trial: Trial, max_retries: int, items: int = ITEMS):
        return trial.dockkit_run(*self.options, "--max-retries", str(max_retries), job=["map", str(items)])


def run_trial(inject, cluster: ChaosCluster, max_retries: int, *, items: int = ITEMS, after=None,
              shape: RunShape | None = None) -> Outcome:
    """One run with the fault ``inject`` does once the map is under way.

    ``inject(cluster)`` returns the pattern of the line that says the fault was
    noticed, and what to do once it was (or once NOTICE_TIMEOUT_S passed, or the
    run ended). ``after(cluster, trial, run)``, if given, adds to the trial's details
    once the run is over; so does ``cluster.renew()``, which readies the cluster for the next.
    ``cluster`` may be any context with what a ChaosCluster offers here (``name``, ``trial()``,
    ``dockkit_processes()``, ``renew()``): a fault's own, as in :mod:`benchmarks.faults.engines`.
    """
    with cluster.trial() as trial:
        shape = shape or RunShape.cluster_run(cluster)  # after trial(): a context may make its cluster there
        run = shape.start(trial, max_retries, items)
        injected = trial.log.wait_for(UNDER_WAY, alive=run.running, timeout=120)
        seen = None
        if injected:
            at = time.monotonic()
            noticed, afterwards = inject(cluster)
            seen = run.wait_for_line(noticed, timeout=NOTICE_TIMEOUT_S, since=at)
            afterwards()
        status = finish(run)
        lingering = trial.processes() + shape.leftovers()
        left, _ = trial.settle(time.monotonic(), elsewhere=shape.leftovers)
        allowed = "WorkerLostError" if max_retries == 0 else None
        lines = run.lines()
        said = [at for at, line in lines if line.startswith(REPORT_MARK) or ERROR.match(line)]
        detail = {"dropped_peers": sum(DROPPED in line for _, line in lines),
                  # how long the run took to end after the script's last word (a paused node holds it)
                  "tail_s": run.ended_at - said[-1] if said and run.ended_at else None}
        if not injected:
            detail["injected"] = False
        elif after:
            detail.update(after(cluster, trial, run))
        outcome = Outcome(correct=maps_correct(run, status, allowed), duplicates=trial.log.duplicates(),
                          noticed_s=seen[0] - at if seen else None, status=status, error=run.error(),
                          lingering=lingering, left=left, detail=detail)
    outcome.detail.update(cluster.renew())
    return outcome


def worker_killed(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(kill_worker, cluster, max_retries)


def node_killed(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(_kill_node, cluster, max_retries)


def node_paused(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(_pause_node, cluster, max_retries)


def node_cut(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(_cut_node, cluster, max_retries, items=CUT_ITEMS, after=_after_cut)


def node_lossy(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(_lossy_node, cluster, max_retries, items=LOSSY_ITEMS, after=_after_loss)


def out_of_memory(cluster: ChaosCluster, max_retries: int) -> Outcome:
    """One task of a map writes 1 GiB on a node limited to MEMORY: the OOM killer takes its worker."""
    with cluster.trial() as trial:
        run = trial.dockkit_run("--name", cluster.name, "-n", str(OOM_WORKERS), "--max-retries",
                                str(max_retries), job=["payload", "oom"])
        status = finish(run)
        lingering = trial.processes() + cluster.dockkit_processes()
        left, _ = trial.settle(time.monotonic(), elsewhere=cluster.dockkit_processes)
        reports = run.reports()
        first, following = reports.get(0), reports.get(1)
        said = first and first["error"]
        killed = [line for _, line in run.lines() if OUT_OF_MEMORY in line and line.startswith("dockkit: ")]
        told = bool(said and said.startswith("WorkerLostError:") and "out of memory" in said)
        outcome = Outcome(correct=status == 0 and told and bool(following and following["correct"]),
                          duplicates=trial.log.duplicates(), noticed_s=first and first["seconds"],
                          status=status, error=said.partition(":")[0] if said else run.error(),
                          lingering=lingering, left=left,
                          detail={"message": said and anonymous(said), "oom_killed": len(killed)})
    cluster.up()  # the node's agent carries on with a worker fewer; a fresh run starts them all again
    return outcome


def anonymous(message: str) -> str:
    """The message without what changes from run to run (which worker, its pid)."""
    return re.sub(r"worker \S+ \(pid \d+\) on node\d+", "worker W (pid N) on nodeK", message)


def local_run_signalled(signum: int, cluster: ChaosCluster, max_retries: int, *,
                        shape: RunShape | None = None) -> Outcome:
    """The ``dockkit run`` on this machine signalled: what it started elsewhere must end with it."""
    interruptible()
    shape = shape or RunShape.cluster_run(cluster)
    with cluster.trial() as trial:
        run = shape.start(trial, max_retries)
        injected = trial.log.wait_for(UNDER_WAY, alive=run.running, timeout=120)
        running = shape.leftovers()  # e.g. the head's root, agents and workers, before the signal
        signalled_at = time.monotonic()
        os.kill(run.pid, signum)
        left, gone_after = trial.settle(signalled_at, elsewhere=shape.leftovers)
        status = finish(run)
        return Outcome(correct=None, duplicates=trial.log.duplicates(), noticed_s=gone_after, status=status,
                       error=run.error(), left=left,
                       detail={"running_before": running, **({} if injected else {"injected": False})})


_RUN = (f"`dockkit run --name chaos-… -n {WORKERS}` runs the job on a cluster of {NODES} nodes (2 workers "
        f"each): two maps of {ITEMS} tasks of 10 ms that record themselves in a directory of this "
        f"machine mounted into every node. Once {UNDER_WAY} tasks have recorded themselves, the trial ")
_GONE = ("from the signal to the moment no process naming dockkit is left in any node (the head's root, "
         "its agents and their workers)")
FAULTS = [
    Fault("cluster-run-kill", "cluster: the local `dockkit run` SIGKILLed",
          functools.partial(local_run_signalled, signal.SIGKILL), docker=True,
          does=_RUN + "SIGKILLs the `dockkit run` process on this machine, as an out-of-memory killer or "
                      "`kill -9` would; the root in the head node reads its end as the end of its "
                      "stdin (the run's lifeline) and stops.",
          noticed=_GONE),
    Fault("cluster-run-term", "cluster: the local `dockkit run` SIGTERMed",
          functools.partial(local_run_signalled, signal.SIGTERM), docker=True,
          does=_RUN + "SIGTERMs the `dockkit run` process on this machine, as a CI timeout would.",
          noticed=_GONE),
    Fault("cluster-worker-kill", "cluster: a worker SIGKILLed in a node", worker_killed, retries=BOTH,
          docker=True,
          does=_RUN + f"SIGKILLs one worker process of {VICTIM} (`docker exec {VICTIM} kill -9 PID`).",
          noticed="from the `docker exec … kill` to the line in which the head's broker names the worker "
                  "as lost"),
    Fault("cluster-node-kill", "cluster: a node container killed mid-map", node_killed, retries=BOTH,
          docker=True,
          does=_RUN + f"kills the container of {VICTIM} (`docker kill`); `dockkit up` makes it again "
                      "after the run.",
          noticed=f"from the `docker kill` to the first line that names {VICTIM} or its workers as lost"),
    Fault("cluster-node-pause", f"cluster: a node paused {PAUSE_S:.0f} s", node_paused, retries=BOTH,
          docker=True,
          does=_RUN + f"pauses the container of {VICTIM} (`docker pause`, which freezes every process "
                      f"in it) and unpauses it {PAUSE_S:.0f} s later; the heartbeat timeout is the "
                      "default, 10 s.",
          noticed=f"from the `docker pause` to the first line that names {VICTIM} or its workers as lost"),
    Fault("cluster-node-cut", f"cluster: a node cut off its network for {CUT_S:.0f} s", node_cut, retries=BOTH,
          docker=True,
          does=_RUN.replace(f"maps of {ITEMS} tasks", f"maps of {CUT_ITEMS} tasks (5 s each)")
          + f"disconnects {VICTIM} from the cluster's network (`docker network disconnect`: the node "
            f"runs on, its packets go nowhere) and connects it again {CUT_S:.0f} s later under its "
            f"name, as `dockkit up` made it (`docker network connect --alias {VICTIM}`): inside the "
            "heartbeat timeout (10 s), and inside the 7 s after which a worker whose broker is silent "
            "and whose connection to it is down leaves. After the run the trial counts the tasks that ran on "
            f"{VICTIM} after it was back, asks node0 whether the name {VICTIM} resolves again, and "
            "runs `dockkit up`, which records the sshd port Docker may have published anew.",
          noticed=f"from the disconnection to the first line that names {VICTIM} or its workers as "
                  "lost; \"never\" where none did"),
    Fault("cluster-node-lossy", f"cluster: a node drops {LOSS:.0%} of its packets for {LOSSY_S:.0f} s",
          node_lossy, retries=BOTH, docker=True,
          does=_RUN.replace(f"maps of {ITEMS} tasks", f"maps of {LOSSY_ITEMS} tasks (10 s each)")
          + f"has {VICTIM} drop {LOSS:.0%} of the packets it sends and {LOSS:.0%} of those it receives, at "
            f"random, for {LOSSY_S:.0f} s (iptables' `statistic` match in the node's own network "
            "namespace; this kernel has no `tc netem`, so packets are lost, not delayed), then none: "
            "a bad link rather than a cut. TCP retransmits what is lost; the heartbeat timeout is the "
            "default, 10 s. After the run the trial counts the node's share of the tasks run during "
            "the loss (a third on a healthy cluster) and the tasks it ran after it.",
          noticed=f"from the start of the loss to the first line that names {VICTIM} or its workers as "
                  "lost; \"never\" where none did"),
    Fault("cluster-oom", f"cluster: a task outgrows the node's memory (`--memory {MEMORY}`)", out_of_memory,
          docker=True, memory=MEMORY,
          does=f"On a cluster of its own, `dockkit up --nodes {MEMORY_NODES} --memory {MEMORY}`, "
               f"`dockkit run -n {OOM_WORKERS}` runs a job that maps a task over 8 items; item 3 "
               "writes 1 GiB, so the kernel's out-of-memory killer kills its worker. The script "
               "catches what the map raises, then maps 200 plain tasks on the same pool. Correct: "
               "the map raised `WorkerLostError` saying the batch ran out of memory, and the plain "
               "map after it returned the right list.",
          noticed="from the map's call to the error it raised, timed in the script"),
]
