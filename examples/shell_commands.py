"""Run shell commands or programs in parallel on the workers; collect exit codes and output.

Each task runs one command with ``subprocess.run`` on whichever worker takes it
(a local process, an SSH host or a cluster node) and returns the host, the exit
status and the output; a failing command is a result, not an error, and one that
outlives ``--timeout`` is killed and reported as such. The commands come from
the arguments, or a small demo list when none are given.

    dockkit run examples/shell_commands.py -n 4
    dockkit run examples/shell_commands.py -n 4 -- "gzip -9k data/a.bin" "./simulate --seed 3"
    dockkit up && dockkit run examples/shell_commands.py -- "nproc" "df -h /"

It prints one line per command, in the order given, then how many failed. The
exit status is 1 if any of your commands failed (two of the demo's fail on
purpose; the demo exits 0).
"""

import argparse
import os
import signal
import socket
import subprocess
import sys

from dockkit import futures

DEMO = (
    "echo hello from $(hostname)",
    "python3 -c 'import sys; print(sys.version.split()[0])'",
    "printf '%s\\n' c b a | sort | head -n 1",
    "ls /no/such/path",
    "exit 3",
)


def run(command: str, timeout: float) -> dict:
    """Run ``command`` in a shell here; its host, exit status and output (stderr included)."""
    # A session of its own, so a timeout kills the whole pipeline, not just the shell.
    with subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, start_new_session=True) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
            status = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            status, output = None, f"killed after {timeout} s"
    return dict(host=socket.gethostname(), command=command, status=status, output=output.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="*", default=DEMO, help="shell commands (quote each)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    args = parser.parse_args()

    results = list(futures.map(run, args.commands, [args.timeout] * len(args.commands)))
    for result in results:
        status = "timeout" if result["status"] is None else f"exit {result['status']}"
        first_line = result["output"].splitlines()[0] if result["output"] else ""
        print(f"[{status}] {result['host']}: {result['command']} -> {first_line}")
    failed = sum(result["status"] != 0 for result in results)
    print(f"{len(results)} commands, {failed} failed")
    return 1 if failed and args.commands is not DEMO else 0


if __name__ == "__main__":
    sys.exit(main())
