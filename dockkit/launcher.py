"""Running a user's script: the root part here, its tasks on local or SSH workers.

``run_script`` is what ``dockkit run`` and ``python -m dockkit`` do: it runs the
script as ``__main__`` in this process, with ``dockkit.futures`` wired to an
executor whose workers import the same script under a non-main name. The exit
status is the script's: its ``sys.exit`` code, 1 on an uncaught exception, 130
on Ctrl-C; every worker is stopped before returning.
"""

from __future__ import annotations

import json
import os
import runpy
import shlex
import socket
import sys
import threading
import traceback
from dataclasses import dataclass

from .context import current
from .errors import ConfigError, LaunchError
from .executor import configure_default, shutdown_default


def run_script(script: str, argv=(), *, workers: int | None = None, progress: bool = False,
               **executor_options) -> int:
    """Run ``script`` with ``argv`` on dockkit workers and return its exit status.

    Args:
        script: path of the Python script to run as ``__main__``.
        argv: the script's own arguments.
        workers: total number of worker processes (``-n``).
        progress: show progress bars for ``futures.map`` on a terminal.
        **executor_options: hosts, tunnel, max_retries … for :class:`dockkit.Executor`.

    Raises:
        ConfigError: the script does not exist.
    """
    if not os.path.isfile(script):
        raise ConfigError(f"script not found: {script!r} (run it from the directory that holds it, "
                          "or give its path)")
    # every worker takes part from the first task on, as `-n N` promises
    configure_default(workers=workers, main=script, argv=list(argv), wait_for_workers=True,
                      **executor_options)
    current().progress = progress
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_status(exc.code)
    except KeyboardInterrupt:
        print("dockkit: interrupted; stopping every worker", file=sys.stderr)
        return 130
    except BaseException:  # the script's own failure: show it as Python would, exit 1
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()
        shutdown_default(wait=False)
        configure_default()


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# --- SSH hosts ----------------------------------------------------------------------------------
PROBE = ("import json, os, sys; import dockkit, cloudpickle, zmq; "
         "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'executable': sys.executable, "
         "'dockkit': dockkit.__version__, 'cloudpickle': cloudpickle.__version__, "
         "'main': (os.path.isfile(sys.argv[1]) if len(sys.argv) > 1 else None)}))")


def local_versions() -> dict:
    """What every host must match: Python major.minor, dockkit and cloudpickle versions."""
    import cloudpickle

    from . import __version__

    return {"python": "%d.%d" % sys.version_info[:2], "dockkit": __version__,
            "cloudpickle": cloudpickle.__version__}


@dataclass
class HostStatus:
    """One host's row of the deployment table."""

    spec: object
    workers: int
    state: str = "pending"
    detail: str = ""
    connection: object = None
    process: object = None


