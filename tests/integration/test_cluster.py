"""The Docker cluster for real: `dockkit up / run / status / exec / down` on the engine.

One 3-node cluster is shared by the tests of this module (started through the
CLI, as the README does); tests that break a node start their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

import dockkit
from dockkit.cluster.nodes import CLUSTER_LABEL
from dockkit.errors import ClusterError, ConfigError, ImageError
from dockkit.launch.ssh.keys import generate_keypair
from dockkit.launch.warm import ROOT_NAME as WARM_ROOT_NAME, SERVER_NAME as WARM_SERVER_NAME
from dockkit.launch.warm import SOCKET_PATH as WARM_SOCKET_PATH
from tests.contract import ExecutorContract
from tests.integration import scoop_attributes
from tests.names import unique_name

ROOT = Path(__file__).resolve().parents[2]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module


def dockkit_cli(*args, env, timeout=90, cwd=ROOT, cluster=None):
    """Run the dockkit command. One that outlives ``timeout`` (inside pytest's own hang
    guard, which would leave nothing to read) fails with what it printed and, given the
    ``cluster``, every node's processes and the stacks of its dockkit processes."""
    process = subprocess.Popen([sys.executable, "-m", "dockkit.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(env, COLUMNS="250"),
                               cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        nodes = _dump_nodes(cluster) if cluster is not None else ""
        time.sleep(2)  # the stacks that SIGUSR1 asked for reach the output
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"dockkit {' '.join(args)} did not end within {timeout} s; it printed:\n"
                    f"{stdout}\n--- stderr ---\n{stderr}\n--- nodes ---\n{nodes}")


@contextlib.contextmanager
def stacks_if_stuck(cluster, out: list, after: float = 90.0):
    """Past ``after`` seconds (before pytest's hang guard), print every node's processes,
    ask their dockkit processes for stacks, and print the run's output with them."""
    def report():
        nodes = _dump_nodes(cluster)
        time.sleep(2)  # the stacks travel back in the run's own output
        print(f"--- stuck after {after:.0f} s; nodes ---\n{nodes}\n--- output ---\n"
              f"{b''.join(out).decode(errors='replace')}", file=sys.stderr, flush=True)

    timer = threading.Timer(after, report)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dump_nodes(cluster) -> str:
    """Each node's processes; every dockkit process there is asked for its stacks (SIGUSR1)."""
    report = []
    for node in cluster.status():
        code, out = cluster.container(node.name).exec_run(
            ["sh", "-c", "ps -eo pid,etime,args; pkill -USR1 -f 'python.* -m dockkit' || true"])
        report.append(f"== {node.name}\n{out.decode(errors='replace')}")
    return "\n".join(report)


@pytest.fixture(scope="module")
def state_env(tmp_path_factory, worker_image):
    env = dict(os.environ, DOCKKIT_STATE_DIR=str(tmp_path_factory.mktemp("state")))
    saved = os.environ.get("DOCKKIT_STATE_DIR")
    os.environ["DOCKKIT_STATE_DIR"] = env["DOCKKIT_STATE_DIR"]
    yield env
    if saved is None:
        os.environ.pop("DOCKKIT_STATE_DIR", None)
    else:
        os.environ["DOCKKIT_STATE_DIR"] = saved


@pytest.fixture(scope="module")
def cluster(state_env, docker_client):
    name = unique_name("t")
    result = dockkit_cli("up", "--nodes", "3", "--name", name, "--workers-per-node", "2", env=state_env)
    assert result.returncode == 0, result.stderr
    yield dockkit.Cluster(name=name)
    dockkit_cli("down", "--name", name, env=state_env)  # a backstop: test_down_leaves_nothing checks it


def test_up_writes_strict_ssh_config_and_private_keys(cluster):
    assert [n.state for n in cluster.status()] == ["running"] * 3
    assert oct(cluster.key_path.stat().st_mode & 0o777) == "0o600"
    config = cluster.ssh_config_path.read_text()
    assert "StrictHostKeyChecking yes" in config and "Host node2" in config


def test_up_again_reports_the_existing_cluster(cluster, state_env):
    result = dockkit_cli("up", "--nodes", "3", "--name", cluster.name, env=state_env)
    assert result.returncode == 0
    assert "already up" in result.stderr


def test_run_pids_spreads_over_every_node(cluster, state_env):
    result = dockkit_cli("run", "--name", cluster.name, "examples/pids.py", "-n", "16", env=state_env,
                         cluster=cluster)
    assert result.returncode == 0, result.stderr
    assert "on 16 distinct pids over 3 host(s)" in result.stderr, result.stderr


LINEAGE = """
        import os, socket, time
        from dockkit import futures

        def parent_of(pid):
            with open(f"/proc/{pid}/stat") as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[1])

        def lineage(_):
            time.sleep(0.05)  # long enough for every worker to take some
            agent = os.getppid()
            with open(f"/proc/{parent_of(agent)}/comm") as comm:
                return socket.gethostname(), comm.read().strip(), os.environ.get("RUN_MARK")

        if __name__ == "__main__":
            with open("/proc/self/comm") as comm:  # the root: started by the head's warm server?
                starter = open(f"/proc/{os.getppid()}/comm").read().strip() if os.getppid() else "-"
                print("root", comm.read().strip(), starter)
            for host, server, mark in sorted(set(futures.map(lineage, range(60)))):
                print(host, server, mark)
"""


def _lineage(cluster, state_env, tmp_path) -> dict[str, tuple[str, str]]:
    """{node: (what started its agent, the run's RUN_MARK there)} from a run of LINEAGE, and
    under "root" (the root's process name, what started it)."""
    script = tmp_path / "lineage.py"
    script.write_text(textwrap.dedent(LINEAGE))
    result = dockkit_cli("run", "--name", cluster.name, str(script), "--env", "RUN_MARK=given",
                         env=state_env, cwd=tmp_path, cluster=cluster)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    found = {host: (server, mark) for host, server, mark in rows}
    assert len(found) == len(rows), f"one node's agent had two parents: {result.stdout}"
    return found


def test_a_runs_agents_come_warm_from_each_nodes_server_with_the_runs_environment(cluster, state_env, tmp_path):
    # Each task names its worker's agent's parent: the node's warm agent server, not an sshd
    # session's shell; and the --env the run was given reached the agent and its workers.
    # The root itself came from the head's warm server too.
    found = _lineage(cluster, state_env, tmp_path)
    assert found.pop("root") == (WARM_ROOT_NAME, WARM_SERVER_NAME), found
    assert len(found) == 3 and set(found.values()) == {(WARM_SERVER_NAME, "given")}, found


def test_nodes_whose_warm_server_is_gone_start_their_agent_and_root_plainly(cluster, state_env, tmp_path):
    nodes = [cluster.container("node0"), cluster.container("node2")]

    def server_answers(node) -> bool:
        probe = f"import socket; socket.socket(socket.AF_UNIX).connect({WARM_SOCKET_PATH!r})"
        return node.exec_run(["python", "-I", "-S", "-c", probe]).exit_code == 0

    assert all(map(server_answers, nodes))
    for node in nodes:
        assert node.exec_run(["pkill", "-x", WARM_SERVER_NAME]).exit_code == 0, f"no warm server on {node.name}"
    try:
        found = _lineage(cluster, state_env, tmp_path)
        assert found["root"] == ("python", "-"), found  # python -m dockkit, as docker exec started it
        assert found["node0"] == found["node2"] == ("sshd", "given"), found  # the SSH session's own agent
        assert found["node1"] == (WARM_SERVER_NAME, "given"), found
    finally:  # the next tests find the nodes as they would have
        for node in nodes:
            node.exec_run(["python", "-m", "dockkit.launch.warm"], detach=True)
        deadline = time.monotonic() + 30
        while not all(map(server_answers, nodes)):
            assert time.monotonic() < deadline, "a warm server did not start again"
            time.sleep(0.1)


def test_run_returns_the_scripts_exit_status(cluster, state_env, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent("""
        from dockkit import futures
        def boom(x):
            raise ValueError(f"bad {x}")
        if __name__ == "__main__":
            list(futures.map(boom, range(3)))
    """))
    result = dockkit_cli("run", "--name", cluster.name, str(script), "-n", "3", env=state_env, cwd=tmp_path, cluster=cluster)
    assert result.returncode == 1
    assert "ValueError: bad 0" in result.stderr
    assert "Traceback on worker node" in result.stderr


def test_run_gives_scoops_module_attributes_in_the_root_and_in_tasks(cluster, state_env, tmp_path):
    script = tmp_path / "attributes.py"
    script.write_text(textwrap.dedent(scoop_attributes.SCRIPT))
    result = dockkit_cli("run", "--name", cluster.name, str(script), "-n", "6", env=state_env, cwd=tmp_path,
                         cluster=cluster)
    assert result.returncode == 0, result.stderr
    scoop_attributes.check_printed(result.stdout, {"node0": 2, "node1": 2, "node2": 2})


def test_run_refuses_a_missing_script_in_one_line(cluster, state_env):
    result = dockkit_cli("run", "--name", cluster.name, "no/such/script.py", env=state_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("dockkit: error: script not found")


def test_run_refuses_a_directory_over_the_limit(cluster, state_env, tmp_path):
    (tmp_path / "data.bin").write_bytes(os.urandom(2_500_000))
    (tmp_path / "job.py").write_text("print('hi')\n")
    result = dockkit_cli("run", "--name", cluster.name, "--max-upload", "1", "job.py",
                         env=state_env, cwd=tmp_path)
    assert result.returncode == 1
    assert "over the 1 MB limit" in result.stderr and "data.bin" in result.stderr


@pytest.mark.parametrize("route", ["with-agents", "by-engines"])
def test_a_runs_directory_reaches_every_node(cluster, tmp_path, monkeypatch, route):
    """A small directory travels from the head with each node's agent; a large one (here: any,
    with the limit at 0) is copied by each node's engine. Either way every worker finds it."""
    from dockkit.cluster import cluster as cluster_module
    from tests.integration.streams import Collect

    if route == "by-engines":
        monkeypatch.setattr(cluster_module, "SHIP_WITH_AGENTS", 0)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.txt").write_text(f"table {route}")
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        import socket, time
        from dockkit import futures
        def read(_):
            time.sleep(0.01)
            with open("data/table.txt") as handle:
                return socket.gethostname() + ": " + handle.read()
        if __name__ == "__main__":
            print(sorted(set(futures.map(read, range(120)))))
    """))
    out: list[bytes] = []
    with stacks_if_stuck(cluster, out):
        status = cluster.run(str(tmp_path / "job.py"), directory=str(tmp_path), stream=Collect(out), workers=6)
    text = b"".join(out).decode(errors="replace")
    assert status == 0, text
    assert str([f"node{i}: table {route}" for i in range(3)]) in text, text


def test_ignored_files_are_not_copied(cluster, tmp_path):
    (tmp_path / ".dockkitignore").write_text("secret.txt\n")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "kept.txt").write_text("yes")
    cluster.upload(tmp_path)
    container = cluster.container("node1")
    assert container.exec_run(["cat", str(tmp_path / "kept.txt")]).output == b"yes"
    assert container.exec_run(["test", "-e", str(tmp_path / "secret.txt")]).exit_code == 1


def test_exec_and_ssh_login_with_generated_config(cluster, state_env):
    result = dockkit_cli("exec", "--name", cluster.name, "node1", "hostname", env=state_env)
    assert result.returncode == 0 and result.stdout.strip() == "node1"
    result = subprocess.run(cluster.ssh_argv("node2", ["hostname"]), capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "node2"


def test_up_mends_the_ssh_config_when_a_nodes_port_moved(cluster, state_env, docker_client):
    # A network disconnected and connected again may get the node a new published port;
    # a state that still names the old one is what `dockkit ssh` then fails on.
    node2 = cluster.container("node2")
    network = docker_client.networks.get(f"dockkit-{cluster.name}")
    network.disconnect(node2)
    network.connect(node2, aliases=["node2"])
    state = cluster.state()
    live = next(n for n in state.nodes if n.name == "node2")
    stale = 1 if live.port != 1 else 2  # no sshd listens there
    live.port = stale
    state.save(cluster.files)
    state.write_ssh_files(cluster.files)
    result = dockkit_cli("up", "--nodes", "3", "--name", cluster.name, env=state_env)
    assert result.returncode == 0, result.stderr
    assert f"the sshd port of node2 ({stale} → " in result.stderr
    node2.reload()
    assert next(n for n in cluster.state().nodes if n.name == "node2").port == \
        int(node2.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
    login = subprocess.run(cluster.ssh_argv("node2", ["hostname"]), capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    assert (login.returncode, login.stdout.strip()) == (0, "node2"), login.stderr
    assert cluster.exec("node0", ["ssh", "-o", "BatchMode=yes", "node2", "true"]) == 0  # by name inside


def test_openssh_refuses_a_node_whose_pinned_key_does_not_match(cluster, tmp_path):
    """OpenSSH with the generated files; then node1's line corrupted (node0's key in its place)."""
    ssh = shutil.which("ssh")
    assert ssh, "the OpenSSH client is needed (make system-deps installs it)"

    def login(config):
        return subprocess.run([ssh, "-F", str(config), "-o", "BatchMode=yes", "node1", "true"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    good = login(cluster.ssh_config_path)
    assert good.returncode == 0, good.stderr
    node0, node1 = cluster.node("node0"), cluster.node("node1")
    lines = cluster.known_hosts_path.read_text().splitlines()
    ours = f"[{node1.address}]:{node1.port} "
    assert sum(line.startswith(ours) for line in lines) == 1, lines
    wrong_key = " ".join(node0.host_key.split()[:2])
    corrupt = [ours + wrong_key if line.startswith(ours) else line for line in lines]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(corrupt) + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(cluster.ssh_config_path.read_text().replace(str(cluster.known_hosts_path), str(known)))
    bad = login(config)
    assert bad.returncode == 255, bad.stderr
    assert "Host key verification failed" in bad.stderr, bad.stderr
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in bad.stderr


def test_cli_logs_image_ls_and_ssh(cluster, state_env):
    result = dockkit_cli("logs", "--name", cluster.name, "--tail", "1", env=state_env)
    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("==> ")[1:]
    assert [section.split(" <==")[0] for section in sections] == ["node0", "node1", "node2"]
    assert all(len(section.strip().splitlines()) == 2 for section in sections), result.stdout  # header + 1
    result = dockkit_cli("logs", "--name", cluster.name, "--tail", "3", env=state_env)
    node2 = result.stdout.split("==> node2 <==\n")[1]
    assert node2.splitlines() == cluster.container("node2").logs(tail=3).decode().splitlines()

    result = dockkit_cli("image", "ls", env=state_env)
    assert result.returncode == 0, result.stderr
    assert cluster.state().image in result.stdout

    result = dockkit_cli("ssh", "--name", cluster.name, "node1", "true", env=state_env)
    assert result.returncode == 0, result.stderr
    result = dockkit_cli("ssh", "--name", cluster.name, "node1", "exit 7", env=state_env)
    assert result.returncode == 7, result.stderr


def test_status_lists_every_node(cluster, state_env, docker_client):
    result = dockkit_cli("status", "--name", cluster.name, env=state_env)
    assert result.returncode == 0
    for node in cluster.status():
        row = next(line for line in result.stdout.splitlines() if f" {node.name} " in line)
        assert node.container in row and "running" in row and f"{node.address}:{node.port}" in row


def test_status_of_no_cluster_is_one_line(state_env):
    result = dockkit_cli("status", "--name", "no-such-cluster", env=state_env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["dockkit: error: no cluster named 'no-such-cluster' is up; "
                                          "start one with `dockkit up --name no-such-cluster`"]


def test_run_local_says_so_with_a_cluster_up(cluster, state_env):
    result = dockkit_cli("run", "--name", cluster.name, "--local", "examples/pids.py", "-n", "2", env=state_env)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "cluster" in line]
    assert notes == [f"dockkit: --local: running on local workers, not on cluster {cluster.name!r}"]
    assert "over 1 host(s)" in result.stderr


def test_run_forwards_env_to_the_workers(cluster, state_env, tmp_path):
    script = tmp_path / "env.py"
    script.write_text(textwrap.dedent("""
        import os
        from dockkit import futures
        def probe(_):
            return os.environ.get("DOCKKIT_TEST_PROBE")
        if __name__ == "__main__":
            print("seen", sorted(set(futures.map(probe, range(30)))))
    """))
    result = dockkit_cli("run", "--name", cluster.name, "--env", "DOCKKIT_TEST_PROBE=42", str(script), "-n", "3",
                         env=state_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seen ['42']" in result.stdout


def test_run_refuses_options_that_mean_nothing_on_a_cluster(cluster, state_env):
    result = dockkit_cli("run", "--name", cluster.name, "--python", "/usr/bin/python3", "--path", "/tmp",
                         "examples/pids.py", env=state_env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dockkit: error: --python, --path: not for a run on cluster {cluster.name!r} (its nodes run the "
        "image's Python at the script's own path, with keys and an ssh_config of their own); leave it "
        "out, or add --local"]


def test_run_says_tunnel_and_no_host_check_are_not_needed_and_runs(cluster, state_env):
    result = dockkit_cli("run", "--name", cluster.name, "--tunnel", "--no-host-check", "examples/pids.py",
                         "-n", "3", env=state_env, cluster=cluster)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"dockkit: --tunnel, --no-host-check: not needed on cluster {cluster.name!r}, which chooses how "
        "its nodes connect and pins their host keys; ignored")
    assert "on 3 distinct pids over 3 host(s)" in result.stderr, result.stderr


def test_a_node_that_vanished_is_named_with_the_fix(state_env, docker_client):
    name = unique_name("v")
    with dockkit.Cluster(1, name=name, workers_per_node=1, log=lambda message: None) as cluster:
        cluster.container("node0").remove(force=True)
        with pytest.raises(ClusterError, match=f"node node0 of cluster '{name}' is gone.*dockkit up --name {name}"):
            cluster.exec("node0", ["true"])
        result = dockkit_cli("exec", "--name", name, "node0", "true", env=state_env)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("dockkit: error: node node0 of cluster")
        assert [n.state for n in cluster.status()] == ["missing"]


def test_executor_from_this_machine(cluster):
    with cluster.executor(workers=4) as executor:
        hosts = set(executor.map(_hostname, range(200)))
    assert hosts == {"node0", "node1", "node2"}


def _hostname(_):
    time.sleep(0.002)
    return socket.gethostname()


def test_a_killed_node_has_its_tasks_rerun(state_env, docker_client, tmp_path):
    name = unique_name("k")
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import time
        from dockkit import futures
        def slow(x):
            time.sleep(0.25)
            return x
        if __name__ == "__main__":
            results = futures.map(slow, range(160))
            first = next(results)
            print("started", flush=True)
            assert [first, *results] == list(range(160))
            print("complete")
    """))
    with dockkit.Cluster(3, name=name, workers_per_node=2) as cluster:
        victim = cluster.container("node2")
        out = []
        # kill node2 once tasks are flowing: the run must still complete
        stream = _Collect(out, on_text="started", action=lambda: threading.Timer(0.5, victim.kill).start())
        with stacks_if_stuck(cluster, out):
            status = cluster.run(str(script), directory=str(tmp_path), stream=stream)
        text = b"".join(out).decode(errors="replace")
        assert status == 0, text
        assert "complete" in text
        assert "lost" in text and "node2" in text  # the broker said which worker/host it lost
        victim.reload()
        assert victim.status != "running"
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})


