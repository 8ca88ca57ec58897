"""dockkit.launch.ssh against real sshd nodes (the ``ssh_nodes`` fixture), plus its pure helpers.

The node tests cover what the launcher relies on: alias resolution through
ssh_config, pinned host keys (unknown, accepted-and-recorded, changed), clear
errors for dead hosts and bad keys, commands with env/cwd/prolog, a streamed
long-running process that ``kill()`` removes completely, and the reverse tunnel
that ``--tunnel`` uses, carrying megabytes both ways, through OpenSSH and through
paramiko, and gone when its connection closes or its root is killed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockkit.errors import ConfigError, HostKeyError, SSHError
from dockkit.errors import TimeoutError as DockkitTimeoutError
from dockkit.launch.hosts import HostSpec
from dockkit.launch.commands import remote_command
from dockkit.launch.ssh.connection import SSHConnection, resolve


def test_resolve_through_ssh_config(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host box\n  HostName 10.1.2.3\n  Port 2200\n  User alice\n  IdentityFile ~/k1\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {tmp_path}/kh {tmp_path}/kh2\n"
        "  HostKeyAlias boxkey\n  StrictHostKeyChecking accept-new\n"
    )
    t = resolve(HostSpec("box"), ssh_config=config)
    assert (t.hostname, t.port, t.user, t.identities_only, t.host_key_alias, t.accept_new) == (
        "10.1.2.3", 2200, "alice", True, "boxkey", True
    )
    assert t.identity_files[0].endswith("/k1") and not t.identity_files[0].startswith("~")
    assert t.known_hosts == (f"{tmp_path}/kh", f"{tmp_path}/kh2")
    assert t.where == "box (10.1.2.3:2200)"
    # The spec's user and port win; an explicit known_hosts wins over UserKnownHostsFile.
    t = resolve(HostSpec.parse("ssh://bob@box:22"), ssh_config=config, known_hosts=tmp_path / "x")
    assert (t.user, t.port, t.known_hosts) == ("bob", 22, (str(tmp_path / "x"),))
    # An unknown alias is a plain host name.
    t = resolve(HostSpec("other"), ssh_config=config)
    assert (t.hostname, t.port, t.key_name, t.where) == ("other", 22, "other", "other:22")


def test_resolve_missing_config_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read ssh_config"):
        resolve(HostSpec("a"), ssh_config=tmp_path / "missing")


def test_closed_port_is_ssh_error_within_timeout(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    (tmp_path / "config").write_text("")
    started = time.monotonic()
    with pytest.raises(SSHError) as info:
        SSHConnection(HostSpec("127.0.0.1", port=port), ssh_config=tmp_path / "config", connect_timeout=3).connect()
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}: connection refused" in str(info.value)
    assert "is sshd running" in str(info.value)
    assert info.value.failures == {f"127.0.0.1:{port}": str(info.value).split(": ", 1)[1]}


# ---------------------------------------------------------------- against real sshd nodes


def _connect(nodes, node=None, **kwargs) -> SSHConnection:
    node = node or nodes.nodes[0]
    kwargs.setdefault("ssh_config", nodes.ssh_config_path)
    kwargs.setdefault("known_hosts", nodes.known_hosts_path)
    return SSHConnection(HostSpec(node.alias), **kwargs)


def _exec_text(nodes, node, cmd: str) -> str:
    """Run ``cmd`` in the node's container (docker exec) and return its output as text."""
    result = nodes.exec(node, cmd)
    output = getattr(result, "output", None)
    if output is None:
        output = result[1] if isinstance(result, tuple) else result
    return output.decode() if isinstance(output, bytes) else str(output)


