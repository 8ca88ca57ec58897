"""A rich progress bar around a result iterator, shown only on a terminal."""

from __future__ import annotations

import sys

from dockkit.runtime.batching import known_length


def track(results, iterables, description: str = "dockkit map"):
    """Yield from ``results`` while advancing a progress bar on stderr, if it is a terminal.

    The total is known when the inputs have a length.
    """
    if not sys.stderr.isatty():
        yield from results
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    total = known_length(iterables)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True,
                  console=Console(stderr=True)) as progress:  # stderr: stdout is the script's
        task = progress.add_task(description, total=total)
        for count, value in enumerate(results, 1):
            yield value
            if count % 64 == 0 or count == total:
                progress.update(task, completed=count)
