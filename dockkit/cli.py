"""The ``dockkit`` command: parse, call the SDK, render. Nothing here the SDK can't do.

A :class:`~dockkit.errors.DockkitError` becomes one clear line on stderr and exit
status 1; ``--debug`` (or ``DOCKKIT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import click

from dockkit.errors import ConfigError, DockkitError
from dockkit.runtime.context import current, debug_requested

DEFAULT_CLUSTER = "dockkit"
RUN_CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False,
               "help_option_names": ["-h", "--help"]}


def expand_hosts(argv: list[str], *, interspersed: bool = True) -> list[str]:
    """Turn SCOOP's ``--hosts a b c`` into ``--hosts a --hosts b --hosts c`` for click.

    The host list ends at the next option, at ``--``, or at the script (a token
    ending in ``.py`` or naming an existing file). A ``--`` keeps its usual
    meaning, "what follows is the script and its arguments", and is passed on;
    only a ``--`` that ends a host list and is followed by more dockkit options
    (``--hosts a b -- -n 4 job.py``) is dropped, since it can mean nothing else.
    Nothing after a passed-on ``--`` is touched, nor anything after the script
    unless ``interspersed`` (``dockkit run`` takes its options after the script too).
    """
    out: list[str] = []
    i, seen_script = 0, False
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            return out + argv[i - 1:]
        if token != "--hosts":
            out.append(token)
            if not token.startswith("-") and _looks_like_script(token):
                seen_script = True
                if not interspersed:
                    return out + argv[i:]
            continue
        while i < len(argv) and not argv[i].startswith("-") and not _looks_like_script(argv[i]):
            out += ["--hosts", argv[i]]
            i += 1
        if argv[i:i + 1] == ["--"] and not seen_script and argv[i + 1:i + 2] and argv[i + 1].startswith("-"):
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
                     help="SSH hosts: [user@]host[:N][*count]. A lone :N below 1024 is a worker "
                          "count, from 1024 on an SSH port (b:4 is 4 workers, c:2222 port 2222; "
                          "host:PORT:N or host:PORT*N for both; a port below 1024 as "
                          "ssh://host:port or in ssh_config). End the list with another option or --."),
        click.option("--hostfile", type=click.Path(exists=True, dir_okay=False),
                     help="File of 'host [count]' lines (# comments allowed)."),
        click.option("--launcher", type=click.Choice(["auto", "ssh", "srun"]), default="auto", show_default=True,
                     help="How workers start on hosts: ssh, or srun inside a SLURM job (no SSH between "
                          "nodes). auto: srun in a SLURM job that gives the hosts, else ssh."),
        click.option("--tunnel", is_flag=True, help="Reach the broker through SSH port forwarding."),
        click.option("--external-hostname",
                     help="Address remote workers use to reach this machine (without --tunnel); "
                          "the broker binds it if it is local, else every interface."),
        click.option("--python", "python", help="Python interpreter of the workers (on every host)."),
        click.option("--path", "remote_path", help="Working directory of the workers (on every host)."),
        click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable for workers."),
        click.option("--prolog", help="Shell command run on each host before its workers start."),
        click.option("--ssh-config", type=click.Path(dir_okay=False), help="ssh_config file to use."),
        click.option("--accept-new-host-keys", is_flag=True, help="Accept and record unknown host keys."),
        click.option("--allow-missing-hosts", is_flag=True, help="Go on with the hosts that came up."),
        click.option("--host-check/--no-host-check", default=True, show_default=True,
                     help="Check every host's Python, dockkit and the script before the run; skip it "
                          "only for hosts known to be identical to this one (a cluster's nodes)."),
        click.option("--encrypt/--no-encrypt", default=None,
                     help="CurveZMQ for the run's traffic (default: only where the broker listens "
                          "beyond loopback without --tunnel). --no-encrypt keeps the run's "
                          "authentication: only for a private network no one else reaches."),
        click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Re-runs of a batch whose worker died (0: never run twice)."),
        click.option("--heartbeat-timeout", type=click.FloatRange(min=2, min_open=True), default=10.0,
                     show_default=True,
                     help="Seconds of silence after which a stopped or cut-off worker or host is "
                          "given up on (a running task is never, however long it takes)."),
        click.option("--progress", is_flag=True, help="Show progress bars for futures.map."),
        click.option("--dry-run", is_flag=True,
                     help="Print the plan (hosts, counts, launcher, where the root runs) and exit."),
        # A cluster run's lifeline: stdin's end-of-file (its caller gone) stops the run.
        click.option("--exit-with-stdin", is_flag=True, hidden=True),
        # A cluster run's working directory: the first BYTES of stdin are its tar, which this
        # machine unpacks and each other host's agent receives and unpacks.
        click.option("--files-on-stdin", type=click.IntRange(min=0), default=0, hidden=True, metavar="BYTES"),
        # The directory to run in, entered once those files are unpacked (they may bring it).
        click.option("--workdir", type=click.Path(file_okay=False), hidden=True),
        # The hosts are dockkit nodes: their agents come from each one's warm agent server.
        click.option("--warm-agents", is_flag=True, hidden=True),
        _debug_option(),
        click.argument("script", type=click.Path(dir_okay=False)),
        click.argument("script_args", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _run(workers, hosts, hostfile, launcher, tunnel, external_hostname, python, remote_path, env, prolog,
         ssh_config, accept_new_host_keys, allow_missing_hosts, host_check, encrypt, max_retries,
         heartbeat_timeout, progress, exit_with_stdin, files_on_stdin, workdir, warm_agents, dry_run, script,
         script_args) -> int:
    from dockkit.runner import run_script

    launcher = _choose_launcher(launcher, hosts, hostfile)
    allocation = _allocation_to_use(hosts, hostfile, launcher)
    if dry_run:
        return _print_plan(_plan(workers, hosts, hostfile, tunnel, launcher, allocation))
    if allocation is not None:
        click.echo(f"dockkit: using the {allocation.describe()}", err=True)
        hosts = tuple(allocation.host_words(workers))
    options = {"max_retries": max_retries, "encrypt": encrypt, "heartbeat_timeout": heartbeat_timeout}
    for flag, given in (("--files-on-stdin", files_on_stdin), ("--warm-agents", warm_agents)):
        if given and (launcher == "srun" or not (hosts or hostfile)):
            raise click.UsageError(f"{flag} is for runs over SSH hosts (--hosts or --hostfile)")
    if launcher == "srun":
        if tunnel or ssh_config or accept_new_host_keys:
            raise click.UsageError("--tunnel, --ssh-config and --accept-new-host-keys are for SSH, "
                                   "not --launcher srun")
        options.update(launcher="srun", hosts=list(hosts) or None, hostfile=hostfile,
                       external_hostname=external_hostname, python=python, path=remote_path,
                       env=_parse_env(env), prolog=prolog, allow_missing_hosts=allow_missing_hosts)
    elif hosts or hostfile:
        options.update(hosts=list(hosts) or None, hostfile=hostfile, tunnel=tunnel,
                       external_hostname=external_hostname, python=python, path=remote_path,
                       env=_parse_env(env), prolog=prolog, ssh_config=ssh_config,
                       accept_new_host_keys=accept_new_host_keys,
                       allow_missing_hosts=allow_missing_hosts, check_hosts=host_check,
                       warm_agents=warm_agents)
    elif tunnel or external_hostname or ssh_config:
        raise click.UsageError("--tunnel, --ssh-config and --external-hostname need --hosts or --hostfile")
    else:
        options.update(python=python, path=remote_path, env=_parse_env(env), prolog=prolog)
    return run_script(script, script_args, workers=workers, progress=progress,
                      exit_with_stdin=exit_with_stdin, files_on_stdin=files_on_stdin, workdir=workdir,
                      **options)


def _choose_launcher(choice: str, hosts, hostfile) -> str:
    """``srun`` inside a SLURM job whose hosts are used (auto) or when asked; else ``ssh``."""
    from dockkit.launch.allocation import detect
    from dockkit.launch.srun import in_slurm_job

    if choice == "srun":
        if not in_slurm_job():
            raise click.UsageError("--launcher srun runs inside a SLURM job (sbatch or salloc); "
                                   "outside one, give --hosts and use SSH")
        return "srun"
    if choice == "ssh" or hosts or hostfile or not in_slurm_job():
        return "ssh"
    allocation = detect()
    if allocation is None or allocation.scheduler != "SLURM":
        return "ssh"
    import shutil

    if shutil.which("srun") is None:
        click.echo("dockkit: no srun on PATH in this SLURM job: starting workers over SSH", err=True)
        return "ssh"
    return "srun"


def _plan(workers, hosts, hostfile, tunnel, launcher, allocation):
    from dockkit.plan import hosts_plan, local_plan

    if hosts or hostfile:
        source = " ".join(hosts) + (f" (and hostfile {hostfile})" if hostfile else "") if hosts else \
            f"hostfile {hostfile}"
        return hosts_plan(hosts, hostfile, workers, source=source, tunnel=tunnel, launcher=launcher)
    if allocation is not None:
        return hosts_plan(allocation.host_words(workers), None, workers, source=allocation.describe(),
                          tunnel=tunnel, launcher=launcher)
    return local_plan(workers)


def _print_plan(plan) -> int:
    click.echo("\n".join(plan.lines()))
    return 0


def _in_allocation() -> bool:
    from dockkit.launch.allocation import named

    return named() is not None


def _allocation_to_use(hosts, hostfile, launcher):
    """Inside a SLURM, PBS or SGE job, its allocation, unless --hosts or --hostfile says otherwise.

    Given hosts win with a note, and the allocation is then not read: a malformed one is
    no reason to refuse hosts that work. None outside a job.
    """
    from dockkit.launch.allocation import detect, named
    from dockkit.launch.srun import job_allocation

    if hosts or hostfile:
        allocation = named()
        if allocation is not None:
            click.echo(f"dockkit: --hosts/--hostfile given: not using the {allocation}", err=True)
        return None
    return job_allocation() if launcher == "srun" else detect()


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
    # python -m dockkit passes everything after the script to it; dockkit run reads on
    argv = expand_hosts(list(sys.argv[1:] if argv is None else argv), interspersed=command is not module_run)
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DockkitError as exc:
        if debug_requested():  # --debug, parsed by click: never a script's own
            raise
        click.echo(f"dockkit: error: {exc}", err=True)
        sys.exit(1)


def _debug_on(ctx, param, value) -> bool:
    if value:
        os.environ["DOCKKIT_DEBUG"] = "1"  # read by the broker, the workers and the error handler
        current().debug = True  # this process's context was made before the option was read
    return value


def _debug_option():
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_on,
                        help="Show tracebacks and broker traces (also DOCKKIT_DEBUG=1).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dockkit")
@_debug_option()
def cli():
    """Spread an ordinary Python map over many cores, SSH hosts and Docker containers.

    `dockkit --debug COMMAND` shows tracebacks instead of one-line errors, for every command.
    """


@cli.command(context_settings={**RUN_CONTEXT, "allow_interspersed_args": True})
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True, help="Cluster to run on, if it is up.")
@click.option("--local", is_flag=True, help="Run on local workers even if a cluster is up.")
@click.option("--max-upload", type=click.IntRange(min=1), default=200, show_default=True,
              help="MB of working directory a cluster run may copy to the nodes.")
@click.option("--fetch/--no-fetch", default=True, show_default=True,
              help="Bring back the files a cluster run created or changed in the head node.")
@click.option("--max-fetch", type=click.IntRange(min=1), default=200, show_default=True,
              help="MB of outputs a cluster run may bring back; past it, nothing is fetched.")
@run_options
def run(name, local, max_upload, fetch, max_fetch, **options):
    """Run SCRIPT with its tasks on dockkit workers; exit with the script's status.

    dockkit's options may come before or after SCRIPT (`dockkit run job.py -n 16`);
    every other argument goes to the script, and so does everything after `--`.
    On a cluster that is up (`dockkit up`), the working directory is copied to every
    node, the script runs from the head node over all nodes, and the files it created
    or changed there come back here (--no-fetch to skip); otherwise the tasks run on
    local workers, or on --hosts over SSH.
    """
    from dockkit.cluster.state import load_state

    on_hosts = bool(options["hosts"] or options["hostfile"]) or _in_allocation()
    cluster_up = not on_hosts and load_state(name) is not None
    if cluster_up and not local and options["dry_run"]:
        from dockkit.cluster.cluster import Cluster
        from dockkit.plan import cluster_plan

        sys.exit(_print_plan(cluster_plan(Cluster(name=name), options["workers"])))
    if cluster_up and not local:
        sys.exit(_run_on_cluster(name, upload_limit=max_upload * 1_000_000, fetch=fetch,
                                 fetch_limit=max_fetch * 1_000_000, **options))
    if (not on_hosts and (cluster_up or not local) and not options["dry_run"] and options["launcher"] != "srun"
            and os.path.isfile(options["script"])):
        # (a missing script gets its one-line error from run_script, without this note;
        # --local with no cluster up is just what the user asked for: no note; srun never
        # runs on local workers)
        note = (f"--local: running on local workers, not on cluster {name!r}" if cluster_up
                else f"no cluster {name!r} is up; running on local workers")
        click.echo(f"dockkit: {note}", err=True)
    sys.exit(_run(**options))


# Spellings of the options whose parameter names differ from their flags.
_FLAGS = {"remote_path": "--path", "encrypt": "--encrypt/--no-encrypt"}


def _run_on_cluster(name, *, upload_limit, fetch, fetch_limit, workers, env, prolog,
                    allow_missing_hosts, max_retries, heartbeat_timeout, progress, script, script_args,
                    tunnel, hosts, hostfile, host_check, exit_with_stdin, dry_run, launcher, **others) -> int:
    """``dockkit run`` on a cluster that is up: parse, check, and call :meth:`Cluster.run`.

    Every other option given (--python, --path, --ssh-config, --external-hostname,
    --accept-new-host-keys, --encrypt, and any added later) is refused, never dropped: a
    cluster's nodes have one interpreter, the script's own path, pinned keys, their own
    ssh_config, and traffic between them that dockkit secures itself.
    """
    from dockkit.cluster.cluster import Cluster

    given = [_FLAGS.get(key, f"--{key.replace('_', '-')}") for key, value in others.items()
             if value or (key == "encrypt" and value is not None)]  # --no-encrypt is False
    given += ["--launcher srun"] if launcher == "srun" else []  # a cluster's head starts its nodes over SSH
    if given:
        raise ConfigError(f"{', '.join(given)}: not for a run on cluster {name!r} (its nodes run "
                          "the image's Python at the script's own path, with keys and an ssh_config "
                          "of their own); leave it out, or add --local")
    # hosts, hostfile and dry_run were handled before this call; --exit-with-stdin is internal
    unneeded = [flag for flag, given in (("--tunnel", tunnel), ("--no-host-check", not host_check)) if given]
    if unneeded:  # said, not refused: what they ask for, a cluster does already
        click.echo(f"dockkit: {', '.join(unneeded)}: not needed on cluster {name!r}, which chooses how "
                   "its nodes connect and pins their host keys; ignored", err=True)
    return Cluster(name=name).run(
        script, script_args, workers=workers, upload_limit=upload_limit, env=_parse_env(env),
        prolog=prolog, max_retries=max_retries, heartbeat_timeout=heartbeat_timeout,
        allow_missing_hosts=allow_missing_hosts, progress=progress, debug=debug_requested(), fetch=fetch,
        fetch_limit=fetch_limit)


def _console():
    from rich.console import Console

    return Console()


def _node_table(cluster) -> None:
    from rich.table import Table

    nodes = cluster.status()
    on_swarm = any(node.swarm_node for node in nodes)
    table = Table(title=f"cluster {cluster.name}{' (swarm)' if on_swarm else ''}", title_justify="left")
    columns = ("node", "docker host", *(("swarm node",) if on_swarm else ()), "container", "state", "address",
               "workers")
    for column in columns:
        table.add_column(column)
    for node in nodes:
        style = "green" if node.state == "running" else "red"
        # a swarm node whose engine was not given: its node is reached through its sshd
        table.add_row(node.name, node.docker_host or "(via its sshd)", *((node.swarm_node,) if on_swarm else ()),
                      node.container, f"[{style}]{node.state}[/]", f"{node.address}:{node.port}", str(node.workers))
    _console().print(table)


@cli.command()
@click.option("--nodes", type=click.IntRange(min=1, max=256), default=3, show_default=True)
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.option("--workers-per-node", type=click.IntRange(min=1), default=None,
              help="Workers per node (default: the node's CPU count).")
@click.option("--cpus", type=click.FloatRange(min=0, min_open=True), default=None,
              help="CPU limit per node (default: none).")
@click.option("--memory", default=None, help="Memory limit per node, e.g. 2g.")
@click.option("--docker-host", "docker_hosts", multiple=True,
              help="Docker Engine: URL (ssh://user@host, unix://, tcp://) or context name; repeat to spread nodes.")
@click.option("--base-image", default=None, help="Base image for the worker image.")
@click.option("--requirements", type=click.Path(exists=True, dir_okay=False), default=None,
              help="pip requirements baked into the worker image.")
@click.option("--ready-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds a node may take until key login works.")
@click.option("--volume", "volumes", multiple=True, metavar="HOST_PATH:NODE_PATH[:ro]",
              help="Data for every node without copying: a bind mount on this machine's engine, "
                   "a named volume (fill it with `dockkit cp`) on a remote one. Repeatable.")
@click.option("--swarm", is_flag=True,
              help="Nodes as Docker Swarm services: the first --docker-host is the swarm's manager, "
                   "the others the engines of the swarm nodes to use.")
@click.option("--registry", default=None, metavar="HOST:PORT",
              help="With --swarm: push the image here from the manager's engine; the swarm nodes pull it.")
def up(nodes, name, workers_per_node, cpus, memory, docker_hosts, base_image, requirements, ready_timeout,
       volumes, swarm, registry):
    """Start a cluster of NODES identical SSH worker containers (or scale one)."""
    import time

    from dockkit.cluster.cluster import Cluster

    started = time.perf_counter()
    cluster = Cluster(nodes, name=name, workers_per_node=workers_per_node, cpus=cpus, memory=memory,
                      docker_hosts=docker_hosts or None, base_image=base_image,
                      requirements=requirements, volumes=volumes, ready_timeout=ready_timeout,
                      swarm=swarm, registry=registry).up()
    _node_table(cluster)
    click.echo(f"dockkit: cluster {name!r} ready in {time.perf_counter() - started:.1f} s; "
               f"ssh_config: {cluster.ssh_config_path}", err=True)


@cli.command()
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.option("--docker-host", "docker_hosts", multiple=True, help="Also clean this Docker Engine.")
@click.option("--forget-unreachable", is_flag=True,
              help="For an engine gone for good: clean the engines that answer, then forget the "
                   "cluster anyway (what it had on the others stays there).")
def down(name, docker_hosts, forget_unreachable):
    """Remove the cluster's containers, network, keys and state (idempotent)."""
    from dockkit.cluster.cluster import Cluster

    cluster = Cluster(name=name, docker_hosts=docker_hosts or None)
    removed = cluster.down(forget_unreachable=forget_unreachable)
    click.echo(f"dockkit: cluster {name!r} is down ({removed} container(s) removed)", err=True)