def test_down_is_idempotent_and_works_without_state(state_env, docker_client):
    name = unique_name("d")
    cluster = dockkit.Cluster(1, name=name).up()
    assert cluster.directory.exists()
    shutil.rmtree(cluster.directory)  # a lost state directory
    with pytest.raises(ClusterError, match="no state"):
        dockkit.Cluster(1, name=name).up()
    assert dockkit.Cluster(name=name).down() == 1
    assert dockkit.Cluster(name=name).down() == 0
    assert not docker_client.networks.list(filters={"label": f"{CLUSTER_LABEL}={name}"})


def test_scaling_recreates_dead_nodes_with_one_image(state_env, docker_client):
    name = unique_name("s")
    quiet = {"log": lambda message: None}
    cluster = dockkit.Cluster(1, name=name, **quiet).up()
    try:
        (node0,) = cluster.status()
        assert node0.workers == docker_client.info()["NCPU"]  # the engine's CPUs, not a guess
        image = cluster.state().image

        dockkit.Cluster(3, name=name, cpus=1, **quiet).up()
        nodes = cluster.status()
        assert [(n.name, n.state) for n in nodes] == [("node0", "running"), ("node1", "running"),
                                                      ("node2", "running")]
        assert [n.workers for n in nodes[1:]] == [1, 1]  # their cpus limit
        assert {cluster.container(n.name).attrs["Config"]["Image"] for n in nodes} == {image}
        assert cluster.exec("node0", ["ssh", "-o", "BatchMode=yes", "node2", "true"]) == 0

        cluster.container("node1").remove(force=True)  # vanished
        cluster.container("node2").kill()  # exited
        assert [n.state for n in cluster.status()] == ["running", "missing", "exited"]
        messages = []
        dockkit.Cluster(3, name=name, log=messages.append).up()
        assert f"dockkit: recreating node1 (missing), node2 (exited) of cluster {name!r}" in messages
        nodes = cluster.status()
        assert [n.state for n in nodes] == ["running"] * 3
        assert {cluster.container(n.name).attrs["Config"]["Image"] for n in nodes} == {image}
        assert cluster.exec("node0", ["ssh", "-o", "BatchMode=yes", "node1", "true"]) == 0  # new host key pinned
        # only the head holds the client key: a node taken over logs in nowhere
        for node in ("node1", "node2"):
            assert cluster.exec(node, ["test", "-e", "/root/.ssh/id_ed25519"]) == 1
        assert cluster.exec("node1", ["ssh", "-o", "BatchMode=yes", "node0", "true"]) == 255
        login = subprocess.run(cluster.ssh_argv("node2", ["true"]), capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
        assert login.returncode == 0, login.stderr

        messages = []
        dockkit.Cluster(1, name=name, log=messages.append).up()
        assert messages == [f"dockkit: scaling cluster {name!r} from 3 to 1 nodes"]
        assert [n.name for n in cluster.status()] == ["node0"]
        labelled = docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})
        assert [c.name for c in labelled] == [f"dockkit-{name}-node0"]
        assert "Host node1" not in cluster.ssh_config_path.read_text()
    finally:
        cluster.down()


