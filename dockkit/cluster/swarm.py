"""A cluster's nodes as Docker Swarm services: one service per node, on a swarm manager.

Why one service per node: each node keeps its own host key (a secret of its own) and
its own name on the network, so ``ssh_config`` and ``known_hosts`` stay true when Swarm
restarts a node, on the same swarm node or another::

    manager engine (--docker-host, first)        any ready swarm node
    ┌─────────────────────────────────────┐      ┌────────────────────────────────────────┐
    │ service dockkit-<name>-nodeK        │ ───► │ task container: sshd, host key and      │
    │ secrets  …-nodeK-host-key,          │      │ authorized_keys from secrets, published │
    │          …-authorized-keys,         │      │ on the swarm node's address (host mode) │
    │          …-client-key (head only)   │      └────────────────────────────────────────┘
    │ overlay  dockkit-<name> (attachable)│      nodes reach each other as nodeK:22 on it
    └─────────────────────────────────────┘

Keys never travel as environment, labels or image layers: a secret reaches only the
tasks of the services that name it, as a file. Everything made here carries
``dockkit.cluster=<name>``, so :func:`remove_services` and :func:`remove_leftovers` need no state.

The manager's API cannot reach into other swarm nodes' containers. Exec and file copies
go to the engine of the swarm node a task runs on where that engine was given
(``--docker-host``), else through the node's own sshd (:mod:`dockkit.cluster.over_ssh`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import docker
import docker.errors
import docker.types
import docker.utils

from dockkit.cluster.engine import LABEL, docker_errors
from dockkit.errors import ClusterError
from dockkit.launch.ssh.keys import KeyPair

__all__ = ["Task", "SwarmNode", "require_manager", "swarm_node_id", "swarm_nodes", "ensure_overlay",
           "create_node_service", "node_tasks", "wait_running", "remove_node_service",
           "remove_services", "remove_leftovers", "cluster_services"]

CLUSTER_LABEL = "dockkit.cluster"
NODE_LABEL = "dockkit.node"
HOST_KEY_FILE = "/etc/dockkit/ssh_host_ed25519_key"  # where the worker entrypoint looks
AUTHORIZED_KEYS_FILE = "/etc/dockkit/authorized_keys"
CLIENT_KEY_FILE = "/root/.ssh/id_ed25519"  # the head's, to start the run's agents


@dataclass
class Task:
    """Where one node's service runs now, as the manager reports it."""

    service: str
    node_id: str  # the swarm node's ID
    state: str  # 'running', 'starting', 'pending', 'failed', …
    container_id: str | None
    port: int | None  # the sshd port published on the swarm node (host mode)
    error: str = ""


def require_manager(client, where: str) -> None:
    """Raise unless the engine ``where`` manages a swarm.

    Raises:
        ClusterError: it is in no swarm, or only a worker of one.
    """
    with docker_errors(f"asking {where} about its swarm", where=where):
        swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise ClusterError(f"the Docker Engine {where} is not in a swarm: run `docker swarm init` "
                           "there (and `docker swarm join` on the others), or leave out --swarm")
    if not swarm.get("ControlAvailable"):
        raise ClusterError(f"the Docker Engine {where} is a swarm worker, not a manager: give a "
                           "manager's engine first with --docker-host (`docker node ls` there lists them)")


def swarm_node_id(client, where: str) -> str | None:
    """The swarm node ID of the engine ``where``, or None when it is in no swarm."""
    with docker_errors(f"asking {where} about its swarm", where=where):
        swarm = client.info().get("Swarm") or {}
    return swarm.get("NodeID") or None if swarm.get("LocalNodeState") == "active" else None


@dataclass(frozen=True)
class SwarmNode:
    """A ready node of the swarm, as its manager describes it."""

    hostname: str
    address: str  # where its published ports are: the address it joined the swarm with
    cpus: int


def swarm_nodes(manager) -> dict[str, SwarmNode]:
    """Swarm node ID → the node, for the nodes that are ready."""
    with docker_errors("listing the swarm's nodes", ClusterError):
        nodes = manager.nodes.list()
    return {n.id: _swarm_node(n.attrs) for n in nodes if n.attrs.get("Status", {}).get("State") == "ready"}


def _swarm_node(attrs: dict) -> SwarmNode:
    address = attrs.get("Status", {}).get("Addr", "")
    if address in ("", "0.0.0.0"):  # a manager may report this: its manager address says where it is
        address = (attrs.get("ManagerStatus") or {}).get("Addr", "").rsplit(":", 1)[0]
    cpus = attrs.get("Description", {}).get("Resources", {}).get("NanoCPUs", 0) // 1_000_000_000
    return SwarmNode(attrs["Description"]["Hostname"], address, max(1, cpus))


