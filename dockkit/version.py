"""dockkit's version, in a module of its own that imports nothing.

Every layer may read it (the SSH launcher compares it with each host's) without
importing the package's public face, :mod:`dockkit`, which re-exports it.
"""

__version__ = "0.1.0"
