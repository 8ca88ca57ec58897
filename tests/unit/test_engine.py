"""The Docker boundary's messages and the cluster state file, without a Docker Engine."""

from __future__ import annotations

import socket

import docker
import docker.errors
import pytest

from dockkit.cluster.engine import docker_errors, engine_hint, find_container
from dockkit.errors import ClusterError, ConfigError, DockerError
from dockkit.cluster.state import ClusterFiles, ClusterState, NodeInfo

SOCKET = "unix:///var/run/docker.sock"


def test_permission_denied_on_the_socket_says_what_to_do():
    hint = engine_hint(PermissionError(13, "Permission denied"), SOCKET)
    assert hint == (f"permission denied on the Docker socket ({SOCKET}): add your user to the 'docker' "
                    "group (then log in again) or run as root")


def test_docker_pys_wrapped_permission_error_gets_the_same_hint():
    """What docker-py raises when the socket refuses us: a DockerException around the PermissionError."""
    wrapped = docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', PermissionError(13, 'Permission denied'))")
    with pytest.raises(DockerError, match=r"^connecting: permission denied on the Docker socket"):
        with docker_errors("connecting", where=SOCKET):
            raise wrapped


def test_an_unreachable_remote_engine_is_named_not_the_default_one():
    """A call on a tcp:// engine that does not answer (a real closed port): the message names
    that engine, though the caller passed none."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41", timeout=5)
        with pytest.raises(DockerError) as failed:
            find_container(client, "node1")
    assert f"cannot reach the Docker Engine at tcp://127.0.0.1:{port}" in str(failed.value)
    assert "unix://" not in str(failed.value)


def test_a_container_that_is_gone_gets_the_callers_message():
    with pytest.raises(ClusterError, match="^node node1 of cluster 'c' is gone; run `dockkit up`$"):
        with docker_errors("reading", ClusterError, gone="node node1 of cluster 'c' is gone; run `dockkit up`"):
            raise docker.errors.NotFound("No such container: dockkit-c-node1")


def test_state_round_trip_and_free_node_numbers(tmp_path):
    files = ClusterFiles(tmp_path / "c")
    nodes = [NodeInfo(f"node{i}", f"dockkit-c-node{i}", "local", "127.0.0.1", 2220 + i,
                      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", 2)
             for i in (0, 2)]
    ClusterState("c", "dockkit-worker:abc", nodes).save(files)
    assert oct(files.state.stat().st_mode & 0o777) == "0o600"
    state = ClusterState.load(files)
    assert state == ClusterState("c", "dockkit-worker:abc", nodes)
    assert state.free_indices(1) == [1]
    assert state.free_indices(3) == [1, 3, 4]  # the gap first, then past the end
    state.nodes.insert(1, NodeInfo("node1", "x", "local", "127.0.0.1", 1, nodes[0].host_key, 1))
    assert state.free_indices(2) == [3, 4]


def test_a_swarm_clusters_engines_and_placement_survive_the_round_trip(tmp_path):
    files = ClusterFiles(tmp_path / "s")
    node = NodeInfo("node0", "0123456789ab", "tcp://10.0.0.2:2375", "10.0.0.2", 30001,
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", 2,
                    swarm_node="worker1")
    engines = ["tcp://10.0.0.1:2375", "tcp://10.0.0.2:2375"]
    ClusterState("s", "dockkit-worker:abc", [node], swarm_engines=engines).save(files)
    state = ClusterState.load(files)
    assert (state.swarm_manager, state.swarm_engines) == ("tcp://10.0.0.1:2375", engines)
    assert state.nodes[0].swarm_node == "worker1"


def test_a_state_file_from_before_swarms_loads_as_a_plain_cluster(tmp_path):
    files = ClusterFiles(tmp_path / "old")
    files.directory.mkdir()
    files.state.write_text('{"name": "old", "image": "dockkit-worker:abc", "nodes": [{"name": "node0", '
                           '"container": "dockkit-old-node0", "docker_host": "local", "address": "127.0.0.1", '
                           '"port": 2222, "host_key": "ssh-ed25519 AAAA", "workers": 2}]}')
    state = ClusterState.load(files)
    assert state.swarm_manager is None and state.nodes[0].swarm_node == ""


def test_a_damaged_state_file_names_the_fix(tmp_path):
    files = ClusterFiles(tmp_path / "c")
    files.directory.mkdir()
    files.state.write_text("{not json")
    with pytest.raises(ConfigError, match="dockkit down --name c"):
        ClusterState.load(files)
