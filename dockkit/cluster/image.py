"""The one worker image: built locally, cached by content, with no registry needed.

Why: every Docker node runs the same image, an sshd plus a venv holding the head's
own dockkit and the same versions of its runtime deps (cloudpickle in particular
must match on both ends). The image is named after a hash of everything that goes
into it, so an unchanged tree never rebuilds and a changed one never runs stale code.

    base image ──┐ python:X.Y-slim (local, else pulled), else dockkit-base:<suite>
                 │ built by mmdebstrap from the host's apt sources (base_image.py)
    wheels ──────┤ dockkit (built from the source tree) + pinned deps + user
                 │ requirements (downloaded once into the wheel cache)
    images/worker┘ Dockerfile, sshd.conf, entrypoint.sh
         └─► docker build (classic builder, never pull) ─► dockkit-worker:<hash>

The entrypoint installs keys at start, sent on its stdin as it starts
(:func:`dockkit.cluster.nodes.start_with_stdin`) or copied in before
(:func:`dockkit.cluster.nodes.install_node_keys`); none are baked in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import docker

from dockkit.cluster.base_image import VENV, ensure_base_image, image_exists
from dockkit.cluster.engine import LABEL, client_url, docker_errors
from dockkit.errors import ImageError

__all__ = [
    "WORKER_REPOSITORY", "NODE_KEY_DIR", "VENV", "WORKER_DEPS", "ImageRow",
    "ensure_worker_image", "copy_image", "push_image", "list_images",
]

WORKER_REPOSITORY = "dockkit-worker"
NODE_KEY_DIR = "/etc/dockkit"  # the entrypoint reads keys from here at start
WORKER_DEPS = ("pyzmq", "cloudpickle", "click", "rich", "paramiko", "cryptography")
_IMAGE_FILES = ("Dockerfile", "sshd.conf", "entrypoint.sh")
_SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
COPY_REPORT_EVERY = 5.0  # s between the progress lines of an image copy

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageRow:
    """One line of ``dockkit image ls``: a tag, short id, size in bytes, creation time (ISO)."""

    tag: str
    id: str
    size: int
    created: str


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
            packages the workers need: published wheels, or, when the base's
            Python is this one's, source packages built into wheels here.
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
    if image_exists(client, tag):
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


def copy_image(source: docker.DockerClient, target: docker.DockerClient, tag: str,
               log: Log = print) -> None:
    """Give ``target``'s engine the very image ``source`` has (same id), if it lacks it.

    Why: one identical image on every node. Building again on another engine could
    give another id (another base), so the image is streamed across instead.

    ``log`` gets a line naming the target engine as the copy starts, one with the MB sent
    every :data:`COPY_REPORT_EVERY` seconds while it lasts, and one with MB and seconds at
    its end.

    Raises:
        ImageError: ``source`` has no such image, or the copy failed.
        DockerError: An engine is unreachable.
    """
    if image_exists(target, tag):
        return
    where = client_url(target)
    log(f"dockkit: copying {tag} to the Docker Engine at {where}")
    meter = CopyMeter(lambda sent: log(copy_progress_line(tag, where, sent)))
    with docker_errors(f"copying image {tag} to the Docker Engine at {where}", ImageError):
        # read the engine's answer to its end: a load that failed says so there, after a 200
        for line in target.api.load_image(meter.count(source.api.get_image(tag)), quiet=True):
            if "error" in line:
                raise ImageError(f"copying image {tag} to the Docker Engine at {where} failed: {line['error']}")
    if not image_exists(target, tag):
        raise ImageError(f"copying image {tag} to the Docker Engine at {where} failed: it is not there")
    log(copy_done_line(tag, where, meter.sent, meter.seconds()))


class CopyMeter:
    """Counts the bytes of a stream as they pass, calling ``report(sent)`` every ``every`` seconds.

    A copy shorter than ``every`` reports nothing: it is summed up once, at its end.
    """

    def __init__(self, report: Callable[[int], None], every: float = COPY_REPORT_EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.report, self.every, self.clock = report, every, clock
        self.sent = 0
        self.started = clock()

    def count(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield ``chunks`` unchanged, counting and reporting as they go."""
        due = self.started + self.every
        for chunk in chunks:
            self.sent += len(chunk)
            yield chunk
            now = self.clock()
            if now >= due:
                self.report(self.sent)
                due = now + self.every

    def seconds(self) -> float:
        """Seconds since the meter was made."""
        return self.clock() - self.started


def copy_progress_line(tag: str, where: str, sent: int) -> str:
    """The line a long image copy logs every few seconds: how much has gone."""
    return f"dockkit: copying {tag} to {where}: {sent / 1e6:.1f} MB sent"


def copy_done_line(tag: str, where: str, sent: int, seconds: float) -> str:
    """The one line a finished image copy logs: how much went, how long it took."""
    return f"dockkit: copied {tag} to {where}: {sent / 1e6:.1f} MB in {seconds:.1f} s"


def push_image(client: docker.DockerClient, tag: str, registry: str, log: Log = print) -> str:
    """Push ``tag`` from ``client``'s engine to ``registry`` (``host:port``); return the pushed name.

    Why: a swarm's nodes pull the image from there themselves, instead of this machine
    loading it into each of their engines. The engine that pushes must trust the registry
    (a plain-HTTP one must be in its ``insecure-registries``).

    Raises:
        ImageError: the registry refused or could not be reached.
    """
    repository = f"{registry.rstrip('/')}/{tag.split(':')[0]}"
    version = tag.split(":", 1)[1]
    reference = f"{repository}:{version}"
    log(f"dockkit: pushing {tag} to the registry {registry}")
    with docker_errors(f"pushing image {tag} to {registry}", ImageError):
        client.images.get(tag).tag(repository, version)
        for line in client.images.push(repository, version, stream=True, decode=True):
            if "error" in line:
                raise ImageError(f"pushing image {tag} to {registry} failed: {line['error']}; "
                                 "is the registry up, and does that engine trust it "
                                 "(insecure-registries, for plain HTTP)?")
    return reference


# --- build steps ---------------------------------------------------------------------


def _source_root() -> Path:
    root = Path(__file__).resolve().parents[2]
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
    if _target_flags(python):  # another Python: only published wheels will do
        _pip(cmd + ["-d", str(cache)], "downloading the workers' wheels")
    else:  # the same Python: a package published only as source (pure Python) is built here
        _pip([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "-r", str(reqfile),
              "--find-links", str(cache), "-w", str(cache)], "downloading the workers' wheels")
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
