"""Where dockkit keeps its state, and the ``DOCKKIT_*`` settings that move it.

- ``DOCKKIT_STATE_DIR``: cluster state (keys, ssh_config, known_hosts), default
  ``$XDG_STATE_HOME/dockkit`` or ``~/.local/state/dockkit``.
- ``DOCKKIT_CACHE_DIR``: downloaded wheels for image builds (see image.py).
- ``DOCKKIT_DEBUG``: tracebacks in the CLI and broker traces.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dockkit.errors import ConfigError

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,40}\Z")


def state_dir() -> Path:
    """The root of dockkit's state directory."""
    if os.environ.get("DOCKKIT_STATE_DIR"):
        return Path(os.environ["DOCKKIT_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "dockkit"


def check_cluster_name(name: str) -> str:
    """A cluster name must be usable in Docker container and network names.

    Raises:
        ConfigError: the name has other characters or is too long.
    """
    if not _NAME.match(name or ""):
        raise ConfigError(f"bad cluster name {name!r}: use lower-case letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit, at most 41 characters")
    return name


def cluster_dir(name: str) -> Path:
    """The state directory of one cluster."""
    return state_dir() / "clusters" / check_cluster_name(name)


def write_private(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` readable by its owner only (0600; folders made 0700).

    The file is created with mode 0600 from the start, so a key is never readable by
    others, not even for a moment, and it takes the old file's place whole: another
    command reading the cluster's state or ssh_config meanwhile sees the old content or
    the new, never half, and a write that fails (a full disk) leaves the old one.

    Raises:
        OSError: The file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(written, path)
    except BaseException:
        Path(written).unlink(missing_ok=True)
        raise
    return path
