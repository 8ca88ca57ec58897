"""Clusters over separate Docker Engines: this machine's engine and two of the engine bed's.

Each bed engine has its own image store, so the worker image really travels, and its
containers really live elsewhere: killing an engine's container takes its nodes with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid

import cloudpickle
import pytest

import dockkit
from dockkit.cluster.base_image import ensure_base_image, image_exists
from dockkit.cluster.engine import docker_client as connect_docker
from dockkit.cluster.image import copy_image
from dockkit.cluster.nodes import CLUSTER_LABEL
from dockkit.cluster.volumes import volume_name
from dockkit.errors import ConfigError, EngineGoneError
from tests.integration.engines import EngineBed
from tests.integration.streams import Collect
from tests.names import TEST_RUN, unique_name

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module
# the first test may start the engine bed and ship the image to two engines: past the default
pytestmark = pytest.mark.timeout(600)


def engine_urls(engine_bed) -> list[str]:
    """How the spread cluster reaches the bed's engines: the first over ssh://, the second over tcp://."""
    return [engine_bed.engines[0].ssh_url, engine_bed.engines[1].tcp_url]


@pytest.fixture(scope="module")
def spread(engine_bed, docker_client, worker_image):
    """Three nodes, one per engine: node0 here, node1 and node2 on the bed's engines, the one
    reached over ssh:// (docker-py's ssh transport, the bed's pinned key) and the other over tcp://."""
    messages: list[str] = []
    hosts = ["local", *engine_urls(engine_bed)]
    # what the image stores held before: an earlier test may have put the image on an engine
    lacking = [url for url, engine in zip(engine_urls(engine_bed), engine_bed.engines)
               if not _has_image(engine, worker_image)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(engine_bed.ssh_home))  # ~/.ssh of the bed: its key and known_hosts
        cluster = dockkit.Cluster(3, name=unique_name("e"), docker_hosts=hosts, workers_per_node=2,
                                  log=messages.append).up()
        cluster.up_messages, cluster.engines_lacking_image = messages, lacking
        yield cluster
        assert cluster.down() == 3
    for engine in engine_bed.engines:
        client = engine.client()
        flt = {"label": f"{CLUSTER_LABEL}={cluster.name}"}
        assert not client.containers.list(all=True, filters=flt)
        assert not client.networks.list(filters=flt)
        client.close()


def test_nodes_are_placed_one_per_engine(spread, engine_bed):
    nodes = spread.status()
    assert [n.docker_host for n in nodes] == ["local", *engine_urls(engine_bed)]
    assert [n.address for n in nodes] == ["127.0.0.1"] + [e.address for e in engine_bed.engines]
    assert all(n.state == "running" for n in nodes)
    for node, engine in zip(nodes[1:], engine_bed.engines):
        client = engine.client()  # the container is on that engine and no other
        assert client.containers.get(node.container).status == "running"
        client.close()


def test_the_image_is_shipped_once_to_each_engine_that_lacked_it(spread, engine_bed, worker_image):
    """Each copy names its engine as it starts and sums itself up in one line as it ends."""
    opening = f"dockkit: copying {worker_image} to the Docker Engine at "
    started = [m.removeprefix(opening) for m in spread.up_messages if m.startswith(opening)]
    summary = rf"dockkit: copied {re.escape(worker_image)} to (\S+): \d+\.\d MB in \d+\.\d s"
    done = [re.fullmatch(summary, m) for m in spread.up_messages if m.startswith("dockkit: copied ")]
    assert started == spread.engines_lacking_image, spread.up_messages
    assert [m and m[1] for m in done] == spread.engines_lacking_image, spread.up_messages
    assert all(_has_image(engine, worker_image) for engine in engine_bed.engines)


def test_a_scale_up_copies_the_image_nowhere(spread, engine_bed, monkeypatch):
    """Every engine has the image now: a fourth node (here) and back to three copy nothing."""
    monkeypatch.setenv("HOME", str(engine_bed.ssh_home))  # the spread cluster's state and the bed's keys
    messages: list[str] = []
    hosts = ["local", *engine_urls(engine_bed)]
    for nodes in (4, 3):
        dockkit.Cluster(nodes, name=spread.name, docker_hosts=hosts, workers_per_node=2, log=messages.append).up()
    assert f"dockkit: scaling cluster {spread.name!r} from 3 to 4 nodes" in messages, messages
    assert not [m for m in messages if m.startswith(("dockkit: copying", "dockkit: copied"))], messages
    assert [n.name for n in spread.status()] == ["node0", "node1", "node2"]


