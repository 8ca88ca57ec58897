"""The SSH launcher: one agent per host, checked before any task runs, stopped at the end.

Start-up goes through three gates, and a host that fails one is named in a
per-host status table before any task is sent:

1. SSH: reachable, host key known, key accepted (``dockkit.launch.ssh.connection``).
2. The probe: the same shell command the agent will run (``python_command``: same
   interpreter, working directory and prolog) reports Python, dockkit and
   cloudpickle versions, and whether the script is there.
3. Connect-back: the host's agent and workers must reach the broker. Without
   ``--tunnel`` they connect to the advertised address, which a host behind a
   firewall or NAT may not reach; that shows here, not as a hang later.

By default any failure stops the run (:class:`~dockkit.errors.LaunchError`);
``allow_missing_hosts`` goes on with the hosts that came up.

The launcher hands the executor its broker's bind address and gets the broker in
:meth:`SSHLauncher.start`; it never imports the executor (layers: runtime →
launchers).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass

from dockkit.errors import DockkitError, LaunchError
from dockkit.launch.base import Launcher, new_run_id
from dockkit.launch.commands import python_command, remote_command
from dockkit.launch.warm import AGENT_MODULE, client_args
from dockkit.runtime.protocol import AgentConfig, WorkerConfig, tcp_url

PROBE = ("import json, os, sys; import dockkit, cloudpickle, zmq; "
         "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'executable': sys.executable, "
         "'dockkit': dockkit.__version__, 'cloudpickle': cloudpickle.__version__, "
         "'main': (os.path.isfile(sys.argv[1]) if len(sys.argv) > 1 else None)}))")
POLL = 0.05  # s between looks at the broker while hosts connect back


def local_versions() -> dict:
    """What every host must match: Python major.minor, dockkit and cloudpickle versions."""
    import cloudpickle

    from dockkit.version import __version__

    return {"python": "%d.%d" % sys.version_info[:2], "dockkit": __version__,
            "cloudpickle": cloudpickle.__version__}


def bind_address(external_hostname: str | None, tunnel: bool) -> str:
    """The address the broker binds for this launch.

    With a tunnel, loopback: only sshd's forwards connect. With an advertised
    address, that address if this machine has it (so the broker listens on that
    network only); if it is not local (a NAT or port-forwarding router in front of
    this machine) every interface, ``0.0.0.0``. Without either, every interface,
    since each host connects back on its own route.
    """
    if tunnel:
        return "127.0.0.1"
    if not external_hostname:
        return "0.0.0.0"
    try:
        infos = socket.getaddrinfo(external_hostname, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:  # a name only the hosts resolve: they reach us through something else
        return "0.0.0.0"
    for *_, (address, _port) in infos:
        with socket.socket(socket.AF_INET) as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
            return address
    return "0.0.0.0"


@dataclass
class HostStatus:
    """One host's row of the deployment table."""

    spec: object
    workers: int
    index: int = 0
    state: str = "pending"
    detail: str = ""
    connection: object = None
    process: object = None
    address: str = ""  # where its workers connect
    announced: bool = False  # the broker was told to expect its workers

    def identities(self, run_id: str) -> list[tuple[str, str]]:
        """(name, identity) of its workers: names for output, identities for the broker."""
        return [(f"{self.spec.host}:w{i}", f"{run_id}/{self.index}/w{i}") for i in range(self.workers)]


