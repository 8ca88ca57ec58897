"""The host agent: one per remote host, started over that host's one SSH connection
(or, inside a SLURM job, as one task per node of an ``srun`` job step).

``python -m dockkit.launch.agent`` reads one JSON line of configuration from stdin
(broker address, the run's secret, the workers to start), starts the workers
with a :class:`~dockkit.launch.supervisor.WorkerGroup`, and then:

- reports each worker's exit to the broker at once (EXITED, with the status),
  so the broker re-queues exactly that worker's batches;
- exchanges heartbeats with the broker, and stops its workers and exits when
  the broker has been silent for ``heartbeat_timeout`` seconds (a dead root);
- stops its workers and exits when stdin reaches EOF (the SSH connection
  or srun's stdin closed: the root ended, was interrupted, or lost the network).

A configuration may say that a tar follows it on stdin (a cluster run's working
directory, which then travels over the connection the agent starts on instead of
through one more copy per node): the agent unpacks it before its workers start.

Worker output goes to the agent's stdout/stderr with a ``[host:wN]`` prefix and
so reaches the root's terminal over SSH.
"""

from __future__ import annotations

import faulthandler
import os
import queue
import signal
import sys
import tarfile
import threading
import time

import zmq

from dockkit.runtime import protocol as P
from dockkit.launch.supervisor import WorkerGroup
from dockkit.runtime.wakeup import WakePipe
from dockkit.runtime.worker import watched_broker_socket


class HostAgent:
    """Supervises this host's workers on behalf of a remote broker."""

    def __init__(self, config: P.AgentConfig):
        worker = config.worker
        self.host = worker.host or os.uname().nodename
        self.identity = config.identity
        self.worker_ids = [identity for _, identity in config.workers]
        self._exits: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        # The workers first, forked while this process has one thread and no ZeroMQ context
        # (see ForkedProcess): they start with zmq, cloudpickle and dockkit imported, which
        # is most of a fresh interpreter's start, and the agent never imports the script.
        self.group = WorkerGroup(config.workers,
                                 on_exit=self._worker_ended, env=config.env, allow_fork=True).spawn()
        # A stop or a worker's end wakes the loop at once (made after the fork: workers need no copy).
        self._wake = WakePipe()
        self.heartbeat_timeout = float(worker.heartbeat_timeout)
        self._context = zmq.Context()
        self._socket, self._watch = watched_broker_socket(self._context, worker, config.identity,
                                                          self.heartbeat_timeout)
        # The root's working directory, where this host has it; else the login directory.
        cwd = worker.cwd if worker.cwd and os.path.isdir(worker.cwd) else None
        self._worker_config = worker.replace(host=self.host, cwd=cwd)

    def stop(self) -> None:
        self._stop.set()
        self._wake.wake()  # the root waits for this host's end

    def _worker_ended(self, identity: str, reason: str) -> None:
        self._exits.put((identity, reason))
        self._wake.wake()  # the broker re-runs its tasks the sooner

    def run(self) -> int:
        self._send(P.hello_agent(self.host, self.worker_ids))
        self.group.start(self._worker_config)
        last_heard = time.monotonic()
        next_beat = 0.0
        status = 0
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake.fileno(), zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                self._wake.drain()
                if self._socket in ready:
                    kind, *frames = self._socket.recv_multipart()
                    last_heard = time.monotonic()
                    if kind == P.STOP:
                        break
                    if kind == P.WELCOME and not P.unpack_info(frames[0]).get("accepted"):
                        print(f"dockkit agent on {self.host}: refused by the broker: "
                              f"{P.unpack_info(frames[0]).get('reason')}", file=sys.stderr)
                        status = 2
                        break
                while not self._exits.empty():
                    identity, reason = self._exits.get()
                    self._send(P.exited(identity, reason))
                now = time.monotonic()
                if now >= next_beat:
                    self._send(P.vouch(self.group.running_identities()))
                    next_beat = now + P.HEARTBEAT_INTERVAL
                if now - last_heard > self.heartbeat_timeout and not self._watch.update():
                    print(f"dockkit agent on {self.host}: the broker has been silent for "
                          f"{self.heartbeat_timeout:.0f} s and its connection is down; stopping "
                          "this host's workers", file=sys.stderr)
                    status = 3
                    break
        finally:
            self.group.stop()
            self._watch.close()
            self._socket.close(linger=500)
            self._context.term()
            self._wake.close()
        return status

    def _send(self, frames) -> None:
        self._socket.send_multipart(frames)


def _stop_on_eof(agent: HostAgent) -> None:
    """The SSH connection is our lifeline: stdin EOF means the root is gone."""
    while sys.stdin.buffer.read(65536):
        pass
    agent.stop()


