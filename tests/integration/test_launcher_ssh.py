"""The SSH launcher against real sshd containers: distribution, failures, cleanup."""

from __future__ import annotations

import io
import os
import select
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time

import cloudpickle
import pytest

import dockkit
from dockkit.launch.supervisor import WORKER_PROCESS_NAME
from dockkit.errors import LaunchError
from dockkit.launch.ssh.keys import generate_keypair, known_hosts_line
from dockkit.launch.ssh.connection import resolve
from dockkit.launch.hosts import HostSpec
from tests.integration import scoop_attributes

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


def _role(comm: str, args: str) -> str | None:
    """A dockkit process's role: workers forked by their agent keep its command line, but
    carry their own name; spawned ones run ``python -m dockkit.runtime.worker``."""
    if comm == WORKER_PROCESS_NAME or "dockkit.runtime.worker" in args:
        return "worker"
    return "agent" if "dockkit.launch.agent" in args else None


def _worker_pids(ssh_nodes, node, which: str = "worker|agent") -> list[int]:
    rows = (line.split(None, 2) for line in ssh_nodes.exec(node, "ps -eo pid=,comm=,args=").output.splitlines())
    return [int(pid) for pid, comm, args in rows if _role(comm, args) in which.split("|")]


def _assert_nothing_left(ssh_nodes, nodes, timeout: float = 15) -> None:
    """No dockkit agent or worker on any of ``nodes`` (they get a moment to exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_worker_pids(ssh_nodes, n) for n in nodes):
        time.sleep(0.2)
    left = {n: ssh_nodes.run_processes(n) for n in nodes}
    assert not any(left.values()), left


def _per_host(seen) -> dict[str, int]:
    """{host: number of distinct worker pids} from (host, pid) pairs."""
    pids: dict[str, set] = {}
    for host, pid in seen:
        pids.setdefault(host, set()).add(pid)
    return {host: len(p) for host, p in pids.items()}


def _copy_to_nodes(ssh_nodes, nodes, path) -> None:
    """Put ``path`` at the same path on every node, as a script run needs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=str(path).lstrip("/"))
    for node in nodes:
        assert ssh_nodes.exec(node, f"mkdir -p {os.path.dirname(path)}").exit_code == 0
        ssh_nodes[node].container.put_archive("/", buffer.getvalue())


@pytest.fixture
def wide_console(monkeypatch):
    """Rich tables as wide as their content, so a test can read whole rows."""
    monkeypatch.setenv("COLUMNS", "400")


def _table_row(text: str, host: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith("│") and f" {host} " in line]
    assert rows, f"no table row for {host} in:\n{text}"
    return rows[-1]


@pytest.mark.parametrize("tunnel", [True, False], ids=["tunnel", "direct"])
def test_per_host_counts_reach_every_host(ssh_nodes, tunnel):
    hosts = ["node0*1", "node1:2", "node2*3"]  # ':2' below 1024: a worker count
    with _executor(ssh_nodes, hosts, tunnel=tunnel) as executor:
        assert _per_host(set(executor.map(where, range(300)))) == {"node0": 1, "node1": 2, "node2": 3}


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
        assert _per_host(set(executor.map(where, range(300)))) == {"node1": 2, "node2": 1}


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


def test_allow_missing_hosts_goes_on_and_the_table_says_why(ssh_nodes, capfd, wide_console):
    with _executor(ssh_nodes, ["node0*2", "ssh://127.0.0.1:1"], tunnel=True, connect_timeout=5,
                   allow_missing_hosts=True) as executor:
        assert sorted(executor.map(slow, range(4))) == [0, 1, 2, 3]
    err = capfd.readouterr().err
    assert "Host status" in err
    good, bad = _table_row(err, "node0"), _table_row(err, "ssh://127.0.0.1:1")
    assert "│ 2 " in good and "running" in good and "Python 3." in good  # its agent started meanwhile
    assert "failed" in bad and "connection refused" in bad and "is sshd running" in bad


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


def test_killed_remote_worker_is_rerun_elsewhere_and_nothing_is_left(ssh_nodes, caplog):
    with _executor(ssh_nodes, ["node1*2", "node2*2"], tunnel=True) as executor:
        results = executor.map(slow, range(40))
        first = [next(results) for _ in range(4)]
        victims = _worker_pids(ssh_nodes, "node1", which="worker")
        assert len(victims) == 2, victims  # the workers, not the agent
        assert ssh_nodes.exec("node1", f"kill -KILL {victims[-1]}").exit_code == 0
        assert first + list(results) == list(range(40))
    lost = [r.getMessage() for r in caplog.records if "SIGKILL" in r.getMessage()]
    assert any(f"pid {victims[-1]}) on node1 was killed by SIGKILL" in m for m in lost), lost
    _assert_nothing_left(ssh_nodes, ["node1", "node2"])


