"""Who may talk to the broker: the run's credentials, and the ZAP handler that checks them.

On loopback (local runs, and ``--tunnel``, whose traffic SSH encrypts) peers send
the run's secret with ZeroMQ PLAIN, which costs nothing per message. Where the
broker binds an address other hosts reach directly, the secret would cross the
network in the clear, so the run uses CurveZMQ instead (encrypted, about ten
times slower): one key pair for the broker and one for all the run's peers. The
broker's own ZAP handler admits that client key only; a CURVE server without
such a check admits any key. Peers get their credentials in the configuration
on their stdin, never on a command line, and never the broker's secret key.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

import zmq
from zmq.utils import z85

from dockkit.runtime import protocol as P

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq sends a context's ZAP requests (RFC 27)


def new_curve_keys() -> dict:
    """A run's CurveZMQ keys (Z85 text): the broker's key pair and its peers' one key pair."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return {"server_public": server_public.decode(), "server_secret": server_secret.decode(),
            "client_public": client_public.decode(), "client_secret": client_secret.decode()}


def peer_curve_keys(keys: dict) -> dict:
    """What a peer needs of the run's keys: never the broker's secret key."""
    return {k: keys[k] for k in ("server_public", "client_public", "client_secret")}


def binds_loopback_only(host: str) -> bool:
    """Whether a broker bound to ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def join_as_peer(socket: zmq.Socket, *, secret: str, curve: dict | None) -> None:
    """Give a peer's socket the run's credentials (before connect): CurveZMQ keys, else PLAIN."""
    if curve:
        socket.curve_serverkey = curve["server_public"].encode()
        socket.curve_publickey = curve["client_public"].encode()
        socket.curve_secretkey = curve["client_secret"].encode()
    else:
        socket.plain_username = P.AUTH_USER
        socket.plain_password = secret.encode()


class Gatekeeper:
    """Makes a ROUTER the run's server and answers the ZAP requests of its context.

    Args:
        context: the broker's context; the ZAP socket must exist before any peer connects.
        secret: the run's password (PLAIN).
        curve: the run's keys from :func:`new_curve_keys`, or None for PLAIN.
    """

    def __init__(self, context: zmq.Context, *, secret: bytes, curve: dict | None):
        self.socket = context.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)
        self._secret = secret
        self._curve = curve
        self._curve_client = z85.decode(curve["client_public"]) if curve else None

    def guard(self, router: zmq.Socket) -> None:
        """Make ``router`` require the run's credentials (before it binds)."""
        if self._curve:
            router.curve_server = True
            router.curve_secretkey = self._curve["server_secret"].encode()
        else:
            router.plain_server = True

    def answer(self) -> tuple[bool, str]:
        """Answer one pending ZAP request; returns (admitted, the peer's address)."""
        version, request_id, _domain, address, _identity, mechanism, *credentials = \
            self.socket.recv_multipart()
        if self._curve_client is not None:
            admitted = (mechanism == b"CURVE" and len(credentials) == 1
                        and hmac.compare_digest(credentials[0], self._curve_client))
        else:
            admitted = (mechanism == b"PLAIN" and len(credentials) == 2
                        and hmac.compare_digest(credentials[0], P.AUTH_USER)
                        and hmac.compare_digest(credentials[1], self._secret))
        status = [b"200", b"OK"] if admitted else [b"400", b"not authorized"]
        self.socket.send_multipart([version, request_id, *status, b"", b""])
        return admitted, f"{address.decode(errors='replace')} ({mechanism.decode(errors='replace')})"


class RefusalLog:
    """Says each refused connection, up to ``first``; then one line per ``every`` seconds with a count.

    A scan or a misconfigured client can knock thousands of times; the user's terminal
    should hear of it, not be flooded by it.
    """

    def __init__(self, log, *, first: int = 3, every: float = 60.0, clock=time.monotonic):
        self._log, self._first, self._every, self._clock = log, first, every, clock
        self.refused = 0
        self._unsaid = 0
        self._next_summary = 0.0

    def refused_from(self, peer: str) -> None:
        self.refused += 1
        if self.refused <= self._first:
            self._log(f"dockkit broker: refused a connection from {peer} without the run's credentials"
                      + (" (more are counted, not listed)" if self.refused == self._first else ""))
            self._next_summary = self._clock() + self._every
            return
        self._unsaid += 1
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Say how many refusals went unsaid, if it is time (or ``force``)."""
        if self._unsaid and (force or self._clock() >= self._next_summary):
            self._log(f"dockkit broker: refused {self._unsaid} more connection(s) without the run's "
                      f"credentials ({self.refused} in all)")
            self._unsaid = 0
            self._next_summary = self._clock() + self._every
