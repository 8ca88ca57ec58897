"""``dockkit cp``: files between this machine and a cluster's nodes, in either direction.

Like ``docker cp``: a directory is copied whole; a destination that is an existing
directory receives the source under its own name, any other destination is the
copy's new name. Nothing is left half-copied: a copy lands under a temporary name
beside its place and is renamed into it when complete.
"""

from __future__ import annotations

import io
import os
import posixpath
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dockkit.errors import ConfigError

ALL_NODES = "all"
GO_MODE_DIR = 1 << 31  # the directory bit of the file mode Docker's archive API reports


@dataclass(frozen=True)
class NodePath:
    """``node1:/data`` on the command line: a node (or ``all``) and a path in it."""

    node: str
    path: str

    def __str__(self) -> str:
        return f"{self.node}:{self.path}"


def parse_location(text: str, cwd: str | None = None) -> NodePath | Path:
    """``node:path`` is a node's path; anything else is a path on this machine.

    A relative node path is taken from this machine's working directory, which a
    cluster run mirrors at the same path in every node.
    """
    node, sep, path = text.partition(":")
    if sep and node and "/" not in node and not os.path.exists(text):
        if not path:
            raise ConfigError(f"{text!r}: give a path after the node name, e.g. {node}:/data")
        slash = "/" if path.endswith("/") and path.strip("/") else ""  # kept: it says "a directory"
        return NodePath(node, posixpath.normpath(posixpath.join(cwd or os.getcwd(), path)) + slash)
    return Path(text)


def tar_of(source: Path) -> bytes:
    """A tar holding ``source`` (file or directory) under its own name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source, arcname=source.name)
    return buffer.getvalue()


def check_put(container, source: Path, destination: str) -> str:
    """Where ``put`` would land ``source`` in ``container``: checked before anything is copied.

    Raises:
        ConfigError: the source is missing, or a directory would land on a file.
    """
    if not source.exists():
        raise ConfigError(f"{source}: no such file or directory here")
    kind = _remote_kind(container, destination)
    if kind == "dir":
        return posixpath.join(destination, source.name)
    if kind == "file" and source.is_dir():
        raise ConfigError(f"cannot copy directory {source} onto {destination}, which is a file in "
                          f"{container.name}; give a directory or a new name")
    if destination.endswith("/"):  # as docker cp: a trailing slash names a directory, never a new file
        raise ConfigError(f"{container.name}: {destination}: no such directory; make it first or "
                          "drop the trailing slash to give the copy that name")
    parent = posixpath.dirname(destination) or "/"
    if kind == "none" and _remote_kind(container, parent) != "dir":
        raise ConfigError(f"{container.name}: {parent}: no such directory; make it first")
    return destination


def check_get(container, source: str) -> None:
    """Raises ConfigError if ``source`` is missing in ``container``."""
    if _remote_kind(container, source) == "none":
        raise ConfigError(f"{container.name}: {source}: no such file or directory")


def put(container, source: Path, destination: str) -> str:
    """Copy ``source`` from here into ``container`` at ``destination``; returns where it landed.

    Raises:
        ConfigError: the source is missing, or a directory would land on a file.
    """
    target = check_put(container, source, destination)
    parent = posixpath.dirname(target.rstrip("/")) or "/"
    staging = f"{parent}/.dockkit-cp-{os.urandom(4).hex()}"
    _check(container, ["mkdir", "-p", staging], f"making {parent} in {container.name}")
    try:
        container.put_archive(staging, tar_of(source))
        staged = f"{staging}/{source.name}"
        if source.is_dir() and _remote_kind(container, target) == "dir":  # merge, as cp -r does
            move = f"cp -a {shlex.quote(staged)}/. {shlex.quote(target)}/"
        else:
            move = f"rm -rf {shlex.quote(target)} && mv {shlex.quote(staged)} {shlex.quote(target)}"
        _check(container, ["sh", "-c", move], f"moving the copy into {target}")
    finally:
        container.exec_run(["rm", "-rf", staging])
    return target


def get(container, source: str, destination: Path) -> Path:
    """Copy ``source`` from ``container`` to ``destination`` here; returns where it landed.

    Raises:
        ConfigError: the source is missing in the node, or a directory would land on a file.
    """
    import docker.errors

    try:
        stream, stat = container.get_archive(source)
    except docker.errors.NotFound:
        raise ConfigError(f"{container.name}: {source}: no such file or directory") from None
    target = destination / posixpath.basename(source.rstrip("/")) if destination.is_dir() else destination
    if not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such directory here")
    if stat["mode"] & GO_MODE_DIR and target.is_file():
        raise ConfigError(f"cannot copy directory {source} onto {target}, which is a file here; "
                          "give a directory or a new name")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dockkit-cp-") as staging:
        archive = Path(staging) / ".archive.tar"
        with archive.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="tar")  # links kept as they are, as docker cp does
        staged = Path(staging) / posixpath.basename(source.rstrip("/"))
        if staged.is_dir() and target.is_dir():
            shutil.copytree(staged, target, dirs_exist_ok=True)  # merge, as cp -r does
        else:
            os.replace(staged, target)
    return target


def _remote_kind(container, path: str) -> str:
    """``dir``, ``file`` or ``none`` for ``path`` in the container."""
    test = f"if [ -d {shlex.quote(path)} ]; then echo dir; elif [ -e {shlex.quote(path)} ]; then echo file; " \
           "else echo none; fi"
    return container.exec_run(["sh", "-c", test]).output.decode().strip()


def _check(container, argv: list[str], doing: str) -> None:
    result = container.exec_run(argv)
    if result.exit_code != 0:
        raise ConfigError(f"{doing}: {result.output.decode(errors='replace').strip()}")
