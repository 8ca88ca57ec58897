"""The Docker cluster: identical SSH worker containers on one or more Docker Engines.

It only provides hosts; runs go through the SSH launcher inside the head node.
``Cluster`` loads docker-py when first named, so reading a cluster's state
(``dockkit.cluster.state``) stays cheap.
"""

from __future__ import annotations

__all__ = ["Cluster", "CLUSTER_LABEL"]


def __getattr__(name):
    if name == "Cluster":
        from dockkit.cluster.cluster import Cluster

        return Cluster
    if name == "CLUSTER_LABEL":
        from dockkit.cluster.nodes import CLUSTER_LABEL

        return CLUSTER_LABEL
    raise AttributeError(f"module 'dockkit.cluster' has no attribute {name!r}")
