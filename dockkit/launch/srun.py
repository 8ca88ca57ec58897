"""The srun launcher: inside a SLURM job, one agent per node as one job step, no SSH.

Many HPC sites forbid SSH between compute nodes; SLURM itself starts processes
there. The root (the ``dockkit run`` inside the job) starts one step::

    srun --nodes=N --ntasks=N --ntasks-per-node=1 --nodelist=HOSTS --input=all ...
         python -m dockkit.launch.agent --from-table

``--input=all`` gives every task the same stdin: one line holding each node's agent
configuration (its worker identities, the broker's address as that node reaches it,
the run's secret), from which each agent takes its own by ``SLURMD_NODENAME``. The
secret never goes on a command line. Agents and workers connect straight back to
the broker on the root's address on the route to each node; the broker then listens
beyond loopback, so the run is encrypted with CurveZMQ as direct SSH runs are.

srun's stdin stays open for the run: it is every agent's lifeline. When the root
ends, fails or is killed, the pipe closes, each agent stops its workers, and the
step ends; nothing is left on any node.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from dockkit.errors import ConfigError, LaunchError
from dockkit.launch.allocation import Allocation, detect
from dockkit.launch.base import Launcher, new_run_id
from dockkit.launch.commands import remote_command
from dockkit.runtime.protocol import AgentConfig, WorkerConfig, tcp_url

POLL = 0.05  # s between looks at the broker while agents connect back
OPTIONS = ("python", "path", "env", "prolog", "external_hostname", "allow_missing_hosts",
           "connect_timeout", "srun")


def in_slurm_job(environ=None) -> bool:
    """Whether this process runs inside a SLURM allocation (sbatch, salloc or srun)."""
    return bool((os.environ if environ is None else environ).get("SLURM_JOB_ID"))


def job_allocation() -> Allocation:
    """The nodes and slots of the SLURM job this process runs in.

    Raises:
        ConfigError: the job names no nodes (no ``SLURM_JOB_NODELIST``).
        AllocationError: SLURM's variables are malformed.
    """
    allocation = detect()
    if allocation is None or allocation.scheduler != "SLURM":
        raise ConfigError("SLURM_JOB_NODELIST is not set in this SLURM job, so srun has no nodes to "
                          "start workers on: run inside a job that has nodes (sbatch or salloc), "
                          "or give --hosts/--hostfile")
    return allocation


def route_address(host: str) -> str:
    """This machine's address on its route to ``host``; no packet is sent.

    Raises:
        LaunchError: ``host`` does not resolve or has no route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
        except OSError as exc:
            raise LaunchError(f"node {host!r} cannot be reached from this machine: {exc}") from None
        return probe.getsockname()[0]


