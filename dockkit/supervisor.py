"""Starting and supervising the worker processes of one host.

The root uses it for local workers; a host agent uses it on a remote host. It
starts each worker with ``python -m dockkit.worker``, writes the worker's JSON
configuration (with the run's secret) to its stdin and keeps that pipe open: a
worker exits as soon as the pipe closes, so closing it is the polite stop and
no worker outlives its supervisor. One thread relays every worker's
stdout/stderr line by line with a ``[name]`` prefix and reports each exit,
with its status, the moment it happens (no polling).
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


@dataclass(eq=False)
class WorkerProcess:
    name: str
    identity: str
    process: subprocess.Popen
    open_streams: int = 2


def describe_exit(returncode: int) -> str:
    """'exited with status 3' or 'was killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class WorkerGroup:
    """N worker processes on this host.

    Args:
        workers: list of (name, identity) pairs, one per worker to start.
        on_exit: called from the monitor thread as ``on_exit(identity, reason)``.
        python: the interpreter to run workers with.
        env: extra environment variables; cwd: their working directory.
        prolog: shell code run before each worker starts (e.g. activating a virtualenv).
        stdout, stderr: where relayed output goes (binary streams).
    """

    def __init__(self, workers, *, on_exit, python: str = sys.executable,
                 env: dict | None = None, cwd: str | None = None, prolog: str | None = None,
                 stdout=None, stderr=None):
        self._specs = list(workers)
        self._cwd = cwd
        self._prolog = prolog
        self._on_exit = on_exit
        self._python = python
        self._env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._out = stdout or sys.stdout.buffer
        self._err = stderr or sys.stderr.buffer
        self._selector = selectors.DefaultSelector()
        self._procs: list[WorkerProcess] = []
        self._thread = threading.Thread(target=self._monitor, name="dockkit-workers", daemon=True)
        self._stopping = False
        self._lock = threading.Lock()

    def spawn(self) -> "WorkerGroup":
        """Start the processes; they import while the caller sets up (see :meth:`start`)."""
        for name, identity in self._specs:
            argv = [self._python, "-m", "dockkit.worker"]
            if self._prolog:
                argv = ["/bin/sh", "-c", f"{{ {self._prolog}\n}} && exec {shlex.join(argv)}"]
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self._env, cwd=self._cwd, close_fds=True)
            proc = WorkerProcess(name, identity, process)
            self._procs.append(proc)
            prefix = f"[{name}] ".encode()
            self._selector.register(process.stdout, selectors.EVENT_READ, (proc, prefix, self._out, [b""]))
            self._selector.register(process.stderr, selectors.EVENT_READ, (proc, prefix, self._err, [b""]))
        return self

    def start(self, config: dict) -> "WorkerGroup":
        """Give every worker its configuration (spawning first if needed) and supervise them.

        Args:
            config: what every worker gets (broker address, secret, ...).
        """
        if not self._procs:
            self.spawn()
        for proc in self._procs:
            line = json.dumps({**config, "name": proc.name, "identity": proc.identity}) + "\n"
            try:
                proc.process.stdin.write(line.encode())
                proc.process.stdin.flush()
            except BrokenPipeError:
                pass  # it died at once; the monitor reports its exit
        self._thread.start()
        return self

    @property
    def identities(self) -> list[str]:
        return [identity for _, identity in self._specs]

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self._procs]

    def _monitor(self) -> None:
        while self._selector.get_map():
            for key, _ in self._selector.select(timeout=1.0):
                proc, prefix, sink, partial = key.data
                chunk = os.read(key.fd, 65536)
                if chunk:
                    self._relay(prefix, sink, partial, chunk)
                    continue
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                if partial[0]:
                    self._relay(prefix, sink, partial, b"\n")
                proc.open_streams -= 1
                if proc.open_streams == 0:
                    returncode = proc.process.wait()
                    if not self._stopping:
                        self._on_exit(proc.identity, describe_exit(returncode))

    def _relay(self, prefix: bytes, sink, partial: list, chunk: bytes) -> None:
        data = partial[0] + chunk
        *lines, partial[0] = data.split(b"\n")
        if lines:
            text = b"".join(prefix + line + b"\n" for line in lines)
            with self._lock:
                try:
                    sink.write(text)
                    sink.flush()
                except (OSError, ValueError):
                    pass  # our own output is gone; keep supervising

    def stop(self, timeout: float = 5.0) -> None:
        """Close every worker's stdin (they exit), then terminate, then kill. Idempotent."""
        self._stopping = True
        for proc in self._procs:
            try:
                proc.process.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for proc in self._procs:
                left = max(0.0, deadline - time.monotonic())
                try:
                    proc.process.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    proc.process.send_signal(signum)
            deadline = time.monotonic() + 2.0
        for proc in self._procs:
            proc.process.wait()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "WorkerGroup":
        return self.spawn()

    def __exit__(self, *exc) -> None:
        self.stop()
