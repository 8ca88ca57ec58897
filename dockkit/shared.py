"""Read-only constants broadcast once to every worker (SCOOP's ``shared``).

``setConst`` sends the values through the broker once; every worker, including
those that join later, receives them before its next task, so tasks don't carry
them. Constants are read-only: setting a name twice is an error.
"""

from __future__ import annotations

from dockkit.runtime.context import current
from dockkit.errors import ConfigError

__all__ = ["setConst", "getConst"]


def setConst(**values) -> None:  # noqa: N802 - SCOOP's name
    """Broadcast ``values`` to every worker. Call it from the root, before the tasks that use them.

    Raises:
        ConfigError: a name was already set, or this is called inside a task.
    """
    context = current()
    if context.role != "root":
        raise ConfigError("setConst() is for the root process; tasks can only read constants")
    taken = sorted(set(values) & set(context.constants))
    if taken:
        raise ConfigError(f"shared constants are read-only; already set: {', '.join(taken)}")
    from dockkit.executor import default_executor

    default_executor().set_constants(values)
    context.constants.update(values)


def getConst(name: str, timeout: float | None = 0.1, default=None):  # noqa: N802 - SCOOP's name
    """The value of constant ``name``; waits up to ``timeout`` seconds for it to arrive.

    Returns ``default`` (None, as in SCOOP) if it has not arrived in time; pass another
    default to tell a constant that is None from one that never came.
    """
    context = current()
    if name not in context.constants and context.wait_for_constants is not None:
        context.wait_for_constants(lambda: name in context.constants, timeout)
    return context.constants.get(name, default)
