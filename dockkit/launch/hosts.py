"""Host specs, hostfiles and the rule that spreads workers over hosts.

Host lists arrive as text (``--hosts`` words, hostfile lines) and are parsed
once, here, into frozen :class:`HostSpec` values; everything downstream (the
SSH layer, the launcher) works with those values and never re-parses strings.
Pure Python: no sockets, no paramiko.

Host spec syntax (one ``--hosts`` word)::

    [user@]host[:N][*count]        short form
    [user@]host:PORT:count         port and count
    ssh://[user@]host[:port][*count]  URL form: ':port' is always a port

    node1                 host only: user and port come from ssh_config or defaults
    b:4                   4 workers on b: a lone ':N' below 1024 is a worker count
    alice@c:2222          ':N' of 1024 or more is an SSH port
    node1*4               4 workers on node1 ('*N' is always a count)
    alice@10.0.0.5:2222*8 port 2222, 8 workers (so is alice@10.0.0.5:2222:8)
    ssh://node1:22*2      a port below 1024 needs the URL form (or Port in ssh_config)
    [::1]:2222*2          IPv6 with a port or count must be in brackets
    ::1                   a bare IPv6 address (no port, no count) is accepted too

So ``--hosts a b:4 user@c:2222`` means a, b with 4 workers, and c on port
2222. (``*`` is a shell glob character: a shell passes ``b*4`` through unchanged
unless a file name matches it, so quote it, ``'b*4'``, in scripts.)

Hostfile syntax (SCOOP's)::

    # comment
    node1 4           # host, then an optional worker count
    alice@node2:2222  # a spec without a count
    node3*2           # the :N and *N forms work here too (but not together with a count)

Worker distribution (:func:`distribute`), the rule the README documents:

1. A host with a count (``node1:4``, ``node1*4`` or ``node1 4`` in a hostfile) gets exactly
   that many workers.
2. The total ``-n N``, less the explicit counts, is split evenly over the hosts
   without a count, in the order given; the remainder goes one each to the
   first of them. A host whose share comes out as 0 is left out.
3. Without ``-n``, every host without a count gets ``default`` workers (1).
4. If every host has a count and ``-n`` is given, the counts must add up to it;
   if the explicit counts alone exceed ``-n``, that is an error too.
5. The same host (same user, host and port) listed twice is merged after the
   split by adding its workers, so listing a host twice gives it two shares.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence

from dockkit.errors import ConfigError, HostSpecError

__all__ = ["HostSpec", "parse_hosts", "parse_hostfile", "parse_hostfile_text", "distribute"]

# Host names and ssh_config aliases: letters, digits, '.', '-', '_'. Anything
# else (spaces, '/', '@' twice, ':' in a name) is a typo we should catch here
# rather than as a confusing DNS failure later.
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\Z")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\$?\Z")
_DIGITS_RE = re.compile(r"[0-9]+\Z")


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """One host to run workers on.

    Attributes:
        host: Host name, ssh_config alias or IP address (IPv6 without brackets).
        user: Login name, or None to use ssh_config's ``User`` or the local user.
        port: SSH port, or None to use ssh_config's ``Port`` or 22.
        workers: Worker count for this host, or None to let :func:`distribute` decide.
    """

    host: str
    user: str | None = None
    port: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        # Validate here too, so HostSpec(...) built in code is as safe as parse().
        _check_host(self.host)
        if self.user is not None and not _USER_RE.match(self.user):
            raise HostSpecError(f"bad user name {self.user!r} for host {self.host!r}")
        if self.port is not None:
            _check_port(self.port, self.host)
        if self.workers is not None:
            _check_count(self.workers, self.host)

    @classmethod
    def parse(cls, text: str, *, source: str | None = None, line: int | None = None) -> HostSpec:
        """Parse ``[user@]host[:N][*count]`` or ``ssh://…`` (see the module docstring).

        Args:
            text: The spec, e.g. ``"alice@node1:2222*4"``.
            source: File name to put in error messages, if the spec came from a file.
            line: Line number to put in error messages.

        Returns:
            The parsed spec.

        Raises:
            HostSpecError: The text is empty or malformed, the port is not in
                1..65535, the count is not a positive integer or is given twice.
        """
        try:
            return cls._parse(text)
        except HostSpecError as exc:
            if source is None and line is None:
                raise
            raise HostSpecError(str(exc), source=source, line=line) from None

    @classmethod
    def _parse(cls, text: str) -> HostSpec:
        spec = text.strip()
        if not spec:
            raise HostSpecError("empty host spec")
        if any(ch.isspace() for ch in spec):
            raise HostSpecError(f"host spec {text!r} contains white space")
        url = spec.startswith("ssh://")
        rest, workers = (spec[len("ssh://"):] if url else spec), None
        if "*" in rest:
            rest, _, count = rest.rpartition("*")
            workers = _parse_int(count, "worker count", spec)
        user = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            if not user:
                raise HostSpecError(f"empty user name in {spec!r}")
        host, numbers = _split_host(rest, spec)
        port, count = _port_and_count(numbers, spec, url)
        if count is not None and workers is not None:
            raise HostSpecError(f"worker count given twice in {spec!r} (use ':N' or '*N', not both)")
        return cls(host=host, user=user, port=port, workers=count if count is not None else workers)

    def __str__(self) -> str:
        """Return the spec in the syntax :meth:`parse` reads (a round trip)."""
        host = self.host
        if ":" in host and (self.port is not None or self.workers is not None):
            host = f"[{host}]"
        text = f"{self.user}@{host}" if self.user else host
        if self.port is not None:
            text += f":{self.port}"
            if self.port < PORT_MIN:
                text = "ssh://" + text
        if self.workers is not None:
            text += f"*{self.workers}"
        return text

    @property
    def key(self) -> tuple[str | None, str, int | None]:
        """(user, host, port): what makes two specs the same host."""
        return (self.user, self.host, self.port)

    @property
    def label(self) -> str:
        """The spec without its worker count, for logs and error messages."""
        return str(dataclasses.replace(self, workers=None))

    def with_workers(self, workers: int | None) -> HostSpec:
        """Return a copy with another worker count."""
        return dataclasses.replace(self, workers=workers)


# In the short form a lone ':N' below this is a worker count, from it on an SSH port.
PORT_MIN = 1024


def _split_host(text: str, spec: str) -> tuple[str, list[str]]:
    """Split ``host[:A[:B]]`` (or ``[v6][:A[:B]]``) into the host and the numbers after it."""
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep:
            raise HostSpecError(f"missing ']' after the IPv6 address in {spec!r}")
        _check_ipv6(host, spec)
        if tail and not tail.startswith(":"):
            raise HostSpecError(f"unexpected {tail!r} after ']' in {spec!r}")
        return host, tail[1:].split(":") if tail else []
    if text.count(":") > 1 and _is_ipv6(text):
        return text, []  # a bare IPv6 address; a port or count needs brackets
    host, *numbers = text.split(":")
    return host, numbers


def _port_and_count(numbers: list[str], spec: str, url: bool) -> tuple[int | None, int | None]:
    """(port, count) from the numbers after the host; see the module docstring for the rule."""
    if len(numbers) > (1 if url else 2):
        raise HostSpecError(f"too many ':' in {spec!r} (the syntax is [user@]host[:port][:count][*count]; "
                            "an IPv6 address goes in brackets)")
    values = [_parse_int(n, "port or worker count", spec) for n in numbers]
    if url:
        return (values[0] if values else None), None
    if len(values) == 2:
        if values[0] < PORT_MIN:
            raise HostSpecError(f"port {values[0]} in {spec!r} is below {PORT_MIN}: write "
                                f"ssh://host:{values[0]}*{values[1]}, or set Port in ssh_config")
        return values[0], values[1]
    if values and values[0] >= PORT_MIN:
        return values[0], None
    return None, (values[0] if values else None)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _parse_int(text: str, what: str, spec: str) -> int:
    if not _DIGITS_RE.match(text):
        raise HostSpecError(f"{what} {text!r} in {spec!r} is not a whole number")
    return int(text)


def _check_host(host: str) -> None:
    if not host:
        raise HostSpecError("empty host name")
    if ":" in host:
        _check_ipv6(host, host)
    elif not _HOST_RE.match(host):
        raise HostSpecError(
            f"bad host name {host!r}: use letters, digits, '.', '-' and '_' "
            "(the syntax is [user@]host[:port][:count][*count])"
        )


def _check_ipv6(host: str, spec: str) -> None:
    if not _is_ipv6(host):
        raise HostSpecError(f"{host!r} in {spec!r} is not a valid IPv6 address")


def _check_port(port: int, host: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise HostSpecError(f"port {port!r} for host {host!r} is not in 1..65535")


def _check_count(count: int, host: str) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise HostSpecError(f"worker count {count!r} for host {host!r} must be at least 1 "
                            f"(a lone ':N' below {PORT_MIN} is a worker count; write a port below "
                            f"{PORT_MIN} as ssh://host:port)")


def parse_hosts(words: Iterable[str | HostSpec]) -> list[HostSpec]:
    """Parse ``--hosts`` words into specs, one spec per word (specs pass through).

    Args:
        words: The words, e.g. ``["a", "b:4", "alice@c:2222"]``, or HostSpec values.

    Returns:
        The specs, in order (duplicates kept: :func:`distribute` merges them).

    Raises:
        HostSpecError: A word is not a valid spec; the message names it.
    """
    return [w if isinstance(w, HostSpec) else HostSpec.parse(str(w)) for w in words]


def read_hosts(hosts: Iterable[str | HostSpec] | None, hostfile: str | os.PathLike[str] | None) -> list[HostSpec]:
    """``--hosts`` then ``--hostfile``, parsed and checked.

    Raises:
        HostSpecError: a host spec or hostfile line is malformed (it names which).
    """
    specs = parse_hosts(hosts or [])
    if hostfile:
        specs += parse_hostfile(hostfile)
    return specs


def parse_hostfile(path_or_text: str | os.PathLike[str]) -> list[HostSpec]:
    """Read a hostfile: ``host [count]`` lines, ``#`` comments, blank lines.

    Args:
        path_or_text: A path (``os.PathLike``, or a ``str`` without a newline)
            to read, or the file's text itself (a ``str`` containing a newline).

    Returns:
        The specs in file order.

    Raises:
        ConfigError: The file cannot be read.
        HostSpecError: A line is malformed; the message gives the file name,
            the line number and what is wrong.
    """
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return parse_hostfile_text(path_or_text)
    path = os.fspath(path_or_text)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read hostfile {path!r}: {exc}") from exc
    return parse_hostfile_text(text, source=path)


def parse_hostfile_text(text: str, *, source: str = "<hostfile>") -> list[HostSpec]:
    """Parse the text of a hostfile (see :func:`parse_hostfile`).

    Args:
        text: The file's contents.
        source: The name to use in error messages.

    Returns:
        The specs in order.

    Raises:
        HostSpecError: A line is malformed (with ``source`` and ``line`` set).
    """
    specs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        # '#' cannot occur in a host name, so everything after it is a comment.
        fields = raw.partition("#")[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise HostSpecError(
                f"expected 'host [count]', got {len(fields)} fields: {raw.strip()!r}",
                source=source,
                line=number,
            )
        spec = HostSpec.parse(fields[0], source=source, line=number)
        if len(fields) == 2:
            if spec.workers is not None:
                raise HostSpecError(
                    f"worker count given twice in {raw.strip()!r} (use 'host N' or 'host*N')",
                    source=source,
                    line=number,
                )
            if not _DIGITS_RE.match(fields[1]) or int(fields[1]) < 1:
                raise HostSpecError(
                    f"worker count {fields[1]!r} must be a whole number of at least 1",
                    source=source,
                    line=number,
                )
            spec = spec.with_workers(int(fields[1]))
        specs.append(spec)
    return specs


def distribute(
    hosts: Sequence[HostSpec], total: int | None, *, default: int = 1
) -> list[tuple[HostSpec, int]]:
    """Decide how many workers each host runs (the rule is in the module docstring).

    Args:
        hosts: The hosts in the user's order; duplicates allowed.
        total: The ``-n`` total, or None when not given.
        default: Workers per host without a count when ``total`` is None.

    Returns:
        ``(spec, workers)`` pairs in order of first appearance, one per
        distinct host, every count at least 1. Each spec has ``workers`` set
        to the same count.

    Raises:
        ConfigError: No hosts; ``total`` or ``default`` below 1; the explicit
            counts exceed ``total``; or every host has a count and they do
            not add up to ``total``.
    """
    if not hosts:
        raise ConfigError("no hosts given: name at least one host (--hosts or a hostfile)")
    if total is not None and total < 1:
        raise ConfigError(f"-n {total}: the number of workers must be at least 1")
    if default < 1:
        raise ConfigError(f"default worker count {default} must be at least 1")
    fixed = sum(spec.workers for spec in hosts if spec.workers is not None)
    free = [i for i, spec in enumerate(hosts) if spec.workers is None]
    shares = _shares(hosts, total, fixed, free, default)
    merged: dict[tuple, int] = {}
    first: dict[tuple, HostSpec] = {}
    for spec, count in zip(hosts, shares):
        merged[spec.key] = merged.get(spec.key, 0) + count
        first.setdefault(spec.key, spec)
    return [(first[key].with_workers(n), n) for key, n in merged.items() if n > 0]


def _shares(hosts, total, fixed, free, default) -> list[int]:
    counts = [spec.workers or 0 for spec in hosts]
    if total is None:
        for i in free:
            counts[i] = default
        return counts
    listing = ", ".join(str(spec) for spec in hosts)
    if not free:
        if fixed != total:
            raise ConfigError(
                f"the host counts add up to {fixed} workers but -n is {total} ({listing}); "
                "drop -n, or change the counts, or leave a host without a count to take the rest"
            )
        return counts
    if fixed > total:
        raise ConfigError(
            f"the host counts alone ask for {fixed} workers but -n is only {total} ({listing}); "
            "raise -n or lower the counts"
        )
    each, extra = divmod(total - fixed, len(free))
    for rank, i in enumerate(free):
        counts[i] = each + (1 if rank < extra else 0)
    return counts
