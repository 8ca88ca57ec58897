"""Packing the user's working directory for the cluster's nodes.

``dockkit run`` copies the script's working directory to the same path on every
node. What goes: everything except ``.git``, virtualenvs, caches, and what
``.gitignore`` or ``.dockkitignore`` exclude (git's pattern rules, via pathspec).
A tree bigger than the limit is refused before anything is copied, with the
largest entries named, so a stray data directory never floods the nodes.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from dockkit.config import state_dir
from dockkit.errors import ConfigError

DEFAULT_LIMIT = 200_000_000  # 200 MB, as `dockkit run --max-upload` counts (10^6 bytes a MB)
ALWAYS_SKIPPED = [".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".venv/", "venv/", "env/",
                  ".tox/", ".nox/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", "node_modules/",
                  "*.egg-info/", ".ipynb_checkpoints/"]
IGNORE_FILES = (".gitignore", ".dockkitignore")


@dataclass
class Bundle:
    """A packed working directory: tar bytes to extract at ``/`` on each node."""

    root: Path
    files: int
    size: int
    tar: bytes
    manifest: dict[str, tuple[int, int]]  # relative path -> (size, whole-second mtime), as the tar keeps them


def ignore_spec(root: Path):
    """The upload's ignore rules for ``root`` (also what a run's outputs are fetched under)."""
    import pathspec

    lines = list(ALWAYS_SKIPPED)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _is_virtualenv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


def walk(root: Path):
    """Yield (absolute path, path relative to root) of every file to copy."""
    spec = ignore_spec(root)
    state = state_dir().resolve()  # its keys never leave this machine, even from inside root
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        kept = []
        for name in sorted(dirnames):
            rel = (rel_dir / name).as_posix() + "/"
            if not spec.match_file(rel) and not _is_virtualenv(here / name) and (here / name).resolve() != state:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if not spec.match_file(rel) and not (here / name).is_symlink():
                yield here / name, rel


def pack(root: str | os.PathLike, *, limit: int = DEFAULT_LIMIT) -> Bundle:
    """Pack ``root`` into a tar whose members carry ``root``'s absolute path.

    Raises:
        ConfigError: the directory is missing, or holds more than ``limit`` bytes to copy.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"working directory {root} does not exist")
    files = list(walk(root))
    stats = {rel: path.stat() for path, rel in files}
    sizes = [(stat.st_size, rel) for rel, stat in stats.items()]
    total = sum(size for size, _ in sizes)
    if total > limit:
        largest = ", ".join(f"{rel} ({size / 1e6:.1f} MB)" for size, rel in sorted(sizes)[-3:][::-1])
        raise ConfigError(
            f"{root} holds {total / 1e6:.1f} MB to copy, over the {limit / 1e6:.0f} MB limit "
            f"(largest: {largest}). List what the run doesn't need in .dockkitignore, "
            "or raise the limit (--max-upload MB)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        # root itself first, so it exists on the nodes even with no file to copy; the engine
        # makes the missing parents of each member, and leaves those that exist as they are
        tar.add(root, arcname=root.as_posix().lstrip("/"), recursive=False)
        for path, rel in files:
            tar.add(path, arcname=(root / rel).as_posix().lstrip("/"), recursive=False)
    manifest = {rel: (stat.st_size, int(stat.st_mtime)) for rel, stat in stats.items()}
    return Bundle(root, len(files), total, buffer.getvalue(), manifest)