def _has_image(engine, tag: str) -> bool:
    client = engine.client()
    try:
        return image_exists(client, tag)
    finally:
        client.close()


def test_nodes_on_different_engines_reach_each_other(spread):
    for target in ("node1", "node2"):
        out = []
        status = spread.exec("node0", ["ssh", "-F", "/root/.ssh/config", "-o", "BatchMode=yes", target,
                                       "hostname"], stream=Collect(out))
        assert (status, b"".join(out).decode().strip()) == (0, target)


def test_an_executor_maps_over_three_engines(spread):
    with spread.executor(workers=6) as executor:
        hosts = set(executor.map(_hostname, range(300)))
    assert hosts == {"node0", "node1", "node2"}


def test_an_engine_is_reached_over_ssh(engine_bed, monkeypatch):
    engine = engine_bed.engines[0]
    monkeypatch.setenv("HOME", str(engine_bed.ssh_home))
    client = connect_docker(engine.ssh_url)
    assert client.info()["Name"] == "engine0"  # really the other engine, not this one
    client.close()
    assert b"Accepted publickey for root" in engine.container.logs()


def _cli(*args, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, DOCKKIT_STATE_DIR=str(state_dir), COLUMNS="250"))


def test_up_names_an_engine_that_does_not_answer_and_leaves_nothing(engine_bed, docker_client, tmp_path):
    name = unique_name("x")
    dead = f"tcp://{engine_bed.engines[0].address}:1"  # the bed engine's address, no dockerd there
    result = _cli("up", "--nodes", "2", "--name", name, "--docker-host", "unix:///var/run/docker.sock",
                  "--docker-host", dead, state_dir=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and dead in result.stderr, result.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})
    assert not (tmp_path / "clusters" / name).exists()


def test_up_refuses_a_name_in_use_on_another_engine(spread, engine_bed, tmp_path):
    # Another machine (its own, empty state) asks for the name the spread cluster uses there.
    engine = engine_bed.engines[1]
    result = _cli("up", "--nodes", "1", "--name", spread.name, "--docker-host", engine.tcp_url, state_dir=tmp_path)
    assert result.returncode == 1
    assert f"containers labelled {CLUSTER_LABEL}={spread.name} exist" in result.stderr, result.stderr
    assert "pick another --name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "clusters" / spread.name).exists()  # no state made for a cluster refused
    assert [n.state for n in spread.status()] == ["running"] * 3  # the cluster there is untouched


def test_a_volume_on_a_remote_engine_is_filled_once_by_cp_and_removed_by_down(engine_bed, docker_client,
                                                                              worker_image, tmp_path,
                                                                              monkeypatch):
    """Here the directory is bind-mounted as it is; a bed engine can't see it, so its nodes
    share one named volume, empty until `cp` fills it once, and gone with the cluster."""
    monkeypatch.setenv("DOCKKIT_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.txt").write_text("seen here")
    (tmp_path / "fill").mkdir()
    (tmp_path / "fill" / "table.txt").write_text("filled there")
    engine = engine_bed.engines[1]
    cluster = dockkit.Cluster(3, name=unique_name("v"), docker_hosts=["local", engine.tcp_url, engine.tcp_url],
                              workers_per_node=1, volumes=[f"{tmp_path / 'data'}:/data"])
    remote = engine.client()
    labelled = {"label": f"{CLUSTER_LABEL}={cluster.name}"}
    try:
        cluster.up()
        assert [n.docker_host for n in cluster.status()] == ["local", engine.tcp_url, engine.tcp_url]
        assert [v.name for v in remote.volumes.list(filters=labelled)] == [volume_name(cluster.name, "/data")]

        def read(node):
            result = cluster.container(node).exec_run(["cat", "/data/table.txt"])
            return result.exit_code, result.output.decode()

        assert read("node0") == (0, "seen here")
        assert read("node1")[0] != 0 and read("node2")[0] != 0  # empty until filled
        assert cluster.copy_to(tmp_path / "fill" / "table.txt", "node1", "/data") == ["node1:/data/table.txt"]
        assert read("node2") == (0, "filled there")  # one copy serves the engine's every node
        with cluster.executor(workers=3) as executor:
            seen = set(executor.map(_read_table, range(30)))
        assert seen == {("node0", "seen here"), ("node1", "filled there"), ("node2", "filled there")}
    finally:
        cluster.down()
    assert remote.volumes.list(filters=labelled) == []
    remote.close()
    assert (tmp_path / "data" / "table.txt").read_text() == "seen here"  # a bind mount: never touched


