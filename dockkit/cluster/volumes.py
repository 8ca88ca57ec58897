"""Data too big to copy at each run: ``dockkit up --volume HOST_PATH:NODE_PATH[:ro]``.

On this machine's engine the host path is bind-mounted into every node: the nodes
see the files themselves, nothing is copied. A remote engine can't see this
machine's files, so there each node gets a named volume, one per engine and
path, shared by that engine's nodes and labelled with the cluster: fill it once
with ``dockkit cp DATA all:NODE_PATH`` and every later run finds it there.
``down`` removes the named volumes with the rest of the cluster.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass

from dockkit.cluster.engine import docker_errors
from dockkit.errors import ClusterError, ConfigError


@dataclass(frozen=True)
class VolumeSpec:
    """One ``--volume``: a directory here, where nodes see it, and whether they may write."""

    host_path: str
    node_path: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> "VolumeSpec":
        """``HOST_PATH:NODE_PATH`` or ``HOST_PATH:NODE_PATH:ro`` (``:rw`` is the default).

        HOST_PATH need not exist here: only this machine's engine mounts it (see
        :meth:`check_here`); a remote engine's nodes get a named volume instead.

        Raises:
            ConfigError: the form is wrong, or NODE_PATH is relative.
        """
        parts = text.split(":")
        mode = parts.pop() if len(parts) == 3 else "rw"
        if len(parts) != 2 or not all(parts) or mode not in ("ro", "rw"):
            raise ConfigError(f"--volume {text!r}: use HOST_PATH:NODE_PATH or HOST_PATH:NODE_PATH:ro")
        host_path, node_path = os.path.abspath(os.path.expanduser(parts[0])), parts[1]
        if not posixpath.isabs(node_path):
            raise ConfigError(f"--volume {text!r}: the node path {node_path!r} must be absolute, e.g. /data")
        return cls(host_path, posixpath.normpath(node_path), mode == "ro")

    def check_here(self) -> None:
        """Raises ConfigError unless HOST_PATH is a directory here, as a bind mount needs."""
        if not os.path.isdir(self.host_path):
            raise ConfigError(f"--volume {self}: {self.host_path} is not a directory here, where this "
                              "machine's engine mounts it; make it, or fix the path")

    def __str__(self) -> str:
        return f"{self.host_path}:{self.node_path}{':ro' if self.read_only else ''}"


def volume_name(cluster: str, node_path: str) -> str:
    """The named volume that stands for ``node_path`` on a remote engine."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", node_path).strip("-") or "root"
    digest = hashlib.sha256(node_path.encode()).hexdigest()[:8]
    return f"dockkit-{cluster}-{slug}-{digest}"


def mounts(specs: list[VolumeSpec], *, cluster: str, local_engine: bool) -> dict:
    """docker-py's ``volumes=`` for a node: bind mounts here, named volumes on a remote engine.

    Raises:
        ConfigError: ``:ro`` on a remote engine, whose volume ``dockkit cp`` must fill; a host
            path that is not a directory here, for this machine's engine.
    """
    result = {}
    for spec in specs:
        if local_engine:
            spec.check_here()
            result[spec.host_path] = {"bind": spec.node_path, "mode": "ro" if spec.read_only else "rw"}
            continue
        if spec.read_only:
            raise ConfigError(f"--volume {spec}: ':ro' applies to this machine's engine, where the "
                              "directory is mounted as it is; on a remote engine the node gets a "
                              "named volume that `dockkit cp` fills, so it is mounted read-write. "
                              "Drop ':ro'")
        result[volume_name(cluster, spec.node_path)] = {"bind": spec.node_path, "mode": "rw"}
    return result


def ensure_volumes(client, names: list[str], labels: dict[str, str]) -> None:
    """Create the named volumes a remote engine's nodes mount, labelled with their cluster."""
    with docker_errors("creating the cluster's volumes", ClusterError):
        for name in names:
            client.volumes.create(name, labels=labels)  # the engine returns one that exists


def remove_volumes(client, label_filter: str) -> int:
    """Remove the named volumes matching ``label_filter`` (``key=value``); returns how many."""
    with docker_errors("removing the cluster's volumes", ClusterError):
        volumes = client.volumes.list(filters={"label": label_filter})
        for volume in volumes:
            volume.remove(force=True)
    return len(volumes)
