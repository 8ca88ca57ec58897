"""What an SSH connection goes to, and what its failures mean.

:func:`resolve` turns a :class:`~dockkit.launch.hosts.HostSpec` into an
:class:`SSHTarget` the way OpenSSH reads ``ssh_config``; :func:`translate` is the
one place where a paramiko/socket error becomes a dockkit error naming the host,
the cause and the fix. The connection (:mod:`dockkit.launch.ssh.connection`), its remote processes
(:mod:`dockkit.launch.ssh.process`) and its tunnels (:mod:`dockkit.launch.ssh.tunnel`) all build on these.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket

import paramiko

from dockkit.errors import ConfigError, HostKeyError, SSHError
from dockkit.launch.hosts import HostSpec
from dockkit.launch.ssh.keys import known_hosts_name

__all__ = ["SSHTarget", "resolve", "translate"]


@dataclasses.dataclass(frozen=True)
class SSHTarget:
    """A host spec resolved through ssh_config: what we actually connect to."""

    spec: HostSpec
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts: tuple[str, ...] = ()
    host_key_alias: str | None = None
    accept_new: bool = False

    @property
    def where(self) -> str:
        """``alias (hostname:port)`` for messages."""
        address = f"[{self.hostname}]:{self.port}" if ":" in self.hostname else f"{self.hostname}:{self.port}"
        return address if self.spec.host == self.hostname else f"{self.spec.host} ({address})"

    @property
    def key_name(self) -> str:
        """The name of this host's entries in known_hosts, as OpenSSH writes them."""
        if self.host_key_alias:
            return self.host_key_alias
        return known_hosts_name(self.hostname, self.port)


def resolve(
    spec: HostSpec,
    *,
    ssh_config: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    accept_new_host_keys: bool = False,
) -> SSHTarget:
    """Resolve a host spec through ssh_config, as ``ssh`` would.

    Args:
        spec: The host. Its user and port win over ssh_config's.
        ssh_config: Config file; None uses ``~/.ssh/config`` if it exists.
        known_hosts: known_hosts file; None uses ssh_config's
            UserKnownHostsFile, else ``~/.ssh/known_hosts``.
        accept_new_host_keys: Accept and record unknown host keys (also turned
            on by ``StrictHostKeyChecking accept-new`` or ``no`` in ssh_config).

    Returns:
        The resolved target.

    Raises:
        ConfigError: The ssh_config file is missing or cannot be parsed.
    """
    config = paramiko.SSHConfigDict()
    path = os.path.expanduser(os.fspath(ssh_config)) if ssh_config else os.path.expanduser("~/.ssh/config")
    if ssh_config or os.path.exists(path):
        try:
            config = paramiko.SSHConfig.from_path(path).lookup(spec.host)
        except (OSError, paramiko.SSHException) as exc:
            raise ConfigError(f"cannot read ssh_config {path!r}: {exc}") from exc
    if known_hosts:
        files = (os.fspath(known_hosts),)
    elif config.get("userknownhostsfile"):
        files = tuple(config["userknownhostsfile"].split())
    else:
        files = ("~/.ssh/known_hosts",)
    strict = config.get("stricthostkeychecking", "").lower()
    return SSHTarget(
        spec=spec,
        hostname=config.get("hostname", spec.host),
        port=spec.port or int(config.get("port", 22)),
        user=spec.user or config.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(f) for f in config.get("identityfile", [])),
        identities_only=config.get("identitiesonly", "no").lower() == "yes",
        known_hosts=tuple(os.path.expanduser(f) for f in files),
        host_key_alias=config.get("hostkeyalias"),
        accept_new=accept_new_host_keys or strict in ("accept-new", "no", "off"),
    )


def translate(exc: BaseException, target: SSHTarget, doing: str, keys_tried: str = "") -> SSHError:
    """Turn a paramiko/socket error into an SSHError that names the host, the cause and the fix.

    Args:
        exc: The error caught.
        target: The host it concerns.
        doing: What failed, for the message (``"connecting"``, ``"running 'cmd'"``).
        keys_tried: For an authentication failure, the keys that were offered.

    Returns:
        ``exc`` itself if it already is an SSHError; else a HostKeyError for a
        changed host key, or an SSHError.
    """
    if isinstance(exc, SSHError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        got, old = exc.key, exc.expected_key
        cls, reason = HostKeyError, (
            f"HOST KEY CHANGED! It sent {got.get_name()} {got.fingerprint} but known_hosts has "
            f"{old.fingerprint}. Someone may be intercepting the connection, or the host was "
            f"rebuilt; only if you know it was rebuilt, remove the old key with: "
            f"ssh-keygen -R '{target.key_name}' -f {target.known_hosts[0]}"
        )
    elif isinstance(exc, paramiko.AuthenticationException):
        cls, reason = SSHError, (
            f"authentication failed as user {target.user!r} ({exc}); tried {keys_tried or 'no keys'} — "
            f"check that one of these public keys is in ~{target.user}/.ssh/authorized_keys on the host"
        )
    elif isinstance(exc, socket.gaierror):
        cls, reason = SSHError, (
            f"cannot resolve host name {target.hostname!r} ({exc.strerror}) — "
            "check the name, or its HostName in ssh_config"
        )
    elif isinstance(exc, ConnectionRefusedError):
        cls, reason = SSHError, "connection refused — is sshd running and the port right?"
    elif isinstance(exc, TimeoutError):
        cls, reason = SSHError, f"no answer while {doing} (timed out) — is the host up and the port reachable?"
    elif isinstance(exc, paramiko.ChannelException):
        cls, reason = SSHError, f"the host refused a new channel while {doing} ({exc}) — check sshd's MaxSessions"
    elif isinstance(exc, (paramiko.SSHException, EOFError)):
        cls, reason = SSHError, (
            f"SSH failed while {doing}: {exc or type(exc).__name__} — "
            "is an SSH server listening on that port, and is the connection still up?"
        )
    elif isinstance(exc, OSError):
        cls, reason = SSHError, f"network error while {doing}: {exc.strerror or exc} — check the address and the network"
    else:
        cls, reason = SSHError, f"unexpected error while {doing}: {exc!r}"
    return cls(f"{target.where}: {reason}", failures={target.spec.label: reason})
