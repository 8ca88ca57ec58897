"""Remote Docker hosts for real: one cluster spread over this engine and one reached over ssh://.

The second Docker host is a container of the worker image playing a remote machine.
It shares this machine's network namespace (``network_mode="host"``), has the
engine's socket and the docker CLI mounted (docker-py's ssh transport runs
``docker system dial-stdio`` on the remote), and runs sshd on a free port of one
address. That address is the gateway of a bridge network made for the purpose: an
address of this machine that containers on any bridge network reach as well, just
as every node reaches a real remote host. What the "remote" engine publishes on
0.0.0.0 is therefore reachable at that address, as on a real remote host::

    this machine (HOME: a temporary one holding .ssh/config, known_hosts and the key)
      ├─ unix socket ──────────────► engine ◄─ node0, the head ("local")
      └─ ssh://root@<addr>:<port> ─► sshd of the remote-host container
                                       └─ docker system dial-stdio ─► engine ◄─ node1
    node0 ── ssh <addr>:<node1's published port> ──► node1

The same engine is behind both URLs, so these tests check what dockkit does per
URL (placement, published address, how the head reaches each node, cleanup, Docker
contexts, refused host keys), not the isolation of two machines: test_engines.py runs
a cluster over engines that really are others, over ssh:// and tcp://.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cloudpickle
import pytest
from docker.context import ContextAPI
from docker.models.containers import Container

import dockkit
from dockkit.cluster import image
from dockkit.cluster.nodes import CLUSTER_LABEL, install_node_keys
from dockkit.errors import DockerError
from dockkit.cluster.engine import LABEL, docker_client as connect_docker, engine_url
from dockkit.launch.ssh.keys import generate_keypair, known_hosts_line
from tests.integration.streams import Collect
from tests.names import TEST_RUN, unique_name

ROOT = Path(__file__).resolve().parents[2]
RUN_LABEL = "org.dockkit.test-run"
READY_TIMEOUT = 60  # s for the remote host's sshd to listen
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module


@dataclass
class RemoteDockerHost:
    """The stand-in for a remote machine running a Docker Engine."""

    url: str  # ssh://root@<address>:<port>
    address: str  # routable from this machine and from every container
    port: int  # its sshd
    container: Container


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_home(tmp_path_factory):
    """A HOME for this module: docker-py's ssh transport reads only ``~/.ssh``.

    Also a state directory of its own; the wheel cache and Docker contexts stay
    where they were, and the ssh agent is out of the way (only the key written here).
    """
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKKIT_CACHE_DIR", str(image._cache_dir()))
        docker_config = Path("~/.docker").expanduser()
        if "DOCKER_CONFIG" not in os.environ and docker_config.is_dir():
            patch.setenv("DOCKER_CONFIG", str(docker_config))
        patch.setenv("HOME", str(home))
        patch.delenv("SSH_AUTH_SOCK", raising=False)
        patch.setenv("DOCKKIT_STATE_DIR", str(home / "state"))
        yield home


@pytest.fixture(scope="module")
def remote_host(docker_client, worker_image, ssh_home, remove_test_run):
    """A second Docker host reached over ``ssh://``, pinned and keyed in ``ssh_home``."""
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        _cannot_run("the docker CLI is needed: the remote host runs `docker system dial-stdio`")
    engine = urlparse(engine_url())
    if engine.scheme not in ("unix", "http+unix"):
        _cannot_run(f"the engine's socket must be local to mount it, not {engine_url()}")
    run_id = f"{TEST_RUN}-{uuid.uuid4().hex[:8]}"  # .ci/run removes what carries its run id
    labels = {LABEL: "true", RUN_LABEL: run_id}
    try:
        network = docker_client.networks.create(f"dockkit-test-{run_id}-address", driver="bridge",
                                                labels=labels)
        network.reload()
        address = network.attrs["IPAM"]["Config"][0]["Gateway"]
        port = _free_port(address)
        host_key, client_key = generate_keypair("remote-docker-host"), generate_keypair("test-client")
        key_path = client_key.write(ssh_home / ".ssh" / "id_ed25519")
        (ssh_home / ".ssh" / "known_hosts").write_text(
            known_hosts_line(address, port, host_key.public_line) + "\n")
        (ssh_home / ".ssh" / "config").write_text(f"Host {address}\n    IdentityFile {key_path}\n")
        container = docker_client.containers.create(
            worker_image, ["-p", str(port), "-o", f"ListenAddress={address}"],
            name=f"dockkit-test-{run_id}-docker-host", labels=labels, network_mode="host",
            volumes={engine.path: {"bind": "/var/run/docker.sock", "mode": "rw"},
                     docker_cli: {"bind": "/usr/local/bin/docker", "mode": "ro"}})
        install_node_keys(container, host_key, client_key.public_line)
        container.start()
        _wait_listening(container, address, port)
        yield RemoteDockerHost(f"ssh://root@{address}:{port}", address, port, container)
    finally:
        remove_test_run(docker_client, run_id)


