"""The ssh_config and known_hosts that reach a set of nodes: on this machine, and in each node's /root/.ssh."""

from __future__ import annotations

import io
import stat
import tarfile
import threading

import paramiko

from dockkit.cluster.nodes import node_keys_archive, node_ssh_files
from dockkit.config import write_private
from dockkit.cluster.state import ClusterFiles, ClusterState, NodeInfo
from dockkit.launch.ssh.keys import NodeRow, generate_keypair, known_hosts_name, node_ssh_texts

KEYS = [generate_keypair(f"node{i}") for i in range(3)]


def _lookup(config_text: str, known_text: str, alias: str):
    """What a client reaching ``alias`` sees: (hostname, port, pinned key blob)."""
    config = paramiko.SSHConfig()
    config.parse(io.StringIO(config_text))
    found = config.lookup(alias)
    keys = paramiko.HostKeys()
    for line in known_text.splitlines():
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    pinned = keys.lookup(known_hosts_name(found["hostname"], int(found["port"])))
    return found["hostname"], int(found["port"]), pinned["ssh-ed25519"].get_base64() if pinned else None


def test_node_ssh_texts_pin_each_node_under_the_name_its_client_looks_up(tmp_path):
    rows = [NodeRow("node0", "node0", 22, KEYS[0].public_line),
            ("node1", "127.0.0.1", 40022, KEYS[1].public_line),
            ("node2", "fe80::2", 2200, KEYS[2].public_line)]
    config, known = node_ssh_texts(rows, user="root", identity_file=tmp_path / "id",
                                   known_hosts_file=tmp_path / "known_hosts")
    assert config.endswith("\n") and known.endswith("\n") and len(known.splitlines()) == 3
    for (alias, hostname, port, public), key in zip(rows, KEYS):
        assert _lookup(config, known, alias) == (hostname, port, key.public_line.split()[1])
        block = paramiko.SSHConfig.from_text(config).lookup(alias)
        assert (block["user"], block["userknownhostsfile"]) == ("root", str(tmp_path / "known_hosts"))


def _state() -> ClusterState:
    hosts = ["unix:///var/run/docker.sock", "unix:///var/run/docker.sock", "ssh://other"]
    addresses = ["127.0.0.1", "127.0.0.1", "192.0.2.7"]
    return ClusterState("c1", "dockkit-worker:x", [
        NodeInfo(f"node{i}", f"dockkit-c1-node{i}", hosts[i], addresses[i], 40000 + i, KEYS[i].public_line, 2)
        for i in range(3)])


def test_this_machine_reaches_every_node_on_its_published_port(tmp_path):
    files = ClusterFiles(tmp_path)
    _state().write_ssh_files(files)
    config, known = files.ssh_config.read_text(), files.known_hosts.read_text()
    for path in (files.ssh_config, files.known_hosts):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [_lookup(config, known, f"node{i}") for i in range(3)] == [
        ("127.0.0.1", 40000, KEYS[0].public_line.split()[1]),
        ("127.0.0.1", 40001, KEYS[1].public_line.split()[1]),
        ("192.0.2.7", 40002, KEYS[2].public_line.split()[1])]


def test_a_node_reaches_its_engine_mates_by_name_and_the_others_by_port():
    state = _state()
    files = node_ssh_files(state.nodes, state.nodes[0], b"PRIVATE", lambda a, b: a.docker_host == b.docker_host)
    assert files["id_ed25519"] == b"PRIVATE"
    config, known = files["config"].decode(), files["known_hosts"].decode()
    assert [_lookup(config, known, f"node{i}") for i in range(3)] == [
        ("node0", 22, KEYS[0].public_line.split()[1]),
        ("node1", 22, KEYS[1].public_line.split()[1]),
        ("192.0.2.7", 40002, KEYS[2].public_line.split()[1])]
    assert "IdentityFile /root/.ssh/id_ed25519" in config
    keyless = node_ssh_files(state.nodes, state.nodes[1], None, lambda a, b: a.docker_host == b.docker_host)
    assert sorted(keyless) == ["config", "known_hosts"]  # a node other than the head gets no key


def _members(archive: bytes) -> dict[str, tuple[str, int, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: ("dir" if m.isdir() else "file", m.mode, None if m.isdir() else tar.extractfile(m).read())
                for m in tar.getmembers()}


def test_a_nodes_keys_and_ssh_files_go_in_one_private_archive():
    state = _state()
    files = node_ssh_files(state.nodes, state.nodes[0], b"PRIVATE", lambda a, b: True)
    members = _members(node_keys_archive(KEYS[0], ["ssh-ed25519 AAAA one", "  ", "ssh-ed25519 BBBB two"], files))
    assert members == {
        "etc/dockkit": ("dir", 0o700, None),
        "etc/dockkit/ssh_host_ed25519_key": ("file", 0o600, KEYS[0].private_openssh),
        "etc/dockkit/authorized_keys": ("file", 0o600, b"ssh-ed25519 AAAA one\nssh-ed25519 BBBB two\n"),
        "root/.ssh": ("dir", 0o700, None),
        "root/.ssh/config": ("file", 0o600, files["config"]),
        "root/.ssh/known_hosts": ("file", 0o600, files["known_hosts"]),
        "root/.ssh/id_ed25519": ("file", 0o600, b"PRIVATE"),
    }
    # without ssh files (nodes on several engines: written once their ports are known) the
    # archive leaves /root/.ssh alone
    assert sorted(_members(node_keys_archive(KEYS[0], "ssh-ed25519 AAAA one"))) == [
        "etc/dockkit", "etc/dockkit/authorized_keys", "etc/dockkit/ssh_host_ed25519_key"]


def test_a_rewritten_file_is_read_whole_old_or_new_and_stays_private(tmp_path):
    path = tmp_path / "ssh_config"
    path.write_text("loose")
    path.chmod(0o644)
    old, new = "a" * 400_000, "b" * 300_000
    write_private(path, old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stop, seen = threading.Event(), set()

    def rewrite():
        while not stop.is_set():
            write_private(path, new)
            write_private(path, old)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(2000):
            seen.add(len(path.read_text()))
    finally:
        stop.set()
        writer.join()
    assert seen <= {len(old), len(new)}, seen  # never empty, never half
    assert [p.name for p in tmp_path.iterdir()] == ["ssh_config"]  # no temporary file left
