"""A multi-engine test bed: extra Docker Engines, each a container running its own dockerd.

Each engine is a container of ``dockkit-test-engine:<suite>`` (Debian's ``docker.io`` and
``openssh-server``, built offline with mmdebstrap like the worker's base) with its own image
store (``vfs`` on a tmpfs), reachable from this machine and from every container as::

    tcp://<its docker0 address>:2375      the engine's API, unauthenticated (tests only)
    ssh://root@<its docker0 address>:22   sshd in the same container: docker-py's ssh
                                          transport runs ``docker system dial-stdio`` there

The engines sit on docker0, a cluster's nodes on a user-defined bridge. Docker isolates
bridges from each other, so the bed adds two ``DOCKER-USER`` rules letting ``br-+`` and
``docker0`` talk, tagged with a comment naming the bed, and deletes them when it comes down.
Real remote hosts don't need this: their traffic is routed, not bridged.

``--privileged`` is refused on this kind of host; the capabilities below are enough for
dockerd and its containers.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from dockkit.cluster.base_image import build_debian_image, image_exists
from dockkit.cluster.engine import LABEL, docker_client as connect_docker
from dockkit.cluster.nodes import install_node_keys
from dockkit.launch.ssh.keys import KeyPair, generate_keypair, known_hosts_line
from tests.integration.beds import Bed

RUN_LABEL = "org.dockkit.test-run"
ENGINE_IMAGE = "dockkit-test-engine:bookworm"
ENGINE_PACKAGES = ("docker.io", "iptables", "ca-certificates", "procps", "openssh-server")
API_PORT = 2375
READY_TIMEOUT = 90  # s for dockerd and sshd to answer

_ENGINE_OPTIONS = dict(
    cap_add=["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "MKNOD", "NET_RAW"],
    security_opt=["seccomp=unconfined", "apparmor=unconfined"],
    binds=["/sys/fs/cgroup:/sys/fs/cgroup:rw"],
    tmpfs={"/var/lib/docker": "exec"},
)
# sshd reads the keys where install_node_keys puts them and logs to the container's output
# (-D -e, so tests can see a login); dockerd keeps the foreground.
_ENGINE_COMMAND = (
    "mkdir -p /run/sshd && { /usr/sbin/sshd -D -e -h /etc/dockkit/ssh_host_ed25519_key "
    "-o AuthorizedKeysFile=/etc/dockkit/authorized_keys -o PasswordAuthentication=no & } && "
    f"exec dockerd --storage-driver=vfs -H unix:///var/run/docker.sock -H tcp://0.0.0.0:{API_PORT} "
    # a registry the tests start (tests.integration.registry) speaks plain HTTP on docker0
    "--insecure-registry 172.16.0.0/12"
)


@dataclass
class Engine:
    """One extra Docker Engine of the bed."""

    name: str  # the container's name
    address: str  # on docker0: reachable from this machine and from every container
    container: object  # docker-py Container
    host_key: KeyPair

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.address}:{API_PORT}"

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@{self.address}:22"

    def client(self) -> docker.DockerClient:
        return connect_docker(self.tcp_url)

    def kill(self) -> None:
        """Kill the engine's container: its dockerd and every container on it die at once."""
        self.container.kill()