@cli.command()
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
def status(name):
    """Show the cluster's nodes."""
    from dockkit.cluster.cluster import Cluster

    _node_table(Cluster(name=name))


@cli.command(context_settings={**RUN_CONTEXT, "allow_interspersed_args": True})
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name, node, command):
    """Open a shell on NODE (or run COMMAND) through the generated ssh_config."""
    import shutil

    from dockkit.cluster.cluster import Cluster

    argv = Cluster(name=name).ssh_argv(node, command)
    if shutil.which("ssh") is None:
        raise click.ClickException("no `ssh` client here: install OpenSSH's client, or use "
                                   f"`dockkit exec {node} CMD`")
    os.execvp("ssh", argv)


@cli.command(name="exec", context_settings=RUN_CONTEXT)
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name, node, command):
    """Run COMMAND in NODE's container; exit with its status."""
    from dockkit.cluster.cluster import Cluster

    sys.exit(Cluster(name=name).exec(node, list(command)))


@cli.command()
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.option("--tail", type=click.IntRange(min=0), default=100, show_default=True,
              help="Lines per node.")
def logs(name, tail):
    """Show the last lines of every node's log."""
    from dockkit.cluster.cluster import Cluster

    for node, text in Cluster(name=name).logs(tail).items():
        click.echo(f"==> {node} <==")
        click.echo(text.rstrip())


