"""A cluster whose nodes are Docker Swarm services, on the engine bed's real swarm.

The bed's two engines form the swarm (engine0 manages it, engine1 joins as a worker):
each has its own image store and its own containers, so the services really spread over
two machines' worth of engines, and an overlay network really joins them.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import cloudpickle

import dockkit
from dockkit.cluster.engine import LABEL
from dockkit.cluster.nodes import CLUSTER_LABEL
from dockkit.errors import ConfigError
from tests.integration.registry import RegistryBed
from tests.integration.streams import Apart, Collect
from tests.names import TEST_RUN, unique_name

NODES = 3
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module
pytestmark = pytest.mark.timeout(600)  # the first test may start the bed and ship the image to it


@pytest.fixture(scope="module")
def swarm_cluster(engine_bed, worker_image):
    messages: list[str] = []
    manager, worker = engine_bed.engines
    cluster = dockkit.Cluster(NODES, name=unique_name("sw"), docker_hosts=[manager.tcp_url, worker.tcp_url],
                              workers_per_node=2, swarm=True, log=messages.append)
    try:
        cluster.up()
        cluster.up_messages = messages
        yield cluster
    finally:
        cluster.down()


def _labelled(client, cluster: str) -> dict[str, list]:
    flt = {"label": f"{CLUSTER_LABEL}={cluster}"}
    found = {"containers": client.containers.list(all=True, filters=flt),
             "networks": [n for n in client.networks.list(filters=flt)]}
    if client.info()["Swarm"].get("ControlAvailable"):
        found["services"] = client.services.list(filters=flt)
        found["secrets"] = client.secrets.list(filters=flt)
    return found


def _run_where(cluster, tmp_path, seconds: str, tasks: int) -> tuple[int, str]:
    """Run :data:`WHERE` from ``tmp_path`` on ``cluster``: its exit status and everything it printed."""
    out = []
    status = cluster.run(str(_where_script(tmp_path, WHERE)), [seconds, str(tasks)], directory=str(tmp_path),
                         stream=Collect(out))
    return status, b"".join(out).decode(errors="replace")


def _where_script(tmp_path, body: str):
    script = tmp_path / "where.py"
    script.write_text(textwrap.dedent(body))
    return script


WHERE = """
    import socket
    import sys
    import time
    from dockkit import futures

    def where(i):
        time.sleep(float(sys.argv[1]))
        return socket.gethostname(), i * i

    if __name__ == "__main__":
        results = list(futures.map(where, range(int(sys.argv[2]))))
        print("hosts:", " ".join(sorted({host for host, _ in results})))
        print("sum:", sum(square for _, square in results))
        with open("result.txt", "w") as out:
            out.write(str(sum(square for _, square in results)))
"""


# Says once when the first result computed on the host argv[2] is back.
MID_RUN = """
    import socket
    import sys
    import time
    from dockkit import futures

    def where(i):
        time.sleep(0.05)
        return socket.gethostname(), i * i

    if __name__ == "__main__":
        squares, hosts = [], set()
        for host, square in futures.map(where, range(int(sys.argv[1]))):
            if host == sys.argv[2] and host not in hosts:
                print(f"tasks ran on {host}", flush=True)
            squares.append(square)
            hosts.add(host)
        print("sum:", sum(squares))