class SSHLauncher:
    """Starts one agent per SSH host over one connection each; stops them all.

    Args:
        hosts: host specs (strings ``[user@]host[:port][*count]`` or HostSpec).
        hostfile: a file of ``host [count]`` lines.
        workers: the total ``-n``; spread over the hosts by :func:`dockkit.hosts.distribute`.
        tunnel: workers reach the broker through a reverse SSH tunnel on their own loopback.
        external_hostname: the address workers connect to without a tunnel.
        python: the interpreter on the hosts (default ``python3``).
        path: working directory on the hosts (default: this one, if it exists there).
        env: environment variables for the workers.
        prolog: shell code run before the agent starts (e.g. activating a virtualenv).
        ssh_config, known_hosts, accept_new_host_keys: how hosts are reached and trusted.
        allow_missing_hosts: go on with the hosts that came up instead of failing.
        connect_timeout: seconds allowed to reach and probe each host.
    """

    def __init__(self, *, hosts=None, hostfile=None, workers=None, tunnel=False,
                 external_hostname=None, python=None, path=None, env=None, prolog=None,
                 ssh_config=None, known_hosts=None, accept_new_host_keys=False,
                 allow_missing_hosts=False, connect_timeout=10.0, console=None):
        from .hosts import distribute, parse_hostfile, parse_hosts

        specs = parse_hosts(hosts or [])
        if hostfile:
            specs += parse_hostfile(hostfile)
        self.rows = [HostStatus(spec, count) for spec, count in distribute(specs, workers)]
        self.total_workers = sum(row.workers for row in self.rows)
        self.tunnel = tunnel
        self.external_hostname = external_hostname
        self.bind_address = "127.0.0.1" if tunnel else "0.0.0.0"
        self.python = python or "python3"
        self.path = path
        self.env = dict(env or {})
        self.prolog = prolog
        self.ssh_options = {"ssh_config": ssh_config, "known_hosts": known_hosts,
                            "accept_new_host_keys": accept_new_host_keys,
                            "connect_timeout": connect_timeout}
        self.allow_missing_hosts = allow_missing_hosts
        self.connect_timeout = connect_timeout
        self._console = console
        self._versions = local_versions()
        self._stopping = False

    # --- start ---------------------------------------------------------------------------
    def start(self, broker, config: dict, *, run_id: str) -> None:
        """Connect to every host, check it, and start its agent and workers.

        Raises:
            LaunchError: a host failed and ``allow_missing_hosts`` is off, or none came up.
        """
        from concurrent.futures import ThreadPoolExecutor

        self._print_plan()
        with ThreadPoolExecutor(max_workers=min(32, len(self.rows))) as pool:
            list(pool.map(lambda row: self._connect(row, config.get("main")), self.rows))
        failed = [row for row in self.rows if row.state != "ready"]
        if failed and (not self.allow_missing_hosts or len(failed) == len(self.rows)):
            self._print_status()
            self.stop()
            raise LaunchError(
                f"{len(failed)} of {len(self.rows)} host(s) could not start workers: "
                + "; ".join(f"{row.spec.label}: {row.detail}" for row in failed)
                + ("" if self.allow_missing_hosts else
                   " (fix them, or pass --allow-missing-hosts to go on without them)"),
                failures={row.spec.label: row.detail for row in failed})
        if failed:
            self._print_status()
        for index, row in enumerate(self.rows):
            if row.state == "ready":
                self._start_agent(index, row, broker, config, run_id)

    def _connect(self, row: HostStatus, main: str | None) -> None:
        from .errors import DockkitError
        from .ssh import SSHConnection

        try:
            row.connection = SSHConnection(row.spec, **self.ssh_options).connect()
            probe = f"{shlex.quote(self.python)} -c {shlex.quote(PROBE)}"
            if main:
                probe += " " + shlex.quote(main)
            if self.prolog:
                probe = f"{{ {self.prolog}\n}} && {probe}"
            status, out, err = row.connection.run(probe, timeout=self.connect_timeout)
            if status != 0:
                row.state, row.detail = "failed", _probe_failure(self.python, err)
                return
            remote = json.loads(out.decode().strip().splitlines()[-1])
            mismatch = [f"{k} {remote[k]} here vs {v} on the root" for k, v in self._versions.items()
                        if remote.get(k) != v]
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

    def _start_agent(self, index: int, row: HostStatus, broker, config: dict, run_id: str) -> None:
        from .commands import remote_command

        host = row.spec.host
        if self.tunnel:
            port = row.connection.forward_remote_port(0, local_port=broker.port)
            address = f"tcp://127.0.0.1:{port}"
        else:
            advertised = self.external_hostname or row.connection.local_address()
            address = f"tcp://{advertised}:{broker.port}"
        specs = [(f"{host}:w{i}", f"{run_id}/{index}/w{i}") for i in range(row.workers)]
        agent_config = {**config, "address": address, "identity": f"{run_id}/{index}/agent",
                        "host": host, "worker_specs": specs, "env": self.env}
        if self.path:
            agent_config["cwd"] = self.path
        command = remote_command(self.python, ["dockkit.agent"], cwd=self.path, prolog=self.prolog)
        broker.expect(host, [identity for _, identity in specs])
        row.process = row.connection.start(
            command, stdin_data=(json.dumps(agent_config) + "\n").encode(),
            on_stdout=_echo(sys.stdout), on_stderr=_echo(sys.stderr))
        row.state = "running"
        threading.Thread(target=self._watch_agent, args=(row, broker, specs), daemon=True,
                         name=f"dockkit-agent-{host}").start()

    def _watch_agent(self, row: HostStatus, broker, specs) -> None:
        """An agent (or its SSH connection) that ends takes its workers with it: say so at once."""
        process = row.process
        status = process.wait()
        if self._stopping:
            return
        reason = f"lost: the agent on {row.spec.label} ended (status {status})"
        for _, identity in specs:
            broker.report_exit(identity, reason)

    # --- stop ----------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        """Close every agent's stdin (it stops its workers), then kill what remains. Idempotent."""
        self._stopping = True
        for row in self.rows:
            if row.process is not None:
                try:
                    row.process.stdin.close()
                except Exception:  # a dead connection: the host sees EOF on its own
                    pass
        for row in self.rows:
            if row.process is not None:
                try:
                    row.process.wait(timeout)
                except Exception:
                    row.process.kill()
                row.process = None
            if row.connection is not None:
                row.connection.close()
                row.connection = None

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
            table.add_column(column)
        for row in self.rows:
            style = "green" if row.state in ("ready", "running") else "red"
            table.add_row(row.spec.label, str(row.workers), f"[{style}]{row.state}[/]", row.detail)
        self._console_out().print(table)


def _probe_failure(python: str, stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    if "No module named" in text:
        module = text.rsplit("No module named", 1)[1].strip(" '\"\n")
        return (f"{python} on this host lacks the module {module!r}: install dockkit there "
                f"(pip install dockkit) or pass --python / --prolog to use an environment that has it")
    if "not found" in text or "No such file" in text:
        return f"no Python at {python!r} on this host: install one or pass --python PATH"
    return f"the Python check failed: {text.splitlines()[-1] if text else 'no output'}"


def _echo(stream):
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return write
