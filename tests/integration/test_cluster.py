"""The Docker cluster for real: `dockkit up / run / status / exec / down` on the engine.

One 3-node cluster is shared by the tests of this module (started through the
CLI, as the README does); tests that break a node start their own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import cloudpickle
import paramiko
import pytest

import dockkit
from dockkit.cluster import CLUSTER_LABEL
from dockkit.errors import ClusterError, ConfigError
from dockkit.keys import generate_keypair
from tests.contract import ExecutorContract

ROOT = Path(__file__).resolve().parents[2]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module


def dockkit_cli(*args, env, timeout=300, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "dockkit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)


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
    name = f"t{uuid.uuid4().hex[:6]}"
    result = dockkit_cli("up", "--nodes", "3", "--name", name, "--workers-per-node", "2", env=state_env)
    assert result.returncode == 0, result.stderr
    yield dockkit.Cluster(name=name)
    result = dockkit_cli("down", "--name", name, env=state_env)
    assert result.returncode == 0, result.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})


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
    result = dockkit_cli("run", "--name", cluster.name, "examples/pids.py", "-n", "16", env=state_env)
    assert result.returncode == 0, result.stderr
    assert "on 16 distinct pids over 3 host(s)" in result.stderr, result.stderr


def test_run_returns_the_scripts_exit_status(cluster, state_env, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent("""
        from dockkit import futures
        def boom(x):
            raise ValueError(f"bad {x}")
        if __name__ == "__main__":
            list(futures.map(boom, range(3)))
    """))
    result = dockkit_cli("run", "--name", cluster.name, str(script), "-n", "3", env=state_env, cwd=tmp_path)
    assert result.returncode == 1
    assert "ValueError: bad 0" in result.stderr
    assert "Traceback on worker node" in result.stderr


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


def test_a_wrong_pinned_host_key_is_refused(cluster, tmp_path):
    node = cluster.node("node1")
    wrong = generate_keypair()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{node.address}]:{node.port} {wrong.public_line}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(node.address, port=node.port, username="root",
                       key_filename=str(cluster.key_path), look_for_keys=False, allow_agent=False)
    client.close()


def test_status_lists_every_node(cluster, state_env):
    result = dockkit_cli("status", "--name", cluster.name, env=state_env)
    assert result.returncode == 0
    for name in ("node0", "node1", "node2"):
        assert name in result.stdout


def test_executor_from_this_machine(cluster):
    with cluster.executor(workers=4) as executor:
        hosts = set(executor.map(_hostname, range(200)))
    assert hosts == {"node0", "node1", "node2"}


def _hostname(_):
    time.sleep(0.002)
    return socket.gethostname()


def test_a_killed_node_has_its_tasks_rerun(state_env, docker_client, tmp_path):
    name = f"k{uuid.uuid4().hex[:6]}"
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
        status = cluster.run(str(script), directory=str(tmp_path), stream=stream)
        text = b"".join(out).decode(errors="replace")
        assert status == 0, text
        assert "complete" in text
        assert "lost" in text and "node2" in text  # the broker said which worker/host it lost
        victim.reload()
        assert victim.status != "running"
    assert not docker_client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={name}"})


def test_down_is_idempotent_and_works_without_state(state_env, docker_client):
    name = f"d{uuid.uuid4().hex[:6]}"
    cluster = dockkit.Cluster(1, name=name).up()
    assert cluster.directory.exists()
    shutil.rmtree(cluster.directory)  # a lost state directory
    with pytest.raises(ClusterError, match="no state"):
        dockkit.Cluster(1, name=name).up()
    assert dockkit.Cluster(name=name).down() == 1
    assert dockkit.Cluster(name=name).down() == 0
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


@pytest.fixture(scope="module")
def executor(cluster):
    import tests.contract

    cloudpickle.register_pickle_by_value(tests.contract)
    with cluster.executor(workers=4) as ex:
        yield ex


class TestContractOnCluster(ExecutorContract):
    pass