def _new_private_key(path) -> str:
    """Write a fresh ed25519 private key to ``path``; return its public ``type base64``."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _own_config(nodes, node, tmp_path, *, alias="dk-test-alias", key=None, known_hosts=None) -> str:
    """An ssh_config of our own for ``node``, under an alias the fixture does not use."""
    target = resolve(HostSpec(node.alias), ssh_config=nodes.ssh_config_path)
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Host {alias}\n  HostName {target.hostname}\n  Port {target.port}\n  User {target.user}\n"
        f"  IdentityFile {key or nodes.client_key_path}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts or nodes.known_hosts_path}\n"
    )
    return str(path)


def test_connect_via_alias_ssh_config_and_known_hosts(ssh_nodes, tmp_path):
    node = ssh_nodes.nodes[0]
    config = _own_config(ssh_nodes, node, tmp_path)
    with SSHConnection(HostSpec("dk-test-alias"), ssh_config=config) as conn:
        assert conn.is_active
        assert conn.target.known_hosts == (str(ssh_nodes.known_hosts_path),)
        status, out, err = conn.run("echo hello; echo oops >&2; exit 3")
    assert (status, out, err) == (3, b"hello\n", b"oops\n")
    assert not conn.is_active


def test_every_node_answers(ssh_nodes):
    for node in ssh_nodes.nodes:
        with _connect(ssh_nodes, node) as conn:
            assert conn.run("echo ok") == (0, b"ok\n", b"")


def test_run_with_stdin_and_timeout(ssh_nodes):
    payload = b"x" * (3 * 1024 * 1024)
    with _connect(ssh_nodes) as conn:
        status, out, _ = conn.run("wc -c", stdin=payload, timeout=30)
        assert (status, out.strip()) == (0, str(len(payload)).encode())
        started = time.monotonic()
        with pytest.raises(DockkitTimeoutError, match="did not finish within 0.5 s"):
            conn.run("sleep 10", timeout=0.5)
        assert time.monotonic() - started < 5
        assert conn.run("true") == (0, b"", b"")  # the connection survives a timed-out command


def test_remote_command_env_cwd_prolog_applied(ssh_nodes):
    with _connect(ssh_nodes) as conn:
        workdir = conn.run("mktemp -d")[1].decode().strip()
        probe = "import os; print(os.getcwd()); print(os.environ['DK_A']); print(os.environ['DK_P'])"
        cmd = remote_command(
            "python3",
            ["dk_probe"],
            cwd=workdir,
            prolog=f"printf '%s\\n' {shlex.quote(probe)} > dk_probe.py; export DK_P=from-prolog",
            env={"DK_A": "a value with 'quotes' and $dollars"},
        )
        status, out, err = conn.run(cmd, timeout=30)
        conn.run(f"rm -rf {shlex.quote(workdir)}")
    assert status == 0, err
    assert out.decode().splitlines() == [workdir, "a value with 'quotes' and $dollars", "from-prolog"]


def _processes(ssh_nodes, node) -> str:
    return _exec_text(ssh_nodes, node, "ps -ww -eo pid,pgid,args")


def _wait_gone(ssh_nodes, node, marker: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while marker in (listing := _processes(ssh_nodes, node)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return listing


def test_start_streams_output_and_kill_leaves_nothing(ssh_nodes):
    node = ssh_nodes.nodes[0]
    marker = f"dk-kill-{uuid.uuid4().hex[:8]}"
    # A loop that streams, plus a child that would survive a kill of the shell alone.
    cmd = f"python3 -c 'import time; time.sleep(1000)' {marker} & i=0; while :; do i=$((i+1)); echo {marker} $i; sleep 0.05; done"
    with _connect(ssh_nodes) as conn:
        process = conn.start(cmd, env={"DK_ENV": "1"})
        lines = process.lines()
        assert [next(lines) for _ in range(3)] == [f"{marker} 1", f"{marker} 2", f"{marker} 3"]
        assert process.pgid is not None and process.exit_status is None
        assert marker in _processes(ssh_nodes, node)
        started = time.monotonic()
        process.kill()
        assert time.monotonic() - started < 10
        assert process.exit_status is not None
        assert all(line.startswith(marker) for line in lines)  # and the iterator ends
    assert marker not in _wait_gone(ssh_nodes, node, marker)


def test_close_kills_what_start_left_running(ssh_nodes):
    node = ssh_nodes.nodes[0]
    marker = f"dk-close-{uuid.uuid4().hex[:8]}"
    with _connect(ssh_nodes) as conn:
        conn.start(f"sleep 1000; echo {marker}")
        time.sleep(0.5)
        assert marker in _processes(ssh_nodes, node)
    assert marker not in _wait_gone(ssh_nodes, node, marker)


def test_start_secret_on_stdin_callbacks_and_exit_status(ssh_nodes):
    out, err = [], []
    with _connect(ssh_nodes) as conn:
        process = conn.start(
            "read secret; echo got-$secret; echo to-stderr >&2; exit 7",
            stdin_data=b"s3cr3t\n",
            on_stdout=out.append,
            on_stderr=err.append,
        )
        assert process.wait(timeout=20) == 7
        assert process.exit_status == 7
    assert out == ["got-s3cr3t"]
    assert err == ["to-stderr"]


def test_start_stdin_eof_ends_a_reader(ssh_nodes):
    with _connect(ssh_nodes) as conn:
        process = conn.start("cat")
        process.stdin.write(b"one\ntwo\n")
        process.stdin.close()
        assert process.wait(timeout=20) == 0
        assert list(process.lines()) == ["one", "two"]
        with pytest.raises(DockkitTimeoutError):
            conn.start("sleep 5").wait(timeout=0.2)


def test_unknown_host_key_rejected_then_accepted_and_recorded(ssh_nodes, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as info:
        _connect(ssh_nodes, known_hosts=empty).connect()
    message = str(info.value)
    assert "unknown host key" in message and "SHA256:" in message
    assert "--accept-new-host-keys" in message and "ssh-keyscan" in message
    assert empty.read_text() == ""

    with _connect(ssh_nodes, known_hosts=empty, accept_new_host_keys=True) as conn:
        assert conn.run("true")[0] == 0
        name = conn.target.key_name
    recorded = paramiko.HostKeys(str(empty)).lookup(name)
    pinned = paramiko.HostKeys(str(ssh_nodes.known_hosts_path)).lookup(name)
    assert recorded is not None and pinned is not None
    assert {k.get_base64() for k in recorded.values()} <= {k.get_base64() for k in pinned.values()}
    with _connect(ssh_nodes, known_hosts=empty) as conn:  # now known, no flag needed
        assert conn.run("true")[0] == 0


def test_changed_host_key_rejected_even_with_accept_new(ssh_nodes, tmp_path):
    name = resolve(HostSpec(ssh_nodes.nodes[0].alias), ssh_config=ssh_nodes.ssh_config_path).key_name
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{name} {_new_private_key(tmp_path / 'other')}\n")
    with pytest.raises(HostKeyError) as info:
        _connect(ssh_nodes, known_hosts=wrong, accept_new_host_keys=True).connect()
    message = str(info.value)
    assert "HOST KEY CHANGED" in message and "ssh-keygen -R" in message and "SHA256:" in message
    assert wrong.read_text().count("\n") == 1  # nothing recorded


def test_wrong_client_key_names_user_and_key(ssh_nodes, tmp_path):
    node = ssh_nodes.nodes[0]
    _new_private_key(tmp_path / "stranger")
    config = _own_config(ssh_nodes, node, tmp_path, key=tmp_path / "stranger")
    with pytest.raises(SSHError) as info:
        SSHConnection(HostSpec("dk-test-alias"), ssh_config=config).connect()
    message = str(info.value)
    assert "authentication failed as user" in message
    assert str(tmp_path / "stranger") in message
    assert not isinstance(info.value, HostKeyError)


@pytest.fixture
def echo_server():
    """A TCP echo server on the test host's loopback; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn):
        with conn:
            while data := conn.recv(1 << 20):
                conn.sendall(data)

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