@dataclass
class EngineBed(Bed):
    """``with EngineBed(client, n, run_id) as bed:`` n extra engines, removed at the end.

    ``bed.ssh_home`` is a HOME whose ``.ssh`` holds the client key, a config naming it, and
    the engines' pinned host keys: set ``HOME`` to it to reach the engines over ``ssh://``.
    With ``swarm=True`` the engines form a Docker Swarm as they start, before anything runs
    on them (joining or leaving a swarm disturbs name resolution in running clusters):
    engine0 manages it, the others join as workers. Removing the engines removes the swarm.
    """

    docker: docker.DockerClient
    n: int
    run_id: str
    log: callable = print
    swarm: bool = False
    engines: list[Engine] = field(default_factory=list)
    ssh_home: Path | None = None
    _rules: list[list[str]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None

    def _start(self) -> None:
        ensure_engine_image(self.docker, self.log)
        self._open_bridges()
        self._tmp = tempfile.TemporaryDirectory(prefix="dockkit-engines-")
        self.ssh_home = Path(self._tmp.name)
        ssh_dir = self.ssh_home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        client_key = generate_keypair("engine-bed-client")
        key_path = client_key.write(ssh_dir / "id_ed25519")
        labels = {LABEL: "true", RUN_LABEL: self.run_id}
        for i in range(self.n):
            host_key = generate_keypair(f"engine{i}")
            container = self._create(f"dockkit-test-{self.run_id}-engine{i}", f"engine{i}", labels)
            install_node_keys(container, host_key, client_key.public_line)
            container.start()
            container.reload()
            address = container.attrs["NetworkSettings"]["IPAddress"]
            self.engines.append(Engine(container.name, address, container, host_key))
        (ssh_dir / "known_hosts").write_text("".join(
            known_hosts_line(e.address, 22, e.host_key.public_line) + "\n" for e in self.engines))
        (ssh_dir / "config").write_text("".join(
            f"Host {e.address}\n    IdentityFile {key_path}\n" for e in self.engines))
        for engine in self.engines:
            _wait_engine(engine)
        if self.swarm:
            self._form_swarm()

    def _form_swarm(self) -> None:
        manager, *workers = self.engines
        client = manager.client()
        client.swarm.init(advertise_addr=manager.address, listen_addr="0.0.0.0:2377")
        token = client.swarm.attrs["JoinTokens"]["Worker"]
        for worker in workers:
            worker.client().swarm.join(remote_addrs=[f"{manager.address}:2377"], join_token=token,
                                       advertise_addr=worker.address, listen_addr="0.0.0.0:2377")
        deadline = time.monotonic() + READY_TIMEOUT
        while sum(n.attrs["Status"]["State"] == "ready" for n in client.nodes.list()) < len(self.engines):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bed's swarm has not all {len(self.engines)} nodes ready")
            time.sleep(0.2)

    def _create(self, name: str, hostname: str, labels: dict):
        host_config = self.docker.api.create_host_config(**_ENGINE_OPTIONS)
        # The CLI's `--security-opt systempaths=unconfined`, which docker-py doesn't translate:
        # dockerd needs /proc/sys and friends writable.
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        created = self.docker.api.create_container(
            ENGINE_IMAGE, ["sh", "-c", _ENGINE_COMMAND], name=name, hostname=hostname,
            labels=labels, host_config=host_config)
        return self.docker.containers.get(created["Id"])

    def _open_bridges(self) -> None:
        """Let user-defined bridges and docker0 talk, with rules tagged so they can be found."""
        if shutil.which("iptables") is None:
            raise RuntimeError("the engine bed needs iptables (and root) to let clusters reach its engines")
        tag = f"dockkit-test-{self.run_id}"
        for inbound, outbound in (("br-+", "docker0"), ("docker0", "br-+")):
            rule = ["DOCKER-USER", "-i", inbound, "-o", outbound, "-j", "ACCEPT",
                    "-m", "comment", "--comment", tag]
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            self._rules.append(rule)

    def close(self) -> None:
        """Remove the engines and the rules; safe to call after a partial start."""
        flt = {"label": f"{RUN_LABEL}={self.run_id}"}
        for container in self.docker.containers.list(all=True, filters=flt):
            if container.name.startswith(f"dockkit-test-{self.run_id}-engine"):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True, v=True)
        while self._rules:
            subprocess.run(["iptables", "-D", *self._rules.pop()], capture_output=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def ensure_engine_image(client: docker.DockerClient, log=print) -> str:
    """Build the engine image from the host's apt sources once (about 70 s), like the base image."""
    if not image_exists(client, ENGINE_IMAGE):
        build_debian_image(client, ENGINE_IMAGE, ENGINE_PACKAGES, log=log)
    return ENGINE_IMAGE


def _wait_engine(engine: Engine) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            connect_docker(engine.tcp_url).close()
            return
        except Exception:
            engine.container.reload()
            if engine.container.status != "running" or time.monotonic() > deadline:
                logs = engine.container.logs(tail=20).decode(errors="replace")
                raise RuntimeError(f"engine {engine.name} did not answer on {engine.tcp_url}:\n{logs}")
            time.sleep(0.5)
