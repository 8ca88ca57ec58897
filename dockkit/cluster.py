"""A cluster of identical SSH-enabled worker containers, and runs inside it.

The cluster layer only provides hosts; nothing in the runtime knows about Docker::

    this machine                         Docker host(s)
    ┌──────────────────────┐             ┌─────────────────────────────────────────┐
    │ Cluster.up()         │  docker API │ network dockkit-<name>                   │
    │  keys, ssh_config,   ├────────────►│  node0 (head)  node1  node2 … (sshd :22) │
    │  known_hosts (state) │             │   published on 127.0.0.1:<port>          │
    │ Cluster.run(script)  │  docker exec│  head: python -m dockkit --hosts node0…  │
    │ Cluster.executor()   ├── ssh ─────►│         --tunnel (SSH launcher inside)   │
    └──────────────────────┘             └─────────────────────────────────────────┘

Every node runs the same image (:mod:`dockkit.image`), so the interpreter,
dockkit and the user's requirements are identical everywhere. Each node gets
its own ed25519 host key at start (never baked in); the cluster has one client
key. Two ssh_configs are written: one in the state directory for this machine
(nodes reached on their published ports) and one inside every node (nodes
reached by name on the private network, or on their Docker host's published
port when they live on another Docker host). Everything is labelled
``dockkit.cluster=<name>``, so :meth:`Cluster.down` works from Docker's state
even after a crashed ``up`` or a deleted state directory.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shlex
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .config import check_cluster_name, cluster_dir
from .errors import ClusterError, ConfigError, DockerError, DockkitError
from .image import LABEL, docker_client, docker_errors, engine_url, ensure_worker_image, install_node_keys
from .keys import SSHHostEntry, generate_keypair, known_hosts_line, ssh_config_text

CLUSTER_LABEL = "dockkit.cluster"
NODE_LABEL = "dockkit.node"
HEAD = "node0"
LOCAL_DOCKER = "local"
RUN_PID_FILE = "/tmp/dockkit-run.pid"


@dataclass
class NodeInfo:
    """One node as recorded in the state directory."""

    name: str
    container: str
    docker_host: str
    address: str
    port: int
    host_key: str
    workers: int
    state: str = "unknown"


@dataclass
class ClusterState:
    name: str
    image: str
    nodes: list[NodeInfo] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        data = {"name": self.name, "image": self.image, "nodes": [asdict(n) for n in self.nodes]}
        (directory / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "ClusterState | None":
        path = directory / "cluster.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(data["name"], data["image"], [NodeInfo(**n) for n in data["nodes"]])


class Cluster:
    """N identical SSH worker containers on one or more Docker hosts.

    Args:
        nodes: number of containers.
        name: the cluster's name (containers are ``dockkit-<name>-nodeK``).
        workers_per_node: workers each node runs (default: the node's CPU count).
        cpus, memory: limits per node (``1.5``, ``"2g"``).
        docker_hosts: Docker Engines, each an Engine URL (``ssh://user@host:port``,
            ``unix:///var/run/docker.sock``), a Docker context's name, or ``"local"`` for
            the default engine (``DOCKER_HOST``, else the current context, else the local
            socket); default ``["local"]``. Nodes are spread over them in turn. A node on
            an engine reached over ``ssh://``/``tcp://`` publishes its sshd on that host's
            address, which every node must be able to reach (only that port is needed).
        base_image, requirements: see :func:`dockkit.image.ensure_worker_image`.
        ready_timeout: seconds a node may take until key login works.
        log: receives one-line progress messages.

    Use ``with Cluster(3) as c:`` to have ``down()`` run at the end.
    """

    def __init__(self, nodes: int = 3, *, name: str = "dockkit", workers_per_node: int | None = None,
                 cpus: float | None = None, memory: str | None = None, docker_hosts=None,
                 base_image: str | None = None, requirements: str | None = None,
                 ready_timeout: float = 60.0, log=None):
        if not isinstance(nodes, int) or nodes < 1:
            raise ConfigError(f"a cluster needs at least 1 node, got {nodes!r}")
        self.name = check_cluster_name(name)
        self.nodes = nodes
        self.workers_per_node = workers_per_node
        self.cpus = cpus
        self.memory = memory
        self.docker_hosts = list(docker_hosts or [LOCAL_DOCKER])
        self.base_image = base_image
        self.requirements = requirements
        self.ready_timeout = ready_timeout
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.directory = cluster_dir(self.name)
        self._clients: dict[str, object] = {}
        self._urls: dict[str, str] = {}

    # --- paths ------------------------------------------------------------------------
    @property
    def ssh_config_path(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def key_path(self) -> Path:
        return self.directory / "id_ed25519"

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.directory)

    def _client(self, docker_host: str):
        if docker_host not in self._clients:
            self._clients[docker_host] = docker_client(None if docker_host == LOCAL_DOCKER else docker_host)
        return self._clients[docker_host]

    def _engine_url(self, docker_host: str) -> str:
        """The URL behind a docker_hosts entry, so two spellings of one engine compare equal."""
        if docker_host not in self._urls:
            self._urls[docker_host] = engine_url(None if docker_host == LOCAL_DOCKER else docker_host)
        return self._urls[docker_host]

    def _labelled(self, docker_host: str) -> list:
        client = self._client(docker_host)
        with docker_errors("listing the cluster's containers"):
            return client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={self.name}"})

    # --- up -----------------------------------------------------------------------------
    def up(self) -> "Cluster":
        """Start the cluster, or scale an existing one to ``nodes``. Returns self.

        Raises:
            DockerError: no Docker Engine, or no permission on its socket.
            ImageError: the worker image could not be built.
            ClusterError: a node never became ready (the error carries its logs),
                or a container name is taken by something that isn't this cluster.
        """
        state = self.state()
        # by id: two of the docker_hosts may reach the same engine
        existing = list({c.id: c for host in self.docker_hosts for c in self._labelled(host)}.values())
        if state is None and existing:
            raise ClusterError(
                f"containers labelled {CLUSTER_LABEL}={self.name} exist but this machine has no "
                f"state for them (it was deleted, or another user made them); run `dockkit down "
                f"--name {self.name}` first, or pick another --name")
        if state is not None and len(state.nodes) == self.nodes and len(existing) == self.nodes:
            self.log(f"dockkit: cluster {self.name!r} is already up with {self.nodes} nodes")
            return self
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key_path.exists():
            generate_keypair(f"dockkit-{self.name}").write(self.key_path)
        client_public = Path(f"{self.key_path}.pub").read_text().strip()
        images = {host: ensure_worker_image(self._client(host), base_image=self.base_image,
                                            requirements=self.requirements, log=self.log)
                  for host in self.docker_hosts}
        state = state or ClusterState(self.name, images[self.docker_hosts[0]])
        created: list = []
        try:
            if len(state.nodes) > self.nodes:
                self._remove_nodes(state, state.nodes[self.nodes:])
            for index in range(len(state.nodes), self.nodes):
                docker_host = self.docker_hosts[index % len(self.docker_hosts)]
                node, container = self._create_node(index, docker_host, images[docker_host], client_public)
                created.append(container)
                state.nodes.append(node)
            self._write_local_config(state)
            self._wait_ready(state, [c.name for c in created])
            self._write_node_configs(state)
        except BaseException:
            for container in created:  # nothing half-created stays behind
                _force_remove(container)
            state.nodes = [n for n in state.nodes if n.container not in {c.name for c in created}]
            if state.nodes:
                self._write_local_config(state)
            else:
                shutil.rmtree(self.directory, ignore_errors=True)
            raise
        state.save(self.directory)
        return self

    def _network(self, docker_host: str):
        client = self._client(docker_host)
        name = f"dockkit-{self.name}"
        with docker_errors(f"creating network {name}", ClusterError):
            found = client.networks.list(names=[name])
            if found:
                return found[0]
            return client.networks.create(name, driver="bridge", labels={
                LABEL: "true", CLUSTER_LABEL: self.name})

    def _create_node(self, index: int, docker_host: str, image: str, client_public: str):
        client = self._client(docker_host)
        network = self._network(docker_host)
        name = f"node{index}"
        container_name = f"dockkit-{self.name}-{name}"
        address = _engine_address(self._engine_url(docker_host))
        # A local engine's nodes are for this machine only; a remote one's must be reachable.
        publish = "127.0.0.1" if address == "127.0.0.1" else "0.0.0.0"
        host_key = generate_keypair(f"dockkit-{self.name}-{name}")
        kwargs = {}
        if self.cpus:
            kwargs["nano_cpus"] = int(float(self.cpus) * 1e9)
        if self.memory:
            kwargs["mem_limit"] = self.memory
        with docker_errors(f"creating container {container_name}", ClusterError):
            try:
                client.containers.get(container_name)
            except Exception:
                pass
            else:
                raise ClusterError(f"a container named {container_name} already exists; remove it "
                                   f"or pick another --name")
            endpoint = client.api.create_endpoint_config(aliases=[name])
            container = client.containers.create(
                image, name=container_name, hostname=name, detach=True,
                labels={LABEL: "true", CLUSTER_LABEL: self.name, NODE_LABEL: name},
                ports={"22/tcp": (publish, None)}, network=network.name,
                networking_config={network.name: endpoint}, **kwargs)
        try:
            with docker_errors(f"starting {container_name}", ClusterError):
                install_node_keys(container, host_key, client_public)
                container.start()
                container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        except BaseException:
            _force_remove(container)
            raise
        workers = self.workers_per_node or _cpu_count(container)
        return NodeInfo(name, container_name, docker_host, address, port, host_key.public_line,
                        workers, "running"), container

    def _write_local_config(self, state: ClusterState) -> None:
        entries = [SSHHostEntry(n.name, n.address, n.port, "root", self.key_path, self.known_hosts_path)
                   for n in state.nodes]
        _write_private(self.ssh_config_path, ssh_config_text(entries))
        _write_private(self.known_hosts_path, "".join(
            known_hosts_line(n.address, n.port, n.host_key) + "\n" for n in state.nodes))

    def _wait_ready(self, state: ClusterState, new: list[str]) -> None:
        """Wait until key login works on every new node; a node that never gets there fails up()."""
        from .hosts import HostSpec
        from .ssh import SSHConnection

        def login(node: NodeInfo) -> None:
            deadline = time.monotonic() + self.ready_timeout
            while True:
                try:
                    with SSHConnection(HostSpec(node.name), ssh_config=self.ssh_config_path,
                                       connect_timeout=5) as connection:
                        status, _, _ = connection.run("true", timeout=10)
                        if status == 0:
                            return
                except DockkitError as exc:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"{node.name} ({node.container}) never accepted an SSH login within "
                            f"{self.ready_timeout:.0f} s: {exc}\n--- its logs ---\n"
                            + self._container_logs(node)) from None
                time.sleep(0.1)

        nodes = [n for n in state.nodes if n.container in new]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            for future in [pool.submit(login, n) for n in nodes]:
                future.result()

    def _container_logs(self, node: NodeInfo) -> str:
        try:
            container = self._client(node.docker_host).containers.get(node.container)
            return container.logs(tail=50).decode(errors="replace")
        except Exception as exc:  # the logs are a courtesy; the real error is the caller's
            return f"(no logs: {exc})"

    def _write_node_configs(self, state: ClusterState) -> None:
        """Give every node the client key and an ssh_config naming every other node."""
        key = self.key_path.read_bytes()
        for node in state.nodes:
            entries, known = [], []
            for other in state.nodes:
                if self._engine_url(other.docker_host) == self._engine_url(node.docker_host):
                    hostname, port = other.name, 22
                else:
                    hostname, port = other.address, other.port
                entries.append(SSHHostEntry(other.name, hostname, port, "root", "/root/.ssh/id_ed25519",
                                            "/root/.ssh/known_hosts"))
                known.append(known_hosts_line(hostname, port, other.host_key) + "\n")
            files = {"config": ssh_config_text(entries).encode(), "known_hosts": "".join(known).encode(),
                     "id_ed25519": key}
            container = self._client(node.docker_host).containers.get(node.container)
            with docker_errors(f"writing the ssh config of {node.name}", ClusterError):
                container.put_archive("/root/.ssh", _tar(files))

    # --- scale down / down -------------------------------------------------------------------
    def _remove_nodes(self, state: ClusterState, nodes: list[NodeInfo]) -> None:
        for node in nodes:
            try:
                _force_remove(self._client(node.docker_host).containers.get(node.container))
            except DockkitError:
                raise
            except Exception:
                pass  # already gone
        state.nodes = [n for n in state.nodes if n not in nodes]

    def down(self) -> int:
        """Remove every container and network of this cluster, its keys and state.

        Works from Docker's labels, so a crashed ``up`` or a deleted state
        directory leaves nothing behind; idempotent. Returns the number of
        containers removed.
        """
        hosts = set(self.docker_hosts)
        state = self.state()
        if state is not None:
            hosts |= {n.docker_host for n in state.nodes}
        removed = 0
        for host in sorted(hosts):
            client = self._client(host)
            for container in self._labelled(host):
                _force_remove(container)
                removed += 1
            with docker_errors("removing the cluster's network", ClusterError):
                for network in client.networks.list(filters={"label": f"{CLUSTER_LABEL}={self.name}"}):
                    network.remove()
        shutil.rmtree(self.directory, ignore_errors=True)
        return removed

    def __enter__(self) -> "Cluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # --- looking at it -------------------------------------------------------------------------
    def status(self) -> list[NodeInfo]:
        """The nodes with their live container state ('running', 'exited', 'missing')."""
        state = self.state()
        if state is None:
            return []
        for node in state.nodes:
            try:
                container = self._client(node.docker_host).containers.get(node.container)
                node.state = container.status
            except DockerError:
                raise
            except Exception:
                node.state = "missing"
        return state.nodes

    def _require(self) -> ClusterState:
        state = self.state()
        if state is None or not state.nodes:
            raise ClusterError(f"no cluster named {self.name!r} is up; start one with "
                               f"`dockkit up --name {self.name}`")
        return state

    def node(self, name: str) -> NodeInfo:
        for node in self._require().nodes:
            if node.name == name:
                return node
        raise ConfigError(f"no node {name!r} in cluster {self.name!r} "
                          f"(nodes: {', '.join(n.name for n in self._require().nodes)})")

    def container(self, name: str):
        node = self.node(name)
        return self._client(node.docker_host).containers.get(node.container)

    def ssh_argv(self, node: str, command=()) -> list[str]:
        """The ``ssh`` command line that logs in to ``node`` with the generated config."""
        self.node(node)
        return ["ssh", "-F", str(self.ssh_config_path), node, *command]

    def exec(self, node: str, command, *, stream=None, workdir: str | None = None,
             environment: dict | None = None) -> int:
        """Run ``command`` in ``node``'s container, streaming its output; returns its exit status."""
        container = self.container(node)
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        client = self._client(self.node(node).docker_host)
        out = stream or _StdStreams()
        with docker_errors(f"running a command in {node}", ClusterError):
            exec_id = client.api.exec_create(container.id, argv, workdir=workdir,
                                             environment=environment)["Id"]
            for stdout, stderr in client.api.exec_start(exec_id, stream=True, demux=True):
                if stdout:
                    out.stdout(stdout)
                if stderr:
                    out.stderr(stderr)
            return int(client.api.exec_inspect(exec_id)["ExitCode"])

    def logs(self, tail: int = 100) -> dict[str, str]:
        """The last ``tail`` lines of every node's container log."""
        return {n.name: self._container_logs(n) for n in self._require().nodes}

    # --- running work ------------------------------------------------------------------------
    def upload(self, directory=".", *, limit: int | None = None):
        """Copy ``directory`` (ignore rules applied) to the same path on every node."""
        from .sync import DEFAULT_LIMIT, pack

        bundle = pack(directory, limit=limit or DEFAULT_LIMIT)
        for node in self._require().nodes:
            container = self.container(node.name)
            with docker_errors(f"copying files to {node.name}", ClusterError):
                container.exec_run(["mkdir", "-p", str(bundle.root)])
                container.put_archive("/", bundle.tar)
        return bundle

    def hosts_for(self, workers: int | None) -> list[str]:
        """``--hosts`` words for the nodes: each node's own count unless ``workers`` is given."""
        nodes = self._require().nodes
        if workers is None:
            return [f"{n.name}*{n.workers}" for n in nodes]
        return [n.name for n in nodes]

    def run(self, script: str, args=(), *, workers: int | None = None, directory: str = ".",
            stream=None, upload_limit: int | None = None, launcher_options=()) -> int:
        """Copy the working directory to every node and run ``script`` from the head node.

        The head node runs ``python -m dockkit --hosts node0 node1 … --tunnel``: the
        SSH launcher inside identical containers. Output streams live; returns the
        script's exit status.

        Raises:
            ConfigError: the script does not exist, or the directory is too large.
            ClusterError: no such cluster is up.
        """
        script_path = Path(script).resolve()
        if not script_path.is_file():
            raise ConfigError(f"script not found: {script!r}")
        root = Path(directory).resolve()
        if root not in script_path.parents:
            raise ConfigError(f"the script {script} is outside the directory {root} that is copied "
                              "to the nodes; run from the project directory that holds it")
        bundle = self.upload(root, limit=upload_limit)
        self.log(f"dockkit: copied {bundle.files} files ({bundle.size / 1e6:.1f} MB) from {root} "
                 f"to {len(self._require().nodes)} nodes")
        command = ["python", "-m", "dockkit", "--hosts", *self.hosts_for(workers), "--",
                   "--tunnel", "--ssh-config", "/root/.ssh/config", *launcher_options]
        if workers is not None:
            command += ["-n", str(workers)]
        command += [str(script_path), *args]
        # The pid file lets Ctrl-C here reach the launcher in the head node.
        shell = f"echo $$ > {RUN_PID_FILE}; exec {shlex.join(command)}"
        try:
            return self.exec(HEAD, shell, stream=stream, workdir=str(root),
                             environment={"PYTHONUNBUFFERED": "1"})
        except KeyboardInterrupt:
            self.container(HEAD).exec_run(["sh", "-c", f"kill -INT $(cat {RUN_PID_FILE})"])
            raise

    def executor(self, workers: int | None = None, **options):
        """A ``concurrent.futures.Executor`` whose workers run on the cluster's nodes."""
        from .executor import Executor

        return Executor(workers, hosts=self.hosts_for(workers), ssh_config=str(self.ssh_config_path),
                        tunnel=True, **options)


class _StdStreams:
    def stdout(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def stderr(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()


def _engine_address(url: str) -> str:
    """Where a Docker Engine's published ports are: 127.0.0.1 for a local socket, else its host.

    For ``ssh://`` the host goes through ``~/.ssh/config``'s HostName, as docker-py does.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("unix", "npipe", "http+unix") or not parsed.hostname:
        return "127.0.0.1"
    host = parsed.hostname
    if host in ("localhost", "::1") or host.startswith("127."):
        return "127.0.0.1"
    config = Path("~/.ssh/config").expanduser()
    if parsed.scheme == "ssh" and config.is_file():
        import paramiko  # only for ssh:// engines, whose transport needs it anyway

        host = paramiko.SSHConfig.from_path(str(config)).lookup(host).get("hostname", host)
    return host


def _cpu_count(container) -> int:
    nano = container.attrs.get("HostConfig", {}).get("NanoCpus") or 0
    return max(1, int(nano / 1e9)) if nano else (os.cpu_count() or 1)


def _force_remove(container) -> None:
    try:
        container.remove(force=True, v=True)
    except Exception:  # already gone; removal is best effort by nature
        pass


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