# Runs on the node: sends SIZE bytes through 127.0.0.1:PORT while reading the echo back.
_ECHO_CLIENT = r"""
import hashlib, socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = (bytes(range(256)) * (size // 256 + 1))[:size]
s = socket.create_connection(("127.0.0.1", port), timeout=60)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send, daemon=True).start()
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
print(len(got), hashlib.sha256(got).hexdigest())
"""


def _expected(size: int) -> str:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    return f"{size} {hashlib.sha256(data).hexdigest()}"


@pytest.mark.parametrize("openssh", [True, False], ids=["openssh", "paramiko"])
def test_reverse_port_forward_echoes_megabytes(ssh_nodes, echo_server, openssh):
    with _connect(ssh_nodes, openssh_tunnels=openssh) as conn:
        port = conn.forward_remote_port(local_port=echo_server)
        assert 0 < port < 65536
        assert bool(_forwarding_processes(echo_server)) == openssh
        client = f"python3 -c {shlex.quote(_ECHO_CLIENT)} {port}"
        for size in (5, 4 * 1024 * 1024):
            status, out, err = conn.run(f"{client} {size}", timeout=60)
            assert (status, out.decode().strip()) == (0, _expected(size)), err
        # Several tunnelled connections at once, as N workers make.
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(conn.run(f"{client} {1024 * 1024}", timeout=60)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [(s, o.decode().strip()) for s, o, _ in results] == [(0, _expected(1024 * 1024))] * 4


@pytest.mark.parametrize("openssh", [True, False], ids=["openssh", "paramiko"])
def test_reverse_port_forward_to_dead_local_port_gives_eof(ssh_nodes, openssh):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()[1]
    probe.close()
    script = "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20); print(repr(s.recv(10)))"
    with _connect(ssh_nodes, openssh_tunnels=openssh) as conn:
        port = conn.forward_remote_port(local_port=dead)
        status, out, err = conn.run(f"python3 -c {shlex.quote(script)} {port}", timeout=30)
    assert (status, out.strip()) == (0, b"b''"), err


def _forwarding_processes(local_port: int) -> list[int]:
    """Pids of this machine's ssh processes that forward to 127.0.0.1:local_port."""
    wanted = f"127.0.0.1:0:127.0.0.1:{local_port}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and argv[0].endswith(b"ssh") and wanted in argv:
            pids.append(int(entry))
    return pids


def _listening(ssh_nodes, node, port: int) -> bool:
    """Whether something on the node accepts connections at its 127.0.0.1:port."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
    return ssh_nodes.exec(node, f"python3 -c {shlex.quote(probe)}").exit_code == 0


def _wait(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not (held := condition()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return held


def test_openssh_forward_ends_with_the_connection_and_stops_listening(ssh_nodes, echo_server):
    node = ssh_nodes.nodes[0]
    with _connect(ssh_nodes) as conn:
        port = conn.forward_remote_port(local_port=echo_server)
        assert len(_forwarding_processes(echo_server)) == 1
        assert _listening(ssh_nodes, node, port)
    assert _forwarding_processes(echo_server) == []  # close() waits for it
    assert _wait(lambda: not _listening(ssh_nodes, node, port))


def test_openssh_forward_ends_when_its_root_is_killed(ssh_nodes, echo_server, tmp_path):
    """SIGKILL gives the root no chance to stop its ssh: the closed stdin pipe must end it."""
    node = ssh_nodes.nodes[0]
    script = tmp_path / "root.py"
    script.write_text(textwrap.dedent(f"""
        import socket, sys, time
        from dockkit.launch.hosts import HostSpec
        from dockkit.launch.ssh.connection import SSHConnection
        conn = SSHConnection(HostSpec({node.alias!r}), ssh_config={str(ssh_nodes.ssh_config_path)!r},
                             known_hosts={str(ssh_nodes.known_hosts_path)!r}).connect()
        print(conn.forward_remote_port(local_port={echo_server}), flush=True)
        time.sleep(600)
    """))
    root = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(root.stdout.readline())
        (forwarder,) = _forwarding_processes(echo_server)
        assert _listening(ssh_nodes, node, port)
    finally:
        root.kill()
        root.wait()
    assert _wait(lambda: forwarder not in _forwarding_processes(echo_server))
    assert _wait(lambda: not _listening(ssh_nodes, node, port))


@pytest.mark.parametrize("client", ["missing", "failing"])
def test_reverse_port_forward_falls_back_to_paramiko(ssh_nodes, echo_server, monkeypatch, tmp_path, caplog, client):
    if client == "missing":
        monkeypatch.setenv("PATH", str(tmp_path))  # no ssh on it
    else:
        fake = tmp_path / "ssh"
        fake.write_text("#!/bin/sh\necho 'ssh: connect to host: Connection refused' >&2\nexit 255\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with caplog.at_level("DEBUG", logger="dockkit"), _connect(ssh_nodes) as conn:
        port = conn.forward_remote_port(local_port=echo_server)
        status, out, err = conn.run(f"python3 -c {shlex.quote(_ECHO_CLIENT)} {port} {1 << 20}", timeout=60)
    assert (status, out.decode().strip()) == (0, _expected(1 << 20)), err
    said = [r for r in caplog.records if "forwarding through this process instead" in r.getMessage()]
    if client == "missing":
        assert [r.levelname for r in said] == ["DEBUG"] and "no OpenSSH client" in said[0].getMessage()
    else:
        assert [r.levelname for r in said] == ["WARNING"]
        assert "status 255" in said[0].getMessage() and "Connection refused" in said[0].getMessage()
