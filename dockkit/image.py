"""The one worker image: built locally, cached by content, with no registry needed.

Why: every Docker node runs the same image, an sshd plus a venv holding the head's
own dockkit and the same versions of its runtime deps (cloudpickle in particular
must match on both ends). The image is named after a hash of everything that goes
into it, so an unchanged tree never rebuilds and a changed one never runs stale code.

    base image ──┐ python:X.Y-slim (local, else pulled), else dockkit-base:<suite>
                 │ built by mmdebstrap from the host's apt sources
    wheels ──────┤ dockkit (built from the source tree) + pinned deps + user
                 │ requirements (downloaded once into the wheel cache)
    images/worker┘ Dockerfile, sshd.conf, entrypoint.sh
         └─► docker build (classic builder, never pull) ─► dockkit-worker:<hash>

The entrypoint installs keys at start (see ``install_node_keys``); none are baked in.
docker-py errors are translated here into ``DockerError``/``ImageError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import docker
import docker.errors
import paramiko  # docker-py's ssh:// transport raises its errors
import requests.exceptions
from docker.context import ContextAPI

from dockkit.errors import DockerError, DockkitError, ImageError
from dockkit.keys import KeyPair

__all__ = [
    "LABEL", "WORKER_REPOSITORY", "NODE_KEY_DIR", "VENV", "WORKER_DEPS", "ImageRow",
    "docker_client", "engine_url", "docker_errors", "default_base_image", "offline_base_image",
    "ensure_base_image", "build_offline_base", "ensure_worker_image", "list_images",
    "node_keys_archive", "install_node_keys",
]

LABEL = "org.dockkit.managed"
WORKER_REPOSITORY = "dockkit-worker"
VENV = "/opt/dockkit-venv"
NODE_KEY_DIR = "/etc/dockkit"  # the entrypoint reads keys from here at start
WORKER_DEPS = ("pyzmq", "cloudpickle", "click", "rich", "paramiko", "cryptography")
_IMAGE_FILES = ("Dockerfile", "sshd.conf", "entrypoint.sh")
_SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
_BASE_PACKAGES = "python3,python3-venv,openssh-server,procps,ca-certificates"

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageRow:
    """One line of ``dockkit image ls``: a tag, short id, size in bytes, creation time (ISO)."""

    tag: str
    id: str
    size: int
    created: str


# --- the Docker boundary -------------------------------------------------------------


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
    with docker_errors(f"connecting to the Docker Engine at {where}", where=where):
        client = docker.DockerClient(**params)
        client.ping()
        return client


def engine_url(docker_host: str | None = None) -> str:
    """The Engine URL that ``docker_client(docker_host)`` connects to (a context's endpoint).

    Raises:
        DockerError: ``docker_host`` names no Docker context.
    """
    return _engine_params(docker_host)["base_url"]


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
                  where: str | None = None) -> Iterator[None]:
    """Translate docker-py, connection and SSH errors raised inside the block.

    Args:
        action: What was being done, for the message ("building the worker image").
        error_cls: The class for failures of the operation itself; a missing or
            unreachable engine is always a plain ``DockerError``.
        where: The Engine URL, for the message (default: ``DOCKER_HOST`` or the socket).

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
    except docker.errors.APIError as exc:
        raise error_cls(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError, OSError,
            paramiko.SSHException) as exc:
        raise DockerError(f"{action}: {_engine_hint(exc, where)}") from exc


def _engine_hint(exc: BaseException, where: str | None = None) -> str:
    text = str(exc)
    where = where or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if where.startswith("ssh://"):
        return _ssh_engine_hint(exc, where)
    if "Permission denied" in text or isinstance(exc, PermissionError):
        return (f"permission denied on the Docker socket ({where}): add your user to the "
                "'docker' group (then log in again) or run as root")
    if any(s in text for s in ("No such file", "Connection refused", "Connection aborted",
                               "Failed to establish", "Max retries")):
        return (f"cannot reach the Docker Engine at {where}: is it running? "
                "Check with `docker info`, or set DOCKER_HOST")
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


# --- base image ----------------------------------------------------------------------


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
    if _image_exists(client, name) or _try_pull(client, name, log):
        return name
    if base_image:
        raise ImageError(f"base image {base_image!r} is not on this Docker Engine and could not "
                         "be pulled: build or load it first (docker load / docker import), "
                         "or leave out the base image to let dockkit build one")
    offline = offline_base_image()
    if _image_exists(client, offline):
        return offline
    log(f"dockkit: {name} cannot be pulled; building {offline} from the host's apt sources")
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
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise ImageError(f"cannot build {tag}: mmdebstrap is not installed. Install it "
                         f"(`apt-get install mmdebstrap`) or pass a local base image "
                         "(--base-image)")
    suite, sources = _host_debian()
    cmd = [exe, "--quiet", "--variant=apt", "--skip=output/dev", f"--include={_BASE_PACKAGES}",
           '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
           f'--customize-hook=chroot "$1" python3 -m venv {VENV}',
           suite, "-", *sources]
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
    log(f"dockkit: built {tag}")
    return tag


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


def _image_exists(client: docker.DockerClient, name: str) -> bool:
    with docker_errors(f"looking up image {name}"):
        try:
            client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        return True


def _try_pull(client: docker.DockerClient, name: str, log: Log) -> bool:
    """Try to pull ``name``; a failure (no registry here) returns False, not an error."""
    repo, tag = docker.utils.parse_repository_tag(name)
    log(f"dockkit: pulling {name}")
    try:
        client.api.pull(repo, tag=tag or "latest")
    except docker.errors.APIError as exc:
        log(f"dockkit: cannot pull {name}: {(exc.explanation or str(exc)).splitlines()[0]}")
        return False
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise DockerError(f"pulling {name}: {_engine_hint(exc)}") from exc
    return _image_exists(client, name)  # an error late in the pull only shows in its stream


# --- worker image --------------------------------------------------------------------


def ensure_worker_image(client: docker.DockerClient, *, base_image: str | None = None,
                        requirements: str | os.PathLike[str] | None = None,
                        log: Log = print) -> str:
    """Return the worker image's tag, building it only if its inputs changed.

    The tag is ``dockkit-worker:<hash>`` over the dockkit source files, the files in
    ``images/worker``, the base image's id, the pinned runtime deps (the versions
    installed here) and the requirements file. A tag that exists returns at once.

    Args:
        client: A connected Docker client.
        base_image: Base to build on; default as in :func:`ensure_base_image`.
        requirements: A pip requirements file (plain requirement lines) whose
            packages the workers need; wheels only.
        log: Receives one-line progress messages.

    Returns:
        The image tag, e.g. ``"dockkit-worker:3f9a0c1b2d4e"``.

    Raises:
        ImageError: The source tree, a wheel, the base or the build failed.
        DockerError: The engine is unreachable.
    """
    root = _source_root()
    user_reqs = _read_requirements(requirements)
    base = ensure_base_image(client, base_image, log)
    with docker_errors(f"inspecting base image {base}", ImageError):
        base_id = client.images.get(base).id
    pins = "".join(f"{pin}\n" for pin in _dep_pins())
    sources = _source_files(root)
    digest = _digest([(f"image/{n}", (root / "images" / "worker" / n).read_bytes())
                      for n in _IMAGE_FILES]
                     + [(f"src/{rel}", (root / rel).read_bytes()) for rel in sources]
                     + [("base", f"{base}@{base_id}".encode()), ("pins", pins.encode()),
                        ("requirements", user_reqs)])
    tag = f"{WORKER_REPOSITORY}:{digest}"
    if _image_exists(client, tag):
        return tag
    log(f"dockkit: building {tag} on {base}")
    with tempfile.TemporaryDirectory(prefix="dockkit-build-") as tmp:
        ctx = Path(tmp, "context")
        (ctx / "deps").mkdir(parents=True)
        for name in _IMAGE_FILES:
            shutil.copy2(root / "images" / "worker" / name, ctx / name)
        _build_dockkit_wheel(root, sources, Path(tmp, "src"), ctx / "dist")
        python, has_sshd = _probe_base(client, base)
        if python != f"{sys.version_info.major}.{sys.version_info.minor}":
            log(f"dockkit: warning: {base} has Python {python} but this one is "
                f"{sys.version_info.major}.{sys.version_info.minor}; tasks may not unpickle")
        (ctx / "deps" / "requirements.txt").write_bytes(pins.encode() + user_reqs)
        _download_wheels(ctx / "deps" / "requirements.txt", ctx / "deps", python, log)
        _docker_build(client, ctx, tag, base, offline=has_sshd, log=log)
    log(f"dockkit: built {tag}")
    return tag


def list_images(client: docker.DockerClient) -> list[ImageRow]:
    """The dockkit-managed images on this engine (workers and the offline base), newest first.

    Args:
        client: A connected Docker client.

    Returns:
        One :class:`ImageRow` per tag (``"<none>"`` for an untagged image).

    Raises:
        DockerError: The engine is unreachable or failed.
    """
    with docker_errors("listing images"):
        images = client.images.list(filters={"label": f"{LABEL}=true"})
    rows = [ImageRow(tag=tag, id=img.short_id.removeprefix("sha256:"),
                     size=int(img.attrs.get("Size") or 0), created=str(img.attrs.get("Created", "")))
            for img in images for tag in (img.tags or ["<none>"])]
    return sorted(rows, key=lambda r: r.created, reverse=True)


def node_keys_archive(host_key: KeyPair, authorized_keys: str | Iterable[str]) -> bytes:
    """A tar of the files the worker entrypoint installs at start, for ``put_archive("/")``.

    Args:
        host_key: The node's host keypair (its public line goes in known_hosts).
        authorized_keys: Public key lines allowed to log in as root.

    Returns:
        Tar bytes holding ``etc/dockkit/ssh_host_ed25519_key`` and ``etc/dockkit/authorized_keys``.
    """
    lines = [authorized_keys] if isinstance(authorized_keys, str) else list(authorized_keys)
    text = "".join(f"{line.strip()}\n" for line in lines if line.strip())
    buf = io.BytesIO()
    folder = NODE_KEY_DIR.lstrip("/")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(folder)
        info.type, info.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(info)
        for name, data in (("ssh_host_ed25519_key", host_key.private_openssh),
                           ("authorized_keys", text.encode())):
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def install_node_keys(container, host_key: KeyPair, authorized_keys: str | Iterable[str]) -> None:
    """Copy a node's keys into a created (not yet started) worker container.

    Args:
        container: A docker-py ``Container`` made from the worker image.
        host_key: The node's host keypair.
        authorized_keys: Public key lines allowed to log in as root.

    Raises:
        DockerError: The copy failed.
    """
    with docker_errors(f"copying keys into container {container.name}"):
        if not container.put_archive("/", node_keys_archive(host_key, authorized_keys)):
            raise DockerError(f"copying keys into container {container.name} failed")


# --- build steps ---------------------------------------------------------------------


def _source_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "images" / "worker" / "Dockerfile").is_file():
        return root
    raise ImageError(f"dockkit's source tree was not found at {root}: the worker image is "
                     "built from a source checkout, so install dockkit from one "
                     "(pip install -e <checkout>)")


