"""Every public dockkit exception. Catch ``DockkitError`` to catch them all.

Each failure domain has one subclass; where the standard library already has a
meaning for the failure (a broken executor, a bad value, a timeout) the class
derives from that too, so code written for ``concurrent.futures`` keeps working.
Third-party errors (paramiko, docker-py, zmq) are translated into these at the
module that talks to the library, never further up.
"""

from __future__ import annotations

import concurrent.futures


class DockkitError(Exception):
    """Root of every dockkit error."""


class ConfigError(DockkitError, ValueError):
    """Bad input from the user: an option, a host spec, a hostfile line."""


class ConstantRedefinedError(ConfigError, TypeError):
    """A shared constant was set twice. A TypeError too, as SCOOP raises for it."""


class HostSpecError(ConfigError):
    """A host spec or hostfile line that cannot be parsed."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        where = f"{source}:{line}: " if source and line else (f"line {line}: " if line else "")
        super().__init__(where + message)
        self.source = source
        self.line = line


class AllocationError(ConfigError):
    """A batch scheduler's allocation (SLURM, PBS, SGE variables or files) that cannot be read."""


class SerializationError(DockkitError, TypeError):
    """A function, argument or result that cannot be pickled or unpickled."""


class UnguardedScriptError(DockkitError, RuntimeError):
    """A script started tasks at its top level while a worker imported it for its definitions.

    Workers import the script under a non-main name, as multiprocessing's spawn does; its
    main code belongs under ``if __name__ == "__main__":``. Raised instead of a run that
    would wait forever on workers that are all busy importing.
    """


class RemoteError(DockkitError):
    """A task failed with an exception that could not be sent back as itself.

    ``remote_traceback`` holds the text of the original traceback.
    """

    def __init__(self, message: str, remote_traceback: str = ""):
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        return type(self), (self.args[0], self.remote_traceback)


class WorkerLostError(DockkitError):
    """A task's worker died more times than the retry limit allows."""


class BrokenExecutor(DockkitError, concurrent.futures.BrokenExecutor):
    """The executor lost its broker or every worker and cannot run tasks."""


class TimeoutError(DockkitError, concurrent.futures.TimeoutError):  # noqa: A001 - same name on purpose
    """A wait, a result or a readiness check ran out of time."""


class ProtocolError(DockkitError):
    """A peer spoke a different protocol version or sent a malformed message."""


class LaunchError(DockkitError):
    """Workers could not be started on one or more hosts.

    ``failures`` maps a host name to the reason it failed.
    """

    def __init__(self, message: str, failures: dict[str, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


class SSHError(LaunchError):
    """An SSH connection, authentication or command failed."""


class HostKeyError(SSHError):
    """A host presented an unknown or changed host key."""


class DockerError(DockkitError):
    """The Docker Engine is missing, refused us, or failed an operation."""


class ImageError(DockerError):
    """The worker image could not be built or its base could not be found."""


class ClusterError(DockerError):
    """A cluster operation failed: name taken, node never ready, port in use."""


class EngineGoneError(DockerError):
    """One or more Docker Engines of a cluster stopped answering; the others were dealt with.

    Attributes:
        engines: The engines (as given in ``docker_hosts``) that did not answer.
        removed: How many containers were removed on the engines that did.
    """

    def __init__(self, message: str, engines: list[str], removed: int = 0):
        super().__init__(message)
        self.engines = list(engines)
        self.removed = removed
