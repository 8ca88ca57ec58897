"""Faults in an SSH run over ``--hosts``: a worker killed on a host, the root killed or interrupted.

The hosts are the nodes of the section's cluster (:class:`~benchmarks.faults.cluster.ChaosCluster`)
used as plain SSH hosts, the way a SCOOP user's machines would be: the root runs here,
``dockkit run --hosts node1:2 node2:2 --tunnel`` reaches them through the cluster's
``ssh_config`` (sshd published on this machine's loopback), starts one agent per host
over SSH, and the workers reach the broker through sshd's port forwards. The tasks
record themselves in the directory of this machine mounted into every node.

What a run leaves behind is counted here (the root, and anything else that carries
the trial's marker) and on every host: processes that name dockkit (agents and their
workers) and sshd sessions (each agent's session, and with it the port forward its
workers used). The nodes' own sshd listener is not counted.
"""

from __future__ import annotations

import functools
import signal
from pathlib import PurePosixPath

from benchmarks.faults.cluster import (ITEMS, UNDER_WAY, VICTIM, ChaosCluster, RunShape, kill_worker,
                                       local_run_signalled, run_trial)
from benchmarks.faults.local import BOTH
from benchmarks.faults.trial import Fault, Outcome

HOSTS = ("node1", "node2")  # node0 stays out of it: the cluster's own runs put their root there
PER_HOST = 2
PYTHON = PurePosixPath("/opt/dockkit-venv/bin/python")  # the image's interpreter: not this machine's
JOB = "benchmarks/faults/job.py"
WORKDIR = PurePosixPath("/tmp")  # where the workers run: this machine's working directory is not on the hosts


def _shape(cluster: ChaosCluster) -> RunShape:
    # every host needs the script at its path here, as SCOOP's do; its tasks travel by value
    cluster.ship(JOB)
    return RunShape(["--hosts", *(f"{host}:{PER_HOST}" for host in HOSTS), "--tunnel",
                     "--ssh-config", str(cluster.ssh_config), "--python", str(PYTHON), "--path", str(WORKDIR)],
                    leftovers=lambda: cluster.dockkit_processes() + _sshd_sessions(cluster))


def _sshd_sessions(cluster: ChaosCluster) -> int:
    """sshd processes on the hosts other than each one's listener: the sessions still open."""
    count = 0
    for host in HOSTS:
        listing = cluster.node(host).exec_run(["ps", "-eo", "args="]).output.decode(errors="replace")
        count += sum(line.startswith("sshd:") and "[listener]" not in line and "sshd -D" not in line
                     for line in listing.splitlines())
    return count


def worker_killed(cluster: ChaosCluster, max_retries: int) -> Outcome:
    return run_trial(kill_worker, cluster, max_retries, shape=_shape(cluster))


def root_signalled(signum: int, cluster: ChaosCluster, max_retries: int) -> Outcome:
    return local_run_signalled(signum, cluster, max_retries, shape=_shape(cluster))


_RUN = (f"`dockkit run --hosts {' '.join(f'{h}:{PER_HOST}' for h in HOSTS)} --tunnel` runs the job from "
        f"this machine on two nodes of the cluster used as plain SSH hosts (the cluster's `ssh_config`, "
        f"`--python {PYTHON}`): one agent per host over SSH, {PER_HOST} workers each, reaching the broker "
        f"through sshd's port forwards. Two maps of {ITEMS} tasks of 10 ms record themselves in a directory "
        f"of this machine mounted into every node. Once {UNDER_WAY} tasks have recorded themselves, the "
        "trial ")
_GONE = ("from the signal to the moment nothing of the run is left: no process here, and on the hosts no "
         "agent, worker or sshd session (the port forwards go with their sessions)")
FAULTS = [
    Fault("ssh-worker-kill", "over SSH: a worker SIGKILLed on a host", worker_killed, retries=BOTH,
          docker=True,
          does=_RUN + f"SIGKILLs one worker process on {VICTIM}.",
          noticed="from the kill to the line in which the root's broker names the worker as lost"),
    Fault("ssh-root-kill", "over SSH: the root SIGKILLed mid-map",
          functools.partial(root_signalled, signal.SIGKILL), docker=True,
          does=_RUN + "SIGKILLs the root (the `dockkit run` process here, which holds the broker and the "
                      "SSH connections), then watches this machine and the hosts for 15 s. The agents "
                      "read the end of their SSH session as the end of the run.",
          noticed=_GONE),
    Fault("ssh-root-int", "over SSH: the root SIGINTed mid-map (Ctrl-C)",
          functools.partial(root_signalled, signal.SIGINT), docker=True,
          does=_RUN + "SIGINTs the root, as Ctrl-C would, then watches as above.",
          noticed=_GONE),
]
