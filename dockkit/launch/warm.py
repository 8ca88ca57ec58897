"""Warm starts: a server on each cluster node that forks agents, and the head's root, imported.

An agent's start is mostly imports (zmq, cloudpickle, dockkit's runtime: 70 ms of CPU),
paid again on every node of every run: 1.1 s of CPU on 16 nodes, on a machine that runs
them all. A run's root, in the head node, imports more (paramiko, the launcher, the
CLI: 0.25 s). A dockkit node's image starts ``python -m dockkit.launch.warm`` beside
sshd: it imports the agent's modules once, the root's the first time a root is asked
for, then waits on a unix socket that only its own user reaches.

Per run, the SSH launcher starts :data:`CLIENT` instead of the agent, and a cluster's
head command starts it instead of ``python -m dockkit``: a Python without ``site``
(10 ms) that hands the server the module to run, its stdin, stdout and stderr, its
working directory, environment and arguments, and waits. The server forks; the child
leaves the server's code behind and runs the module as ``python -m`` would, on the
client's own pipes: its stdin's end-of-file still stops it and its output still reaches
whoever started the client. The client relays:

- the child's exit status, as its own;
- SIGTERM, SIGHUP and SIGINT (the launcher stops a host by signalling the client's
  process group), as SIGTERM to the child's process group;
- its own end: a client killed outright takes its child's process group with it.

Where no server answers (a host that is not a dockkit node, or a server that died), the
client execs ``python -m MODULE`` itself: the run starts slower, never differently. So it
does when the run sets a ``PYTHON*`` variable (``--env PYTHONHASHSEED=0``, ``PYTHONPATH``…):
those act when an interpreter starts, and the server's started long before.

The server and its children are named in ``ps -o comm``: ``dockkit-warm``,
``dockkit-agent`` and ``dockkit-root`` (their command line is the server's).
"""

from __future__ import annotations

import functools
import importlib
import os
import select
import signal
import socket
import struct
import sys

SOCKET_PATH = "/run/dockkit/agents.sock"
SERVER_NAME = "dockkit-warm"
AGENT_NAME = "dockkit-agent"
ROOT_NAME = "dockkit-root"
AGENT_MODULE = "dockkit.launch.agent"
ROOT_MODULE = "dockkit"  # python -m dockkit: a run's root
#: What the server starts, by module, and the name each child takes.
NAMES = {AGENT_MODULE: AGENT_NAME, ROOT_MODULE: ROOT_NAME}
#: What a root over SSH imports before its script runs (much of it lazily), imported by the
#: server when the first root is asked for: on the head node only, never on the others.
ROOT_IMPORTS = ("dockkit.cli", "dockkit.runner", "dockkit.executor", "dockkit.plan", "dockkit.progress",
                "dockkit.runtime.broker", "dockkit.runtime.auth", "dockkit.launch.allocation",
                "dockkit.launch.srun", "dockkit.launch.ssh.launcher", "dockkit.launch.ssh.connection",
                "rich.console", "rich.table")
#: What an agent's workers import with nearly every script (``from dockkit import futures``),
#: imported by the server the first time an agent is asked for: once a node, not once a worker.
AGENT_IMPORTS = ("dockkit.futures", "dockkit.shared")
#: What the server imports ahead of the first child of each kind.
IMPORTS_AHEAD = {AGENT_MODULE: AGENT_IMPORTS, ROOT_MODULE: ROOT_IMPORTS}
#: How a node's processes are listed for :func:`run_processes`.
PS_ARGV = ("ps", "-ww", "-eo", "pid=,comm=,args=")  # -ww: whole command lines, never cut
_LENGTH = struct.Struct("!I")  # a request's length, before it
_STATUS = struct.Struct("!i")  # a child's exit status, the server's one answer
_STOP = b"T"  # the client was told to stop: so is its child
REAP_EVERY = 1.0  # s between looks for children that ended, besides each SIGCHLD