@pytest.fixture(scope="module")
def spread(remote_host, docker_client):
    """Two nodes over two Docker hosts: node0 on the local engine, node1 on the remote one."""
    name = unique_name("r")
    cluster = dockkit.Cluster(2, name=name, docker_hosts=["local", remote_host.url],
                              workers_per_node=2, log=lambda message: None).up()
    yield cluster
    assert cluster.down() == 2
    remote = connect_docker(remote_host.url)
    for client in (docker_client, remote):
        assert not client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})
        assert not client.networks.list(filters={"label": f"{CLUSTER_LABEL}={name}"})
    remote.close()
    assert not cluster.directory.exists()


# --- a cluster over two Docker hosts -----------------------------------------------------------


def test_nodes_go_round_robin_and_publish_on_the_remote_address(spread, remote_host):
    assert b"Accepted publickey for root" in remote_host.container.logs()  # ssh:// was used
    node0, node1 = spread.status()
    assert (node0.docker_host, node0.address, node0.state) == ("local", "127.0.0.1", "running")
    assert (node1.docker_host, node1.address, node1.state) == (remote_host.url, remote_host.address,
                                                              "running")
    published = spread.container("node1").attrs["NetworkSettings"]["Ports"]["22/tcp"][0]
    assert (published["HostIp"], int(published["HostPort"])) == ("0.0.0.0", node1.port)
    published = spread.container("node0").attrs["NetworkSettings"]["Ports"]["22/tcp"][0]
    assert published["HostIp"] == "127.0.0.1"


def test_the_head_reaches_the_remote_node_through_its_published_port(spread, remote_host):
    config = spread.container("node0").exec_run(["cat", "/root/.ssh/config"]).output.decode()
    node1 = config[config.index("Host node1"):]
    assert f"HostName {remote_host.address}" in node1
    assert f"Port {spread.node('node1').port}" in node1
    out = []
    status = spread.exec("node0", ["ssh", "-F", "/root/.ssh/config", "-o", "BatchMode=yes", "node1",
                                   "hostname"], stream=Collect(out))
    assert (status, b"".join(out).decode().strip()) == (0, "node1")


def test_run_maps_over_both_docker_hosts(spread, tmp_path):
    script = tmp_path / "where.py"
    script.write_text(textwrap.dedent("""
        import socket
        import time
        from dockkit import futures

        def where(_):
            time.sleep(0.05)
            return socket.gethostname()

        if __name__ == "__main__":
            print("hosts:", " ".join(sorted(set(futures.map(where, range(100))))))
    """))
    out = []
    status = spread.run(str(script), directory=str(tmp_path), stream=Collect(out))
    text = b"".join(out).decode(errors="replace")
    assert status == 0, text
    assert "hosts: node0 node1" in text, text


