"""Read-only constants broadcast once to every worker (SCOOP's ``shared``).

``setConst`` sends the values through the broker once; every worker, including
those that join later, receives them before its next task, so tasks don't carry
them. A task may set constants too, as in SCOOP: they reach every worker and the
root. Constants are read-only: setting a name twice is an error.
"""

from __future__ import annotations

from dockkit.runtime.context import add_constants, check_new_constants, current

__all__ = ["setConst", "getConst"]


def setConst(**values) -> None:  # noqa: N802 - SCOOP's name
    """Broadcast ``values`` to every worker and the root; from the root or inside a task.

    Raises:
        ConstantRedefinedError: a name was already set (a TypeError, as in SCOOP, and a
            ConfigError).
    """
    context = current()
    check_new_constants(values, context.constants)
    if context.client is not None:  # inside a task: through this worker's own connection
        context.client.set_constants(values)
    else:
        from dockkit.executor import default_executor

        default_executor().set_constants(values)
    add_constants(values)


def getConst(name: str, timeout: float | None = 0.1, default=None):  # noqa: N802 - SCOOP's name
    """The value of constant ``name``; waits up to ``timeout`` seconds for it to arrive.

    In the root as in tasks, the wait ends as soon as the constant arrives, from a
    ``setConst`` in a task still running, say. ``timeout=None`` waits as long as it
    takes; 0 or a negative timeout does not wait (as in SCOOP, whose ``-1`` means
    "block" for ``futures.wait`` only).

    Returns:
        The constant, or ``default`` (None, as in SCOOP) if it has not arrived in
        time; pass another default to tell a constant that is None from one that never came.
    """
    context = current()
    if name not in context.constants:
        context.wait_for_constants(lambda: name in context.constants, timeout)
    return context.constants.get(name, default)