#: The client, run as ``python -I -S -c CLIENT SOCKET_PATH MODULE [ARGS]``: built-in modules
#: only (``_socket``, ``_signal``, ``_struct``), so that it starts in 10 ms; ``json``,
#: ``socket`` and ``signal`` would double that, on every node of every run. Its request
#: (see :func:`decode_request`) is NUL-separated, as argv and environ are at the kernel.
#: (This module imports nothing of dockkit at its top either: the SSH launcher and the
#: head command read it for the client alone.)
CLIENT = """\
import _signal, _socket, _struct, os, sys
path, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
try:
    if any(name.startswith(b"PYTHON") and name != b"PYTHONUNBUFFERED" for name in os.environb):
        raise OSError("a fresh interpreter is asked for")
    server.connect(path)
except OSError:
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])
request = b"\\0".join([os.fsencode(module), os.getcwdb(), b"%d" % len(argv), *map(os.fsencode, argv),
                       *(name + b"=" + value for name, value in os.environb.items())])
status = b""
try:  # a server that hangs up early resets the connection: said below, as a closed one is
    server.sendmsg([_struct.pack("!I", len(request))], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack("3i", 0, 1, 2))])
    server.sendall(request)
    for signum in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
        _signal.signal(signum, lambda *_: server.send(b"T"))
    while len(status) < 4:
        chunk = server.recv(4 - len(status))
        if not chunk:
            break
        status += chunk
except OSError:
    pass
if len(status) < 4:
    sys.stderr.write(f"dockkit: the warm server at {path} hung up without an exit status "
                     "(its log, the node's, says why)\\n")
    sys.exit(255)
sys.exit(_struct.unpack("!i", status)[0])
"""


def client_args(module: str, args=(), *, path: str = SOCKET_PATH) -> list[str]:
    """The interpreter's arguments that run ``module`` through the client (see :data:`CLIENT`)."""
    return ["-I", "-S", "-c", CLIENT, path, module, *args]


class WarmServer:
    """Forks ready-imported agents and roots for the clients of a unix socket; see the module's docstring.

    Args:
        path: the socket's path; its directory is made private to this user.
    """

    def __init__(self, path: str = SOCKET_PATH):
        import dockkit.launch.agent  # noqa: F401 - the point: imported once, before any fork

        self.path = path
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a socket left by a server that died
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(64)
        self._children: dict[int, socket.socket] = {}  # child pid -> its client's connection
        self._imported_ahead: set[str] = set()  # modules whose children's imports are done
        # A child's end wakes the loop at once: its client is waiting on its status.
        self._wakeup, self._wakeup_w = os.pipe()
        for fd in (self._wakeup, self._wakeup_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve_forever(self):
        """Serve clients; returns only in a forked child, with what that child is to run."""
        while True:
            clients = {conn: pid for pid, conn in self._children.items() if conn.fileno() >= 0}
            readable, _, _ = select.select([self._listener, self._wakeup, *clients], [], [], REAP_EVERY)
            for ready in readable:
                if ready is self._listener:
                    job = self._accept()
                    if job is not None:
                        return job
                elif ready is self._wakeup:
                    os.read(self._wakeup, 4096)  # one byte per signal: a few at most
                else:
                    self._heard_from(ready, clients[ready])
            self._reap()

    def _accept(self):
        conn, _ = self._listener.accept()
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        if uid != os.getuid():  # the socket's mode says so already; this says it again
            conn.close()
            return None
        try:
            request, fds = _receive(conn)
        except EOFError:  # connected and left without a word: a probe of whether we are up
            conn.close()
            return None
        except (OSError, ValueError) as exc:
            print(f"dockkit-warm: a client's request was unreadable: {exc}", file=sys.stderr)
            conn.close()
            return None
        module = request.get("module")
        if module not in NAMES:  # said on the client's stderr; it ends with 255
            os.write(fds[2], f"dockkit-warm: no warm start for module {module!r}\n".encode())
            pid = None
        else:
            self._import_ahead(module)
            pid = self._fork()
        if pid == 0:
            return self._become(module, request, fds)
        for fd in fds:
            os.close(fd)
        if pid:
            self._children[pid] = conn
        else:  # refused, or no fork: said on its stderr already, and the client ends with 255
            _answer(conn, 255)
        return None

    def _import_ahead(self, module: str) -> None:
        if module in self._imported_ahead:
            return
        self._imported_ahead.add(module)
        try:
            for name in IMPORTS_AHEAD[module]:
                importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the child imports it again itself, and says why
            print(f"dockkit-warm: could not import a {NAMES[module]}'s modules ahead: {exc}", file=sys.stderr)

    def _fork(self) -> int | None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            return os.fork()
        except OSError as exc:  # no fork: the client ends with 255, and the root says which host
            print(f"dockkit-warm: could not fork: {exc}", file=sys.stderr)
            return None

    def _become(self, module: str, request: dict, fds: list[int]):
        """In the child: drop the server's state and take the client's place; what to run then."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self._wakeup)
            os.close(self._wakeup_w)
            self._listener.close()
            for conn in self._children.values():
                conn.close()
            os.setpgid(0, 0)  # its own group, with its workers: what a stop signals
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                os.close(fd)  # only 0, 1 and 2 stay: its children inherit no stray copy
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            sys.path[0] = os.getcwd()  # as -m puts it first
            sys.argv = ["-m", *request["argv"]]  # runpy puts the module's path first
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has them
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            from dockkit.launch.supervisor import name_process

            name_process(NAMES[module])
        except BaseException:  # said on the client's stderr, as a failed start would be
            import traceback

            traceback.print_exc()
            os._exit(1)
        return functools.partial(_run_module, module)

    def _heard_from(self, conn: socket.socket, pid: int) -> None:
        try:
            word = conn.recv(1)
        except OSError:
            word = b""
        # Told to stop: the child stops politely. Gone (killed outright): so is the child.
        signum = signal.SIGTERM if word == _STOP else signal.SIGKILL
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass
        if not word:
            conn.close()  # reaped below once the child is gone

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            conn = self._children.pop(pid, None)
            if conn is None or conn.fileno() < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            _answer(conn, code if code >= 0 else 128 - code)  # killed: as a shell says


def _answer(conn: socket.socket, status: int) -> None:
    """Send a client the exit status it relays as its own, and hang up."""
    try:
        conn.sendall(_STATUS.pack(status))
    except OSError:
        pass  # the client is gone
    conn.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """A client's request (see :func:`decode_request`) and its three standard descriptors."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if not data and not fds:
        raise EOFError
    try:
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} descriptors instead of 3")
        while len(data) < _LENGTH.size or len(data) < _LENGTH.size + _LENGTH.unpack_from(data)[0]:
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("the request ended early")
            data += chunk
        return decode_request(data[_LENGTH.size:_LENGTH.size + _LENGTH.unpack_from(data)[0]]), fds
    except ValueError as exc:
        if len(fds) == 3:  # said where the client's user sees it, as a failed start would be
            os.write(fds[2], f"dockkit-warm: an unreadable request: {exc}\n".encode())
        for fd in fds:
            os.close(fd)
        raise