def read_config(line: bytes, argv: list[str]) -> P.AgentConfig:
    """The agent's configuration: the line itself, or with ``--from-table`` this host's entry
    of a table sent to every host (by SLURM's node name inside a job step)."""
    if "--from-table" not in argv:
        return P.AgentConfig.from_json(line)
    return P.AgentConfig.from_table(line, os.environ.get("SLURMD_NODENAME") or os.uname().nodename)


#: Where a node keeps the record of the last tar it unpacked (see :func:`unpack_tar`): beside
#: the warm server's socket, in a directory only root reaches.
UNPACKED_RECORD = "/run/dockkit/unpacked.json"


def unpack_files(stream, size: int, *, record: str | None = None) -> None:
    """Unpack the ``size``-byte tar that follows the configuration on ``stream`` at ``/``
    (``record``: see :func:`unpack_tar`).

    Raises:
        OSError: the stream ended early, or a file could not be written.
        tarfile.TarError: it is not a tar.
    """
    data = stream.read(size)
    if len(data) != size:
        raise OSError(f"stdin ended after {len(data)} of the {size} bytes of files")
    unpack_tar(data, record=record)


def unpack_tar(data: bytes, *, record: str | None = None) -> None:
    """Unpack a tar (plain or compressed) whose members carry their paths from ``/``.

    A file already there with the member's size and modification time is left as it is:
    a run's directory, unpacked on the same node by the run before, is mostly such files,
    and writing each again cost its node 0.4 ms (70 ms a node, for a project of 170 files).
    The files are this process's user's, as with ``tar --no-same-owner``: the owner they
    had where they were packed means nothing here, and looking it up cost as much again.

    ``record``: a file that keeps the last tar's digest and its files' sizes and times. When
    the same tar comes again and every file still matches, it is not even read (its
    decompression and headers cost a node 20 ms of a run's 130, for 170 files).

    Raises:
        OSError: a file could not be written.
        tarfile.TarError: it is not a tar.
    """
    import hashlib
    import io

    digest = hashlib.sha256(data).hexdigest()
    if record and _still_in_place(record, digest):
        return
    files: list[list] = []
    dirs: list[str] = []
    with _OwnFiles.open(fileobj=io.BytesIO(data)) as tar:
        # The 'data' filter (where this Python has it) keeps every member under / and plain.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall("/", members=_changed_members(tar, files, dirs), **extra)
    if record:
        _write_record(record, {"digest": digest, "files": files, "dirs": dirs})


class _OwnFiles(tarfile.TarFile):
    def chown(self, tarinfo, targetpath, numeric_owner):  # noqa: D102 - see unpack_tar
        pass


def _changed_members(tar: tarfile.TarFile, files: list, dirs: list):
    """The members to write: all but the regular files that are there already, unchanged
    (size, modification time and permissions, as the 'data' filter would set them). Each
    regular file's ``[path, size, mtime, mode]`` is added to ``files``, each directory to ``dirs``."""
    for member in tar:
        if member.isdir():
            dirs.append(os.path.join("/", member.name))
        if member.isfile():
            path = os.path.join("/", member.name)
            files.append([path, member.size, member.mtime, member.mode & 0o755])
            if _unchanged(path, member.size, member.mtime, member.mode & 0o755):
                continue
        yield member


def _unchanged(path: str, size: int, mtime: float, mode: int) -> bool:
    try:
        found = os.stat(path)
    except OSError:
        return False
    return found.st_size == size and abs(found.st_mtime - mtime) < 1e-5 and found.st_mode & 0o755 == mode


def _still_in_place(record: str, digest: str) -> bool:
    """Whether ``record`` is of the tar ``digest`` and each of its files and directories is still
    as unpacked."""
    import json

    try:
        with open(record) as stream:
            last = json.load(stream)
        return (last["digest"] == digest and all(map(os.path.isdir, last["dirs"]))
                and all(_unchanged(*file) for file in last["files"]))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: unpack
        return False


def _write_record(record: str, content: dict) -> None:
    import json

    try:
        os.makedirs(os.path.dirname(record), mode=0o700, exist_ok=True)
        temporary = f"{record}.{os.getpid()}"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as stream:
            json.dump(content, stream)
        os.replace(temporary, record)  # whole or not at all, for a run unpacking beside us
    except OSError:
        pass  # only the next run's shortcut is lost


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    config = read_config(sys.stdin.buffer.readline(), sys.argv[1:])
    if config.files:
        try:
            unpack_files(sys.stdin.buffer, config.files, record=UNPACKED_RECORD)
        except Exception as exc:  # noqa: BLE001 - any failure here is this host's, said in one line
            where = config.worker.host or os.uname().nodename
            print(f"dockkit agent on {where}: could not unpack the run's files: {exc}", file=sys.stderr)
            sys.exit(2)
    agent = HostAgent(config)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGHUP, lambda *_: agent.stop())
    threading.Thread(target=_stop_on_eof, args=(agent,), daemon=True).start()
    status = agent.run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the stdin reader thread may still block; don't wait for it


if __name__ == "__main__":
    main()