def srun_version(srun: str) -> tuple[int, ...]:
    """``srun --version``'s ``slurm 22.05.8`` as ``(22, 5, 8)``; ``()`` when it can't be read."""
    try:
        out = subprocess.run([srun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(part) for part in match.groups() if part is not None) if match else ()


def step_command(srun: str, hosts: list[str], agent: str, version: tuple[int, ...]) -> list[str]:
    """The srun command line of the agents' step: one task per node, stdin to every task."""
    # --cpu-bind=none: a task of one CPU would otherwise pin every worker of its node to it
    command = [srun, f"--nodes={len(hosts)}", f"--ntasks={len(hosts)}", "--ntasks-per-node=1",
               f"--nodelist={','.join(hosts)}", "--input=all", "--kill-on-bad-exit=0",
               "--cpu-bind=none", "--job-name=dockkit-agents", "--quiet"]
    # since 20.11 a step gets its CPUs exclusively: without --overlap the agents' step
    # would wait for the CPUs the batch script's own step holds. An unknown version gets
    # it too: every SLURM still supported is 20.11 or later.
    if version >= (20, 11) or not version:
        command.append("--overlap")
    return [*command, "sh", "-c", agent]


class SrunLauncher(Launcher):
    """Starts one agent per node of the SLURM allocation as one ``srun`` step; stops it.

    A launcher in the shape of :mod:`dockkit.launch.base`.

    Args:
        hosts, hostfile: the nodes (``host*count`` words); default: the allocation's.
        workers: the total ``-n``, spread as over SSH hosts.
        python: the interpreter on the nodes (default: this one's path: HPC nodes
            share their file systems).
        path: working directory on the nodes (default: this one).
        env: environment variables for the workers.
        prolog: shell code each node runs before its agent (e.g. ``module load python``).
        external_hostname: the address the nodes reach this machine on (default: this
            machine's address on the route to each node).
        allow_missing_hosts: go on with the nodes whose agents connected.
        connect_timeout: seconds allowed for every agent to connect back.
        srun: the srun command.

    Raises:
        ConfigError: not inside a SLURM job, no srun, or no nodes (no hosts given and no
            ``SLURM_JOB_NODELIST``).
    """

    wait_at_start = True

    def __init__(self, *, hosts=None, hostfile=None, workers=None, python=None, path=None, env=None,
                 prolog=None, external_hostname=None, allow_missing_hosts=False, connect_timeout=30.0,
                 srun="srun"):
        from dockkit.launch.hosts import distribute, read_hosts

        if not in_slurm_job():
            raise ConfigError("the srun launcher runs inside a SLURM job (sbatch or salloc); "
                              "outside one, give --hosts and use SSH")
        self.srun = shutil.which(srun)
        if self.srun is None:
            raise ConfigError(f"no {srun!r} on PATH inside this SLURM job: load SLURM's tools "
                              "(e.g. `module load slurm`) or use --launcher ssh")
        if not hosts and not hostfile:
            hosts = job_allocation().host_words(workers)
        self.rows = [(spec.host, count) for spec, count in distribute(read_hosts(hosts, hostfile), workers)]
        if len({host for host, _ in self.rows}) != len(self.rows):
            raise ConfigError("the srun launcher starts one agent per node: name each node once "
                              "(host*count)")
        self.total_workers = sum(count for _, count in self.rows)
        self.external_hostname = external_hostname
        self.bind_address = "0.0.0.0"  # every node connects back on its own route
        self.python = python or sys.executable
        self.path = path
        self.env = dict(env or {})
        self.prolog = prolog
        self.allow_missing_hosts = allow_missing_hosts
        self.connect_timeout = connect_timeout
        self.process: subprocess.Popen | None = None
        self._run_id = new_run_id()
        self._stopping = False

    def prepare(self) -> None:
        """Nothing to begin before the broker exists."""

    def _identities(self, index: int, host: str, count: int) -> list[tuple[str, str]]:
        return [(f"{host}:w{i}", f"{self._run_id}/{index}/w{i}") for i in range(count)]

    def start(self, broker, config: WorkerConfig) -> None:
        """Start the step and wait until every node's agent connected back.

        Raises:
            LaunchError: srun failed, or a node's agent did not connect in time (unless
                ``allow_missing_hosts`` and some did).
        """
        table = {}
        for index, (host, count) in enumerate(self.rows):
            address = tcp_url(self.external_hostname or route_address(host), broker.port)
            specs = self._identities(index, host, count)
            table[host] = AgentConfig(config.replace(address=address, host=host, cwd=self.path or config.cwd),
                                      identity=f"{self._run_id}/{index}/agent", workers=specs, env=self.env)
            broker.expect(host, [identity for _, identity in specs])
        agent = remote_command(self.python, ["dockkit.launch.agent", "--from-table"],
                               cwd=self.path or config.cwd, prolog=self.prolog)
        command = step_command(self.srun, [host for host, _ in self.rows], agent, srun_version(self.srun))
        print(f"dockkit: starting {self.total_workers} workers on {len(self.rows)} node(s) "
              f"with srun", file=sys.stderr)
        try:
            # its own session: the terminal's Ctrl-C is the root's to handle, not srun's
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                            start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"cannot start srun: {exc}") from None
        threading.Thread(target=_relay, args=(self.process.stderr,), daemon=True,
                         name="dockkit-srun-stderr").start()
        self.process.stdin.write(AgentConfig.table_to_json(table))
        self.process.stdin.flush()
        threading.Thread(target=self._watch_step, args=(broker,), daemon=True,
                         name="dockkit-srun-step").start()
        self._await_connect_back(broker)

    def _await_connect_back(self, broker) -> None:
        agents = {host: f"{self._run_id}/{index}/agent".encode()
                  for index, (host, _) in enumerate(self.rows)}
        deadline = time.monotonic() + self.connect_timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            if broker.connected(list(agents.values())) == len(agents):
                return
            time.sleep(POLL)
        missing = [host for host, identity in agents.items() if not broker.connected([identity])]
        if not missing:
            return
        status = self.process.poll()
        why = (f"the srun step ended with status {status} (its output is above)" if status is not None
               else f"their agents did not connect back within {self.connect_timeout:g} s; check that "
                    "the nodes reach this machine (or pass --external-hostname)")
        if not self.allow_missing_hosts or len(missing) == len(agents):
            self.stop()
            raise LaunchError(f"{len(missing)} of {len(agents)} node(s) could not start workers: "
                              f"{', '.join(missing)}: {why}",
                              failures={host: why for host in missing})
        for index, (host, count) in enumerate(self.rows):
            if host in missing:
                print(f"dockkit: going on without node {host}: {why}", file=sys.stderr)
                for _, identity in self._identities(index, host, count):
                    broker.report_exit(identity, f"not started: {why}")

    def _watch_step(self, broker) -> None:
        """A step that ends before stop() took every agent with it: say so at once."""
        status = self.process.wait()
        if self._stopping:
            return
        reason = f"lost: the srun step of the agents ended (status {status})"
        print(f"dockkit: {reason}", file=sys.stderr)
        for index, (host, count) in enumerate(self.rows):
            for _, identity in self._identities(index, host, count):
                broker.report_exit(identity, reason)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the agents' stdin (each stops its workers), then end the step. Idempotent."""
        self._stopping = True
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        for signum, wait in ((None, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, None)):
            if signum is not None:
                try:
                    process.send_signal(signum)  # srun passes SIGTERM on to every task
                except ProcessLookupError:
                    return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _relay(stream) -> None:
    """srun's stderr (the agents' and workers' own among it) to ours, without srun's notice
    that ``--cpu-bind=none`` has nothing to undo where SLURM binds no CPUs."""
    for line in iter(stream.readline, b""):
        if b"lacks support for cpu binding" not in line:
            sys.stderr.write(line.decode(errors="replace"))
            sys.stderr.flush()