def _source_files(root: Path) -> list[str]:
    """Paths (relative to root) of the files the dockkit wheel is built from, sorted."""
    files = [name for name in _SOURCE_FILES if (root / name).is_file()]
    for path in (root / "dockkit").rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and path.suffix != ".pyc" and not any(
                part.startswith((".", "__pycache__")) for part in rel.parts):
            files.append(rel.as_posix())
    return sorted(files)


def _read_requirements(requirements: str | os.PathLike[str] | None) -> bytes:
    if requirements is None:
        return b""
    try:
        data = Path(requirements).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read requirements file {requirements}: {exc.strerror}") from exc
    return data if data.endswith(b"\n") or not data else data + b"\n"


def _dep_pins() -> list[str]:
    """The worker's runtime deps pinned to the versions installed here, so both ends match."""
    pins = []
    for name in WORKER_DEPS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _digest(parts: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in parts:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def _build_dockkit_wheel(root: Path, sources: list[str], src: Path, out: Path) -> None:
    """Build dockkit's wheel from a clean copy of its sources (no stale ``build/`` dir)."""
    for rel in sources:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, src / rel)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
           "-w", str(out), str(src)]
    # Use the installed setuptools when it can build wheels: then no index is needed.
    # Otherwise pip fetches the build backend that pyproject.toml names.
    if _has_module("setuptools.command.bdist_wheel") or _has_module("wheel"):
        cmd.append("--no-build-isolation")
    _pip(cmd, "building the dockkit wheel")