def test_a_volume_only_remote_engines_use_needs_no_directory_here(engine_bed, docker_client, worker_image,
                                                                   tmp_path, monkeypatch):
    """A bind mount needs the directory here, and is refused before anything is made without
    it; a remote engine's named volume does not."""
    monkeypatch.setenv("DOCKKIT_STATE_DIR", str(tmp_path / "state"))
    missing = f"{tmp_path / 'not-here'}:/data"
    engine = engine_bed.engines[1]
    cluster = dockkit.Cluster(1, name=unique_name("vr"), docker_hosts=[engine.tcp_url], workers_per_node=1,
                              volumes=[missing])
    labelled = {"label": f"{CLUSTER_LABEL}={cluster.name}"}
    # the cluster's image comes from its first engine, the bed's: given this machine's base and
    # worker images, it finds the worker's tag there instead of building it again (a minute)
    quiet = lambda message: None  # noqa: E731
    for tag in (ensure_base_image(docker_client, log=quiet), worker_image):
        copy_image(docker_client, engine.client(), tag, log=quiet)
    try:
        cluster.up()
        assert [v.name for v in engine.client().volumes.list(filters=labelled)] == [volume_name(cluster.name, "/data")]
        assert cluster.container("node0").exec_run(["test", "-d", "/data"]).exit_code == 0
    finally:
        cluster.down()
    here = dockkit.Cluster(1, name=unique_name("vl"), workers_per_node=1, volumes=[missing])
    with pytest.raises(ConfigError, match=r"not-here is not a directory here, where this machine's engine mounts it"):
        here.up()
    assert docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={here.name}"}) == []
    assert not (tmp_path / "state" / "clusters" / here.name).exists()


def _read_table(_):
    import time
    time.sleep(0.02)
    with open("/data/table.txt") as table:
        return socket.gethostname(), table.read()


def _hostname(_):
    import time
    time.sleep(0.01)
    return socket.gethostname()


@pytest.mark.timeout(300)  # starts an engine of its own and ships the image to it
def test_an_engine_that_dies_mid_run_loses_its_node_and_down_cleans_the_rest(docker_client, worker_image):
    """Its own one-engine bed, since the engine is killed."""
    with EngineBed(docker_client, 1, f"{TEST_RUN}-{uuid.uuid4().hex[:8]}") as bed:
        engine = bed.engines[0]
        name = unique_name("k")
        cluster = dockkit.Cluster(2, name=name, docker_hosts=["local", engine.tcp_url],
                                  workers_per_node=2, log=lambda message: None).up()
        try:
            with cluster.executor(workers=4) as executor:
                first = set(executor.map(_hostname, range(40)))
                killer = threading.Timer(1.0, engine.kill)
                killer.start()
                results = list(executor.map(_slow_index, range(200)))
                killer.join()
            assert first == {"node0", "node1"}
            assert results == list(range(200))  # node1's tasks re-ran on node0
            with pytest.raises(EngineGoneError) as gone:
                cluster.down()
            assert gone.value.engines == [engine.tcp_url]
            assert engine.tcp_url in str(gone.value)
            assert not docker_client.containers.list(all=True,
                                                     filters={"label": f"{CLUSTER_LABEL}={name}"})
            result = subprocess.run([sys.executable, "-m", "dockkit.cli", "down", "--name", name],
                                    capture_output=True, text=True, timeout=120,
                                    env=dict(os.environ, COLUMNS="250"))
            assert result.returncode == 1
            assert engine.tcp_url in result.stderr and len(result.stderr.strip().splitlines()) == 1
            assert result.stderr.count(engine.tcp_url) <= 2, result.stderr  # named, not repeated over
            assert "--forget-unreachable" in result.stderr
            # gone for good: forgotten on request, saying what may remain there
            forgot = subprocess.run([sys.executable, "-m", "dockkit.cli", "down", "--name", name,
                                     "--forget-unreachable"], capture_output=True, text=True, timeout=120)
            assert forgot.returncode == 0, forgot.stderr
            assert f"forgetting cluster '{name}' on {engine.tcp_url}" in forgot.stderr
            assert not cluster.directory.exists()
        finally:
            with contextlib.suppress(EngineGoneError):  # the dead engine keeps the state
                cluster.down()
            shutil.rmtree(cluster.directory, ignore_errors=True)


def _slow_index(i):
    import time
    time.sleep(0.05)
    return i
