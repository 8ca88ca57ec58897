"""The containers of a cluster: create one, wait until it takes a key login, configure, remove.

Each function acts on one Docker Engine through a connected client; the
:class:`~dockkit.cluster.Cluster` facade decides which engine and keeps the state.
Every container and network is labelled ``dockkit.cluster=<name>`` (and
``org.dockkit.managed=true``), so they can be found and removed from Docker's
state alone.
"""

from __future__ import annotations

import concurrent.futures
import io
import socket as pysocket
import sys
import tarfile
import threading
import time
from collections.abc import Iterable

from dockkit.cluster.engine import LABEL, docker_errors, find_container, remove_container, remove_network
from dockkit.errors import ClusterError, DockerError, DockkitError
from dockkit.cluster.image import NODE_KEY_DIR
from dockkit.launch.ssh.keys import KeyPair, NodeRow, node_ssh_texts
from dockkit.cluster.state import NodeInfo

__all__ = ["CLUSTER_LABEL", "NODE_LABEL", "container_name", "labelled_containers", "ensure_network",
           "remove_networks", "create_node", "start_with_stdin", "wait_ready", "private_archive", "node_keys_archive",
           "install_node_keys", "node_ssh_files", "install_ssh_files", "published_port",
           "exec_streaming", "StdStreams", "extract", "container_logs", "gone_message"]

CLUSTER_LABEL = "dockkit.cluster"
NODE_LABEL = "dockkit.node"
SSH_DIR = "/root/.ssh"  # a node's ssh config, known_hosts and (the head's) client key
_ALIVE = ("created", "running", "restarting")  # anything else will never take a login


def container_name(cluster: str, node: str) -> str:
    return f"dockkit-{cluster}-{node}"


def labelled_containers(client, cluster: str) -> list:
    """Every container of ``cluster`` on this engine, whatever its state."""
    with docker_errors("listing the cluster's containers"):
        return client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={cluster}"})


def ensure_network(client, cluster: str):
    """The cluster's private bridge network ``dockkit-<name>`` on this engine, made if missing."""
    name = f"dockkit-{cluster}"
    with docker_errors(f"creating network {name}", ClusterError):
        found = client.networks.list(names=[name])
        if found:
            return found[0]
        return client.networks.create(name, driver="bridge", labels={LABEL: "true", CLUSTER_LABEL: cluster})


def remove_networks(client, cluster: str) -> None:
    """Remove the cluster's networks on this engine (after its containers).

    A swarm's overlay shows on every engine a task of it runs on, but only its manager
    removes it (:func:`dockkit.cluster.swarm.remove_leftovers`).
    """
    with docker_errors("listing the cluster's networks"):
        networks = client.networks.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"})
    for network in networks:
        if network.attrs.get("Scope") != "swarm":
            remove_network(network)


def create_node(client, *, cluster: str, index: int, image: str, network: str, docker_host: str, address: str,
                host_key: KeyPair, client_public: str, workers: int, ssh_files: dict[str, bytes] | None = None,
                cpus: float | None = None, memory: str | None = None, volumes: dict | None = None):
    """Create and start ``node<index>`` on ``network`` (see :func:`ensure_network`) with
    ``host_key``, for ``workers`` workers; return ``(NodeInfo, container)``.

    A stopped or leftover container of the same cluster and name is replaced. Its sshd
    is published on ``address``'s side: loopback for a local engine, every interface of
    a remote one (the other nodes reach it there). ``ssh_files`` (see :func:`node_ssh_files`),
    when they can be known before it starts, go in with its keys.

    Raises:
        ClusterError: The name is taken by a container of something else, or the
            container could not be created or started.
    """
    name = f"node{index}"
    full_name = container_name(cluster, name)
    old = find_container(client, full_name)
    if old is not None:
        if old.labels.get(CLUSTER_LABEL) != cluster:
            raise ClusterError(f"a container named {full_name} already exists and is not part of "
                               f"cluster {cluster!r}; remove it or pick another --name")
        remove_container(old)
    publish = "127.0.0.1" if address == "127.0.0.1" else "0.0.0.0"
    limits = {}
    if cpus:
        limits["nano_cpus"] = int(float(cpus) * 1e9)
    if memory:
        limits["mem_limit"] = memory
    with docker_errors(f"creating container {full_name}", ClusterError):
        endpoint = client.api.create_endpoint_config(aliases=[name])
        # its stdin open once (StdinOnce): the keys come on it as it starts, then end-of-file
        container = client.containers.create(
            image, name=full_name, hostname=name, stdin_open=True, detach=False,
            environment={"DOCKKIT_KEYS": "stdin"},
            labels={LABEL: "true", CLUSTER_LABEL: cluster, NODE_LABEL: name},
            ports={"22/tcp": (publish, None)}, network=network,
            networking_config={network: endpoint}, volumes=volumes or {}, **limits)
    try:
        keys = node_keys_archive(host_key, client_public, ssh_files)
        with docker_errors(f"starting {full_name}", ClusterError):
            start_with_stdin(container, keys)
            container.reload()
        port = published_port(container)
        if port is None:  # it stopped already: no port is published for a stopped container
            raise _stopped(name, container)
    except BaseException:
        try:
            remove_container(container)
        except DockkitError:  # the first error is the one to report; down removes it by label
            pass
        raise
    return NodeInfo(name, full_name, docker_host, address, port, host_key.public_line, workers,
                    "running"), container