"""


def test_nodes_are_services_spread_over_the_swarm(swarm_cluster, engine_bed, docker_client):
    nodes = swarm_cluster.status()
    assert [(n.name, n.state) for n in nodes] == [(f"node{i}", "running") for i in range(NODES)]
    assert {n.swarm_node for n in nodes} == {"engine0", "engine1"}  # the placement preference spreads them
    manager = engine_bed.engines[0].client()
    services = {s.name: s for s in manager.services.list(filters={"label": f"{CLUSTER_LABEL}={swarm_cluster.name}"})}
    assert sorted(services) == [f"dockkit-{swarm_cluster.name}-node{i}" for i in range(NODES)]
    for node in nodes:  # each runs where the status says, on that engine, published on its address
        engine = engine_bed.engines[int(node.swarm_node.removeprefix("engine"))]
        assert node.address == engine.address and node.docker_host == engine.tcp_url
        assert engine.client().containers.get(node.container).status == "running"
    networks = manager.networks.list(names=[f"dockkit-{swarm_cluster.name}"])
    assert [(n.attrs["Driver"], n.attrs["Attachable"]) for n in networks] == [("overlay", True)]
    # labelled like every node: `down` finds it from Docker's state alone
    assert networks[0].attrs["Labels"] == {LABEL: "true", CLUSTER_LABEL: swarm_cluster.name}
    assert not _labelled(docker_client, swarm_cluster.name)["containers"]  # nothing on this machine's engine
    assert any("no registry" in m for m in swarm_cluster.up_messages), swarm_cluster.up_messages


def test_keys_reach_the_nodes_as_secrets_only(swarm_cluster, engine_bed):
    manager = engine_bed.engines[0].client()
    key_text = swarm_cluster.key_path.read_text()
    for service in manager.services.list(filters={"label": f"{CLUSTER_LABEL}={swarm_cluster.name}"}):
        spec = service.attrs["Spec"]
        container_spec = spec["TaskTemplate"]["ContainerSpec"]
        shown = repr(container_spec.get("Env")) + repr(container_spec.get("Labels")) + repr(spec.get("Labels"))
        assert "PRIVATE KEY" not in shown and key_text not in shown
        files = {ref["File"]["Name"] for ref in container_spec["Secrets"]}
        head = service.name.endswith("-node0")
        assert files == {"/etc/dockkit/ssh_host_ed25519_key", "/etc/dockkit/authorized_keys",
                         *(("/root/.ssh/id_ed25519",) if head else ())}, service.name
    out = []
    status = swarm_cluster.exec("node1", "test -e /root/.ssh/id_ed25519 && echo KEY || echo NOKEY",
                                stream=Collect(out))
    assert (status, b"".join(out).strip()) == (0, b"NOKEY")  # only the head holds the client key
    image = manager.images.get(swarm_cluster.state().image)
    assert "PRIVATE KEY" not in repr(image.history())


def test_run_maps_over_the_swarm_and_its_outputs_come_home(swarm_cluster, tmp_path):
    status, text = _run_where(swarm_cluster, tmp_path, "0.02", 200)
    assert status == 0, text
    assert "hosts: node0 node1 node2" in text, text
    assert f"sum: {sum(i * i for i in range(200))}" in text, text
    assert (tmp_path / "result.txt").read_text() == str(sum(i * i for i in range(200)))


def test_an_executor_from_this_machine_maps_over_the_swarm(swarm_cluster):
    with swarm_cluster.executor(workers=6) as executor:
        hosts = set(executor.map(_hostname, range(300)))
    assert hosts == {f"node{i}" for i in range(NODES)}


def test_cp_reaches_every_node_through_its_own_engine(swarm_cluster, tmp_path):
    (tmp_path / "data.txt").write_text("payload")
    assert swarm_cluster.copy_to(tmp_path / "data.txt", "all", "/srv/") == [
        f"node{i}:/srv/data.txt" for i in range(NODES)]
    landed = swarm_cluster.copy_from("all", "/srv/data.txt", tmp_path / "back")
    assert [path.read_text() for path in landed] == ["payload"] * NODES


def test_exec_logs_ssh_and_status_work_on_a_swarm_cluster(swarm_cluster, tmp_path):
    out = []
    assert swarm_cluster.exec("node2", "hostname", stream=Collect(out)) == 0
    assert b"".join(out).strip() == b"node2"
    assert "Server listening on" in swarm_cluster.logs()["node1"]
    ssh = subprocess.run(swarm_cluster.ssh_argv("node1", ["-o", "BatchMode=yes", "hostname"]),
                         capture_output=True, text=True, timeout=30)
    assert (ssh.returncode, ssh.stdout.strip()) == (0, "node1"), ssh.stderr
    result = _cli("status", "--name", swarm_cluster.name)
    assert result.returncode == 0, result.stderr
    assert "swarm node" in result.stdout and "engine1" in result.stdout, result.stdout


def test_a_dead_node_is_restarted_by_swarm_and_the_next_run_uses_it(swarm_cluster, engine_bed, tmp_path):
    """Killed mid-run: that run loses the worker and re-runs its tasks; Swarm restarts the node
    with the same host key (a pinned one: ssh would refuse another), and the next run uses it.

    The kill waits for the run to say node1's workers returned results, so it lands while they
    hold tasks (seconds of work are left): the run must find them lost to finish."""
    before = swarm_cluster.node("node1")
    engine = engine_bed.engines[int(before.swarm_node.removeprefix("engine"))]
    script = _where_script(tmp_path, MID_RUN)
    out = []
    sink = _KillOnLine(out, b"tasks ran on node1", lambda: engine.client().containers.get(before.container).kill())
    status = swarm_cluster.run(str(script), ["800", "node1"], directory=str(tmp_path), stream=sink)
    text = b"".join(out).decode(errors="replace")
    assert sink.killer is not None, text  # node1 took part, and was killed mid-run
    sink.killer.join()
    assert status == 0, text  # the lost worker's tasks ran again elsewhere
    lost = re.search(r"dockkit: worker \S+ \(pid \d+\) on node1 ", text)
    assert lost, text
    assert text.index("tasks ran on node1") < lost.start() < text.index("sum: "), text
    assert f"sum: {sum(i * i for i in range(800))}" in text, text
    deadline = time.monotonic() + 60
    while (after := next(n for n in swarm_cluster.status() if n.name == "node1")).state != "running" \
            or after.container == before.container:
        assert time.monotonic() < deadline, f"Swarm did not restart node1: {after}"
        time.sleep(1)
    # the key the new container's sshd serves is the one pinned in the state
    new_engine = engine_bed.engines[int(after.swarm_node.removeprefix("engine"))]
    code, served = new_engine.client().containers.get(after.container).exec_run(
        ["ssh-keygen", "-y", "-f", "/etc/ssh/ssh_host_ed25519_key"])
    assert code == 0, served
    pinned = next(n for n in swarm_cluster.state().nodes if n.name == "node1").host_key
    assert served.decode().split()[:2] == pinned.split()[:2]
    status, text = _run_where(swarm_cluster, tmp_path, "0.01", 200)
    assert status == 0 and "hosts: node0 node1 node2" in text, text


@contextlib.contextmanager
def _drained(manager, hostname: str):
    """The swarm node ``hostname`` drained (Swarm moves its tasks away), made active again after."""
    node = next(n for n in manager.nodes.list() if n.attrs["Description"]["Hostname"] == hostname)
    node.update({**node.attrs["Spec"], "Availability": "drain"})
    try:
        yield
    finally:
        node.reload()
        node.update({**node.attrs["Spec"], "Availability": "active"})


class _KillOnLine(Collect):
    """Collects a run's output; once ``line`` shows in it, calls ``kill`` in a thread of its own
    (``killer``), so the output keeps flowing meanwhile."""

    def __init__(self, out: list[bytes], line: bytes, kill):
        super().__init__(out)
        self.line, self.kill, self.killer = line, kill, None

    def stdout(self, data: bytes) -> None:
        super().stdout(data)
        if self.killer is None and self.line in b"".join(self.out):
            self.killer = threading.Thread(target=self.kill)
            self.killer.start()


def test_scaling_a_swarm_cluster_adds_and_removes_services(swarm_cluster, engine_bed):
    manager = engine_bed.engines[0].client()
    name = swarm_cluster.name

    def services() -> list[str]:
        return sorted(s.name for s in manager.services.list(filters={"label": f"{CLUSTER_LABEL}={name}"}))

    dockkit.Cluster(NODES + 1, name=name, log=lambda message: None).up()
    assert services() == [f"dockkit-{name}-node{i}" for i in range(NODES + 1)]
    assert [n.state for n in swarm_cluster.status()] == ["running"] * (NODES + 1)
    dockkit.Cluster(NODES, name=name, log=lambda message: None).up()
    assert services() == [f"dockkit-{name}-node{i}" for i in range(NODES)]
    secrets = {s.name for s in manager.secrets.list(filters={"label": f"{CLUSTER_LABEL}={name}"})}
    assert f"dockkit-{name}-node{NODES}-host-key" not in secrets


def test_down_removes_services_secrets_and_network_on_every_engine(swarm_cluster, engine_bed):
    assert swarm_cluster.down() == NODES
    for engine in engine_bed.engines:
        # a worker drops its copy of the overlay once the manager tells it: give that a moment
        deadline = time.monotonic() + 15
        while any((left := _labelled(engine.client(), swarm_cluster.name)).values()):
            assert time.monotonic() < deadline, (engine.name, left)
            time.sleep(0.5)
    assert swarm_cluster.down() == 0  # idempotent
    assert swarm_cluster.state() is None


def test_with_a_registry_nodes_go_anywhere_and_those_on_unnamed_engines_are_reached_by_ssh(
        engine_bed, docker_client, tmp_path):
    """Only the manager's engine is given: the worker's engine pulls the image itself, Swarm
    places a node there, and everything dockkit does with that node (run, exec, cp, logs,
    following a restart) goes through the node's own sshd."""
    manager, worker = engine_bed.engines
    with RegistryBed(docker_client, f"{TEST_RUN}-{uuid.uuid4().hex[:8]}") as registry:
        messages: list[str] = []
        cluster = dockkit.Cluster(2, name=unique_name("sr"), docker_hosts=[manager.tcp_url],
                                  workers_per_node=2, swarm=True, registry=registry.address,
                                  log=messages.append)
        try:
            cluster.up()
            image = cluster.state().image
            assert image.startswith(f"{registry.address}/dockkit-worker:"), image
            assert registry.repositories() == ["dockkit-worker"]
            assert any(f"nodes go to any of its 2 node(s); they pull the image from {registry.address}" in m
                       for m in messages), messages
            assert not any("copying" in m for m in messages), messages  # nothing loaded from here
            nodes = {n.swarm_node: n for n in cluster.status()}
            assert sorted(nodes) == ["engine0", "engine1"], nodes
            near, far = nodes["engine0"], nodes["engine1"]
            assert near.docker_host == manager.tcp_url and near.address == manager.address
            assert far.docker_host == "" and far.address == worker.address and far.workers == 2
            assert worker.client().containers.get(far.container).status == "running"
            assert worker.client().images.get(image)  # pulled by the worker's engine itself
            assert "(via its sshd)" in _cli("status", "--name", cluster.name).stdout

            status, text = _run_where(cluster, tmp_path, "0.01", 100)
            assert status == 0 and "hosts: node0 node1" in text, text
            assert (tmp_path / "result.txt").read_text() == str(sum(i * i for i in range(100)))

            streams = Apart()
            status = cluster.exec(far.name, ["sh", "-c", 'hostname; pwd; echo "$GREETING"; echo oops >&2; exit 7'],
                                  workdir="/tmp", environment={"GREETING": "a b"}, stream=streams)
            assert (status, streams.out, streams.err) == (7, f"{far.name}\n/tmp\na b\n".encode(), b"oops\n")
            assert cluster.exec(far.name, "kill -9 $$", stream=Collect([])) == 137  # as docker exec says it

            (tmp_path / "data" / "deep").mkdir(parents=True)
            (tmp_path / "data" / "deep" / "x.txt").write_text("payload")
            assert cluster.copy_to(tmp_path / "data", far.name, "/srv/") == [f"{far.name}:/srv/data"]
            assert worker.client().containers.get(far.container).exec_run(
                ["cat", "/srv/data/deep/x.txt"]).output == b"payload"
            landed = cluster.copy_from(far.name, "/srv/data", tmp_path / "back")
            assert landed == [tmp_path / "back"] and (tmp_path / "back" / "deep" / "x.txt").read_text() == "payload"
            with pytest.raises(ConfigError, match="no such file or directory"):
                cluster.copy_from(far.name, "/srv/nothing", tmp_path)
            assert "Server listening on" in cluster.logs()[far.name]

            # Swarm restarts a killed node there; its new container is configured through its sshd
            worker.client().containers.get(far.container).kill()
            deadline = time.monotonic() + 60
            while (after := next(n for n in cluster.status() if n.name == far.name)).state != "running" \
                    or after.container == far.container:
                assert time.monotonic() < deadline, f"Swarm did not restart {far.name}: {after}"
                time.sleep(1)
            out = []
            assert cluster.exec(far.name, "grep -c '^Host node' /root/.ssh/config", stream=Collect(out)) == 0
            assert b"".join(out).strip() == b"2", out
            status, text = _run_where(cluster, tmp_path, "0.01", 100)
            assert status == 0 and "hosts: node0 node1" in text, text

            # Drained, the manager's swarm node hands its task to the worker's: then the head too
            # is reached through its sshd, for the run (its lifeline, the files on its stdin) and
            # the fetch of its outputs
            with _drained(manager.client(), "engine0"):
                deadline = time.monotonic() + 90
                while {(n.swarm_node, n.state) for n in cluster.status()} != {("engine1", "running")}:
                    assert time.monotonic() < deadline, cluster.status()
                    time.sleep(1)
                assert cluster.node("node0").docker_host == ""
                (tmp_path / "result.txt").unlink()
                status, text = _run_where(cluster, tmp_path, "0.01", 60)
                assert status == 0 and "hosts: node0 node1" in text, text
                assert (tmp_path / "result.txt").read_text() == str(sum(i * i for i in range(60)))
                failing = tmp_path / "fails.py"
                failing.write_text("import sys\nsys.exit(3)\n")
                assert cluster.run(str(failing), directory=str(tmp_path), stream=Collect([])) == 3
        finally:
            cluster.down()
        for engine in engine_bed.engines:
            deadline = time.monotonic() + 15
            while any((left := _labelled(engine.client(), cluster.name)).values()):
                assert time.monotonic() < deadline, (engine.name, left)
                time.sleep(0.5)


