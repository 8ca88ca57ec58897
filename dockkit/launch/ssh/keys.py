"""Keypairs, known_hosts lines and ssh_config text for the SSH nodes dockkit starts.

Why this module exists: every node dockkit starts gets its own host key, which
the head pins in a known_hosts file it writes itself, and the head logs in with
a client key it generated. Nothing is ever trusted on first use. paramiko 5
cannot generate ed25519 keys, so ``cryptography`` does it here.

Everything here is pure: no network, no Docker, no paramiko. The output is text
that both OpenSSH and paramiko read (``paramiko.Ed25519Key``,
``paramiko.SSHConfig``, ``SSHClient.load_host_keys``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockkit.config import write_private
from dockkit.errors import ConfigError

__all__ = ["KeyPair", "SSHHostEntry", "NodeRow", "generate_keypair", "known_hosts_name", "known_hosts_line",
           "ssh_config_text", "node_ssh_texts"]


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 keypair in the formats OpenSSH uses on disk.

    Attributes:
        private_openssh: The private key as an unencrypted OpenSSH PEM block
            (``-----BEGIN OPENSSH PRIVATE KEY-----``).
        public_line: The public key as one ``authorized_keys`` line:
            ``"ssh-ed25519 AAAA... comment"``.
    """

    private_openssh: bytes
    public_line: str

    def __repr__(self) -> str:  # never print the private key by accident
        return f"KeyPair(public_line={self.public_line!r})"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the private key to ``path`` (mode 0600) and the public line to ``path.pub``.

        Args:
            path: Where the private key goes; missing folders are made (0700).

        Returns:
            The private key's path.

        Raises:
            OSError: The files cannot be written.
        """
        path = write_private(path, self.private_openssh)
        Path(f"{path}.pub").write_text(self.public_line + "\n")
        return path


def generate_keypair(comment: str = "dockkit") -> KeyPair:
    """Generate a fresh ed25519 keypair.

    Args:
        comment: Text after the key on the public line; must not contain newlines.

    Returns:
        The new :class:`KeyPair`.

    Raises:
        ConfigError: ``comment`` contains a line break.
    """
    if "\n" in comment or "\r" in comment:
        raise ConfigError(f"a key comment cannot contain a line break: {comment!r}")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    line = f"{public} {comment}".rstrip()
    return KeyPair(private_openssh=private, public_line=line)


def known_hosts_name(host: str, port: int) -> str:
    """The name under which known_hosts holds the key of ``host:port``, as OpenSSH writes it.

    Args:
        host: Host name or IP address the client connects to.
        port: TCP port.

    Returns:
        ``host`` for port 22, ``[host]:port`` for any other port.
    """
    return host if int(port) == 22 else f"[{host}]:{int(port)}"


def known_hosts_line(host: str, port: int, public_line: str) -> str:
    """Build a known_hosts line that pins ``public_line`` for ``host:port``.

    Args:
        host: Host name or IP address the client will connect to.
        port: TCP port; 22 gives a bare ``host``, any other port ``[host]:port``.
        public_line: The host's public key, ``"type base64 [comment]"``.

    Returns:
        ``"host type base64"`` (no trailing newline; the comment is dropped).

    Raises:
        ConfigError: The host is empty or has spaces, or the key line is malformed.
    """
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"bad host name for known_hosts: {host!r}")
    fields = public_line.split()
    if len(fields) < 2:
        raise ConfigError(f"not a public key line: {public_line!r}")
    key_type, blob = fields[0], fields[1]
    try:
        base64.b64decode(blob, validate=True)
    except ValueError as exc:
        raise ConfigError(f"public key is not valid base64: {public_line!r}") from exc
    return f"{known_hosts_name(host, port)} {key_type} {blob}"


class SSHHostEntry(NamedTuple):
    """One ``Host`` block of an ssh_config; a plain tuple works as well."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_file: str | os.PathLike[str]
    known_hosts_file: str | os.PathLike[str]


def ssh_config_text(entries: Iterable[SSHHostEntry | tuple]) -> str:
    """Render an ssh_config with one strict, key-only ``Host`` block per entry.

    Each block pins the host key (``StrictHostKeyChecking yes`` against its own
    ``UserKnownHostsFile``) and offers only the given key (``IdentitiesOnly yes``).

    Args:
        entries: :class:`SSHHostEntry` values, or tuples in the same order:
            ``(alias, hostname, port, user, identity_file, known_hosts_file)``.

    Returns:
        The config text, ending with a newline.

    Raises:
        ConfigError: A field is empty, or contains a line break, or the alias
            contains whitespace or ssh_config pattern characters.
    """
    blocks = []
    for raw in entries:
        entry = SSHHostEntry(*raw)
        if not entry.alias or any(c.isspace() or c in "*?!," for c in entry.alias):
            raise ConfigError(f"bad ssh_config alias: {entry.alias!r}")
        fields = [
            ("HostName", entry.hostname),
            ("Port", str(int(entry.port))),
            ("User", entry.user),
            ("IdentityFile", os.fspath(entry.identity_file)),
            ("UserKnownHostsFile", os.fspath(entry.known_hosts_file)),
            ("StrictHostKeyChecking", "yes"),
            ("IdentitiesOnly", "yes"),
        ]
        lines = [f"Host {entry.alias}"]
        for key, value in fields:
            lines.append(f"    {key} {_config_value(key, value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


class NodeRow(NamedTuple):
    """One node as its ssh_config and known_hosts name it; a plain tuple works as well."""

    alias: str
    hostname: str
    port: int
    host_key: str  # the node's public key line


def node_ssh_texts(
    rows: Iterable[NodeRow | tuple],
    *,
    user: str,
    identity_file: str | os.PathLike[str],
    known_hosts_file: str | os.PathLike[str],
) -> tuple[str, str]:
    """Render the ssh_config and the known_hosts that reach a set of nodes.

    Each node gets a strict ``Host <alias>`` block (see :func:`ssh_config_text`) and its
    host key pinned under the name the client looks it up by (``hostname`` or
    ``[hostname]:port``).

    Args:
        rows: :class:`NodeRow` values or ``(alias, hostname, port, host_key)`` tuples.
        user: The login user on every node.
        identity_file: The client key every block offers.
        known_hosts_file: Where the returned known_hosts text will be written.

    Returns:
        ``(ssh_config text, known_hosts text)``, each ending with a newline.

    Raises:
        ConfigError: A name, value or host key is malformed.
    """
    rows = [NodeRow(*row) for row in rows]
    config = ssh_config_text(SSHHostEntry(row.alias, row.hostname, row.port, user, identity_file, known_hosts_file)
                             for row in rows)
    known = "".join(known_hosts_line(row.hostname, row.port, row.host_key) + "\n" for row in rows)
    return config, known


def _config_value(key: str, value: str) -> str:
    """Validate one ssh_config value and quote it if it holds spaces."""
    value = str(value)
    if not value or "\n" in value or "\r" in value or '"' in value:
        raise ConfigError(f"bad ssh_config value for {key}: {value!r}")
    return f'"{value}"' if any(c.isspace() for c in value) else value
