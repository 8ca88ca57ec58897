"""Running a user's script: the root part here, its tasks on local or SSH workers.

``run_script`` is what ``dockkit run`` and ``python -m dockkit`` do: it runs the
script as ``__main__`` in this process, with ``dockkit.futures`` wired to an
executor whose workers import the same script under a non-main name. The exit
status is the script's: its ``sys.exit`` code, 1 on an uncaught exception, 130
on Ctrl-C; every worker is stopped before returning.
"""

from __future__ import annotations

import faulthandler
import io
import os
import runpy
import signal
import sys
import threading
import time

from dockkit.runtime.context import current
from dockkit.errors import ConfigError
from dockkit.executor import configure_default, shutdown_default, start_default_early
from dockkit.launch.hosts import read_hosts


def run_script(script: str, argv=(), *, workers: int | None = None, progress: bool = False,
               exit_with_stdin: bool = False, files_on_stdin: int = 0, workdir: str | None = None,
               **executor_options) -> int:
    """Run ``script`` with ``argv`` on dockkit workers and return its exit status.

    Args:
        script: path of the Python script to run as ``__main__``.
        argv: the script's own arguments.
        workers: total number of worker processes (``-n``).
        progress: show progress bars for ``futures.map`` on a terminal.
        exit_with_stdin: stop the run, as Ctrl-C does, when stdin reaches end-of-file
            (a cluster run's tie to the ``dockkit run`` that started it).
        files_on_stdin: the first this many bytes of stdin are the run's files, a tar whose
            members carry their paths from ``/``: unpacked here first, then sent on to the
            SSH hosts' agents (see :class:`~dockkit.launch.ssh.launcher.SSHLauncher`'s ``files``).
        workdir: the directory to run in, entered once the files are unpacked (they may
            bring it).
        **executor_options: hosts, tunnel, max_retries … for :class:`dockkit.Executor`.

    Raises:
        ConfigError: the script does not exist, the files do not unpack, or ``workdir``
            cannot be entered.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    if files_on_stdin:  # before the lifeline below reads stdin for its end
        executor_options["files"] = _unpack_here(_read_exactly(sys.stdin.fileno(), files_on_stdin))
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise ConfigError(f"cannot run in {workdir!r}: {exc.strerror}") from None
    if not os.path.isfile(script):
        raise ConfigError(f"script not found: {script!r} (run it from the directory that holds it, "
                          "or give its path)")
    if executor_options.get("hosts") or executor_options.get("hostfile"):
        # checked now, not at the script's first futures call after its own work
        read_hosts(executor_options.get("hosts"), executor_options.get("hostfile"))
    # every worker takes part from the first task on, as `-n N` promises
    configure_default(workers=workers, main=script, argv=list(argv), wait_for_workers=True,
                      **executor_options)
    start_default_early()  # the workers start while the script imports, as SCOOP's do
    if exit_with_stdin:
        threading.Thread(target=_interrupt_at_end_of_stdin, name="dockkit-lifeline", daemon=True).start()
    current().progress = progress
    current().launched = True
    _whole_lines(sys.stdout, sys.stderr)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(os.path.abspath(script), run_name="__main__")  # __file__ as python sets it
        return 0
    except SystemExit as exc:
        return _exit_status(exc.code)
    except KeyboardInterrupt:
        print("dockkit: interrupted; stopping every worker", file=sys.stderr)
        return 130
    except BaseException as exc:  # the script's own failure: show it as Python would, exit 1
        print_script_error(exc, script)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        current().launched = False
        sys.stdout.flush()
        shutdown_default(wait=False)
        configure_default()


def print_script_error(exc: BaseException, script: str) -> None:
    """Print ``exc`` as ``python script.py`` would: from the script's first frame on.

    With no frame of the script (a SyntaxError found while compiling it), only the
    error is printed, as Python does.
    """
    from dockkit.runtime.serialize import format_script_error

    print(format_script_error(exc, script), end="", file=sys.stderr)


def _interrupt_at_end_of_stdin(grace: float = 15.0) -> None:
    """Ctrl-C this run when stdin ends; if it has not stopped ``grace`` seconds later, end it."""
    # The raw descriptor, not sys.stdin: a thread blocked inside a buffered read holds its
    # lock, and the interpreter's shutdown at the run's normal end would abort on it.
    while os.read(sys.stdin.fileno(), 65536):
        pass
    print("dockkit: the dockkit run that started this run is gone; stopping", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(grace)
    os._exit(130)


def _unpack_here(files: bytes) -> bytes:
    """Unpack the run's files on this machine (a cluster's head); returns them for the other hosts."""
    import tarfile

    from dockkit.launch.agent import UNPACKED_RECORD, unpack_tar

    try:
        unpack_tar(files, record=UNPACKED_RECORD)
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError(f"could not unpack the run's files here: {exc}") from None
    return files


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; raises ConfigError if it ends first."""
    chunks, got = [], 0
    while got < size and (chunk := os.read(fd, min(size - got, 1 << 20))):
        chunks.append(chunk)
        got += len(chunk)
    if got < size:
        raise ConfigError(f"--files-on-stdin {size}: stdin ended after {got} bytes")
    return b"".join(chunks)


def _whole_lines(*streams) -> None:
    """Pass the script's own output on a line at a time, as on a terminal.

    Workers' lines are relayed whole into the same buffers. ``print`` writes a text and
    its newline apart, and with PYTHONUNBUFFERED each write went straight on, so a
    relayed line could land in the middle of one of the script's own lines.
    """
    for stream in streams:
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