def decode_request(data: bytes) -> dict:
    """A client's request: ``module, cwd, len(argv), *argv, *environ`` joined by NULs (bytes
    that no argument, path or variable holds), each ``environ`` item as ``NAME=VALUE``."""
    module, cwd, count, *rest = data.split(b"\0")
    count = int(count)
    if len(rest) < count:
        raise ValueError(f"{count} arguments announced, {len(rest)} sent")
    argv, environ = rest[:count], rest[count:]
    env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return {"module": os.fsdecode(module), "cwd": os.fsdecode(cwd), "argv": [os.fsdecode(arg) for arg in argv],
            "env": {os.fsdecode(name): os.fsdecode(value) for name, value in env.items()}}


def _run_module(module: str) -> None:
    """What ``python -m module`` runs; at the top of the child's stack, so that its exit is a
    Python's exit: threads joined, ``atexit`` run, output flushed, the status its own."""
    if module == AGENT_MODULE:  # imported already: runpy would warn, and run its code a second time
        from dockkit.launch.agent import main

        main()
        return
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_processes(listing: str) -> list[str]:
    """The lines of a :data:`PS_ARGV` listing that belong to runs: roots, agents, workers and
    the clients that wait on them, whose name or command line says dockkit. A node's warm
    server is not one (it outlives every run), nor is the ``ps`` that listed them."""
    found = []
    for line in listing.splitlines():
        _pid, comm, args = (line.split(None, 2) + ["", ""])[:3]
        if "dockkit" in f"{comm} {args}" and comm not in (SERVER_NAME, "ps"):
            found.append(line.strip())
    return found


def main() -> None:
    import faulthandler

    from dockkit.launch.supervisor import name_process

    name_process(SERVER_NAME)  # before the socket: whoever finds the socket finds the name
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    server = WarmServer(sys.argv[1] if len(sys.argv) > 1 else SOCKET_PATH)
    print(f"dockkit-warm: forking ready agents and roots for clients of {server.path}", file=sys.stderr,
          flush=True)
    job = server.serve_forever()  # here only in a forked child, the server's stack left behind
    job()


if __name__ == "__main__":
    main()