def test_a_host_lost_mid_run_has_its_tasks_rerun_and_is_named(ssh_nodes, capfd):
    with _executor(ssh_nodes, ["node1*2", "node2*2"], tunnel=True) as executor:
        results = executor.map(slow, range(40))
        first = [next(results) for _ in range(4)]
        agent = _worker_pids(ssh_nodes, "node1", which="agent")
        assert len(agent) == 1, agent
        assert ssh_nodes.exec("node1", f"kill -KILL {agent[0]}").exit_code == 0
        assert first + list(results) == list(range(40))
    assert "host node1 lost: the agent on node1 ended" in capfd.readouterr().err
    _assert_nothing_left(ssh_nodes, ["node1", "node2"])


@pytest.mark.parametrize("tunnel", [True, False], ids=["tunnel", "direct"])
def test_a_paused_host_given_up_on_does_not_hold_the_end_and_leaves_nothing(ssh_nodes, tunnel):
    """Its agent cannot answer EOF, a kill or a cancelled forward: the stop drops its connection
    instead of waiting out the stop's timeout (5 s) and then the remote kill's, and the agent
    ends its workers when it wakes to find its session gone."""
    node = ssh_nodes["node1"].container
    executor = _executor(ssh_nodes, ["node1*2", "node2*2"], tunnel=tunnel, heartbeat_timeout=3)
    try:
        results = executor.map(slow, range(60))
        first = [next(results) for _ in range(4)]
        node.pause()
        assert first + list(results) == list(range(60))  # node1's batches re-ran on node2
        started = time.monotonic()
        executor.shutdown()
        stop_s = time.monotonic() - started
    finally:
        node.reload()
        if node.status == "paused":
            node.unpause()
        executor.shutdown()
    assert stop_s < 4, f"the stop waited {stop_s:.1f} s on the paused host"
    _assert_nothing_left(ssh_nodes, ["node1", "node2"])


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
    _copy_to_nodes(ssh_nodes, ["node0", "node1"], script)  # the same path on every host
    result = subprocess.run(
        [sys.executable, "-m", "dockkit", "--hosts", "node0", "node1", "-n", "4", "--tunnel",
         "--ssh-config", str(ssh_nodes.ssh_config_path), str(script)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 7, result.stderr
    assert "total 2500" in result.stdout
    assert "Deploying 4 workers over 2 hosts" in result.stderr


def test_scoops_module_attributes_over_ssh_in_the_root_and_in_tasks(ssh_nodes, tmp_path):
    script = tmp_path / "attributes.py"
    script.write_text(textwrap.dedent(scoop_attributes.SCRIPT))
    nodes = ["node0", "node1", "node2"]
    _copy_to_nodes(ssh_nodes, nodes, script)
    result = subprocess.run(
        [sys.executable, "-m", "dockkit", "--hosts", *nodes, "-n", "5", "--tunnel",
         "--ssh-config", str(ssh_nodes.ssh_config_path), str(script)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # -n 5 over three hosts without counts: the remainder goes to the first ones
    scoop_attributes.check_printed(result.stdout, {"node0": 2, "node1": 2, "node2": 1})


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


def test_without_the_host_check_a_broken_python_fails_at_the_agent_not_the_probe(ssh_nodes):
    # The check is what names a missing module; skipped, the run still starts and works
    # where hosts are sound, and a bad host is still named (its agent never connects).
    with _executor(ssh_nodes, ["node1", "node2"], tunnel=True, check_hosts=False) as executor:
        assert sorted(executor.map(abs, range(-20, 0))) == list(range(1, 21))
    with pytest.raises(LaunchError, match="node2") as failure:
        _executor(ssh_nodes, ["node2"], tunnel=True, check_hosts=False, python="/no/such/python",
                  connect_timeout=5)
    assert "Python check" not in str(failure.value)


def test_direct_connections_without_encryption_still_need_the_runs_secret(ssh_nodes):
    # --no-encrypt on a private network: traffic in the clear, still authenticated
    with _executor(ssh_nodes, ["node1"], encrypt=False) as executor:
        assert executor._curve is None and not executor.address.startswith("tcp://127.")
        assert list(executor.map(abs, [-1, -2])) == [1, 2]


def test_a_python_under_home_and_a_path_work_for_probe_and_agent(ssh_nodes):
    # '~/...' is the remote home for the probe as for the agent; --path is where both run
    assert ssh_nodes.exec("node2", "ln -sfn /opt/dockkit-venv ~/venv && mkdir -p /srv/dk-job").exit_code == 0
    with _executor(ssh_nodes, ["node2"], tunnel=True, python="~/venv/bin/python",
                   path="/srv/dk-job") as executor:
        assert executor.submit(os.getcwd).result() == "/srv/dk-job"
    with pytest.raises(LaunchError, match="no directory '/srv/no-such-dir' on this host"):
        _executor(ssh_nodes, ["node2"], tunnel=True, path="/srv/no-such-dir")


def test_a_version_mismatch_is_shown_per_host_before_any_task(ssh_nodes, capfd, wide_console):
    # a real, older cloudpickle on node1, found first through the prolog's PYTHONPATH
    fake = "/tmp/dk-fake-cloudpickle/cloudpickle"
    assert ssh_nodes.exec("node1", f"mkdir -p {fake} && echo '__version__ = \"0.0.1\"' > {fake}/__init__.py"
                          ).exit_code == 0
    with pytest.raises(LaunchError) as info:
        _executor(ssh_nodes, ["node1"], tunnel=True,
                  prolog="export PYTHONPATH=/tmp/dk-fake-cloudpickle")
    expected = f"cloudpickle 0.0.1 on this host vs {cloudpickle.__version__} on the root"
    assert "version mismatch" in str(info.value) and expected in str(info.value)
    row = _table_row(capfd.readouterr().err, "node1")
    assert "failed" in row and expected in row and "install the same versions" in row
    _assert_nothing_left(ssh_nodes, ["node1"])


def test_a_refused_client_key_names_the_host_and_the_key(ssh_nodes, tmp_path, wide_console, capfd):
    stranger = generate_keypair("stranger")
    key_path = stranger.write(tmp_path / "stranger")
    target = resolve(HostSpec("node0"), ssh_config=ssh_nodes.ssh_config_path)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host dk-stranger\n  HostName {target.hostname}\n  User root\n"
                      f"  IdentityFile {key_path}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {ssh_nodes.known_hosts_path}\n")
    with pytest.raises(LaunchError) as info:
        dockkit.Executor(hosts=["dk-stranger"], ssh_config=str(config), tunnel=True)
    assert "dk-stranger" in str(info.value)
    assert "authentication failed as user 'root'" in str(info.value) and str(key_path) in str(info.value)
    assert "failed" in _table_row(capfd.readouterr().err, "dk-stranger")


def _gateway(docker_client, ssh_nodes) -> str:
    """This machine's address on the nodes' bridge network."""
    network = docker_client.networks.get(ssh_nodes.network)
    return network.attrs["IPAM"]["Config"][0]["Gateway"]


def test_workers_that_cannot_connect_back_fail_the_launch(ssh_nodes, capfd, wide_console):
    # 192.0.2.1 (TEST-NET-1) is nobody's address: the node's workers can't reach it
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        _executor(ssh_nodes, ["node0*2"], external_hostname="192.0.2.1", connect_timeout=5)
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert "node0: its workers cannot reach tcp://192.0.2.1:" in message
    assert "use --tunnel, or --external-hostname" in message and "--allow-missing-hosts" in message
    row = _table_row(capfd.readouterr().err, "node0")
    assert "│ 2 " in row and "failed" in row and "cannot reach tcp://192.0.2.1:" in row
    _assert_nothing_left(ssh_nodes, ["node0"])


def test_external_hostname_is_bound_and_advertised(ssh_nodes, docker_client):
    gateway = _gateway(docker_client, ssh_nodes)
    with _executor(ssh_nodes, ["node0", "node1"], external_hostname=gateway) as executor:
        assert executor.address.startswith(f"tcp://{gateway}:")
        port = int(executor.address.rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):  # bound to that address only
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert {host for host, _ in executor.map(where, range(100))} == {"node0", "node1"}


def test_allow_missing_hosts_goes_on_without_a_host_that_cannot_connect_back(
        make_ssh_nodes, docker_client, capfd, wide_console):
    # One name, resolved by each host: node0 finds this machine, node1 an unreachable address.
    nodes = make_ssh_nodes(2)
    gateway = _gateway(docker_client, nodes)
    for node, address in (("node0", gateway), ("node1", "192.0.2.1")):
        assert nodes.exec(node, f"echo '{address} dk-root' >> /etc/hosts").exit_code == 0
    options = dict(external_hostname="dk-root", connect_timeout=5)
    with pytest.raises(LaunchError, match="node1: its workers cannot reach tcp://dk-root:"):
        _executor(nodes, ["node0", "node1"], **options)
    with _executor(nodes, ["node0*2", "node1*2"], allow_missing_hosts=True, **options) as executor:
        assert executor.address.startswith("tcp://0.0.0.0:")  # a name this machine can't resolve
        assert _per_host(set(executor.map(where, range(200)))) == {"node0": 2}
    err = capfd.readouterr().err
    assert "cannot reach tcp://dk-root:" in _table_row(err, "node1")
    _assert_nothing_left(nodes, ["node0", "node1"])


def _read(file) -> str:
    file.seek(0)
    return file.read()


def test_ctrl_c_on_the_root_exits_130_and_leaves_no_process(ssh_nodes, tmp_path):
    script = tmp_path / "forever.py"
    script.write_text(textwrap.dedent("""
        import itertools, time
        from dockkit import futures
        def slow(x):
            time.sleep(0.2)
            return x
        if __name__ == "__main__":  # endless, in small batches (an input of unknown length)
            for i, _ in enumerate(futures.map(slow, itertools.count())):
                if i == 0:
                    print("first result", flush=True)
    """))
    nodes = ["node0", "node1", "node2"]
    _copy_to_nodes(ssh_nodes, nodes, script)
    with open(tmp_path / "stderr", "w+") as err:
        root = subprocess.Popen(
            [sys.executable, "-m", "dockkit", "--hosts", *nodes, "-n", "6",
             "--ssh-config", str(ssh_nodes.ssh_config_path), str(script)],
            stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            ready, _, _ = select.select([root.stdout], [], [], 60)
            assert ready and root.stdout.readline() == "first result\n", _read(err)
            assert all(_worker_pids(ssh_nodes, n, which="worker") for n in nodes)
            root.send_signal(signal.SIGINT)
            assert root.wait(timeout=60) == 130
        finally:
            root.kill()
            root.wait()
        assert "interrupted; stopping every worker" in _read(err)
    _assert_nothing_left(ssh_nodes, nodes)


def test_a_remote_task_holding_the_gil_past_the_timeout_is_vouched_for_by_its_agent(ssh_nodes):
    from tests.unit.test_liveness_busy import hold_the_gil

    cloudpickle.register_pickle_by_value(sys.modules["tests.unit.test_liveness_busy"])
    with _executor(ssh_nodes, ["node1:1"], tunnel=True, heartbeat_timeout=3.0, max_retries=0) as ex:
        right, held = ex.submit(hold_the_gil, 4 * 3.0).result(timeout=120)
        assert right
        assert held > 1.2 * 3.0, f"the GIL was held only {held:.1f} s: calibrate again"
        assert ex.stats()["requeued"] == 0


def _read_on_host(path):
    with open(path) as handle:
        return socket.gethostname(), handle.read()


def test_files_travel_with_each_agent_and_are_there_before_its_workers(ssh_nodes, tmp_path):
    """A cluster run's working directory, sent after each agent's configuration: the
    workers find it at the same path on their host."""
    from dockkit.cluster.sync import pack

    project = tmp_path / "project"
    project.mkdir()
    (project / "table.txt").write_text("lookup table\n")
    bundle = pack(project)
    with _executor(ssh_nodes, ["node1", "node2"], tunnel=True, check_hosts=False, files=bundle.tar) as ex:
        seen = set(ex.map(_read_on_host, [str(project / "table.txt")] * 40))
    assert seen == {("node1", "lookup table\n"), ("node2", "lookup table\n")}


def test_files_an_agent_cannot_unpack_fail_that_host_by_name(ssh_nodes):
    with pytest.raises(LaunchError) as failure:
        _executor(ssh_nodes, ["node2"], tunnel=True, check_hosts=False, files=b"not a tar" * 100,
                  connect_timeout=5)
    message = str(failure.value)
    assert "node2" in message and "its agent ended with status 2" in message, message
