"""Where dockkit keeps its state, and the ``DOCKKIT_*`` settings that move it.

- ``DOCKKIT_STATE_DIR``: cluster state (keys, ssh_config, known_hosts), default
  ``$XDG_STATE_HOME/dockkit`` or ``~/.local/state/dockkit``.
- ``DOCKKIT_CACHE_DIR``: downloaded wheels for image builds (see image.py).
- ``DOCKKIT_DEBUG``: tracebacks in the CLI and broker traces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

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