def test_a_failed_image_build_leaves_nothing(state_env, docker_client):
    name = unique_name("f")
    cluster = dockkit.Cluster(1, name=name, base_image="dockkit-no-such-base:0", log=lambda message: None)
    with pytest.raises(ImageError, match="dockkit-no-such-base:0"):
        cluster.up()
    assert not cluster.directory.exists()
    _assert_nothing_in_docker(docker_client, name)
    result = dockkit_cli("up", "--nodes", "1", "--name", name, "--base-image", "dockkit-no-such-base:0",
                         env=state_env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("dockkit: error: base image 'dockkit-no-such-base:0' "
                                                     "is not on this Docker Engine")
    assert not cluster.directory.exists()
    _assert_nothing_in_docker(docker_client, name)


def test_up_never_ready_through_the_cli_is_one_error_with_the_logs(state_env, docker_client):
    name = unique_name("c")
    cluster = dockkit.Cluster(1, name=name)
    generate_keypair().write(cluster.key_path)  # its public half: another key, so no login works
    Path(f"{cluster.key_path}.pub").write_text(generate_keypair().public_line + "\n")
    result = dockkit_cli("up", "--nodes", "1", "--name", name, "--ready-timeout", "1", env=state_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "dockkit: error: node0 (" in result.stderr and "never accepted an SSH login within 1 s" in result.stderr
    assert "Server listening on" in result.stderr
    _assert_nothing_in_docker(docker_client, name)
    cluster.down()


def test_a_node_that_stops_fails_up_at_once_with_its_logs(state_env, docker_client):
    """The client key's public half is empty, so the node has no authorized key and exits."""
    name = unique_name("e")
    cluster = dockkit.Cluster(1, name=name, ready_timeout=600, log=lambda message: None)
    generate_keypair().write(cluster.key_path)
    Path(f"{cluster.key_path}.pub").write_text("")
    with pytest.raises(ClusterError) as failure:
        cluster.up()
    message = str(failure.value)
    assert "node0" in message and "stopped before it was ready" in message and "exit code 1" in message
    assert "--- logs of" in message and "no authorized key" in message
    _assert_nothing_in_docker(docker_client, name)
    assert sorted(p.name for p in cluster.directory.iterdir()) == ["id_ed25519", "id_ed25519.pub"]  # as before
    cluster.down()


def test_a_node_that_never_takes_a_login_fails_with_its_logs(state_env, docker_client):
    """The client key's public half is another key: sshd runs but refuses every login."""
    name = unique_name("n")
    cluster = dockkit.Cluster(1, name=name, ready_timeout=3, log=lambda message: None)
    generate_keypair().write(cluster.key_path)
    Path(f"{cluster.key_path}.pub").write_text(generate_keypair().public_line + "\n")
    with pytest.raises(ClusterError) as failure:
        cluster.up()
    message = str(failure.value)
    assert "node0" in message and "never accepted an SSH login within 3 s" in message
    assert "Server listening on" in message  # sshd's own log lines
    _assert_nothing_in_docker(docker_client, name)
    assert not cluster.state() and not cluster.ssh_config_path.exists()
    cluster.down()


def _assert_nothing_in_docker(docker_client, name):
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})
    assert not docker_client.networks.list(filters={"label": f"{CLUSTER_LABEL}={name}"})


