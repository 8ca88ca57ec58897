"""Starting and supervising the worker processes of one host.

The root uses it for local workers; a host agent uses it on a remote host. It
starts each worker with ``python -m dockkit.runtime.worker`` (or, where that is safe, by
forking this process: see :class:`ForkedProcess`), writes the worker's JSON
configuration (with the run's secret) to its stdin and keeps that pipe open: a
worker exits as soon as the pipe closes, so closing it is the polite stop and
no worker outlives its supervisor. One thread relays every worker's
stdout/stderr line by line with a ``[name]`` prefix and reports each exit,
with its status, the moment it happens (no polling).
"""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time

from dockkit.launch.commands import with_prolog
from dockkit.runtime.protocol import WorkerConfig


class WorkerProcess:
    __slots__ = ("name", "identity", "process", "open_streams")

    def __init__(self, name: str, identity: str, process):
        self.name, self.identity, self.process = name, identity, process
        self.open_streams = 2  # stdout and stderr; the exit is reported when both closed


class ForkedProcess:
    """A worker forked from this process, with the part of ``Popen``'s interface we use.

    A fresh interpreter spends about 0.1 s importing what this process already has
    (zmq, cloudpickle, dockkit), which is most of an executor's start-up. Forking is
    only safe while this process has a single thread (no lock can be held by a
    thread that does not exist in the child), so :meth:`WorkerGroup.spawn` forks
    only then, and otherwise, or with ``DOCKKIT_START_METHOD=spawn``, starts a new
    interpreter. A forked worker starts with this process's modules and state, as
    ``multiprocessing``'s fork does, so a root that runs a script (whose workers must
    import it afresh) spawns; a host agent, which never imports the script, forks.
    The child keeps nothing of ours but its three pipes, takes the name
    ``dockkit-worker`` (``ps -o comm``, ``top``), runs the worker's ``main`` and leaves
    with ``os._exit``.
    """

    def __init__(self, *, env: dict, cwd: str | None, inherited_fds: list[int]):
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            try:
                for fd in inherited_fds:  # other workers' pipes: their EOF must not wait for us
                    os.close(fd)
                os.dup2(stdin_r, 0)
                os.dup2(stdout_w, 1)
                os.dup2(stderr_w, 2)
                for fd in (stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w):
                    os.close(fd)
                sys.stdin = open(0, "r", closefd=False)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.environ.update(env)
                if cwd:
                    os.chdir(cwd)
                name_process(WORKER_PROCESS_NAME)
                from dockkit.runtime.worker import main

                main()
            except BaseException:  # report it like a spawned worker would, then leave
                import traceback

                traceback.print_exc()
            finally:
                os._exit(1)
        for fd in (stdin_r, stdout_w, stderr_w):
            os.close(fd)
        self.stdin = open(stdin_w, "wb", buffering=0)
        self.stdout = open(stdout_r, "rb", buffering=0)
        self.stderr = open(stderr_r, "rb", buffering=0)
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    return self.returncode
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


WORKER_PROCESS_NAME = "dockkit-worker"  # what ps -o comm, top and pgrep -x show for a forked worker


