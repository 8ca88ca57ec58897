"""The Docker boundary: connecting to an Engine, and every docker-py error translated here.

Why one module: docker-py, requests and paramiko (its ``ssh://`` transport) each raise
their own errors. Everything above this module (images, nodes, the cluster, the CLI)
sees only :class:`~dockkit.errors.DockerError` and its subclasses, with a message
that names the fix. Nothing here builds images or knows what a cluster is.
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import docker
import docker.errors
import paramiko  # docker-py's ssh:// transport raises its errors
import requests.exceptions
from docker.context import ContextAPI

from dockkit.errors import DockerError, DockkitError, ImageError

__all__ = ["LABEL", "docker_client", "client_url", "engine_url", "engine_address", "engine_cpus",
           "docker_errors", "engine_hint", "find_container", "remove_container", "remove_network"]

LABEL = "org.dockkit.managed"  # on everything dockkit makes, so cleanup can find it
# the URL each client of docker_client() was made for: docker-py keeps only its own form
# ("http+docker://ssh" for any ssh:// engine), which names no engine in a message
_URLS: weakref.WeakKeyDictionary[docker.DockerClient, str] = weakref.WeakKeyDictionary()


def docker_client(base_url: str | None = None) -> docker.DockerClient:
    """Connect to a Docker Engine and check that it answers.

    Args:
        base_url: ``unix://…``, ``tcp://…``, ``ssh://user@host:port`` or the name of a
            Docker context. Default: what the docker CLI uses: ``DOCKER_HOST``, else the
            current context (``DOCKER_CONTEXT`` or ``docker context use``), else the local
            socket. ``ssh://`` goes through docker-py's paramiko transport: it reads
            ``~/.ssh/config`` and ``~/.ssh/known_hosts``, refuses unknown host keys, and runs
            ``docker system dial-stdio`` on the remote (so the remote needs the docker CLI).

    Returns:
        A connected ``docker.DockerClient``.

    Raises:
        DockerError: No engine answers, the socket or SSH login refused us, or there is
            no such context; the message says what to do.
    """
    params = _engine_params(base_url)
    where = params["base_url"]
    # the hints name a socket or tcp:// engine themselves; an ssh:// one only in the action
    named = f" at {where}" if where.startswith("ssh://") else ""
    with docker_errors(f"connecting to the Docker Engine{named}", where=where):
        client = docker.DockerClient(**params)
        client.ping()
    _URLS[client] = where
    return client


def client_url(client: docker.DockerClient) -> str:
    """The Engine URL ``client`` reaches, as given to :func:`docker_client` (else docker-py's own)."""
    return _URLS.get(client) or client.api.base_url


def engine_url(docker_host: str | None = None) -> str:
    """The Engine URL that ``docker_client(docker_host)`` connects to (a context's endpoint).

    Raises:
        DockerError: ``docker_host`` names no Docker context.
    """
    return _engine_params(docker_host)["base_url"]


def engine_address(url: str) -> str:
    """Where a Docker Engine's published ports are: 127.0.0.1 for a local socket, else its host.

    For ``ssh://`` the host goes through ``~/.ssh/config``'s HostName, as docker-py does.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("unix", "npipe", "http+unix") or not parsed.hostname:
        return "127.0.0.1"
    host = parsed.hostname
    if host in ("localhost", "::1") or host.startswith("127."):
        return "127.0.0.1"
    config = Path("~/.ssh/config").expanduser()
    if parsed.scheme == "ssh" and config.is_file():
        host = paramiko.SSHConfig.from_path(str(config)).lookup(host).get("hostname", host)
    return host


def engine_cpus(client: docker.DockerClient) -> int:
    """The number of CPUs of the machine behind ``client`` (not of this one)."""
    with docker_errors("asking the Docker Engine for its CPU count"):
        return max(1, int(client.info().get("NCPU") or 1))


def _engine_params(docker_host: str | None) -> dict:
    """``DockerClient`` arguments for a URL, a context name, or (None) the CLI's default.

    Resolved here rather than by ``docker.from_env`` so that contexts work with every
    docker-py this project allows, and so that errors can name the URL.
    """
    if docker_host and "://" in docker_host:
        return {"base_url": docker_host}
    if not docker_host and os.environ.get("DOCKER_HOST"):
        with docker_errors("reading DOCKER_HOST"):
            return docker.utils.kwargs_from_env()  # with its DOCKER_TLS_VERIFY/DOCKER_CERT_PATH
    name = docker_host or os.environ.get("DOCKER_CONTEXT") or None
    with docker_errors(f"reading Docker context {name or '(current)'}"):
        context = ContextAPI.get_context(name)
    if context is None or not context.Host:
        raise DockerError(f"no Docker context named {name!r}: see `docker context ls`, or give "
                          "an Engine URL (ssh://user@host:port, unix:///path, tcp://host:port)")
    params = {"base_url": context.Host}
    if context.TLSConfig is not None:
        params["tls"] = context.TLSConfig
    return params


@contextlib.contextmanager
def docker_errors(action: str, error_cls: type[DockerError] = DockerError,
                  where: str | None = None, gone: str | None = None) -> Iterator[None]:
    """Translate docker-py, connection and SSH errors raised inside the block.

    Args:
        action: What was being done, for the message ("building the worker image").
        error_cls: The class for failures of the operation itself; a missing or
            unreachable engine is always a plain ``DockerError``.
        where: The Engine URL, for the message (default: ``DOCKER_HOST`` or the socket).
        gone: The whole message when the engine says a container or network is not
            there (e.g. "node node1 of cluster c is gone; run `dockkit up`").

    Raises:
        DockerError: The engine is missing or unreachable, or refused us.
        error_cls: The engine answered with an error.
    """
    try:
        yield
    except DockkitError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageError(f"{action}: image not found: {exc.explanation or exc}") from exc
    except docker.errors.NotFound as exc:
        raise error_cls(gone or f"{action}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise error_cls(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError, OSError,
            paramiko.SSHException) as exc:
        raise DockerError(f"{action}: {engine_hint(exc, where)}") from exc


def find_container(client: docker.DockerClient, name: str):
    """The container called ``name``, or None when there is none.

    Raises:
        DockerError: The engine failed or is unreachable.
    """
    with docker_errors(f"looking up container {name}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def remove_container(container) -> None:
    """Force-remove a container with its anonymous volumes; one already gone is fine.

    Raises:
        DockerError: The engine refused or is unreachable.
    """
    _remove(container, f"container {container.name}", force=True, v=True)


def remove_network(network) -> None:
    """Remove a network; one already gone is fine.

    Raises:
        DockerError: The engine refused (e.g. a container still uses it) or is unreachable.
    """
    _remove(network, f"network {network.name}")


def _remove(resource, what: str, **options) -> None:
    with docker_errors(f"removing {what}"):
        try:
            resource.remove(**options)
        except docker.errors.NotFound:
            pass  # removed meanwhile: what we wanted
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "in progress" not in str(exc):  # a removal already under way
                raise


_HTTP_POOL = re.compile(r"HTTPS?ConnectionPool\(host='(?P<host>[^']+)', port=(?P<port>\d+)\)")


def engine_hint(exc: BaseException, where: str | None = None) -> str:
    """One line saying why the engine at ``where`` failed us and what to do about it."""
    text = str(exc)
    # a remote engine that failed names itself in requests' message: not the default one's name
    pool = _HTTP_POOL.search(text) if where is None else None
    where = where or (f"tcp://{pool['host']}:{pool['port']}" if pool else None) \
        or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if where.startswith("ssh://"):
        return _ssh_engine_hint(exc, where)
    if "Permission denied" in text or isinstance(exc, PermissionError):
        return (f"permission denied on the Docker socket ({where}): add your user to the "
                "'docker' group (then log in again) or run as root")
    if any(s in text for s in ("No such file", "Connection refused", "Connection aborted",
                               "Failed to establish", "Max retries")):
        return (f"cannot reach the Docker Engine at {where}: is it running? "
                f"Check with `docker -H {where} info`, or give the right address (--docker-host, DOCKER_HOST)")
    return text


def _ssh_engine_hint(exc: BaseException, where: str) -> str:
    """What to do when docker-py's ``ssh://`` transport (paramiko) fails; the caller names ``where``."""
    text = str(exc) or type(exc).__name__
    check = f"check with `docker -H {where} info`"
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"its SSH host key does not match ~/.ssh/known_hosts ({text})"
    if "not found in known_hosts" in text:
        return ("its SSH host key is not in ~/.ssh/known_hosts and unknown keys are refused: "
                f"log in once with ssh to check and pin it, then {check}")
    if isinstance(exc, paramiko.AuthenticationException) or "authentication methods" in text:
        return (f"SSH login refused ({text}): docker-py logs in with the IdentityFile that "
                f"~/.ssh/config gives the host, the ssh agent or ~/.ssh/id_*; {check}")
    # paramiko's NoValidConnectionsError and socket errors; requests' are OSErrors too
    if isinstance(exc, OSError) and not isinstance(exc, requests.exceptions.RequestException):
        return f"cannot reach its SSH server ({text}): is sshd up and the port right?"
    return (f"{text} (the remote needs the docker CLI on the PATH of SSH sessions and access "
            f"to its engine's socket: docker-py runs `docker system dial-stdio` there); {check}")
