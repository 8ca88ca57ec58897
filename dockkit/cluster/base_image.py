"""The worker image's base: ``python:X.Y-slim`` when it can be had, else one built offline.

Why: the workers must run the head's Python (pickles cross between them). The normal
base is ``python:<host major.minor>-slim``, local or pulled. Air-gapped sites have no
registry, so the base is then built from the Debian mirror in the host's apt sources
with mmdebstrap and ``docker import``: ``dockkit-base:<the host's Debian suite>``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from dockkit.cluster.engine import LABEL, docker_errors
from dockkit.errors import ImageError

__all__ = ["VENV", "default_base_image", "offline_base_image", "ensure_base_image",
           "build_offline_base", "build_debian_image", "image_exists", "BASE_PACKAGES"]

VENV = "/opt/dockkit-venv"
BASE_PACKAGES = ("python3", "python3-venv", "openssh-server", "procps", "ca-certificates")

Log = Callable[[str], None]


def default_base_image() -> str:
    """The normal base: ``python:<host major.minor>-slim``, so workers match the head's Python."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def offline_base_image() -> str:
    """The registry-less base's tag, ``dockkit-base:<suite>`` (the host's Debian suite)."""
    return f"dockkit-base:{_host_debian()[0]}"


def ensure_base_image(client: docker.DockerClient, base_image: str | None = None,
                      log: Log = print) -> str:
    """Make sure a base image for the worker exists locally; never builds the worker.

    With no ``base_image``: use ``python:<host X.Y>-slim`` if present, else try to pull
    it once; if that fails (no registry), use or build ``dockkit-base:<suite>``.

    Args:
        client: A connected Docker client.
        base_image: An image the user named; it must be local or pullable.
        log: Receives one-line progress messages.

    Returns:
        The base image's name.

    Raises:
        ImageError: The named image is missing and cannot be pulled, or the offline
            base cannot be built (e.g. mmdebstrap is not installed).
        DockerError: The engine is unreachable.
    """
    name = base_image or default_base_image()
    if image_exists(client, name) or _try_pull(client, name, log):
        return name
    if base_image:
        raise ImageError(f"base image {base_image!r} is not on this Docker Engine and could not "
                         "be pulled: build or load it first (docker load / docker import), "
                         "or leave out the base image to let dockkit build one")
    offline = offline_base_image()
    if image_exists(client, offline):
        log(f"dockkit: {name} cannot be pulled; using the offline base {offline}")
        return offline
    log(f"dockkit: {name} cannot be pulled; building the offline base {offline} "
        "from the host's apt sources")
    return build_offline_base(client, log=log)


def build_offline_base(client: docker.DockerClient, log: Log = print) -> str:
    """Build ``dockkit-base:<suite>`` with mmdebstrap and ``docker import`` (about a minute).

    The image has python3, python3-venv, openssh-server and procps, no host keys, and
    an empty venv at ``/opt/dockkit-venv``. Packages come from the mirror in the
    host's apt sources, so this works where only the Debian mirror is reachable.

    Args:
        client: A connected Docker client.
        log: Receives one-line progress messages.

    Returns:
        The new image's tag (an existing one is replaced).

    Raises:
        ImageError: mmdebstrap is missing or failed, or the import failed.
    """
    tag = offline_base_image()
    build_debian_image(client, tag, BASE_PACKAGES,
                       hooks=[f'chroot "$1" python3 -m venv {VENV}'], log=log)
    log(f"dockkit: built {tag}")
    return tag


def build_debian_image(client: docker.DockerClient, tag: str, packages, *, hooks=(),
                       log: Log = print) -> str:
    """Build ``tag`` from Debian packages of the host's apt sources: mmdebstrap, then ``docker import``.

    No host key is left in it (``/etc/ssh/ssh_host_*`` are removed: each container
    gets its own). ``hooks`` are mmdebstrap customize hooks (``"$1"`` is the root).

    Raises:
        ImageError: mmdebstrap is missing or failed, or the import failed.
    """
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise ImageError(f"cannot build {tag}: mmdebstrap is not installed. Install it "
                         f"(`apt-get install mmdebstrap`) or pass a local base image "
                         "(--base-image)")
    suite, sources = _host_debian()
    cmd = [exe, "--quiet", "--variant=apt", "--skip=output/dev", f"--include={','.join(packages)}",
           '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
           *(f"--customize-hook={hook}" for hook in hooks), suite, "-", *sources]
    log(f"dockkit: building {tag} from Debian packages (about a minute)")
    with tempfile.TemporaryDirectory(prefix="dockkit-base-") as tmp:
        tarball = Path(tmp, "rootfs.tar")
        with tarball.open("wb") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=False)
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-15:]
            raise ImageError(f"mmdebstrap failed building {tag} (exit {proc.returncode}):\n"
                             + "\n".join(tail))
        repo, _, version = tag.partition(":")
        with docker_errors(f"importing {tag}", ImageError):
            client.api.import_image_from_file(
                str(tarball), repository=repo, tag=version,
                changes=['CMD ["/bin/bash"]', f'LABEL {LABEL}="true"'])
    return tag


def image_exists(client: docker.DockerClient, name: str) -> bool:
    """Whether the engine has the image ``name``."""
    with docker_errors(f"looking up image {name}"):
        try:
            client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        return True


def _host_debian() -> tuple[str, list[str]]:
    """The host's Debian suite and apt source files; bookworm and mmdebstrap's default elsewhere."""
    release = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            release[key] = value.strip().strip('"')
    if release.get("ID") != "debian" or not release.get("VERSION_CODENAME"):
        return "bookworm", []
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    sources = [str(p) for p in candidates if p.is_file() and p.stat().st_size > 0]
    return release["VERSION_CODENAME"], sources[:1]


def _try_pull(client: docker.DockerClient, name: str, log: Log) -> bool:
    """Try to pull ``name``; a refused pull (no registry here) returns False, not an error."""
    repo, tag = docker.utils.parse_repository_tag(name)
    log(f"dockkit: pulling {name}")
    with docker_errors(f"pulling {name}"):
        try:
            client.api.pull(repo, tag=tag or "latest")
        except docker.errors.APIError as exc:
            log(f"dockkit: cannot pull {name}: {(exc.explanation or str(exc)).splitlines()[0]}")
            return False
    return image_exists(client, name)  # an error late in the pull only shows in its stream