def ensure_overlay(manager, cluster: str):
    """The cluster's attachable overlay network ``dockkit-<name>``, made if missing."""
    name = f"dockkit-{cluster}"
    with docker_errors(f"creating overlay network {name}", ClusterError):
        found = [n for n in manager.networks.list(names=[name]) if n.attrs.get("Driver") == "overlay"]
        if found:
            return found[0]
        return manager.networks.create(name, driver="overlay", attachable=True,
                                       labels={LABEL: "true", CLUSTER_LABEL: cluster})


def _secret(manager, name: str, data: bytes, cluster: str):
    """A new secret ``name``; a leftover of the same cluster (a crashed ``up``) is replaced."""
    with docker_errors(f"creating secret {name}", ClusterError):
        for old in manager.secrets.list(filters={"name": name}):
            if old.name == name:
                if old.attrs["Spec"].get("Labels", {}).get(CLUSTER_LABEL) != cluster:
                    raise ClusterError(f"a swarm secret named {name} exists and is not part of "
                                       f"cluster {cluster!r}; remove it or pick another --name")
                old.remove()
        return manager.secrets.create(name=name, data=data, labels={LABEL: "true", CLUSTER_LABEL: cluster})


def create_node_service(manager, *, cluster: str, index: int, service: str, image: str, network,
                        host_key: KeyPair, authorized_keys: str, client_key: bytes | None,
                        cpus: float | None, memory: str | None, avoid_nodes: list[str]) -> None:
    """Create the service of ``node<index>``: one task, restarted whenever it ends.

    ``client_key`` (the head's alone) becomes a secret at ``/root/.ssh/id_ed25519``.
    ``avoid_nodes`` are swarm node IDs the node must not run on (their engines lack the image).

    Raises:
        ClusterError: the manager refused (a name in use by something else, a bad limit).
    """
    name = f"node{index}"
    labels = {LABEL: "true", CLUSTER_LABEL: cluster, NODE_LABEL: name}
    files = {HOST_KEY_FILE: (f"{service}-host-key", host_key.private_openssh, 0o400),
             AUTHORIZED_KEYS_FILE: (f"dockkit-{cluster}-authorized-keys", authorized_keys.encode(), 0o444)}
    if client_key is not None:
        files[CLIENT_KEY_FILE] = (f"dockkit-{cluster}-client-key", client_key, 0o400)
    refs = []
    for path, (secret_name, data, mode) in files.items():
        secret = _existing_secret(manager, secret_name, cluster) if path == AUTHORIZED_KEYS_FILE else None
        secret = secret or _secret(manager, secret_name, data, cluster)
        refs.append(docker.types.SecretReference(secret.id, secret_name, filename=path, mode=mode))
    resources = docker.types.Resources(cpu_limit=int(float(cpus) * 1e9) if cpus else None,
                                       mem_limit=_bytes(memory) if memory else None)
    with docker_errors(f"creating swarm service {service}", ClusterError):
        if any(s.name == service for s in manager.services.list(filters={"name": service})):
            raise ClusterError(f"a swarm service named {service} already exists; remove it "
                               f"(`dockkit down --name {cluster}` if it is this cluster's) or pick another --name")
        manager.services.create(
            image, name=service, hostname=name, labels=labels, container_labels=labels,
            secrets=refs, resources=resources,
            networks=[docker.types.NetworkAttachmentConfig(network.id, aliases=[name])],
            # dnsrr: nodeK resolves to its task itself (no virtual IP to balance); host mode:
            # the sshd is published on the swarm node it runs on, at a port the engine picks
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=[
                {"Protocol": "tcp", "TargetPort": 22, "PublishMode": "host"}]),
            constraints=[f"node.id!={node}" for node in avoid_nodes],
            preferences=[("spread", "node.id")],
            restart_policy=docker.types.RestartPolicy(condition="any", delay=1_000_000_000))


def _existing_secret(manager, name: str, cluster: str):
    """The cluster's shared secret made for an earlier node, if it is there."""
    with docker_errors(f"looking up secret {name}", ClusterError):
        for secret in manager.secrets.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"}):
            if secret.name == name:
                return secret
    return None


def cluster_services(manager, cluster: str) -> list:
    """The services of ``cluster`` on this manager; none on an engine that manages no swarm."""
    try:
        with docker_errors("listing the cluster's swarm services", ClusterError):
            return manager.services.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"})
    except ClusterError as exc:
        if "not a swarm manager" in str(exc) or "This node is not" in str(exc):
            return []
        raise


def node_tasks(manager, cluster: str) -> dict[str, Task]:
    """Service name → where its task runs now (the newest task of each service)."""
    services = {s.id: s.name for s in cluster_services(manager, cluster)}
    if not services:
        return {}
    with docker_errors("listing the cluster's swarm tasks", ClusterError):
        tasks = manager.api.tasks(filters={"service": list(services)})
    newest: dict[str, dict] = {}
    for task in tasks:
        service = services.get(task.get("ServiceID"))
        if service is None or task.get("DesiredState") != "running":
            continue
        if service not in newest or task["Version"]["Index"] > newest[service]["Version"]["Index"]:
            newest[service] = task
    return {service: _task(service, task) for service, task in newest.items()}