def start_with_stdin(container, data: bytes) -> None:
    """Start a container created with ``stdin_open`` (and StdinOnce) and send it ``data`` on
    its stdin, then end-of-file. Call it inside :func:`~dockkit.cluster.engine.docker_errors`.

    A node's keys go in so: a copy into the created container (``put_archive``) cost the
    engine 60 ms of CPU a node here, an attached stream a fraction of it.

    Raises:
        DockerError: The data could not be sent.
    """
    stream = container.attach_socket(params={"stdin": 1, "stream": 1})
    try:
        container.start()
        raw = getattr(stream, "_sock", stream)  # the socket inside a SocketIO; a channel is its own
        try:
            raw.sendall(data)
            raw.shutdown(pysocket.SHUT_WR)
        except OSError as exc:
            raise DockerError(f"sending {container.name} its keys on stdin failed: {exc}") from exc
    finally:  # the engine sends nothing on a stdin-only stream: closing it sends what is left, then FIN
        _stop_reading(stream)


def published_port(container) -> int | None:
    """The host port that publishes the node's sshd (as last inspected), or None when none is."""
    published = (container.attrs["NetworkSettings"].get("Ports") or {}).get("22/tcp")
    return int(published[0]["HostPort"]) if published else None


def wait_ready(started: list[tuple[NodeInfo, object]], ssh_config, timeout: float, then=None) -> None:
    """Wait until key login works on every started node, through the local ``ssh_config``.

    A node whose container stops fails at once; one that never takes a login fails
    after ``timeout`` seconds. Either way the error carries the container's logs.
    ``then(node, container)``, if given, is called for each node as soon as it takes a
    login (its entrypoint has run), while the others may still be starting.

    Raises:
        ClusterError: A node exited or never became ready.
    """
    from dockkit.launch.hosts import HostSpec
    from dockkit.launch.ssh.connection import SSHConnection

    stop = threading.Event()  # one node failed: the others stop trying

    def login(node: NodeInfo, container) -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            with docker_errors(f"checking on {node.container}", ClusterError,
                               gone=f"{node.name} ({node.container}) was removed while starting"):
                container.reload()
            if container.status not in _ALIVE:
                raise _stopped(node.name, container)
            try:
                with SSHConnection(HostSpec(node.name), ssh_config=ssh_config,
                                   connect_timeout=5) as connection:
                    ready = connection.run("true", timeout=10)[0] == 0
                problem = "`true` failed"
            except DockkitError as exc:
                ready, problem = False, str(exc)
            if ready:
                if then is not None:  # outside the try: its failure is its own, not a failed login
                    then(node, container)
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name} ({node.container}) never accepted an SSH login "
                                   f"within {timeout:g} s: {problem}" + _logs_section(container))
            time.sleep(0.1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
        futures = [pool.submit(login, node, container) for node, container in started]
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            stop.set()
            raise failed[0].exception()


def node_ssh_files(nodes: list[NodeInfo], node: NodeInfo, key: bytes | None, same_engine) -> dict[str, bytes]:
    """``/root/.ssh`` of ``node``: a config naming every one of ``nodes``, and the client key if given.

    Nodes on the same engine are reached by name on the private network; the others
    on their Docker host's published port. ``same_engine(a, b)`` compares two nodes.
    """
    rows = []
    for other in nodes:
        hostname, port = (other.name, 22) if same_engine(node, other) else (other.address, other.port)
        rows.append(NodeRow(other.name, hostname, port, other.host_key))
    config, known = node_ssh_texts(rows, user="root", identity_file="/root/.ssh/id_ed25519",
                                   known_hosts_file="/root/.ssh/known_hosts")
    files = {"config": config.encode(), "known_hosts": known.encode()}
    return files if key is None else {**files, "id_ed25519": key}


def private_archive(files: dict[str, bytes], folders: Iterable[str] = ()) -> bytes:
    """A tar of ``files`` (name → content), each mode 0600, for ``put_archive``.

    Args:
        files: File names (relative to the extraction folder) and their bytes.
        folders: 0700 directory entries that come first (``etc/dockkit``), for the files in them.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def node_keys_archive(host_key: KeyPair, authorized_keys: str | Iterable[str],
                      ssh_files: dict[str, bytes] | None = None) -> bytes:
    """A tar of the files the worker entrypoint installs at start, for ``put_archive("/")``.

    Args:
        host_key: The node's host keypair (its public line goes in known_hosts).
        authorized_keys: Public key lines allowed to log in as root.
        ssh_files: The node's own ``/root/.ssh`` files (:func:`node_ssh_files`), if any.

    Returns:
        Tar bytes holding ``etc/dockkit/ssh_host_ed25519_key`` and ``etc/dockkit/authorized_keys``,
        and ``root/.ssh/<name>`` for each of ``ssh_files``.
    """
    lines = [authorized_keys] if isinstance(authorized_keys, str) else list(authorized_keys)
    text = "".join(f"{line.strip()}\n" for line in lines if line.strip())
    keys = {"ssh_host_ed25519_key": host_key.private_openssh, "authorized_keys": text.encode()}
    return private_archive({**{f"{NODE_KEY_DIR.lstrip('/')}/{name}": data for name, data in keys.items()},
                            **{f"{SSH_DIR.lstrip('/')}/{name}": data for name, data in (ssh_files or {}).items()}},
                           folders=[NODE_KEY_DIR.lstrip("/")] + ([SSH_DIR.lstrip("/")] if ssh_files else []))


def install_node_keys(container, host_key: KeyPair, authorized_keys: str | Iterable[str],
                      ssh_files: dict[str, bytes] | None = None) -> None:
    """Copy a node's keys into a created (not yet started) worker container.

    For worker containers made some other way than :func:`create_node`, whose keys come
    on stdin for less of the engine's time (:func:`start_with_stdin`). One copy costs the
    engine about as much CPU as a fifth of the container's start, so a node's ssh files,
    when they are known before it starts, ride along.

    Args:
        container: A docker-py ``Container`` made from the worker image.
        host_key: The node's host keypair.
        authorized_keys: Public key lines allowed to log in as root.
        ssh_files: The node's ``/root/.ssh`` files (:func:`node_ssh_files`), if known yet.

    Raises:
        DockerError: The copy failed.
    """
    with docker_errors(f"copying keys into container {container.name}"):
        if not container.put_archive("/", node_keys_archive(host_key, authorized_keys, ssh_files)):
            raise DockerError(f"copying keys into container {container.name} failed")


def install_ssh_files(container, node: NodeInfo, cluster: str, files: dict[str, bytes]) -> None:
    with docker_errors(f"writing the ssh config of {node.name}", ClusterError,
                       gone=gone_message(node, cluster)):
        container.put_archive(SSH_DIR, private_archive(files))


# How often a streamed exec asks the engine whether its command still runs, and how long
# output may keep arriving after the command ended.
EXEC_POLL_S = 0.5
EXEC_DRAIN_S = 3.0
LIFELINE_GRACE_S = 20.0  # after Ctrl-C, how long a lifelined command may take to stop and say so


def exec_streaming(client, container, argv: list[str], *, stream=None, workdir: str | None = None,
                   environment: dict | None = None, lifeline: bool = False, stdin_data: bytes = b"") -> int:
    """Run ``argv`` in a running container, its output passed on live; returns its exit status.

    ``stream`` has ``stdout(bytes)`` and ``stderr(bytes)`` (default: this process's own).
    The run is over when the engine says the command ended, not only when the output
    stream closes: a cluster run was seen, rarely and under load, blocked on this stream,
    and whatever the cause, a stream that outlives its command must not hang ``dockkit
    run``. Call it inside :func:`~dockkit.cluster.engine.docker_errors`.

    With ``lifeline``, the command's stdin stays open for as long as this call runs and
    reaches end-of-file when it stops, however it stops: on Ctrl-C here (after which the
    command's last output is still relayed, for up to ``LIFELINE_GRACE_S``), or when
    this process dies and the engine closes the connection. A command that ends itself
    at that end-of-file (``dockkit run --exit-with-stdin``) cannot outlive its caller.
    ``stdin_data`` (with ``lifeline``) is written to that stdin first.
    """
    from docker.utils.socket import demux_adaptor, frames_iter

    out = stream or StdStreams()
    exec_id = client.api.exec_create(container.id, argv, workdir=workdir, environment=environment,
                                     stdin=lifeline)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)  # raw: this side decides when reading ends

    def relay() -> None:
        try:
            for stdout, stderr in (demux_adaptor(*frame) for frame in frames_iter(sock, tty=False)):
                if stdout:
                    out.stdout(stdout)
                if stderr:
                    out.stderr(stderr)
        except OSError:
            pass  # closed below, after the command ended

    reader = threading.Thread(target=relay, name="dockkit-exec-output", daemon=True)
    reader.start()
    if lifeline and stdin_data:  # on a thread: a command that ends before it reads all must not block us
        threading.Thread(target=_write_stdin, args=(sock, stdin_data), name="dockkit-exec-input", daemon=True).start()
    try:
        _wait_for_exec(client, exec_id, reader, deadline=None)
    except KeyboardInterrupt:
        if lifeline:  # stdin's end-of-file stops the command; show what it says while stopping
            _close_stdin(sock)
            _wait_for_exec(client, exec_id, reader, deadline=time.monotonic() + LIFELINE_GRACE_S)
        _stop_reading(sock)
        raise
    _stop_reading(sock)
    # a streamed exec has no exit code of its own: ask for it
    return int(client.api.exec_inspect(exec_id)["ExitCode"])


def _wait_for_exec(client, exec_id: str, reader: threading.Thread, deadline: float | None) -> None:
    while reader.is_alive() and (deadline is None or time.monotonic() < deadline):
        reader.join(EXEC_POLL_S)
        if reader.is_alive() and not client.api.exec_inspect(exec_id)["Running"]:
            reader.join(EXEC_DRAIN_S)  # the last of its output may still be on its way
            return


def _write_stdin(sock, data: bytes) -> None:
    raw = getattr(sock, "_sock", sock)
    try:
        raw.sendall(data)
    except OSError:
        pass  # the command ended before it read it: its status and output say why


def _close_stdin(sock) -> None:
    raw = getattr(sock, "_sock", sock)
    try:
        raw.shutdown(pysocket.SHUT_WR)
    except (OSError, AttributeError):
        pass


def _stop_reading(sock) -> None:
    """Close an exec's output socket, first waking a reader blocked on it (close alone may not)."""
    raw = getattr(sock, "_sock", sock)  # the socket inside a SocketIO; a channel is its own
    try:
        raw.shutdown(pysocket.SHUT_RDWR)
    except (OSError, EOFError, AttributeError):
        pass
    try:
        sock.close()
    except (OSError, EOFError):
        pass


def extract(container, tar: bytes) -> None:
    """Unpack a tar at ``/`` of the container (members carry their absolute paths)."""
    container.put_archive("/", tar)


def container_logs(container, tail: int | str = "all") -> str:
    """The last ``tail`` lines of the container's log (stdout and stderr)."""
    with docker_errors(f"reading the logs of {container.name}"):
        return container.logs(tail=tail).decode(errors="replace")


def gone_message(node: NodeInfo, cluster: str) -> str:
    return (f"node {node.name} of cluster {cluster!r} is gone (container {node.container}); "
            f"run `dockkit up --name {cluster}` to recreate it")


def _stopped(name: str, container) -> ClusterError:
    code = container.attrs.get("State", {}).get("ExitCode")
    return ClusterError(f"{name} ({container.name}) stopped before it was ready "
                        f"(status {container.status}, exit code {code})" + _logs_section(container))


def _logs_section(container) -> str:
    try:
        text = container_logs(container, tail=50).rstrip()
    except DockkitError as exc:  # the logs are a courtesy; the caller's error is the real one
        text = f"(no logs: {exc})"
    return f"\n--- logs of {container.name} ---\n{text or '(empty)'}"


class StdStreams:
    """Where a streamed command's output goes when no stream is given: this process's own."""

    def stdout(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def stderr(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