@cli.command()
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.argument("source")
@click.argument("destination")
def cp(name, source, destination):
    """Copy files between this machine and a cluster's nodes, either way.

    A node's side is NODE:PATH (node1:/data); all:PATH copies to every node, or gathers
    every node's copy under DESTINATION/<node>/. A relative PATH on a node is taken from
    this directory, which cluster runs mirror at the same path. Directories are copied whole.
    """
    from dockkit.cluster.cluster import Cluster
    from dockkit.cluster.copying import NodePath, parse_location

    src, dest = parse_location(source), parse_location(destination)
    cluster = Cluster(name=name)
    if isinstance(src, NodePath) and not isinstance(dest, NodePath):
        landed = [str(path) for path in cluster.copy_from(src.node, src.path, dest)]
    elif isinstance(dest, NodePath) and not isinstance(src, NodePath):
        landed = cluster.copy_to(src, dest.node, dest.path)
    else:
        raise ConfigError(f"cp {source} {destination}: one side must be NODE:PATH and the other a "
                          "path here (node to node: copy through this machine)")
    click.echo(f"dockkit: copied {source} to {', '.join(landed)}", err=True)


@cli.group()
def image():
    """Build and list the worker image."""


@image.command(name="build")
@click.option("--base-image", default=None)
@click.option("--requirements", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--docker-host", default=None)
def image_build(base_image, requirements, docker_host):
    """Build the worker image (only if its inputs changed) and print its tag."""
    from dockkit.cluster.engine import docker_client
    from dockkit.cluster.image import ensure_worker_image

    log = lambda message: click.echo(message, err=True)  # noqa: E731
    click.echo(ensure_worker_image(docker_client(docker_host), base_image=base_image,
                                   requirements=requirements, log=log))


@image.command(name="ls")
@click.option("--docker-host", default=None)
def image_ls(docker_host):
    """List dockkit's images."""
    from rich.table import Table

    from dockkit.cluster.engine import docker_client
    from dockkit.cluster.image import list_images

    table = Table()
    for column in ("image", "id", "size", "created"):
        table.add_column(column)
    for row in list_images(docker_client(docker_host)):
        table.add_row(row.tag, row.id, f"{row.size / 1e6:.0f} MB", row.created[:19])
    _console().print(table)


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


if __name__ == "__main__":
    main()