def _task(service: str, task: dict) -> Task:
    status = task.get("Status", {})
    ports = (status.get("PortStatus") or {}).get("Ports") or []
    port = next((p.get("PublishedPort") for p in ports if p.get("TargetPort") == 22), None)
    return Task(service, task.get("NodeID", ""), status.get("State", "unknown"),
                (status.get("ContainerStatus") or {}).get("ContainerID"), port, status.get("Err", ""))


def wait_running(manager, cluster: str, services: list[str], timeout: float) -> dict[str, Task]:
    """Wait until each of ``services`` has a running task; return them.

    Raises:
        ClusterError: one is still not running after ``timeout`` s; the message says
            what Swarm says about it (no suitable node, the image is missing, …).
    """
    deadline = time.monotonic() + timeout
    while True:
        tasks = node_tasks(manager, cluster)
        waiting = [s for s in services if s not in tasks or tasks[s].state != "running"
                   or tasks[s].container_id is None or tasks[s].port is None]
        if not waiting:
            return {s: tasks[s] for s in services}
        if time.monotonic() > deadline:
            why = "; ".join(f"{s}: {_why(manager, s, tasks.get(s))}" for s in waiting[:3])
            raise ClusterError(f"{len(waiting)} swarm service(s) of cluster {cluster!r} never ran "
                               f"within {timeout:g} s ({why}); `docker service ps --no-trunc NAME` "
                               "on the manager says more")
        time.sleep(0.25)


def _why(manager, service: str, task: Task | None) -> str:
    """What Swarm last said about a service that does not run: its newest task's error."""
    if task is not None and task.error:
        return f"{task.state}: {task.error}"
    with docker_errors(f"asking about service {service}", ClusterError):
        found = [t for t in manager.api.tasks(filters={"service": service})]
    found.sort(key=lambda t: t["Version"]["Index"])
    if found:
        status = found[-1].get("Status", {})
        return f"{status.get('State')}: {status.get('Err') or status.get('Message', '')}"
    return "no task yet"


def remove_node_service(manager, cluster: str, service: str) -> None:
    """Remove one node's service and its host-key secret (scaling down)."""
    with docker_errors(f"removing swarm service {service}", ClusterError):
        for found in manager.services.list(filters={"name": service}):
            if found.name == service:
                found.remove()
    _remove_secrets(manager, cluster, only=f"{service}-host-key")


def remove_services(manager, cluster: str) -> int:
    """Remove the cluster's services (Swarm then stops and removes their tasks' containers).

    First in ``down``: a node container removed while its service lives is restarted.
    Returns how many there were; none on an engine that manages no swarm.
    """
    services = cluster_services(manager, cluster)
    with docker_errors(f"removing the swarm services of cluster {cluster}", ClusterError):
        for service in services:
            try:
                service.remove()
            except docker.errors.NotFound:
                pass
    return len(services)


def remove_leftovers(manager, cluster: str, timeout: float = 30.0) -> None:
    """Remove the cluster's secrets and overlay, once no task uses them any more. Idempotent."""
    deadline = time.monotonic() + timeout
    while _has_swarm_objects(manager, cluster):
        try:
            _remove_secrets(manager, cluster)
            _remove_overlay(manager, cluster)
        except ClusterError:  # a task still stopping holds them
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _has_swarm_objects(manager, cluster: str) -> bool:
    try:
        with docker_errors("listing the cluster's secrets", ClusterError):
            return bool(manager.secrets.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"})
                        or _overlays(manager, cluster))
    except ClusterError as exc:
        if "not a swarm manager" in str(exc) or "This node is not" in str(exc):
            return False
        raise


def _overlays(manager, cluster: str) -> list:
    with docker_errors("listing the cluster's networks", ClusterError):
        return [n for n in manager.networks.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"})
                if n.attrs.get("Driver") == "overlay"]


def _remove_secrets(manager, cluster: str, only: str | None = None) -> None:
    with docker_errors(f"removing the swarm secrets of cluster {cluster}", ClusterError):
        for secret in manager.secrets.list(filters={"label": f"{CLUSTER_LABEL}={cluster}"}):
            if only is None or secret.name == only:
                try:
                    secret.remove()
                except docker.errors.NotFound:
                    pass


def _remove_overlay(manager, cluster: str) -> None:
    for network in _overlays(manager, cluster):
        with docker_errors(f"removing network {network.name}", ClusterError):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass


def _bytes(memory: str) -> int:
    """``"512m"`` → bytes, as ``docker run --memory`` reads it."""
    try:
        return docker.utils.parse_bytes(memory)
    except docker.errors.DockerException:
        raise ClusterError(f"--memory {memory!r} is not a size: give e.g. 512m or 2g") from None

