"""Integration fixtures: a Docker client, the worker image, and SSH nodes running it.

Fixtures:
    docker_client   (session) a connected docker-py client. Without an engine the
                    test is skipped, or fails when the CI variable is set.
    worker_image    (session) the worker image's tag, built once per session
                    (``ensure_worker_image``; the first build takes a few minutes).
    ssh_nodes       (session) :class:`SSHNodes`: three running worker containers
                    ``node0..node2`` (testcontainers) on a private labelled network, reached from the
                    test host at their IP on port 22, with a client key, pinned host
                    keys, a known_hosts file and an ssh_config. Shared: don't break them.
    engine_bed      (session) :class:`~tests.integration.engines.EngineBed`: two extra Docker
                    Engines (dind containers with their own image stores) reached over tcp://
                    and ssh://, with the iptables rules they need, forming a Swarm that
                    engine0 manages; all removed at the end.
    make_ssh_nodes  (function) ``make_ssh_nodes(n, prefix="node")`` starts a fresh
                    :class:`SSHNodes` for one test (e.g. to kill a node); removed after it.

Everything started here carries ``org.dockkit.managed=true`` and
``org.dockkit.test-run=<id>``, and is removed by that label at teardown.
"""

import os

# Before anything imports testcontainers: its Ryuk image can't be pulled here, and
# inside a container it would otherwise report the gateway's IP as the host.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

import base64  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import paramiko  # noqa: E402
import pytest  # noqa: E402
from docker.models.containers import Container  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402
from testcontainers.core.wait_strategies import LogMessageWaitStrategy  # noqa: E402

from dockkit.errors import DockerError  # noqa: E402
from dockkit.cluster.engine import LABEL, docker_client as connect_docker  # noqa: E402
from dockkit.cluster.image import ensure_worker_image  # noqa: E402
from dockkit.launch.ssh.keys import KeyPair, SSHHostEntry, generate_keypair, known_hosts_line, ssh_config_text  # noqa: E402
from dockkit.launch.warm import PS_ARGV, run_processes  # noqa: E402

RUN_LABEL = "org.dockkit.test-run"
BUILD_TIMEOUT = 900  # s; the first test to need the image may build the base and the image
READY_TIMEOUT = 60  # s for sshd to listen


class ExecResult(NamedTuple):
    exit_code: int
    output: str  # stdout and stderr together


@dataclass
class SSHNode:
    """One worker container as an SSH host."""

    alias: str  # the ssh_config Host name, also the container's hostname and network alias
    hostname: str  # the container's IP on the network, reachable from the test host
    port: int  # 22
    container: Container
    host_key: KeyPair  # pinned in known_hosts
    user: str = "root"


