"""The ``dockkit`` command: parse, call the SDK, render. Nothing here the SDK can't do.

A :class:`~dockkit.errors.DockkitError` becomes one clear line on stderr and exit
status 1; ``--debug`` (or ``DOCKKIT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import click

from .errors import DockkitError

RUN_CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False,
               "help_option_names": ["-h", "--help"]}


def expand_hosts(argv: list[str]) -> list[str]:
    """Turn SCOOP's ``--hosts a b c`` into ``--hosts a --hosts b --hosts c`` for click.

    The host list ends at the next option, at ``--``, or at the script (a token
    ending in ``.py`` or naming an existing file).
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token != "--hosts":
            continue
        out.pop()
        while i < len(argv) and not argv[i].startswith("-") and not _looks_like_script(argv[i]):
            out += ["--hosts", argv[i]]
            i += 1
        if i < len(argv) and argv[i] == "--":
            i += 1
    return out


def _looks_like_script(token: str) -> bool:
    return token.endswith(".py") or os.path.isfile(token)


def run_options(function):
    """The options shared by ``dockkit run`` and ``python -m dockkit``."""
    options = [
        click.option("-n", "--workers", type=click.IntRange(min=1), default=None,
                     help="Total number of worker processes (default: CPU count, or the hosts' counts)."),
        click.option("--hosts", "hosts", multiple=True, metavar="HOST...",
                     help="SSH hosts: [user@]host[:port][*count]; end the list with another option or --."),
        click.option("--hostfile", type=click.Path(exists=True, dir_okay=False),
                     help="File of 'host [count]' lines (# comments allowed)."),
        click.option("--tunnel", is_flag=True, help="Reach the broker through SSH port forwarding."),
        click.option("--external-hostname", help="Address remote workers use to reach this machine."),
        click.option("--python", "python", help="Python interpreter on the remote hosts."),
        click.option("--path", "remote_path", help="Working directory on the remote hosts."),
        click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable for workers."),
        click.option("--prolog", help="Shell command run on each host before its workers start."),
        click.option("--ssh-config", type=click.Path(dir_okay=False), help="ssh_config file to use."),
        click.option("--accept-new-host-keys", is_flag=True, help="Accept and record unknown host keys."),
        click.option("--allow-missing-hosts", is_flag=True, help="Go on with the hosts that came up."),
        click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Re-runs of a batch whose worker died (0: never run twice)."),
        click.option("--progress", is_flag=True, help="Show progress bars for futures.map."),
        click.option("--debug", is_flag=True, help="Show tracebacks and broker traces."),
        click.argument("script", type=click.Path(dir_okay=False)),
        click.argument("script_args", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _run(workers, hosts, hostfile, tunnel, external_hostname, python, remote_path, env, prolog,
         ssh_config, accept_new_host_keys, allow_missing_hosts, max_retries, progress, debug,
         script, script_args) -> int:
    from .launcher import run_script

    if debug:
        os.environ["DOCKKIT_DEBUG"] = "1"
    options = {"max_retries": max_retries}
    if hosts or hostfile:
        options.update(hosts=list(hosts) or None, hostfile=hostfile, tunnel=tunnel,
                       external_hostname=external_hostname, python=python, path=remote_path,
                       env=_parse_env(env), prolog=prolog, ssh_config=ssh_config,
                       accept_new_host_keys=accept_new_host_keys,
                       allow_missing_hosts=allow_missing_hosts)
    elif tunnel or external_hostname or python or remote_path or prolog or ssh_config:
        raise click.UsageError("--tunnel, --python, --path, --prolog, --ssh-config and "
                               "--external-hostname need --hosts or --hostfile")
    elif env:
        os.environ.update(_parse_env(env))
    return run_script(script, script_args, workers=workers, progress=progress, **options)


def _parse_env(pairs) -> dict:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--env")
        env[key] = value
    return env


def _invoke(command: click.Command, argv, prog_name: str) -> None:
    """Run a click command; a DockkitError becomes one line and exit status 1."""
    argv = expand_hosts(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in argv or bool(os.environ.get("DOCKKIT_DEBUG"))
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DockkitError as exc:
        if debug:
            raise
        click.echo(f"dockkit: error: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dockkit")
def cli():
    """Spread an ordinary Python map over many cores, SSH hosts and Docker containers."""


@cli.command(context_settings=RUN_CONTEXT)
@run_options
def run(**options):
    """Run SCRIPT with its tasks on dockkit workers; exit with the script's status."""
    sys.exit(_run(**options))


@click.command(context_settings=RUN_CONTEXT)
@run_options
def module_run(**options):
    """python -m dockkit [-n N] [--hosts ...] SCRIPT [ARGS]: run SCRIPT on dockkit workers."""
    sys.exit(_run(**options))


def main(argv=None) -> None:
    """Entry point of the ``dockkit`` command."""
    _invoke(cli, argv, "dockkit")


def python_m_main(argv=None) -> None:
    """Entry point of ``python -m dockkit``: SCOOP's ``python -m scoop`` form."""
    _invoke(module_run, argv, "python -m dockkit")
