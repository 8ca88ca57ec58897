"""Warm agents: a server on each cluster node that forks agents already imported.

An agent's start is mostly imports (zmq, cloudpickle, dockkit's runtime: 70 ms of CPU),
paid again on every node of every run: 1.1 s of CPU on 16 nodes, on a machine that runs
them all. A dockkit node's image starts ``python -m dockkit.launch.warm`` beside sshd: it
imports all that once, then waits on a unix socket that only its own user reaches.

Per run, the SSH launcher starts :data:`CLIENT` instead of the agent: a Python without
``site`` (10 ms) that hands the server its stdin, stdout and stderr, its working directory,
environment and arguments, and waits. The server forks; the child becomes the agent as
``python -m dockkit.launch.agent`` would be, on the SSH session's own pipes, so its stdin's
end-of-file still stops it and its output still reaches the root. The client relays:

- the agent's exit status, as its own;
- SIGTERM, SIGHUP and SIGINT (the launcher stops a host by signalling the client's
  process group), as SIGTERM to the agent's process group;
- its own end: a client killed outright takes its agent's process group with it.

Where no server answers (a host that is not a dockkit node, or a server that died), the
client becomes the agent itself: the run starts slower, never differently. So it does when
the run sets a ``PYTHON*`` variable (``--env PYTHONHASHSEED=0``, ``PYTHONPATH``…): those
act when an interpreter starts, and the server's started long before.

The server and its agents are named in ``ps -o comm``: ``dockkit-warm`` and
``dockkit-agent`` (their command line is the server's).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

SOCKET_PATH = "/run/dockkit/agents.sock"
SERVER_NAME = "dockkit-warm"
AGENT_NAME = "dockkit-agent"
_LENGTH = struct.Struct("!I")  # a request's length, before its JSON
_STATUS = struct.Struct("!i")  # an agent's exit status, the server's one answer
_STOP = b"T"  # the client was told to stop: so is the agent
REAP_EVERY = 1.0  # s between looks for agents that ended, besides each SIGCHLD

#: The client, run as ``python -I -S -c CLIENT SOCKET_PATH [AGENT ARGS]``: standard
#: library only, so that it starts in 10 ms. (This module imports nothing of dockkit at
#: its top either: the SSH launcher reads it for the client alone.)
CLIENT = """\
import json, os, signal, socket, struct, sys
path, argv = sys.argv[1], sys.argv[2:]
server = socket.socket(socket.AF_UNIX)
try:
    if any(name.startswith("PYTHON") and name != "PYTHONUNBUFFERED" for name in os.environ):
        raise OSError("a fresh interpreter is asked for")
    server.connect(path)
except OSError:
    os.execv(sys.executable, [sys.executable, "-m", "dockkit.launch.agent", *argv])
request = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "argv": argv}).encode()
socket.send_fds(server, [struct.pack("!I", len(request)) + request], [0, 1, 2])
for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(signum, lambda *_: server.send(b"T"))
status = b""
while len(status) < 4:
    chunk = server.recv(4 - len(status))
    if not chunk:
        sys.exit(255)
    status += chunk
sys.exit(struct.unpack("!i", status)[0])
"""


def client_args(agent_args=(), *, path: str = SOCKET_PATH) -> list[str]:
    """The interpreter's arguments that run the client (see :data:`CLIENT`)."""
    return ["-I", "-S", "-c", CLIENT, path, *agent_args]


class AgentServer:
    """Forks ready-imported agents for the clients of a unix socket; see the module's docstring.

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
        self._agents: dict[int, socket.socket] = {}  # agent pid -> its client's connection
        # An agent's end wakes the loop at once: its client is waiting on its status.
        self._wakeup, self._wakeup_w = os.pipe()
        for fd in (self._wakeup, self._wakeup_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve_forever(self) -> None:
        while True:
            clients = {conn: pid for pid, conn in self._agents.items() if conn.fileno() >= 0}
            readable, _, _ = select.select([self._listener, self._wakeup, *clients], [], [], REAP_EVERY)
            for ready in readable:
                if ready is self._listener:
                    self._accept()
                elif ready is self._wakeup:
                    os.read(self._wakeup, 4096)  # one byte per signal: a few at most
                else:
                    self._heard_from(ready, clients[ready])
            self._reap()

    def _accept(self) -> None:
        conn, _ = self._listener.accept()
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        if uid != os.getuid():  # the socket's mode says so already; this says it again
            conn.close()
            return
        try:
            request, fds = _receive(conn)
        except EOFError:  # connected and left without a word: a probe of whether we are up
            conn.close()
            return
        except (OSError, ValueError) as exc:
            print(f"dockkit-warm: a client's request was unreadable: {exc}", file=sys.stderr)
            conn.close()
            return
        try:
            self._agents[self._fork_agent(request, fds)] = conn
        except OSError as exc:  # no fork: the client ends with 255, and the root says which host
            print(f"dockkit-warm: could not start an agent: {exc}", file=sys.stderr)
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _fork_agent(self, request: dict, fds: list[int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        try:  # the child: the agent, as `python -m dockkit.launch.agent` would start it
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self._wakeup)
            os.close(self._wakeup_w)
            self._listener.close()
            for conn in self._agents.values():
                conn.close()
            os.setpgid(0, 0)  # its own group, with its workers: what a stop signals
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                os.close(fd)  # only 0, 1 and 2 stay: the workers inherit no stray copy
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            sys.path[0] = os.getcwd()  # as -m puts it first
            sys.argv = ["-m", *request["argv"]]
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            from dockkit.launch.agent import main
            from dockkit.launch.supervisor import name_process

            name_process(AGENT_NAME)

            main()
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        except BaseException:  # said on the client's stderr, as a failed agent start would be
            import traceback

            traceback.print_exc()
        finally:
            os._exit(1)

    def _heard_from(self, conn: socket.socket, pid: int) -> None:
        try:
            word = conn.recv(1)
        except OSError:
            word = b""
        # Told to stop: the agent stops politely. Gone (killed outright): so is the agent.
        signum = signal.SIGTERM if word == _STOP else signal.SIGKILL
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass
        if not word:
            conn.close()  # reaped below once the agent is gone

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            conn = self._agents.pop(pid, None)
            if conn is None or conn.fileno() < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(_STATUS.pack(code if code >= 0 else 128 - code))  # killed: as a shell says
            except OSError:
                pass
            conn.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """A client's request: its JSON and its three standard descriptors."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if not data and not fds:
        raise EOFError
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"{len(fds)} descriptors instead of 3")
    while len(data) < _LENGTH.size or len(data) < _LENGTH.size + _LENGTH.unpack_from(data)[0]:
        chunk = conn.recv(65536)
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise ValueError("the request ended early")
        data += chunk
    return json.loads(data[_LENGTH.size:]), fds


def main() -> None:
    import faulthandler

    from dockkit.launch.supervisor import name_process

    name_process(SERVER_NAME)  # before the socket: whoever finds the socket finds the name
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    server = AgentServer(sys.argv[1] if len(sys.argv) > 1 else SOCKET_PATH)
    print(f"dockkit-warm: forking ready agents for clients of {server.path}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