def _probe_base(client: docker.DockerClient, base: str) -> tuple[str, bool]:
    """The base's Python major.minor and whether it already has sshd (so builds offline)."""
    code = ("import os, sys; print('%d.%d' % sys.version_info[:2], "
            "int(os.access('/usr/sbin/sshd', os.X_OK)))")
    with docker_errors(f"running python3 in base image {base}", ImageError):
        container = client.containers.create(base, ["-c", code], entrypoint=["python3"],
                                             network_mode="none", labels={LABEL: "true"})
        try:
            container.start()
            status = container.wait(timeout=120)["StatusCode"]
            out = container.logs().decode(errors="replace").split()
        finally:
            container.remove(force=True)
    if status != 0 or len(out) != 2:
        raise ImageError(f"base image {base} has no working python3: {' '.join(out)[-500:]}")
    return out[0], out[1] == "1"


def _download_wheels(reqfile: Path, dest: Path, python: str, log: Log) -> None:
    """Put wheels for ``reqfile`` into ``dest``, through the wheel cache (network only on a miss)."""
    cache = _cache_dir() / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
           "--only-binary=:all:", "-r", str(reqfile), *_target_flags(python),
           "--find-links", str(cache)]
    if _pip(cmd + ["--no-index", "-d", str(dest)], None):
        return
    log(f"dockkit: downloading wheels into {cache}")
    _pip(cmd + ["-d", str(cache)], "downloading the workers' wheels")
    _pip(cmd + ["--no-index", "-d", str(dest)], "collecting the workers' wheels")


