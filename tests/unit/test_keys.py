"""Keys, known_hosts lines and ssh_config text read back by paramiko, as the SSH launcher will."""

from __future__ import annotations

import dataclasses
import io
import stat

import paramiko
import pytest

from dockkit.errors import ConfigError
from dockkit.launch.hosts import HostSpec
from dockkit.launch.ssh.keys import (SSHHostEntry, generate_keypair, known_hosts_line, known_hosts_name,
                                     ssh_config_text)
from dockkit.launch.ssh.target import SSHTarget


def test_generated_key_parses_back_with_paramiko(tmp_path):
    pair = generate_keypair("node0")
    assert pair.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key_type, blob, comment = pair.public_line.split()
    assert (key_type, comment) == ("ssh-ed25519", "node0")

    path = pair.write(tmp_path / "id_ed25519")
    loaded = paramiko.Ed25519Key.from_private_key_file(str(path))
    assert loaded.get_name() == "ssh-ed25519"
    assert loaded.get_base64() == blob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "id_ed25519.pub").read_text() == pair.public_line + "\n"


def test_write_tightens_an_existing_file(tmp_path):
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    generate_keypair().write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_differ_and_repr_hides_the_private_key():
    a, b = generate_keypair(), generate_keypair()
    assert a.public_line != b.public_line
    assert "PRIVATE" not in repr(a)
    assert a.public_line.split()[0] == "ssh-ed25519"


def test_comment_with_newline_is_refused():
    with pytest.raises(ConfigError):
        generate_keypair("a\nb")


@pytest.mark.parametrize(
    ("port", "prefix"), [(22, "10.0.0.5 "), (2222, "[10.0.0.5]:2222 ")]
)
def test_known_hosts_line_forms(port, prefix):
    pair = generate_keypair()
    blob = pair.public_line.split()[1]
    line = known_hosts_line("10.0.0.5", port, pair.public_line)
    assert line.startswith(prefix)
    assert line.endswith(blob)  # comment dropped

    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
    assert entry is not None
    assert entry.key.get_name() == "ssh-ed25519"
    assert entry.key.get_base64() == blob
    lookup = "10.0.0.5" if port == 22 else "[10.0.0.5]:2222"
    assert lookup in entry.hostnames


@pytest.mark.parametrize(("host", "port", "name"), [
    ("node1", 22, "node1"),
    ("node1", 2222, "[node1]:2222"),
    ("10.0.0.5", "2222", "[10.0.0.5]:2222"),
    ("fe80::1", 22, "fe80::1"),
    ("fe80::1", 2200, "[fe80::1]:2200"),
])
def test_one_known_hosts_name_for_lines_targets_and_lookups(host, port, name):
    assert known_hosts_name(host, port) == name
    assert known_hosts_line(host, port, generate_keypair().public_line).split()[0] == name
    target = SSHTarget(HostSpec("alias"), host, int(port), "root")
    assert target.key_name == name
    assert dataclasses.replace(target, host_key_alias="pinned").key_name == "pinned"


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 not*base64"])
def test_known_hosts_line_rejects_bad_keys(bad):
    with pytest.raises(ConfigError):
        known_hosts_line("h", 22, bad)


def test_known_hosts_line_rejects_bad_host():
    with pytest.raises(ConfigError):
        known_hosts_line("a b", 22, generate_keypair().public_line)


def test_ssh_config_parses_back_with_paramiko(tmp_path):
    entries = [
        SSHHostEntry("node0", "172.18.0.2", 22, "root", tmp_path / "id", tmp_path / "known_hosts"),
        ("node1", "127.0.0.1", 40022, "root", "/keys dir/id", "/kh dir/known_hosts"),
    ]
    config = paramiko.SSHConfig()
    config.parse(io.StringIO(ssh_config_text(entries)))
    assert config.get_hostnames() >= {"node0", "node1"}

    node0 = config.lookup("node0")
    assert node0["hostname"] == "172.18.0.2"
    assert node0["port"] == "22"
    assert node0["user"] == "root"
    assert node0["identityfile"] == [str(tmp_path / "id")]
    assert node0["userknownhostsfile"] == str(tmp_path / "known_hosts")
    assert node0["stricthostkeychecking"] == "yes"
    assert node0["identitiesonly"] == "yes"

    node1 = config.lookup("node1")
    assert node1["port"] == "40022"
    assert node1["identityfile"] == ["/keys dir/id"]  # quotes stripped
    assert node1["userknownhostsfile"] == "/kh dir/known_hosts"


@pytest.mark.parametrize(
    "entry",
    [
        ("bad alias", "h", 22, "root", "/id", "/kh"),
        ("node*", "h", 22, "root", "/id", "/kh"),
        ("ok", "h\nHost evil", 22, "root", "/id", "/kh"),
        ("ok", "h", 22, "", "/id", "/kh"),
    ],
)
def test_ssh_config_rejects_injection(entry):
    with pytest.raises(ConfigError):
        ssh_config_text([entry])