class SSHLauncher(Launcher):
    """Starts one agent per SSH host over one connection each; stops them all.

    A launcher in the shape of :mod:`dockkit.launch.base`; the executor waits for
    its workers at start (``wait_at_start``).

    Args:
        hosts: host specs (strings ``[user@]host[:N][*count]``, see :mod:`dockkit.launch.hosts`, or HostSpec).
        hostfile: a file of ``host [count]`` lines.
        workers: the total ``-n``; spread over the hosts by :func:`dockkit.launch.hosts.distribute`.
        tunnel: workers reach the broker through a reverse SSH tunnel on their own loopback.
        external_hostname: the address workers connect to without a tunnel; the broker
            binds it when this machine has it, else every interface (see :func:`bind_address`).
        python: the interpreter on the hosts (default ``python3``).
        path: working directory on the hosts (default: this one, if it exists there).
        env: environment variables for the workers.
        prolog: shell code run before the agent starts (e.g. activating a virtualenv).
        ssh_config, known_hosts, accept_new_host_keys: how hosts are reached and trusted.
        allow_missing_hosts: go on with the hosts that came up instead of failing.
        check_hosts: run gate 2 (the probe); off for hosts known to be identical to
            this one and to hold the script (a dockkit cluster's nodes: one image, the
            directory copied to each), which saves a Python start per host and run.
        connect_timeout: seconds allowed to reach and probe each host, and again for
            its agent to connect back to the broker.
        warm_agents: the hosts are dockkit nodes, whose agents come ready-imported from each
            one's warm agent server (:mod:`dockkit.launch.warm`); a host without one starts
            its agent as usual.
        files: a tar whose members carry their paths from ``/``, sent after each agent's
            configuration for it to unpack before its workers start: a dockkit cluster's
            working directory, which so needs no copy of its own per node. A host named as
            this machine is (its host name) is skipped: the files are here already.
    """

    def __init__(self, *, hosts=None, hostfile=None, workers=None, tunnel=False,
                 external_hostname=None, python=None, path=None, env=None, prolog=None,
                 ssh_config=None, known_hosts=None, accept_new_host_keys=False,
                 allow_missing_hosts=False, connect_timeout=10.0, check_hosts=True, console=None,
                 files: bytes | None = None, warm_agents: bool = False):
        from dockkit.launch.hosts import distribute, read_hosts

        specs = read_hosts(hosts, hostfile)
        self.rows = [HostStatus(spec, count, index)
                     for index, (spec, count) in enumerate(distribute(specs, workers))]
        self.total_workers = sum(row.workers for row in self.rows)
        self.wait_at_start = True
        self.tunnel = tunnel
        self.external_hostname = external_hostname
        self.bind_address = bind_address(external_hostname, tunnel)
        self.python = python or "python3"
        self.path = path
        self.env = dict(env or {})
        self.prolog = prolog
        self.ssh_options = {"ssh_config": ssh_config, "known_hosts": known_hosts,
                            "accept_new_host_keys": accept_new_host_keys,
                            "connect_timeout": connect_timeout}
        self.allow_missing_hosts = allow_missing_hosts
        self.connect_timeout = connect_timeout
        self.check_hosts = check_hosts
        self.files = files or b""
        self.warm_agents = warm_agents
        self._console = console
        self._versions = local_versions()
        self._stopping = False
        self._broker = None
        self._run_id = new_run_id()

    # --- start ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Nothing to begin before the broker exists: hosts are checked in :meth:`start`."""

    def start(self, broker, config: WorkerConfig) -> None:
        """Connect to every host, check it, start its agent and wait for it to connect back.

        Raises:
            LaunchError: a host failed and ``allow_missing_hosts`` is off, or none came up.
        """
        from concurrent.futures import ThreadPoolExecutor

        self._broker = broker
        self._print_plan()
        # Every host at once: its connection, check and agent cost round trips, not CPU here.
        # Each host's agent starts as soon as its own connection is up: its workers connect
        # back while the slower hosts still shake hands (16 nodes: a trivial run 0.1 s shorter).
        with ThreadPoolExecutor(max_workers=min(32, len(self.rows))) as pool:
            list(pool.map(lambda row: self._connect_and_start(row, broker, config), self.rows))
        self._check("could not start workers", broker=broker)
        self._await_connect_back(broker)
        self._check("could not connect back to this machine", broker=broker)

    def _check(self, what: str, *, broker) -> None:
        """Show the table if a host failed; raise unless the run may go on without it."""
        failed = [row for row in self.rows if row.state == "failed"]
        if not failed:
            return
        self._print_status()
        if not self.allow_missing_hosts or not any(row.state in ("ready", "running") for row in self.rows):
            self.stop()
            raise LaunchError(
                f"{len(failed)} of {len(self.rows)} host(s) {what}: "
                + "; ".join(f"{row.spec.label}: {row.detail}" for row in failed)
                + ("" if self.allow_missing_hosts else
                   " (fix them, or pass --allow-missing-hosts to go on without them)"),
                failures={row.spec.label: row.detail for row in failed})
        for row in failed:  # going on without them: the broker must stop waiting for their workers
            row.state = "dropped"
            if row.announced:
                for _, identity in row.identities(self._run_id):
                    broker.report_exit(identity, f"not started: {row.detail}")
            self._close(row)

    def _connect(self, row: HostStatus, main: str | None) -> None:
        from dockkit.launch.ssh.connection import SSHConnection

        try:
            row.connection = SSHConnection(row.spec, **self.ssh_options).connect()
            if not self.check_hosts:  # hosts known to be identical (a dockkit cluster's)
                row.state, row.detail = "ready", "not checked (--no-host-check)"
                return
            probe = python_command(self.python, ["-c", PROBE, *([main] if main else [])],
                                   cwd=self.path, prolog=self.prolog)
            status, out, err = row.connection.run(probe, timeout=self.connect_timeout)
            if status != 0:
                row.state, row.detail = "failed", _probe_failure(self.python, self.path, self.prolog, err)
                return
            remote = json.loads(out.decode().strip().splitlines()[-1])
            mismatch = [f"{k} {remote.get(k)} on this host vs {v} on the root"
                        for k, v in self._versions.items() if remote.get(k) != v]
            if mismatch:
                row.state = "failed"
                row.detail = ("version mismatch: " + ", ".join(mismatch)
                              + " — install the same versions on every host")
                return
            if remote.get("main") is False:
                row.state = "failed"
                row.detail = (f"the script {main} is not on this host; every host needs the "
                              "script at the same path (or use `dockkit run` on a cluster)")
                return
            row.state, row.detail = "ready", f"Python {remote['python']}"
        except DockkitError as exc:
            row.state, row.detail = "failed", str(exc)
        except Exception as exc:  # a probe answer we cannot read is a failed host, not a crash
            row.state, row.detail = "failed", f"{type(exc).__name__}: {exc}"

    def _connect_and_start(self, row: HostStatus, broker, config: WorkerConfig) -> None:
        self._connect(row, config.main)
        if row.state == "ready":
            self._start_agent(row, broker, config)

    def _start_agent(self, row: HostStatus, broker, config: WorkerConfig) -> None:
        try:
            self._spawn_agent(row, broker, config)
        except DockkitError as exc:  # a connection that broke since the check: a failed host
            row.state, row.detail = "failed", str(exc)

    def _spawn_agent(self, row: HostStatus, broker, config: WorkerConfig) -> None:
        if self.tunnel:
            row.address = tcp_url("127.0.0.1", row.connection.forward_remote_port(0, local_port=broker.port))
        else:
            row.address = tcp_url(self.external_hostname or row.connection.local_address(), broker.port)
        specs = row.identities(self._run_id)
        files = b"" if row.spec.host == socket.gethostname() else self.files
        agent_config = AgentConfig(
            config.replace(address=row.address, host=row.spec.host, cwd=self.path or config.cwd),
            identity=f"{self._run_id}/{row.index}/agent", workers=specs, env=self.env, files=len(files))
        if self.warm_agents:
            command = python_command(self.python, client_args(AGENT_MODULE), cwd=self.path, prolog=self.prolog)
        else:
            command = remote_command(self.python, ["dockkit.launch.agent"], cwd=self.path, prolog=self.prolog)
        broker.expect(row.spec.host, [identity for _, identity in specs])
        row.announced = True
        row.process = row.connection.start(
            command, stdin_data=agent_config.to_json() + files,
            on_stdout=_echo(sys.stdout), on_stderr=_echo(sys.stderr))
        row.state = "running"
        threading.Thread(target=self._watch_agent, args=(row, broker, specs), daemon=True,
                         name=f"dockkit-agent-{row.spec.host}").start()

    def _await_connect_back(self, broker) -> None:
        """Wait until each host's agent and workers reached the broker, or it can't.

        A host whose agent never said hello within ``connect_timeout`` (or ended
        first) cannot reach the broker's address: it is marked failed, with the fix.
        """
        rows = [row for row in self.rows if row.state == "running"]
        agents = {row.index: f"{self._run_id}/{row.index}/agent".encode() for row in rows}
        workers = {row.index: [i.encode() for _, i in row.identities(self._run_id)] for row in rows}
        deadline = time.monotonic() + self.connect_timeout
        while True:
            done = [row for row in rows if row.process.exit_status is not None
                    or broker.connected(workers[row.index]) == len(workers[row.index])]
            if len(done) == len(rows) or time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        for row in rows:
            live = broker.connected(workers[row.index])
            if broker.connected([agents[row.index]]) or live:
                row.detail = f"{row.detail}; {live} of {row.workers} workers connected"
                continue
            row.state = "failed"
            status = row.process.exit_status
            fix = ("check that this machine's firewall lets it in" if self.tunnel else
                   "use --tunnel, or --external-hostname with an address the hosts can reach")
            if status is None:
                row.detail = f"its workers cannot reach {row.address}; {fix}"
            else:
                row.detail = (f"its agent ended with status {status} before it reached {row.address} "
                              f"(its output is above); if that address is wrong, {fix}")

    def _watch_agent(self, row: HostStatus, broker, specs) -> None:
        """An agent (or its SSH connection) that ends takes its workers with it: say so at once."""
        status = row.process.wait()
        if self._stopping or row.state != "running":
            return
        reason = f"lost: the agent on {row.spec.label} ended (status {status})"
        print(f"dockkit: host {row.spec.label} {reason}", file=sys.stderr)
        for _, identity in specs:
            broker.report_exit(identity, reason)

    # --- stop ----------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Close every agent's stdin (it stops its workers), then kill what remains. Idempotent.

        Every host gets EOF first and then one shared deadline, so stopping N hosts
        takes about as long as stopping the slowest, not N times as long.
        """
        self._stopping = True
        rows = [row for row in self.rows if row.process is not None or row.connection is not None]
        # A host that stopped answering (paused, frozen, cut off) would hold the stop for the
        # whole timeout and then for the remote kill's: its connection is dropped at once, and
        # its agent stops on its own when it wakes to find its SSH session gone.
        silent = self._broker.unresponsive_hosts() if self._broker is not None else set()
        for row in [row for row in rows if row.spec.host in silent]:
            rows.remove(row)
            row.process, connection, row.connection = None, row.connection, None
            if connection is not None:
                connection.drop()
        for row in rows:
            if row.process is not None:
                try:
                    row.process.stdin.close()
                except Exception:  # a dead connection: the host sees EOF on its own
                    pass
        deadline = time.monotonic() + timeout
        for row in rows:
            if row.process is not None:
                try:
                    row.process.wait(max(0.0, deadline - time.monotonic()))
                except Exception:  # still running: closing the connection kills it
                    pass
        closers = [threading.Thread(target=self._close, args=(row,), daemon=True) for row in rows]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    @staticmethod
    def _close(row: HostStatus) -> None:
        """Kill the host's agent if it still runs (its process group), then disconnect."""
        process, row.process = row.process, None
        if process is not None and process.exit_status is None:
            process.kill()
        connection, row.connection = row.connection, None
        if connection is not None:
            connection.close()

    # --- output ----------------------------------------------------------------------------
    def _console_out(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def _print_plan(self) -> None:
        from rich.table import Table

        console = self._console_out()
        console.print(f"Deploying {self.total_workers} workers over {len(self.rows)} hosts")
        table = Table()
        table.add_column("host")
        table.add_column("workers", justify="right")
        for row in self.rows:
            table.add_row(str(row.spec.label), str(row.workers))
        table.add_row(f"{socket.gethostname()} (this machine)", "root", style="dim")
        console.print(table)

    def _print_status(self) -> None:
        from rich.table import Table

        table = Table(title="Host status", title_justify="left")
        for column in ("host", "workers", "state", "detail"):
            table.add_column(column, overflow="fold")
        for row in self.rows:
            style = "green" if row.state in ("ready", "running") else "red"
            table.add_row(row.spec.label, str(row.workers), f"[{style}]{row.state}[/]", row.detail)
        self._console_out().print(table)


def _probe_failure(python: str, path: str | None, prolog: str | None, stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    if "No module named" in text:
        module = text.rsplit("No module named", 1)[1].strip(" '\"\n")
        return (f"{python} on this host lacks the module {module!r}: install dockkit there "
                f"(pip install dockkit) or pass --python / --prolog to use an environment that has it")
    if path and "cd:" in text:
        return f"no directory {path!r} on this host (--path): create it or pass another --path"
    if ("not found" in text or "No such file" in text) and python.rsplit("/", 1)[-1] in text:
        return f"no Python at {python!r} on this host: install one or pass --python PATH"
    what = "the --prolog or the Python check" if prolog else "the Python check"
    return f"{what} failed: {text.splitlines()[-1] if text else 'no output'}"


def _echo(stream):
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return write