def name_process(name: str) -> None:
    """Set this process's name as ps and top show it (Linux; elsewhere a no-op): a forked
    worker keeps its parent's command line, and would otherwise look like its root or agent."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name)
    except OSError:
        pass


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is neither stopped (SIGSTOP, a debugger) nor a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X")
    except FileNotFoundError:
        if os.path.exists("/proc/self/stat"):
            return False  # Linux: the process is gone
    except (OSError, IndexError):
        pass
    try:  # no /proc (macOS): existence is all we can tell
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _can_fork(python: str, prolog: str | None) -> bool:
    return (hasattr(os, "fork") and threading.active_count() == 1 and not prolog
            and os.path.realpath(python) == os.path.realpath(sys.executable)
            and os.environ.get("DOCKKIT_START_METHOD", "fork") != "spawn")


OUT_OF_MEMORY = "was killed by the out-of-memory killer"  # the broker gives up on such a task at once
# Where the kernel counts OOM kills for this process's memory cgroup: v2, then v1.
OOM_COUNTERS = (("/sys/fs/cgroup/memory.events", "oom_kill"),
                ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"))


def oom_kills() -> int | None:
    """How many processes the OOM killer has killed in this cgroup (None where it can't be read).

    Inside a container this is the container's cgroup, whose ``--memory`` limit is the
    one a worker runs into.
    """
    for path, key in OOM_COUNTERS:
        try:
            with open(path) as counters:
                for line in counters:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def describe_exit(returncode: int, *, oom_killed: bool = False) -> str:
    """'exited with status 3', 'was killed by SIGKILL', or the out-of-memory killer's doing."""
    if returncode == -signal.SIGKILL and oom_killed:
        return f"{OUT_OF_MEMORY} (SIGKILL): it went past this host's memory limit"
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
        allow_fork: fork workers from this process where safe (see :class:`ForkedProcess`);
            off when workers must start clean, e.g. to import the user's script afresh.
        stdout, stderr: where relayed output goes (binary streams).
    """

    def __init__(self, workers, *, on_exit, python: str = sys.executable,
                 env: dict | None = None, cwd: str | None = None, prolog: str | None = None,
                 stdout=None, stderr=None, allow_fork: bool = False):
        self._specs = list(workers)
        self._allow_fork = allow_fork
        self._cwd = cwd
        self._prolog = prolog
        self._on_exit = on_exit
        self._python = python
        self._extra_env = {**(env or {}), "PYTHONUNBUFFERED": "1"}
        self._env = {**os.environ, **self._extra_env}
        self._out = stdout or sys.stdout.buffer
        self._err = stderr or sys.stderr.buffer
        self._selector = selectors.DefaultSelector()
        self._procs: list[WorkerProcess] = []
        self._thread = threading.Thread(target=self._monitor, name="dockkit-workers", daemon=True)
        self._stopping = False
        self._lock = threading.Lock()
        self._oom_kills = oom_kills()  # a rise at a worker's SIGKILL means the OOM killer did it

    def spawn(self) -> "WorkerGroup":
        """Start the processes; they import while the caller sets up (see :meth:`start`)."""
        fork = self._allow_fork and _can_fork(self._python, self._prolog)
        for name, identity in self._specs:
            if fork:
                ours = [f.fileno() for p in self._procs
                        for f in (p.process.stdin, p.process.stdout, p.process.stderr)]
                process = ForkedProcess(env=self._extra_env, cwd=self._cwd, inherited_fds=ours)
            else:
                argv = [self._python, "-m", "dockkit.runtime.worker"]
                if self._prolog:
                    argv = ["/bin/sh", "-c", with_prolog(self._prolog, f"exec {shlex.join(argv)}")]
                process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=self._env, cwd=self._cwd, close_fds=True)
            proc = WorkerProcess(name, identity, process)
            self._procs.append(proc)
            prefix = f"[{name}] ".encode()
            self._selector.register(process.stdout, selectors.EVENT_READ, (proc, prefix, self._out, [b""]))
            self._selector.register(process.stderr, selectors.EVENT_READ, (proc, prefix, self._err, [b""]))
        return self

    def start(self, config: WorkerConfig) -> "WorkerGroup":
        """Give every worker its configuration (spawning first if needed) and supervise them.

        Args:
            config: what every worker gets (broker address, secret, ...); each gets its own
                name and identity filled in.
        """
        if not self._procs:
            self.spawn()
        for proc in self._procs:
            line = config.replace(name=proc.name, identity=proc.identity).to_json()
            try:
                proc.process.stdin.write(line)
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

    def running_identities(self) -> list[str]:
        """The workers whose process exists and is not stopped: alive, however busy.

        The broker takes this word for a worker whose own heartbeats stall while one
        long C call holds its GIL.
        """
        return [p.identity for p in self._procs if process_running(p.process.pid)]

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
                    kills, self._oom_kills = self._oom_kills, oom_kills()
                    oom_killed = None not in (kills, self._oom_kills) and self._oom_kills > kills
                    if not self._stopping:
                        self._on_exit(proc.identity, describe_exit(returncode, oom_killed=oom_killed))

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
        if self._thread.is_alive():  # never started if start() was not reached
            self._thread.join(timeout=2.0)

    def __enter__(self) -> "WorkerGroup":
        return self.spawn()

    def __exit__(self, *exc) -> None:
        self.stop()