def test_executor_from_this_machine_reaches_both_hosts(spread):
    with spread.executor(workers=4) as executor:
        hosts = set(executor.map(_hostname, range(200)))
    assert hosts == {"node0", "node1"}


def test_status_names_each_nodes_docker_host(spread, remote_host):
    result = _dockkit_cli("status", "--name", spread.name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("node0" in line and "local" in line for line in lines), result.stdout
    assert any("node1" in line and remote_host.url in line for line in lines), result.stdout


# --- spellings and failures ----------------------------------------------------------------------


def test_cli_takes_a_unix_socket_url_and_an_ssh_url(remote_host, docker_client):
    name = unique_name("c")
    local = engine_url()
    try:
        result = _dockkit_cli("up", "--nodes", "2", "--name", name, "--workers-per-node", "1",
                              "--docker-host", local, "--docker-host", remote_host.url)
        assert result.returncode == 0, result.stderr
        node0, node1 = dockkit.Cluster(name=name).status()
        assert (node0.docker_host, node0.address) == (local, "127.0.0.1")
        assert (node1.docker_host, node1.address) == (remote_host.url, remote_host.address)
        result = _dockkit_cli("exec", "--name", name, "node0", "ssh", "-o", "BatchMode=yes", "node1",
                              "hostname")
        assert (result.returncode, result.stdout.strip()) == (0, "node1"), result.stderr
    finally:
        result = _dockkit_cli("down", "--name", name)
    assert result.returncode == 0, result.stderr
    assert "2 container(s) removed" in result.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})


def test_default_engine_follows_docker_host_and_contexts(remote_host, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", remote_host.url)
    assert engine_url() == remote_host.url
    connect_docker().close()  # over ssh://
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # where docker-py looks for contexts
    ContextAPI.create_context("dockkit-remote", host=remote_host.url)
    assert engine_url("dockkit-remote") == remote_host.url
    connect_docker("dockkit-remote").close()
    monkeypatch.setenv("DOCKER_CONTEXT", "dockkit-remote")
    assert engine_url() == remote_host.url
    with pytest.raises(DockerError, match="no Docker context named 'no-such-context'"):
        connect_docker("no-such-context")


def test_a_closed_ssh_port_fails_fast_and_creates_nothing(remote_host, docker_client):
    name = unique_name("b")
    url = f"ssh://root@{remote_host.address}:{_free_port(remote_host.address)}"
    cluster = dockkit.Cluster(2, name=name, docker_hosts=["local", url], log=lambda message: None)
    started = time.monotonic()
    with pytest.raises(DockerError, match=f"Engine at {url}: cannot reach its SSH server"):
        cluster.up()
    assert time.monotonic() - started < 15
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})
    assert not docker_client.networks.list(filters={"label": f"{CLUSTER_LABEL}={name}"})
    assert not cluster.directory.exists()


def test_an_unpinned_remote_host_key_is_refused(remote_host, ssh_home, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(ssh_home / ".ssh" / "config", home / ".ssh" / "config")  # key, no known_hosts
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(DockerError, match="not in ~/.ssh/known_hosts"):
        connect_docker(remote_host.url)


# --- helpers -----------------------------------------------------------------------------------


def _cannot_run(reason: str) -> None:
    """Skip on a developer's machine; in CI (the CI variable set) a missing piece fails the run."""
    if os.environ.get("CI"):
        pytest.fail(f"remote Docker hosts must be tested in CI: {reason}")
    pytest.skip(reason)


def _dockkit_cli(*args, timeout=300):
    env = dict(os.environ, COLUMNS="250")  # rich must not cut the URLs in the table
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def _hostname(_):
    time.sleep(0.01)
    return socket.gethostname()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _wait_listening(container, address: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        container.reload()
        if container.status == "exited":
            raise RuntimeError(f"{container.name} exited:\n{container.logs().decode(errors='replace')}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{container.name}: sshd not listening on {address}:{port}:\n"
                                   + container.logs().decode(errors="replace")) from None
        time.sleep(0.1)
