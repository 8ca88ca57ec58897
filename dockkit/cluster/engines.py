"""Work over several Docker Engines of which some may be gone.

Why: a cluster spread over engines must still be taken down when one machine died;
one dead engine must neither stop the cleanup of the others nor pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dockkit.errors import DockerError, EngineGoneError

__all__ = ["on_each_engine"]


def on_each_engine(hosts: Iterable[str], action: Callable[[str], int], what: str,
                   gone: dict[str, str] | None = None) -> int:
    """Run ``action(host)`` on every engine, even after one fails; sum what it returns.

    Args:
        hosts: The engines, as given in ``docker_hosts``.
        action: Does the work on one engine and returns a count (e.g. containers removed).
        what: What the action does, for the message (``"removing cluster c1"``).
        gone: Engines that failed an earlier pass, with their reason: skipped here (a dead
            engine costs a connection timeout each time it is tried) and named in the error.

    Returns:
        The sum of the counts.

    Raises:
        EngineGoneError: Some engines failed; the message names each with its reason,
            and ``removed`` holds the sum over the engines that answered.
    """
    total, gone = 0, dict(gone or {})
    for host in hosts:
        if host in gone:
            continue
        try:
            total += action(host)
        except DockerError as exc:
            gone[host] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if gone:
        names = "; ".join(reason if host in reason else f"{host}: {reason}" for host, reason in gone.items())
        raise EngineGoneError(f"{what}: {len(gone)} Docker Engine(s) did not answer ({names}); "
                              f"the others are done ({total} container(s) removed). Bring the "
                              "engine back and run the command again to finish (for `down`: "
                              "--forget-unreachable if it is gone for good)", list(gone), total)
    return total
