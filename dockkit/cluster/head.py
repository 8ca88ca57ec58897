"""The command a cluster run starts in the head node, built from typed options.

``dockkit run`` on a cluster runs ``python -m dockkit --hosts node0 node1 … script``
inside the head node, forked ready-imported by the head's warm server
(:mod:`dockkit.launch.warm`): the SSH launcher there starts the workers on every node
over the cluster's private network. What the user asked for travels as
:class:`RunOptions`; how the head reaches the nodes is :func:`connect_options`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockkit.launch.warm import ROOT_MODULE, client_args

NODE_SSH_CONFIG = "/root/.ssh/config"  # written into every node by dockkit.cluster.nodes
HEAD = "node0"


@dataclass(frozen=True)
class RunOptions:
    """What a cluster run passes on to the launcher in the head node."""

    env: dict[str, str] = field(default_factory=dict)
    prolog: str | None = None
    max_retries: int = 3
    heartbeat_timeout: float = 10.0
    allow_missing_hosts: bool = False
    progress: bool = False
    debug: bool = False

    def argv(self) -> list[str]:
        """These options as ``python -m dockkit`` flags."""
        argv = ["--max-retries", str(self.max_retries), "--heartbeat-timeout", f"{self.heartbeat_timeout:g}"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        if self.prolog:
            argv += ["--prolog", self.prolog]
        flags = {"--allow-missing-hosts": self.allow_missing_hosts, "--progress": self.progress,
                 "--debug": self.debug}
        return argv + [flag for flag, given in flags.items() if given]


# How the nodes of a cluster reach each other, which decides how a run connects.
BRIDGE = "bridge"  # one engine's private network: the traffic never leaves that machine
OVERLAY = "overlay"  # a swarm's overlay network: one network, spanning machines
ROUTED = "routed"  # separate engines: each node only through the port its engine publishes
NETWORKS = (BRIDGE, OVERLAY, ROUTED)


def connect_options(*, network: str) -> list[str]:
    """How the head's root and the other nodes' workers reach each other.

    The nodes run one image, so the per-host check of Python and dockkit versions is
    moot, and each node's agent comes from its warm agent server. On one engine's bridge
    the workers connect straight to the head, authenticated as every run is, without the
    cost of encryption or of SSH forwards. On a swarm's overlay they connect straight too, but the traffic crosses
    machines: CurveZMQ encrypts it. Between separate engines only the published sshd
    ports reach a node: the traffic goes through SSH tunnels, encrypted.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    reach = {BRIDGE: ["--external-hostname", HEAD, "--no-encrypt"],
             OVERLAY: ["--external-hostname", HEAD],
             ROUTED: ["--tunnel"]}[network]
    return ["--no-host-check", "--warm-agents", *reach, "--ssh-config", NODE_SSH_CONFIG]


def head_command(hosts: list[str], script: str, args, *, workers: int | None,
                 options: RunOptions, network: str, files: int = 0, workdir: str | None = None) -> list[str]:
    """The argv the head node runs for one cluster run.

    ``files``: bytes of the working directory's tar that come first on its stdin, which the
    head's root unpacks and sends on to the other nodes' agents. ``workdir``: where the root
    runs, entered once those files are unpacked (they may bring it)."""
    command = ["--hosts", *hosts, "--", *connect_options(network=network), "--exit-with-stdin", *options.argv()]
    if files:
        command += ["--files-on-stdin", str(files)]
    if workdir:
        command += ["--workdir", workdir]
    if workers is not None:
        command += ["-n", str(workers)]
    return ["python", *client_args(ROOT_MODULE, [*command, script, *args])]
