"""What this machine knows about a cluster: its state directory. No Docker here.

A cluster's directory (``<state dir>/clusters/<name>``, see :mod:`dockkit.config`)
holds ``cluster.json`` (the nodes: container, Docker host, published address and
port, pinned host key, worker count), the client key ``id_ed25519`` and the
``ssh_config`` and ``known_hosts`` that reach the nodes from here, and under
``listings/`` the head's listing after the last run from each directory (see
:mod:`dockkit.cluster.fetch`). Every file is
private (0600). The CLI reads this to know whether a cluster is up without loading
docker-py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dockkit.config import cluster_dir, write_private
from dockkit.errors import ConfigError
from dockkit.launch.ssh.keys import node_ssh_texts

__all__ = ["NodeInfo", "ClusterState", "ClusterFiles", "load_state"]


@dataclass
class NodeInfo:
    """One node as recorded in the state directory; ``state`` is filled in by a status query."""

    name: str
    container: str
    docker_host: str
    address: str
    port: int
    host_key: str
    workers: int
    state: str = "unknown"
    swarm_node: str = ""  # on a swarm: the hostname of the swarm node its task runs on

    @property
    def index(self) -> int:
        return int(self.name.removeprefix("node"))


@dataclass(frozen=True)
class ClusterFiles:
    """The paths in one cluster's state directory."""

    directory: Path

    @classmethod
    def for_name(cls, name: str) -> "ClusterFiles":
        return cls(cluster_dir(name))

    @property
    def state(self) -> Path:
        return self.directory / "cluster.json"

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def key(self) -> Path:
        return self.directory / "id_ed25519"

    def head_listing(self, root: Path) -> Path:
        """Where the head's listing of ``root`` after the last run from it is kept."""
        return self.directory / "listings" / f"{hashlib.sha256(os.fsencode(root)).hexdigest()[:16]}.json"


@dataclass
class ClusterState:
    """A cluster's name, its one worker image, and its nodes in index order."""

    name: str
    image: str
    nodes: list[NodeInfo] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # `--volume` specs, for every node made later
    # a swarm cluster's docker_hosts entries: its manager first, then the engines of the
    # swarm nodes it may run on (Swarm moves nodes between them by itself)
    swarm_engines: list[str] = field(default_factory=list)

    @property
    def swarm_manager(self) -> str | None:
        return self.swarm_engines[0] if self.swarm_engines else None

    def save(self, files: ClusterFiles) -> None:
        data = {"name": self.name, "image": self.image, "volumes": self.volumes,
                "swarm_engines": self.swarm_engines,
                "nodes": [{k: v for k, v in asdict(n).items() if k != "state"} for n in self.nodes]}
        write_private(files.state, json.dumps(data, indent=2))

    @classmethod
    def load(cls, files: ClusterFiles) -> "ClusterState | None":
        """The saved state, or None when there is none.

        Raises:
            ConfigError: ``cluster.json`` is not what dockkit writes.
        """
        if not files.state.is_file():
            return None
        try:
            data = json.loads(files.state.read_text())
            return cls(data["name"], data["image"], [NodeInfo(**n) for n in data["nodes"]],
                       list(data.get("volumes", [])), list(data.get("swarm_engines", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{files.state} is damaged ({exc}); remove the cluster with "
                              f"`dockkit down --name {files.directory.name}`") from exc

    def free_indices(self, count: int) -> list[int]:
        """The ``count`` smallest node numbers not in use (node0, the head, first)."""
        used = {n.index for n in self.nodes}
        return [i for i in range(len(used) + count) if i not in used][:count]

    def write_ssh_files(self, files: ClusterFiles) -> None:
        """Write the ssh_config (Host node0…) and known_hosts that reach the nodes from here."""
        config, known = node_ssh_texts(((n.name, n.address, n.port, n.host_key) for n in self.nodes),
                                       user="root", identity_file=files.key, known_hosts_file=files.known_hosts)
        write_private(files.ssh_config, config)
        write_private(files.known_hosts, known)


def load_state(name: str) -> ClusterState | None:
    """The state of the cluster called ``name``, or None if it is not up (cheap: no Docker)."""
    return ClusterState.load(ClusterFiles.for_name(name))
