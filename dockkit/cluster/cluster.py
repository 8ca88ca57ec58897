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

Every node runs the same image (:mod:`dockkit.cluster.image`; built once, copied to the
other engines), so the interpreter, dockkit and the user's requirements are
identical everywhere. Each node gets its own ed25519 host key at start (never
baked in); the cluster has one client key. Two ssh_configs are written: one in
the state directory for this machine (:mod:`dockkit.cluster.state`) and one inside every
node (:mod:`dockkit.cluster.nodes`). Everything is labelled ``dockkit.cluster=<name>``,
so :meth:`Cluster.down` works from Docker's state even after a crashed ``up`` or a
deleted state directory.
"""

from __future__ import annotations

import gzip
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dockkit.cluster import copying, fetch, swarm, volumes
from dockkit.cluster import nodes as node_containers
from dockkit.cluster.base_image import image_exists
from dockkit.cluster.engines import on_each_engine
from dockkit.config import check_cluster_name
from dockkit.cluster.engine import (docker_client, docker_errors, engine_address, engine_cpus, engine_url,
                                    find_container, remove_container)
from dockkit.errors import ClusterError, ConfigError, DockerError, DockkitError, EngineGoneError, ImageError
from dockkit.cluster.image import copy_image, ensure_worker_image, push_image
from dockkit.launch.ssh.keys import generate_keypair
from dockkit.cluster.head import BRIDGE, HEAD, OVERLAY, ROUTED, RunOptions, head_command
from dockkit.cluster.nodes import CLUSTER_LABEL, container_name, gone_message
from dockkit.cluster.over_ssh import ContainerOverSSH
from dockkit.cluster.state import ClusterFiles, ClusterState, NodeInfo
from dockkit.cluster.volumes import VolumeSpec

__all__ = ["Cluster", "NodeInfo", "ClusterState", "CLUSTER_LABEL", "HEAD", "LOCAL_DOCKER"]

KILLED_BY = {128 + signal.SIGKILL: "SIGKILL", 128 + signal.SIGTERM: "SIGTERM", 128 + signal.SIGSEGV: "SIGSEGV"}
MAX_NODES = 256  # one broker port and one SSH launch per node: past this, scale workers per node
LOCAL_DOCKER = "local"
PARALLEL_COPIES = 16  # uploads or removals in flight at once on an engine
SHIP_WITH_AGENTS = 16 * 1024 * 1024  # bytes of working directory that travel with the agents
PULL_TIMEOUT_S = 300.0  # how long swarm nodes may take to pull the image from a registry
SWARM_FOLLOW_S = 2.0  # a swarm moves nodes on its own: where they run is asked again after this


class Cluster:
    """N identical SSH worker containers on one or more Docker hosts.

    Args:
        nodes: number of containers.
        name: the cluster's name (containers are ``dockkit-<name>-nodeK``).
        workers_per_node: workers each node runs (default: the node's CPU limit, else
            the CPU count of its Docker host).
        cpus, memory: limits per node (``1.5``, ``"2g"``).
        docker_hosts: Docker Engines, each an Engine URL (``ssh://user@host:port``,
            ``unix:///var/run/docker.sock``), a Docker context's name, or ``"local"`` for
            the default engine (``DOCKER_HOST``, else the current context, else the local
            socket); default ``["local"]``. Nodes are spread over them in turn. A node on
            an engine reached over ``ssh://``/``tcp://`` publishes its sshd on that host's
            address, which every node must be able to reach (only that port is needed).
        base_image, requirements: see :func:`dockkit.cluster.image.ensure_worker_image`; they
            shape a new cluster's image (an existing cluster keeps its own).
        volumes: ``HOST_PATH:NODE_PATH[:ro]`` strings (:mod:`dockkit.cluster.volumes`): bind
            mounts on this machine's engine, named volumes filled by ``copy_to`` on remote ones.
        ready_timeout: seconds a node may take until key login works.
        swarm: make the nodes Docker Swarm services (:mod:`dockkit.cluster.swarm`) on the
            swarm that the first of ``docker_hosts`` manages. The others are the engines of
            the swarm nodes to use: the image is loaded into each (or pulled from
            ``registry``), and exec, logs and copies reach a node through its engine. Nodes
            go only where an engine is given.
        registry: with ``swarm``, a registry (``host:port``) the image is pushed to from the
            manager's engine, and every swarm node pulls it from.
        log: receives one-line progress messages.

    Use ``with Cluster(3) as c:`` to have ``down()`` run at the end.
    """

    def __init__(self, nodes: int = 3, *, name: str = "dockkit", workers_per_node: int | None = None,
                 cpus: float | None = None, memory: str | None = None, docker_hosts=None,
                 base_image: str | None = None, requirements: str | None = None,
                 volumes=(), ready_timeout: float = 60.0, swarm: bool = False, registry: str | None = None,
                 log=None):
        if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise ConfigError(f"a cluster has 1 to {MAX_NODES} nodes, got {nodes!r}; for more, "
                              "give each node more workers (workers_per_node)")
        if cpus is not None and not float(cpus) > 0:
            raise ConfigError(f"cpus must be more than 0, got {cpus!r}; leave it out for no limit")
        self.name = check_cluster_name(name)
        self.node_count = nodes
        self.workers_per_node = workers_per_node
        self.cpus = cpus
        self.memory = memory
        self.docker_hosts = list(docker_hosts or [LOCAL_DOCKER])
        self.base_image = base_image
        self.requirements = requirements
        self.volumes = [VolumeSpec.parse(v) if isinstance(v, str) else v for v in volumes]
        self.ready_timeout = ready_timeout
        self.swarm = swarm
        self.registry = registry
        if registry and not swarm:
            raise ConfigError("--registry is for a swarm cluster (--swarm); plain engines get the "
                              "image copied to them")
        if swarm and self.volumes:
            raise ConfigError("--volume is not supported on a swarm cluster: copy data in with "
                              "`dockkit cp DIR all:/path` after `up`")
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.files = ClusterFiles.for_name(self.name)
        self._clients: dict[str, object] = {}
        self._urls: dict[str, str] = {}
        self._swarm_engines: dict[str, str] | None = None  # swarm node ID → docker_hosts entry
        self._swarm_manager: str | None = None  # its docker_hosts entry, once a swarm's state is read
        self._followed_at = float("-inf")

    # --- paths and state --------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self.files.directory

    @property
    def ssh_config_path(self) -> Path:
        return self.files.ssh_config

    @property
    def known_hosts_path(self) -> Path:
        return self.files.known_hosts

    @property
    def key_path(self) -> Path:
        return self.files.key

    def state(self) -> ClusterState | None:
        """What the state directory records, or None when this cluster is not up."""
        return ClusterState.load(self.files)

    def _client(self, docker_host: str):
        if docker_host not in self._clients:
            self._clients[docker_host] = docker_client(None if docker_host == LOCAL_DOCKER else docker_host)
        return self._clients[docker_host]

    def _engine_url(self, docker_host: str) -> str:
        """The URL behind a docker_hosts entry, so two spellings of one engine compare equal."""
        if docker_host not in self._urls:
            self._urls[docker_host] = engine_url(None if docker_host == LOCAL_DOCKER else docker_host)
        return self._urls[docker_host]

    def _hosts(self, state: ClusterState | None) -> list[str]:
        """The docker_hosts given plus those the state's nodes live on, in a stable order."""
        if state is not None and state.swarm_engines:  # a swarm keeps the engines it was made with
            return list(state.swarm_engines)
        hosts = dict.fromkeys(self.docker_hosts)
        hosts.update(dict.fromkeys(n.docker_host for n in (state.nodes if state else [])))
        return list(hosts)

    # --- up -----------------------------------------------------------------------------
    def up(self) -> "Cluster":
        """Start the cluster; or bring an existing one to ``nodes`` running nodes. Returns self.

        An existing cluster is scaled up or down, and its nodes that exited or
        vanished are recreated, all from the cluster's own image. On failure nothing
        new stays behind: the containers, network, keys and state made by this call
        are removed (an existing cluster keeps its working nodes).

        Raises:
            DockerError: no Docker Engine, or no permission on its socket.
            ImageError: the worker image could not be built, or the cluster's is gone.
            ClusterError: a node never became ready (the error carries its logs),
                or a container name is taken by something that isn't this cluster.
        """
        state = self.state()
        if state is None:
            self._check_name_is_free()
            self._check_bind_mounts()
        elif self.swarm and not state.swarm_manager:
            self.log(f"dockkit: cluster {self.name!r} is up on plain engines and stays so; "
                     f"--swarm shapes a new cluster (`dockkit down --name {self.name}` first)")
        if state is not None and state.swarm_manager:
            self._follow_swarm(state)  # Swarm restarts dead nodes itself: only a lost service is stale
            stale = [n for n in state.nodes[:self.node_count] if n.state == "missing"]
        else:
            containers = {}  # looked up once: for the state, then for the ports
            for node in (state.nodes if state else [])[:self.node_count]:
                containers[node.name] = find_container(self._client(node.docker_host), node.container)
                node.state = "missing" if containers[node.name] is None else containers[node.name].status
            if state is not None:
                self._mend_ports(state, containers)
            stale = [n for n in (state.nodes if state else [])[:self.node_count] if n.state != "running"]
        if state is not None and len(state.nodes) == self.node_count and not stale:
            self.log(f"dockkit: cluster {self.name!r} is already up with {self.node_count} nodes")
            return self
        image = self._worker_image(state)  # before anything is created: a failed build leaves nothing
        if state is None:
            self._create(ClusterState(self.name, image, volumes=[str(v) for v in self.volumes],
                                      swarm_engines=list(self.docker_hosts) if self.swarm else []))
        else:
            if self.volumes and [str(v) for v in self.volumes] != state.volumes:
                self.log(f"dockkit: cluster {self.name!r} keeps its volumes "
                         f"({', '.join(state.volumes) or 'none'}); --volume shapes a new cluster")
            self._scale(state, stale)
        return self

    def _check_name_is_free(self) -> None:
        """Before a new cluster: nothing of Docker's may carry its name already."""
        if self.swarm:
            manager = self.docker_hosts[0]
            swarm.require_manager(self._client(manager), self._engine_url(manager))
        leftovers = any(node_containers.labelled_containers(self._client(h), self.name) for h in self.docker_hosts)
        if self.swarm:
            leftovers = leftovers or bool(swarm.cluster_services(self._client(self.docker_hosts[0]), self.name))
        if leftovers:
            raise ClusterError(
                f"containers labelled {CLUSTER_LABEL}={self.name} exist but this machine has no "
                f"state for them (it was deleted, or another user made them); run `dockkit down "
                f"--name {self.name}` first, or pick another --name")

    def _check_bind_mounts(self) -> None:
        """Before the image is built: each --volume mounted by this machine's engine is a directory here."""
        if any(engine_address(self._engine_url(host)) == "127.0.0.1" for host in self.docker_hosts):
            for spec in self.volumes:
                spec.check_here()

    def _mend_ports(self, state: ClusterState, containers: dict) -> None:
        """Record the sshd ports running nodes publish now, where they moved.

        Docker may publish a new port when a node's network is disconnected and connected
        again; the ssh_config here, and the nodes that reach that node by its port (those
        on other engines), then point at nothing until they are rewritten. ``containers``
        holds the nodes' containers as just looked up, by node name.
        """
        moved = []
        for node in state.nodes:
            if node.state != "running" or containers.get(node.name) is None:
                continue
            port = node_containers.published_port(containers[node.name])
            if port is not None and port != node.port:
                moved.append(f"{node.name} ({node.port} → {port})")
                node.port = port
        if moved:
            state.save(self.files)
            state.write_ssh_files(self.files)
            if all(n.state == "running" for n in state.nodes):  # else the recreation that follows does it
                self._configure_nodes(state)
            self.log(f"dockkit: the sshd port of {', '.join(moved)} moved; ssh_config updated")

    def _worker_image(self, state: ClusterState | None) -> str:
        """The one image for every node: the cluster's own, or built on the first engine.

        It reaches the other engines copied from one that holds it, or, for a swarm with a
        registry, pushed there once for the swarm nodes to pull (its name then starts with
        the registry's).
        """
        if state is None:
            source = self.docker_hosts[0]
            tag = ensure_worker_image(self._client(source), base_image=self.base_image,
                                      requirements=self.requirements, log=self.log)
            if self.registry:
                return push_image(self._client(source), tag, self.registry, log=self.log)
        else:
            tag = state.image
            if self.base_image or self.requirements:
                self.log(f"dockkit: cluster {self.name!r} keeps its image {tag}; --base-image and "
                         f"--requirements shape a new cluster (`dockkit down --name {self.name}` first)")
            if _from_registry(tag):
                return tag
            holders = [h for h in self._hosts(state) if image_exists(self._client(h), tag)]
            if not holders:
                raise ImageError(f"cluster {self.name!r}'s image {tag} is gone from its Docker "
                                 f"Engines; run `dockkit down --name {self.name}` and up again")
            source = holders[0]
        for host in self._hosts(state):
            if self._engine_url(host) != self._engine_url(source):
                copy_image(self._client(source), self._client(host), tag, log=self.log)
        return tag

    def _create(self, state: ClusterState) -> None:
        """A new cluster; on any failure everything it made is removed again."""
        made_directory, had_key = not self.directory.exists(), self.key_path.exists()
        try:
            self._add_nodes(state, [], self.node_count)
        except BaseException:
            # by label: also what a half-made node left
            self._best_effort(self._remove_from_docker, self._hosts(state))
            if made_directory:
                shutil.rmtree(self.directory, ignore_errors=True)
            else:  # the directory was there before: take out only what this call wrote
                written = [self.files.ssh_config, self.files.known_hosts, self.files.state]
                if not had_key:
                    written += [self.key_path, Path(f"{self.key_path}.pub")]
                for path in written:
                    path.unlink(missing_ok=True)
            raise

    def _best_effort(self, cleanup, *args) -> None:
        """Clean up after a failure without hiding it: a cleanup error is only logged."""
        try:
            cleanup(*args)
        except DockkitError as exc:
            self.log(f"dockkit: cleaning up after the failure also failed: {exc}")

    def _scale(self, state: ClusterState, stale: list[NodeInfo]) -> None:
        """Scale an existing cluster and recreate its dead nodes; keeps the state true on failure."""
        if len(state.nodes) != self.node_count:
            self.log(f"dockkit: scaling cluster {self.name!r} from {len(state.nodes)} to {self.node_count} nodes")
        if stale:
            self.log(f"dockkit: recreating {', '.join(f'{n.name} ({n.state})' for n in stale)} "
                     f"of cluster {self.name!r}")
        for node in state.nodes[self.node_count:]:
            self._remove_node(node, state)
        state.nodes = [n for n in state.nodes[:self.node_count] if n not in stale]
        replace = [n.docker_host for n in stale]  # a dead node comes back on its own engine
        try:
            self._add_nodes(state, replace, self.node_count - len(state.nodes))
        finally:
            state.save(self.files)
            state.write_ssh_files(self.files)

    def _add_nodes(self, state: ClusterState, hosts: list[str], count: int) -> None:
        """Start ``count`` nodes (the first on ``hosts``, the rest in turn), wait, configure."""
        if not self.key_path.exists():
            generate_keypair(f"dockkit-{self.name}").write(self.key_path)
        client_public = Path(f"{self.key_path}.pub").read_text().strip()
        if state.swarm_manager:
            return self._add_swarm_nodes(state, client_public, count)
        plan = self._place(state, hosts, count)
        # What the nodes of one engine share is asked for or made first, once: their network,
        # volumes and worker count (asked of each node, the engine's info cost it 40 ms of
        # the engine's time, while it started the others).
        engines = {}
        for host in dict.fromkeys(host for _, host in plan):
            address = engine_address(self._engine_url(host))
            network = node_containers.ensure_network(self._client(host), self.name)
            engines[host] = (address, network.name, self._mounts(host, state, local_engine=address == "127.0.0.1"),
                             self._workers_on(host))

        host_keys = {index: generate_keypair(f"dockkit-{self.name}-node{index}") for index, _ in plan}
        preset = self._ssh_files_before_start(state, plan, host_keys, engines)

        def create(index: int, host: str):
            address, network, mounts, workers = engines[host]
            return node_containers.create_node(
                self._client(host), cluster=self.name, index=index, image=state.image, network=network,
                docker_host=host, address=address, host_key=host_keys[index], client_public=client_public,
                ssh_files=preset.get(index), cpus=self.cpus, memory=self.memory, workers=workers, volumes=mounts)

        started = []
        try:
            # all at once: each is a few round trips the engines mostly wait on
            with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_COPIES, len(plan)))) as pool:
                futures = [pool.submit(create, index, host) for index, host in plan]
            failures = [future.exception() for future in futures if future.exception() is not None]
            started = [future.result() for future in futures if future.exception() is None]
            state.nodes.extend(node for node, _ in started)
            state.nodes.sort(key=lambda n: n.index)
            if failures:
                raise failures[0]
            state.write_ssh_files(self.files)
            # New nodes whose ssh files could not go in before they started get them as each
            # takes its login; the nodes that were up already learn of the new ones after.
            node_containers.wait_ready(started, self.ssh_config_path, self.ready_timeout,
                                       then=None if preset else lambda node, container: self._configure_node(
                                           state, node, container))
            new = {node.name for node, _ in started}
            self._configure_nodes(state, only=[node for node in state.nodes if node.name not in new])
        except BaseException:
            for node, container in started:
                self._best_effort(remove_container, container)
                state.nodes.remove(node)
            raise
        state.save(self.files)

    def _ssh_files_before_start(self, state: ClusterState, plan: list[tuple[int, str]], host_keys: dict,
                                engines: dict) -> dict[int, dict[str, bytes]]:
        """Each planned node's ssh files by index, where they can be known before it starts: when
        every node is on one engine, where nodes reach each other by name, not by published
        ports. Else none: the nodes are configured once their ports are known."""
        if len({self._engine_url(host) for host in [*(n.docker_host for n in state.nodes), *engines]}) != 1:
            return {}
        planned = [NodeInfo(f"node{index}", container_name(self.name, f"node{index}"), host, engines[host][0],
                            0, host_keys[index].public_line, engines[host][3], "created") for index, host in plan]
        everyone = sorted([*state.nodes, *planned], key=lambda n: n.index)
        key = self.key_path.read_bytes()
        return {node.index: node_containers.node_ssh_files(everyone, node, key if node.name == HEAD else None,
                                                           lambda a, b: True)
                for node in planned}

    def _place(self, state: ClusterState, hosts: list[str], count: int) -> list[tuple[int, str]]:
        """(index, engine) of ``count`` new nodes: the free numbers, the first on ``hosts``,
        the rest on the cluster's engines in turn."""
        return [(index, hosts[k] if k < len(hosts) else self.docker_hosts[index % len(self.docker_hosts)])
                for k, index in enumerate(state.free_indices(count))]

    def _mounts(self, host: str, state: ClusterState, *, local_engine: bool) -> dict:
        specs = [VolumeSpec.parse(v) for v in state.volumes]
        mounts = volumes.mounts(specs, cluster=self.name, local_engine=local_engine)
        if not local_engine and mounts:
            volumes.ensure_volumes(self._client(host), list(mounts), {CLUSTER_LABEL: self.name})
        return mounts

    def _configure_nodes(self, state: ClusterState, only: list[NodeInfo] | None = None) -> None:
        """:meth:`_configure_node` on every node (or ``only`` these) at once."""
        self._on_each_node(lambda node: self._configure_node(state, node),
                           only if only is not None else state.nodes)

    def _configure_node(self, state: ClusterState, node: NodeInfo, container=None) -> None:
        """Give ``node`` an ssh_config naming every node (the new ones too), and the head alone
        the client key: its root starts the run's agents over SSH, no other node logs in
        anywhere, so a node taken over holds no key to the others. On a swarm the head's key
        is a secret already, and every node reaches every other by name on the overlay."""
        key = None if state.swarm_manager or node.name != HEAD else self.key_path.read_bytes()

        def same_engine(a: NodeInfo, b: NodeInfo) -> bool:
            return bool(state.swarm_manager) or self._engine_url(a.docker_host) == self._engine_url(b.docker_host)

        node_containers.install_ssh_files(container or self._container(node), node, self.name,
                                          node_containers.node_ssh_files(state.nodes, node, key, same_engine))

    def _on_each_node(self, action, nodes: list[NodeInfo]) -> None:
        """``action(node)`` for every node at once; raises the first failure, after all ended.

        Each is a round trip or two that the engine mostly waits on: one node after another
        cost about 45 ms a node (0.7 s of a 16-node ``up``, 0.9 s of each run's copy)."""
        for host in {node.docker_host for node in nodes if node.docker_host}:
            self._client(host)  # made here, not raced for by the threads
        with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_COPIES, len(nodes)))) as pool:
            list(pool.map(action, nodes))

    # --- a swarm's nodes ---------------------------------------------------------------
    def _add_swarm_nodes(self, state: ClusterState, client_public: str, count: int) -> None:
        """Start ``count`` nodes as services on the swarm; wait until each takes a login; configure."""
        manager = self._client(state.swarm_manager)
        engines = self._swarm_engine_map(state)
        ready = swarm.swarm_nodes(manager)
        # From a registry every swarm node pulls the image itself, and one whose engine was not
        # given is reached through its node's sshd. Without one, the image is only in the engines
        # it was loaded into.
        pulled = _from_registry(state.image)
        avoid = [] if pulled else [node_id for node_id in ready if node_id not in engines]
        if count and pulled:
            self.log(f"dockkit: swarm: nodes go to any of its {len(ready)} node(s); they pull the image "
                     f"from {state.image.split('/')[0]}")
        elif count:
            self.log(f"dockkit: swarm: nodes go to {len(ready) - len(avoid)} of {len(ready)} swarm node(s), "
                     "those whose engine was given (--docker-host); the image was loaded into each of "
                     "them (no registry: --registry lets every swarm node pull it)")
        network = swarm.ensure_overlay(manager, self.name)
        made: dict[str, NodeInfo] = {}
        try:
            for index in state.free_indices(count):
                name = f"node{index}"
                service = container_name(self.name, name)
                host_key = generate_keypair(f"dockkit-{self.name}-{name}")
                swarm.create_node_service(
                    manager, cluster=self.name, index=index, service=service, image=state.image,
                    network=network, host_key=host_key, authorized_keys=client_public,
                    client_key=self.key_path.read_bytes() if name == HEAD else None,
                    cpus=self.cpus, memory=self.memory, avoid_nodes=avoid)
                made[service] = NodeInfo(name, "", "", "", 0, host_key.public_line, 0)
            # pulling the image from a registry comes before a task runs
            wait = self.ready_timeout + (PULL_TIMEOUT_S if _from_registry(state.image) else 0)
            tasks = swarm.wait_running(manager, self.name, list(made), wait)
            for service, node in made.items():
                self._place_on_task(node, tasks[service], engines, ready)
            state.nodes.extend(made.values())
            state.nodes.sort(key=lambda n: n.index)
            state.write_ssh_files(self.files)
            node_containers.wait_ready([(n, self._container(n)) for n in made.values()],
                                       self.ssh_config_path, self.ready_timeout)
            self._configure_nodes(state)
        except BaseException:
            for service, node in made.items():
                self._best_effort(swarm.remove_node_service, manager, self.name, service)
                if node in state.nodes:
                    state.nodes.remove(node)
            raise
        state.save(self.files)

    def _swarm_engine_map(self, state: ClusterState) -> dict[str, str]:
        """Swarm node ID → the docker_hosts entry of its engine, for the engines given."""
        self._swarm_manager = state.swarm_manager
        if self._swarm_engines is None:
            manager = self._client(state.swarm_manager)
            in_swarm = swarm.swarm_nodes(manager)
            engines = {}
            for host in state.swarm_engines:
                node_id = swarm.swarm_node_id(self._client(host), self._engine_url(host))
                if node_id is None or node_id not in in_swarm:
                    raise ClusterError(f"the Docker Engine {self._engine_url(host)} is not a ready node of "
                                       f"the swarm that {self._engine_url(state.swarm_manager)} manages; "
                                       "give only the swarm's engines with --docker-host (`docker node ls`)")
                engines.setdefault(node_id, host)
            self._swarm_engines = engines
        return self._swarm_engines

    def _place_on_task(self, node: NodeInfo, task, engines: dict[str, str],
                       swarm_nodes: dict[str, swarm.SwarmNode]) -> None:
        """Record where ``node``'s task runs now: its engine (none when it was not given: the
        node is then reached through its sshd), container, and published sshd."""
        host, where = engines.get(task.node_id), swarm_nodes.get(task.node_id)
        if host is None and where is None:
            raise ClusterError(f"{node.name} runs on swarm node {task.node_id[:12]}, which is not ready; "
                               "`docker node ls` on the manager says why")
        node.container, node.port, node.state = task.container_id[:12], task.port, task.state
        node.swarm_node = where.hostname if where else task.node_id[:12]
        if host is not None:
            node.docker_host, node.address = host, engine_address(self._engine_url(host))
            node.workers = self._workers_on(host)
        else:
            node.docker_host, node.address = "", where.address
            node.workers = self.workers_per_node or (max(1, int(self.cpus)) if self.cpus else where.cpus)

    def _workers_on(self, host: str) -> int:
        """Workers per node on ``host``'s engine: as asked, else the ``--cpus`` limit, else the CPUs of
        the machine the engine runs on (not this one's)."""
        return self.workers_per_node or (max(1, int(self.cpus)) if self.cpus else engine_cpus(self._client(host)))

    def _follow_swarm(self, state: ClusterState) -> None:
        """Bring the record of each node up to where Swarm runs it now.

        A node whose container Swarm replaced (it died, or its swarm node did) runs with
        the same host key, from its secret, but a new container and published port: the
        ssh_config here and the node's own ``/root/.ssh`` are written again. A node whose
        task does not run gets Swarm's state ('starting', 'pending', …), one whose service is
        gone 'missing'.
        """
        manager = self._client(state.swarm_manager)
        tasks = swarm.node_tasks(manager, self.name)
        moved = []
        for node in state.nodes:
            task = tasks.get(container_name(self.name, node.name))
            node.state = "missing" if task is None else task.state
            if task is not None and task.state == "running" and task.container_id \
                    and not task.container_id.startswith(node.container):
                self._place_on_task(node, task, self._swarm_engine_map(state), swarm.swarm_nodes(manager))
                moved.append(node)
        self._followed_at = time.monotonic()
        if not moved:
            return
        state.save(self.files)
        state.write_ssh_files(self.files)
        node_containers.wait_ready([(n, self._container(n)) for n in moved], self.ssh_config_path,
                                   self.ready_timeout)
        self._configure_nodes(state, only=moved)
        self.log(f"dockkit: Swarm restarted {', '.join(f'{n.name} (on {n.swarm_node})' for n in moved)}; "
                 "its new container is configured and ssh_config updated")

    # --- down ---------------------------------------------------------------------------
    def _remove_node(self, node: NodeInfo, state: ClusterState) -> None:
        if state.swarm_manager:  # its container goes with it; a container alone would come back
            swarm.remove_node_service(self._client(state.swarm_manager), self.name,
                                      container_name(self.name, node.name))
            return
        container = find_container(self._client(node.docker_host), node.container)
        if container is not None:
            remove_container(container)

    def down(self, *, forget_unreachable: bool = False) -> int:
        """Remove every container and network of this cluster, its keys and state.

        Works from Docker's labels, so a crashed ``up`` or a deleted state
        directory leaves nothing behind; idempotent.

        Args:
            forget_unreachable: for an engine gone for good: clean the engines that answer,
                then forget the cluster all the same (logged, naming what may remain on the
                others, should they come back).

        Returns:
            The number of containers removed.

        Raises:
            EngineGoneError: an engine did not answer: the others are cleaned, and the
                state is kept so that running ``down`` again finishes the job (unless
                ``forget_unreachable``).
        """
        try:
            state = self.state()
        except ConfigError:  # a damaged state file: Docker's labels are enough
            state = None
        try:
            removed = self._remove_from_docker(self._hosts(state))
        except EngineGoneError as exc:
            if not forget_unreachable:
                raise
            removed = exc.removed
            self.log(f"dockkit: forgetting cluster {self.name!r} on {', '.join(exc.engines)}, which did not "
                     "answer: if it comes back, its containers and network there carry the label "
                     f"{CLUSTER_LABEL}={self.name} (`docker rm -f $(docker ps -aq --filter "
                     f"label={CLUSTER_LABEL}={self.name})`)")
        shutil.rmtree(self.directory, ignore_errors=True)
        return removed

    def _remove_from_docker(self, hosts: list[str]) -> int:
        """Remove this cluster's labelled services, containers, networks, volumes and secrets on
        ``hosts``; count the nodes (a swarm's services, else the containers)."""
        # Services first, on whichever engine manages them: Swarm would restart a node
        # container removed while its service lives.
        services, gone = 0, {}
        for host in hosts:
            try:
                services += swarm.remove_services(self._client(host), self.name)
            except DockerError as exc:  # named, with the others, once the rest is cleaned
                gone[host] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

        def remove(host: str) -> int:
            client = self._client(host)
            containers = node_containers.labelled_containers(client, self.name)
            # all at once: the engine stops each one's processes and unmounts it in parallel
            with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_COPIES, len(containers)))) as pool:
                list(pool.map(remove_container, containers))  # the first failure, after every removal
            node_containers.remove_networks(client, self.name)
            volumes.remove_volumes(client, f"{CLUSTER_LABEL}={self.name}")
            swarm.remove_leftovers(client, self.name)
            return len(containers)

        containers = on_each_engine(hosts, remove, f"taking down cluster {self.name}", gone)
        return services or containers

    def __enter__(self) -> "Cluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # --- looking at it -------------------------------------------------------------------------
    def status(self) -> list[NodeInfo]:
        """The nodes with their live container state ('running', 'exited', 'missing', …).

        Raises:
            ClusterError: this cluster is not up.
        """
        state = self._require(follow=True)
        if not state.swarm_manager:  # a swarm's states came with following it
            self._on_each_node(lambda node: setattr(node, "state", self._live(node)), state.nodes)
        return state.nodes

    def _live(self, node: NodeInfo) -> str:
        container = find_container(self._client(node.docker_host), node.container)
        return "missing" if container is None else container.status

    def _require(self, follow: bool = False) -> ClusterState:
        """The state of this cluster, which must be up; a swarm's followed to where it runs now
        (asked again when ``follow`` or when last asked over ``SWARM_FOLLOW_S`` ago)."""
        state = self.state()
        if state is None or not state.nodes:
            raise ClusterError(f"no cluster named {self.name!r} is up; start one with "
                               f"`dockkit up --name {self.name}`")
        if state.swarm_manager and (follow or time.monotonic() - self._followed_at > SWARM_FOLLOW_S):
            self._follow_swarm(state)
        return state

    def node(self, name: str) -> NodeInfo:
        """The recorded node called ``name`` (``node0``…).

        Raises:
            ClusterError: the cluster is not up.
            ConfigError: it has no such node.
        """
        nodes = self._require().nodes
        for node in nodes:
            if node.name == name:
                return node
        raise ConfigError(f"no node {name!r} in cluster {self.name!r} "
                          f"(nodes: {', '.join(n.name for n in nodes)})")

    def container(self, name: str):
        """The docker-py container of node ``name``.

        Raises:
            ClusterError: the node's container is gone (run ``dockkit up``).
        """
        return self._container(self.node(name))

    def _container(self, node: NodeInfo):
        """``node``'s container: from its engine, or reached through its sshd on a swarm node
        whose engine was not given (:class:`~dockkit.cluster.over_ssh.ContainerOverSSH`)."""
        if not node.docker_host:
            return self._over_ssh(node)
        container = find_container(self._client(node.docker_host), node.container)
        if container is None:
            raise ClusterError(gone_message(node, self.name))
        return container

    def _over_ssh(self, node: NodeInfo) -> ContainerOverSSH:
        manager = self._swarm_manager or getattr(self.state(), "swarm_manager", None)
        if not manager:  # only a swarm's nodes are without an engine
            raise ClusterError(gone_message(node, self.name))
        return ContainerOverSSH(node, service=container_name(self.name, node.name), cluster=self.name,
                                ssh_config=self.ssh_config_path, manager=self._client(manager))

    def ssh_argv(self, node: str, command=()) -> list[str]:
        """The ``ssh`` command line that logs in to ``node`` with the generated config."""
        self.node(node)
        return ["ssh", "-F", str(self.ssh_config_path), node, *command]

    def exec(self, node: str, command, *, stream=None, workdir: str | None = None,
             environment: dict | None = None, lifeline: bool = False, stdin_data: bytes = b"") -> int:
        """Run ``command`` in ``node``'s container, streaming its output; returns its exit status.

        ``lifeline``: the command's stdin closes when this call ends, however it ends
        (see :func:`dockkit.cluster.nodes.exec_streaming`); ``stdin_data`` is written to it first.
        """
        info = self.node(node)
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        with docker_errors(f"running a command in {node}", ClusterError, gone=gone_message(info, self.name)):
            container = self._container(info)
            if isinstance(container, ContainerOverSSH):
                return container.exec_streaming(argv, stream=stream, workdir=workdir, environment=environment,
                                                lifeline=lifeline, stdin_data=stdin_data)
            return node_containers.exec_streaming(self._client(info.docker_host), container, argv,
                                                  stream=stream, workdir=workdir, environment=environment,
                                                  lifeline=lifeline, stdin_data=stdin_data)

    def logs(self, tail: int | str = 100) -> dict[str, str]:
        """The last ``tail`` lines (or ``"all"``) of every node's container log."""
        logs = {}
        for node in self._require().nodes:
            container = (self._over_ssh(node) if not node.docker_host
                         else find_container(self._client(node.docker_host), node.container))
            logs[node.name] = (f"({gone_message(node, self.name)})\n" if container is None
                               else node_containers.container_logs(container, tail))
        return logs

    # --- running work ------------------------------------------------------------------------
    def upload(self, directory=".", *, limit: int | None = None):
        """Copy ``directory`` (ignore rules applied) to the same path on every node, all at once."""
        from dockkit.cluster.sync import DEFAULT_LIMIT, pack

        bundle = pack(directory, limit=limit or DEFAULT_LIMIT)
        self._copy_bundle(bundle, self._require().nodes)
        return bundle

    def _copy_bundle(self, bundle, nodes: list[NodeInfo]) -> None:
        def copy(node: NodeInfo) -> None:
            with docker_errors(f"copying files to {node.name}", ClusterError, gone=gone_message(node, self.name)):
                node_containers.extract(self._container(node), bundle.tar)

        self._on_each_node(copy, nodes)

    def hosts_for(self, workers: int | None) -> list[str]:
        """``--hosts`` words for the nodes: each node's own count unless ``workers`` is given."""
        nodes = self._require().nodes
        if workers is None:
            return [f"{n.name}*{n.workers}" for n in nodes]
        return [n.name for n in nodes]

    def run(self, script: str, args=(), *, workers: int | None = None, directory: str = ".",
            stream=None, upload_limit: int | None = None, env: dict[str, str] | None = None,
            prolog: str | None = None, max_retries: int = 3, heartbeat_timeout: float = 10.0,
            allow_missing_hosts: bool = False,
            progress: bool = False, debug: bool = False, fetch: bool = True,
            fetch_limit: int | None = None) -> int:
        """Copy the working directory to every node, run ``script`` from the head node, fetch its outputs.

        The head node runs ``python -m dockkit --hosts node0 node1 …``: the SSH
        launcher inside identical containers. Output streams live. Afterwards the
        files the run created or changed in the head's copy of ``directory`` come back
        here (see :mod:`dockkit.cluster.fetch`), unless ``fetch`` is false.

        Args:
            env, prolog, max_retries, heartbeat_timeout, allow_missing_hosts, progress, debug: as for
                ``dockkit run`` (:class:`dockkit.cluster.head.RunOptions`).
            upload_limit, fetch_limit: bytes the upload and the fetch may move.

        Returns:
            The script's exit status.

        Raises:
            ConfigError: the script does not exist, or the directory is too large.
            ClusterError: no such cluster is up, or a node is gone.
        """
        from dockkit.cluster.sync import DEFAULT_LIMIT, pack

        script_path = Path(script).resolve()
        if not script_path.is_file():
            raise ConfigError(f"script not found: {script!r}")
        root = Path(directory).resolve()
        if root not in script_path.parents:
            raise ConfigError(f"the script {script} is outside the directory {root} that is copied "
                              "to the nodes; run from the project directory that holds it")
        options = RunOptions(env=dict(env or {}), prolog=prolog, max_retries=max_retries,
                             heartbeat_timeout=heartbeat_timeout, allow_missing_hosts=allow_missing_hosts,
                             progress=progress, debug=debug)
        # A small directory travels with the run: on the head root's stdin, which unpacks it
        # and sends it on to each other node with its agent, over the connection that starts
        # it. No engine round trip then (each is one copy process in the engine: 55 ms, and
        # 0.5 s of a run on 16 nodes when there was one per node). A large one is copied by
        # each node's engine.
        bundle = pack(root, limit=upload_limit or DEFAULT_LIMIT)
        nodes = self._require().nodes
        # gzip'd: the head's root sends it once per node, through Python (level 1: 16 ms for 2 MB)
        ship = gzip.compress(bundle.tar, compresslevel=1, mtime=0) if len(bundle.tar) <= SHIP_WITH_AGENTS else b""
        if not ship:
            self._copy_bundle(bundle, nodes)
        self.log(f"dockkit: copied {bundle.files} files ({bundle.size / 1e6:.1f} MB) from {root} "
                 f"to {len(nodes)} nodes")
        command = head_command(self.hosts_for(workers), str(script_path), args, workers=workers,
                               options=options, network=self._network_kind(self._require()),
                               files=len(ship), workdir=str(root))
        # The run lives as long as this process: its stdin reaches end-of-file when this
        # call ends, by Ctrl-C, SIGTERM or SIGKILL alike, and the head's root then stops.
        # It starts in / : the working directory may exist only once the root unpacked it.
        status = self.exec(HEAD, command, stream=stream, workdir="/",
                           environment={"PYTHONUNBUFFERED": "1"}, lifeline=True, stdin_data=ship)
        if status in KILLED_BY:  # the root in the head died of a signal: say so, it printed nothing
            self.log(f"dockkit: the run's root process in {HEAD} was killed by {KILLED_BY[status]} "
                     f"(exit status {status}){' (out of memory?)' if status == 137 else ''}; "
                     f"`dockkit logs` and `dockkit exec {HEAD} dmesg` may say why")
        # without fetching, the head is still listed: the next run's outputs are then told
        # apart from this one's, which stay in the head. That listing is a nicety: failing
        # it (the head gone) only lets the next run bring these files home as well.
        try:
            self.fetch_outputs(bundle, limit=fetch_limit, bring_home=fetch)
        except ClusterError:
            if fetch:
                raise
        return status

    def _network_kind(self, state: ClusterState) -> str:
        """How the nodes reach each other (see :func:`dockkit.cluster.head.connect_options`)."""
        if state.swarm_manager:
            return OVERLAY
        return BRIDGE if len({self._engine_url(n.docker_host) for n in state.nodes}) == 1 else ROUTED

    def fetch_outputs(self, bundle, *, limit: int | None = None, bring_home: bool = True):
        """Bring back what a run created or changed in the head's copy of ``bundle.root``.

        Returns the :class:`~dockkit.cluster.fetch.FetchPlan`; files the run deleted
        are reported, never deleted here, and past ``limit`` bytes nothing is fetched.
        With ``bring_home`` false, the head's copy is only listed, so that a later
        run fetches its own outputs and not these.
        """
        head = self.node(HEAD)
        with docker_errors(f"fetching the run's outputs from {HEAD}", ClusterError,
                           gone=gone_message(head, self.name)):
            container = self._container(head)
            on_head = fetch.list_head(container, bundle.root)
            kept = self.files.head_listing(bundle.root)
            plan = fetch.plan_fetch(bundle.root, bundle.manifest, on_head,
                                    before=fetch.previous_listing(kept, container.id))
            limit = fetch.DEFAULT_FETCH_LIMIT if limit is None else limit
            if bring_home and plan.size > limit:
                self.log(f"dockkit: {fetch.over_limit_message(plan, limit)}")
            elif bring_home and plan.changed:
                fetch.fetch_files(container, bundle.root, [rel for rel, _ in plan.changed])
                self.log(f"dockkit: {fetch.summary(plan)}")
            # after the fetch: a failed one leaves the next run to bring these home
            fetch.save_listing(kept, container.id, on_head)
        if plan.deleted and bring_home:
            self.log(f"dockkit: the run deleted {len(plan.deleted)} file(s) in {HEAD}, kept here: "
                     f"{', '.join(plan.deleted[:5])}{', …' if len(plan.deleted) > 5 else ''}")
        return plan

    # --- copying files -----------------------------------------------------------------------
    def copy_to(self, source, node: str, path: str) -> list[str]:
        """Copy ``source`` (a file or directory here) to ``path`` in ``node``, or in every node with ``"all"``.

        Returns where it landed, one entry per node.

        Raises:
            ConfigError: no such node, ``source`` is missing, or a directory would land on a file.
        """
        nodes = self._nodes_named(node)
        source = Path(source)
        if not source.exists():
            raise ConfigError(f"{source}: no such file or directory here")
        for info in nodes:  # every node checked before any is written: nothing half-copied
            with docker_errors(f"copying {source} to {info.name}", ClusterError, gone=gone_message(info, self.name)):
                copying.check_put(self._container(info), source, path)
        landed = []
        for info in nodes:
            with docker_errors(f"copying {source} to {info.name}", ClusterError, gone=gone_message(info, self.name)):
                landed.append(f"{info.name}:{copying.put(self._container(info), source, path)}")
        return landed

    def copy_from(self, node: str, path: str, destination) -> list[Path]:
        """Copy ``path`` from ``node`` to ``destination`` here; ``"all"`` gathers every node's
        copy under ``destination/<node>/``. Returns where each copy landed.

        Raises:
            ConfigError: no such node, ``path`` is missing there, or a directory would land on a file.
        """
        nodes = self._nodes_named(node)
        destination = Path(destination)
        if node == copying.ALL_NODES and destination.is_file():
            raise ConfigError(f"{destination} is a file; `all:` gathers each node's copy under a "
                              "directory: give one (it is made if missing)")
        for info in nodes:  # every node checked before any is read: nothing half-copied
            with docker_errors(f"copying {path} from {info.name}", ClusterError, gone=gone_message(info, self.name)):
                copying.check_get(self._container(info), path)
        landed = []
        for info in nodes:
            target = destination
            if node == copying.ALL_NODES:
                target = destination / info.name
                target.mkdir(parents=True, exist_ok=True)
            with docker_errors(f"copying {path} from {info.name}", ClusterError, gone=gone_message(info, self.name)):
                landed.append(copying.get(self._container(info), path, target))
        return landed

    def _nodes_named(self, node: str) -> list[NodeInfo]:
        return self._require().nodes if node == copying.ALL_NODES else [self.node(node)]

    def executor(self, workers: int | None = None, **options):
        """A ``concurrent.futures.Executor`` whose workers run on the cluster's nodes."""
        from dockkit.executor import Executor

        return Executor(workers, hosts=self.hosts_for(workers), ssh_config=str(self.ssh_config_path),
                        tunnel=True, **options)


def _from_registry(image: str) -> bool:
    """Whether ``image`` names a registry (``host:port/dockkit-worker:…``), as a pushed one does."""
    return "/" in image.rsplit(":", 1)[0]
