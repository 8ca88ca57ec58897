"""What dockkit reads from Swarm's answers, and what it refuses before asking Swarm anything."""

import pytest

from dockkit.cluster import swarm
from dockkit.cluster.cluster import Cluster, _from_registry
from dockkit.errors import ClusterError, ConfigError


def test_a_running_task_gives_its_node_container_and_published_sshd():
    task = swarm._task("dockkit-c-node1", {
        "NodeID": "n1", "Status": {"State": "running", "ContainerStatus": {"ContainerID": "abc123"},
                                   "PortStatus": {"Ports": [{"TargetPort": 8080, "PublishedPort": 1},
                                                            {"TargetPort": 22, "PublishedPort": 30022}]}}})
    assert (task.node_id, task.state, task.container_id, task.port) == ("n1", "running", "abc123", 30022)


def test_a_task_not_placed_yet_says_why():
    task = swarm._task("dockkit-c-node1", {"Status": {"State": "pending", "Err": "no suitable node"}})
    assert (task.state, task.container_id, task.port, task.error) == ("pending", None, None, "no suitable node")


def test_a_pushed_image_is_told_from_a_local_one():
    assert _from_registry("10.0.0.5:5000/dockkit-worker:0123abcd")
    assert _from_registry("registry.example/team/dockkit-worker:1")
    assert not _from_registry("dockkit-worker:0123abcd")


def test_a_memory_limit_that_is_not_a_size_is_refused():
    assert swarm._bytes("512m") == 512 * 1024 ** 2
    with pytest.raises(ClusterError, match="give e.g. 512m"):
        swarm._bytes("lots")


def test_a_registry_without_a_swarm_is_refused():
    with pytest.raises(ConfigError, match="--registry is for a swarm cluster"):
        Cluster(2, registry="10.0.0.5:5000")


def test_volumes_on_a_swarm_are_refused_with_what_to_do_instead(tmp_path):
    with pytest.raises(ConfigError, match="dockkit cp DIR all:/path"):
        Cluster(2, swarm=True, volumes=[f"{tmp_path}:/data"])
