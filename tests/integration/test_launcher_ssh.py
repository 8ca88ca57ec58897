"""The SSH launcher against real sshd containers: distribution, failures, cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

import dockkit
from dockkit.errors import LaunchError
from dockkit.keys import generate_keypair, known_hosts_line

# The nodes don't have this test module: ship its functions by value, as a user
# would for a module that exists only on the root.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where(_):
    time.sleep(0.005)
    return socket.gethostname(), os.getpid()


def slow(x):
    time.sleep(0.2)
    return x


def _executor(ssh_nodes, hosts, **options):
    return dockkit.Executor(hosts=hosts, ssh_config=str(ssh_nodes.ssh_config_path), **options)


def _worker_pids(ssh_nodes, node) -> list[int]:
    out = ssh_nodes.exec(node, "pgrep -f 'dockkit.(worker|agent)' || true").output
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("tunnel", [True, False], ids=["tunnel", "direct"])
def test_per_host_counts_reach_every_host(ssh_nodes, tunnel):
    hosts = ["node0*1", "node1*2", "node2*3"]
    with _executor(ssh_nodes, hosts, tunnel=tunnel) as executor:
        seen = set(executor.map(where, range(300)))
    per_host = {}
    for host, pid in seen:
        per_host.setdefault(host, set()).add(pid)
    assert {h: len(p) for h, p in per_host.items()} == {"node0": 1, "node1": 2, "node2": 3}


def test_total_spread_over_hosts_without_counts(ssh_nodes):
    with _executor(ssh_nodes, ["node0", "node1", "node2"], workers=5, tunnel=True) as executor:
        assert executor.workers == 5
        seen = set(executor.map(where, range(400)))
    counts = sorted(len({pid for host, pid in seen if host == h}) for h in ("node0", "node1", "node2"))
    assert counts == [1, 2, 2]


def test_hostfile_with_comments(ssh_nodes, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\n\nnode1 2   # two here\nnode2\n")
    with dockkit.Executor(hostfile=str(hostfile), ssh_config=str(ssh_nodes.ssh_config_path),
                          tunnel=True) as executor:
        hosts = {host for host, _ in executor.map(where, range(100))}
    assert hosts == {"node1", "node2"}


def test_unreachable_host_fails_fast_naming_it(ssh_nodes):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        _executor(ssh_nodes, ["node0", f"127.0.0.1:{port}"], tunnel=True, connect_timeout=5)
    assert time.monotonic() - started < 30
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "refused" in str(info.value)
    assert not _worker_pids(ssh_nodes, "node0"), "a failed launch must stop the hosts that came up"


def test_allow_missing_hosts_goes_on(ssh_nodes):
    with _executor(ssh_nodes, ["node0*2", "127.0.0.1:1"], tunnel=True, connect_timeout=5,
                   allow_missing_hosts=True) as executor:
        assert sorted(executor.map(slow, range(4))) == [0, 1, 2, 3]


def test_wrong_host_key_is_rejected(ssh_nodes, tmp_path):
    known = tmp_path / "known_hosts"
    node = ssh_nodes["node1"]
    wrong = generate_keypair()
    known.write_text(known_hosts_line(node.hostname, node.port, wrong.public_line) + "\n")
    with pytest.raises(LaunchError, match="HOST KEY CHANGED"):
        dockkit.Executor(hosts=["node1"], ssh_config=str(ssh_nodes.ssh_config_path),
                         known_hosts=str(known), tunnel=True)


def test_unknown_host_key_is_rejected_unless_accepted(ssh_nodes, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(LaunchError, match="unknown host key"):
        dockkit.Executor(hosts=["node2"], ssh_config=str(ssh_nodes.ssh_config_path),
                         known_hosts=str(known), tunnel=True)
    with dockkit.Executor(hosts=["node2"], ssh_config=str(ssh_nodes.ssh_config_path),
                          known_hosts=str(known), tunnel=True, accept_new_host_keys=True) as executor:
        assert list(executor.map(abs, [-1, -2])) == [1, 2]
    assert ssh_nodes["node2"].hostname in known.read_text()


def test_killed_remote_worker_is_rerun_elsewhere_and_nothing_is_left(ssh_nodes):
    with _executor(ssh_nodes, ["node1*2", "node2*2"], tunnel=True) as executor:
        results = executor.map(slow, range(40))
        first = [next(results) for _ in range(4)]
        victims = _worker_pids(ssh_nodes, "node1")
        if victims:
            ssh_nodes.exec("node1", f"kill -KILL {victims[-1]}")
        assert first + list(results) == list(range(40))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_worker_pids(ssh_nodes, n) for n in ("node1", "node2")):
        time.sleep(0.2)
    assert not _worker_pids(ssh_nodes, "node1")
    assert not _worker_pids(ssh_nodes, "node2")


def test_dockkit_run_over_ssh_returns_the_scripts_status(ssh_nodes, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys
        from dockkit import futures
        if __name__ == "__main__":
            total = sum(futures.map(abs, range(-50, 50)))
            print("total", total)
            sys.exit(7)
    """))
    # the script must exist at the same path on every host
    for node in ("node0", "node1"):
        ssh_nodes.exec(node, f"mkdir -p {tmp_path}")
        node_obj = ssh_nodes[node]
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(script, arcname=str(script).lstrip("/"))
        node_obj.container.put_archive("/", buffer.getvalue())
    result = subprocess.run(
        [sys.executable, "-m", "dockkit", "--hosts", "node0", "node1", "-n", "4", "--tunnel",
         "--ssh-config", str(ssh_nodes.ssh_config_path), str(script)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 7, result.stderr
    assert "total 2500" in result.stdout
    assert "Deploying 4 workers over 2 hosts" in result.stderr


def test_a_python_without_dockkit_is_named_before_any_task(ssh_nodes):
    # a bare virtualenv has no dockkit: the probe says so, per host
    assert ssh_nodes.exec("node1", "python3 -m venv --without-pip /tmp/bare").exit_code == 0
    with pytest.raises(LaunchError) as info:
        _executor(ssh_nodes, ["node1"], tunnel=True, python="/tmp/bare/bin/python")
    message = str(info.value)
    assert "node1" in message and "lacks the module 'dockkit'" in message, message


def test_a_missing_interpreter_is_named(ssh_nodes):
    with pytest.raises(LaunchError, match="no Python at '/no/such/python'"):
        _executor(ssh_nodes, ["node2"], tunnel=True, python="/no/such/python")