@dataclass
class SSHNodes:
    """A set of running SSH nodes plus the client-side files to reach them strictly."""

    nodes: list[SSHNode]
    network: str  # the Docker network's name
    ssh_config_path: Path
    known_hosts_path: Path
    client_key_path: Path  # private key; ``.pub`` beside it
    client_key: KeyPair
    run_id: str

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, key: int | str) -> SSHNode:
        """A node by index or alias."""
        if isinstance(key, int):
            return self.nodes[key]
        for node in self.nodes:
            if node.alias == key:
                return node
        raise KeyError(key)

    def exec(self, node: SSHNode | int | str, cmd: str | list[str]) -> ExecResult:
        """Run ``cmd`` in the node's container with docker exec (not SSH), e.g. ``ps -ef``.

        A string runs under ``sh -c``; a list runs as is.
        """
        node = node if isinstance(node, SSHNode) else self[node]
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        code, out = node.container.exec_run(argv)
        return ExecResult(code, out.decode(errors="replace"))

    def run_processes(self, node: SSHNode | int | str) -> list[str]:
        """The node's processes that belong to runs (agents, workers), one ``ps`` line each."""
        return run_processes(self.exec(node, list(PS_ARGV)).output)

    def connect(self, node: SSHNode | int | str, **kwargs) -> paramiko.SSHClient:
        """A paramiko client logged in to the node with the client key and pinned host keys only.

        Keyword arguments override those of ``SSHClient.connect``.
        """
        node = node if isinstance(node, SSHNode) else self[node]
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        options = dict(port=node.port, username=node.user, key_filename=str(self.client_key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)
        client.connect(node.hostname, **(options | kwargs))
        return client


def _log(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)  # progress of a long build, uncaptured


def pytest_collection_modifyitems(config, items):
    """Mark integration tests ``docker``; give the first one that builds the image more time."""
    here = Path(__file__).parent
    ours = [item for item in items if here in item.path.parents]
    for item in ours:
        item.add_marker(pytest.mark.docker)
    first = next((i for i in items if "worker_image" in getattr(i, "fixturenames", ())), None)
    if first is not None and first.get_closest_marker("timeout") is None:
        first.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = connect_docker()
    except DockerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"integration tests need a Docker Engine in CI: {exc}")
        pytest.skip(f"no Docker Engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_image(docker_client) -> str:
    return ensure_worker_image(docker_client, log=_log)


@pytest.fixture(scope="session")
def engine_bed(docker_client):
    from tests.integration.engines import EngineBed
    from tests.names import TEST_RUN

    with EngineBed(docker_client, 2, f"{TEST_RUN}-{uuid.uuid4().hex[:8]}", log=_log, swarm=True) as bed:
        yield bed


@pytest.fixture(scope="session")
def ssh_nodes(docker_client, worker_image, tmp_path_factory) -> SSHNodes:
    nodes = start_ssh_nodes(docker_client, worker_image, 3, tmp_path_factory.mktemp("ssh-nodes"))
    try:
        yield nodes
    finally:
        remove_run(docker_client, nodes.run_id)


@pytest.fixture
def make_ssh_nodes(docker_client, worker_image, tmp_path):
    run_ids = []

    def make(n: int = 1, prefix: str = "node") -> SSHNodes:
        nodes = start_ssh_nodes(docker_client, worker_image, n, tmp_path / f"nodes{len(run_ids)}",
                                prefix=prefix)
        run_ids.append(nodes.run_id)
        return nodes

    yield make
    for run_id in run_ids:
        remove_run(docker_client, run_id)


def start_ssh_nodes(client, image: str, n: int, workdir: Path, prefix: str = "node") -> SSHNodes:
    """Start ``n`` worker containers with testcontainers on a new network; write the client files.

    Keys reach each node through the entrypoint's environment variables; readiness is
    sshd's "Server listening" log line. Cleans up what it started if any node fails.
    """
    run_id = uuid.uuid4().hex[:10]
    labels = {LABEL: "true", RUN_LABEL: run_id}
    workdir.mkdir(parents=True, exist_ok=True)
    client_key = generate_keypair("dockkit-test-client")
    client_key_path = client_key.write(workdir / "id_ed25519")
    try:
        network = Network(docker_network_kw={"driver": "bridge", "labels": labels}).create()
        nodes = []
        for i in range(n):
            alias = f"{prefix}{i}"
            host_key = generate_keypair(f"{alias}-host")
            container = (
                DockerContainer(image)
                .with_name(f"dockkit-test-{run_id}-{alias}")
                .with_kwargs(labels=labels, hostname=alias)  # one call: a second one replaces the first
                .with_env("DOCKKIT_HOST_KEY", _b64(host_key.private_openssh))
                .with_env("DOCKKIT_AUTHORIZED_KEYS", _b64(client_key.public_line.encode() + b"\n"))
                .with_network(network)
                .with_network_aliases(alias)
                .waiting_for(LogMessageWaitStrategy(r"Server listening on .* port 22")
                             .with_startup_timeout(READY_TIMEOUT).with_poll_interval(0.1))
                .start()
            )
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            ip = wrapped.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            nodes.append(SSHNode(alias, ip, 22, wrapped, host_key))
        for node in nodes:
            _wait_port(node.hostname, node.port)
    except BaseException:
        remove_run(client, run_id)
        raise
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text("".join(
        f"{known_hosts_line(name, node.port, node.host_key.public_line)}\n"
        for node in nodes for name in (node.hostname, node.alias)))
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(ssh_config_text(
        SSHHostEntry(node.alias, node.hostname, node.port, node.user, client_key_path, known_hosts)
        for node in nodes))
    return SSHNodes(nodes, network.name, ssh_config, known_hosts, client_key_path, client_key, run_id)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wait_port(host: str, port: int) -> None:
    """sshd logged that it listens; wait until its port also answers from this machine."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def remove_test_run():
    """:func:`remove_run`, for test modules that start containers of their own."""
    return remove_run


def remove_run(client, run_id: str) -> None:
    """Remove every container and network labelled with this run id."""
    flt = {"label": f"{RUN_LABEL}={run_id}"}
    for container in client.containers.list(all=True, filters=flt):
        container.remove(force=True)
    for network in client.networks.list(filters=flt):
        network.remove()