def test_an_unreachable_registry_is_one_line_and_leaves_nothing(engine_bed, tmp_path):
    manager, worker = engine_bed.engines
    name = unique_name("su")
    result = _cli("up", "--swarm", "--nodes", "2", "--name", name, "--docker-host", manager.tcp_url,
                  "--docker-host", worker.tcp_url, "--registry", "127.0.0.1:1", state_dir=tmp_path)
    assert result.returncode == 1
    assert "pushing image" in result.stderr and "127.0.0.1:1" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    for engine in engine_bed.engines:
        assert not any(_labelled(engine.client(), name).values())


def test_swarm_on_an_engine_that_manages_none_is_one_line(engine_bed, tmp_path):
    worker = engine_bed.engines[1]
    name = unique_name("sx")
    result = _cli("up", "--swarm", "--nodes", "2", "--name", name, "--docker-host", worker.tcp_url,
                  state_dir=tmp_path)
    assert result.returncode == 1
    assert "is a swarm worker, not a manager" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = _cli("up", "--swarm", "--nodes", "2", "--name", name, state_dir=tmp_path)  # this machine's engine
    assert result.returncode == 1
    assert "is not in a swarm: run `docker swarm init`" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for engine in engine_bed.engines:
        assert not any(_labelled(engine.client(), name).values())
    assert not (tmp_path / "clusters" / name).exists()


def _hostname(_):
    import socket

    return socket.gethostname()


def _cli(*args, state_dir=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250")
    if state_dir is not None:
        env["DOCKKIT_STATE_DIR"] = str(state_dir)
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], capture_output=True, text=True,
                          timeout=180, env=env)