def test_bad_cluster_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="bad cluster name"):
        dockkit.Cluster(1, name="Bad Name!")


class _Collect:
    """Collects a cluster run's output; runs ``action`` once when ``on_text`` shows up."""

    def __init__(self, out, on_text=None, action=None):
        self.out, self.on_text, self.action = out, on_text, action

    def stdout(self, data):
        self.out.append(data)
        if self.on_text and self.on_text.encode() in b"".join(self.out):
            self.on_text = None
            self.action()

    stderr = stdout


@pytest.fixture(scope="class")  # closed before test_down_leaves_nothing removes the cluster
def executor(cluster):
    import tests.contract

    cloudpickle.register_pickle_by_value(tests.contract)
    with cluster.executor(workers=4) as ex:
        yield ex


class TestContractOnCluster(ExecutorContract):
    pass


def test_run_with_no_cluster_up_runs_locally_and_says_so_once(tmp_path):
    env = dict(os.environ, DOCKKIT_STATE_DIR=str(tmp_path / "state"))
    result = dockkit_cli("run", "examples/pids.py", "-n", "2", env=env)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "cluster" in line]
    assert notes == ["dockkit: no cluster 'dockkit' is up; running on local workers"]


def test_down_leaves_nothing(cluster, state_env, docker_client):
    """Last in this module: after the runs above, down removes containers, network, key and state."""
    assert cluster.key_path.exists()
    result = dockkit_cli("down", "--name", cluster.name, env=state_env)
    assert result.returncode == 0, result.stderr
    assert "3 container(s) removed" in result.stderr
    _assert_nothing_in_docker(docker_client, cluster.name)
    assert not cluster.directory.exists()
    result = dockkit_cli("down", "--name", cluster.name, env=state_env)
    assert result.returncode == 0 and "0 container(s) removed" in result.stderr