def _target_flags(python: str) -> list[str]:
    """pip flags for wheels of another Python than this one (none when they match)."""
    if python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return []
    arch = platform.machine()
    return ["--python-version", python, "--implementation", "cp",
            "--abi", f"cp{python.replace('.', '')}", "--platform", f"manylinux_2_28_{arch}",
            "--platform", f"manylinux2014_{arch}", "--platform", "any"]


def _docker_build(client: docker.DockerClient, ctx: Path, tag: str, base: str, *,
                  offline: bool, log: Log) -> None:
    """Run the classic builder, never pulling; with no network when the base has sshd."""
    tail: list[str] = []
    with docker_errors(f"building {tag}", ImageError):
        for chunk in client.api.build(
                path=str(ctx), tag=tag, buildargs={"BASE": base}, pull=False, rm=True,
                forcerm=True, network_mode="none" if offline else None, decode=True):
            if "error" in chunk:
                detail = "\n".join(tail[-15:] + [str(chunk["error"]).strip()])
                raise ImageError(f"building {tag} failed:\n{detail}")
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                tail.append(text)
                if text.startswith("Step "):
                    log(f"dockkit:   {text}")


def _cache_dir() -> Path:
    if os.environ.get("DOCKKIT_CACHE_DIR"):
        return Path(os.environ["DOCKKIT_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dockkit"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def _pip(cmd: list[str], action: str | None) -> bool:
    """Run pip; on failure raise ImageError naming ``action``, or return False if it is None."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return True
    if action is None:
        return False
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    raise ImageError(f"{action} failed (pip exit {proc.returncode}):\n" + "\n".join(tail))
