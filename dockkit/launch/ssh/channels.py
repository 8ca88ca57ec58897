"""Bytes through an SSH channel: the I/O shared by remote processes, probes and tunnels."""

from __future__ import annotations

import paramiko

__all__ = ["CHUNK", "sendall", "feed", "drain_stderr"]

CHUNK = 256 * 1024  # bytes per read from, or write to, a channel or a relayed socket


def sendall(channel: paramiko.Channel, data: bytes) -> None:
    # In slices: paramiko's sendall re-slices the whole remainder per 32 KiB packet (quadratic).
    for start in range(0, len(data), CHUNK):
        channel.sendall(data[start : start + CHUNK])


def feed(channel: paramiko.Channel, data: bytes) -> None:
    """Send ``data`` to a channel's stdin, then EOF."""
    try:
        sendall(channel, data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command ended or the channel closed: run() reports what matters


def drain_stderr(channel: paramiko.Channel, chunks: list[bytes]) -> None:
    """Collect a channel's stderr until EOF or close (run's timeout is enforced on stdout).

    Reads until the buffer says end, never stopping at ``channel.closed`` alone: a short
    command can end, and its channel close, before this thread first runs, with its
    stderr still waiting in the buffer.
    """
    while True:
        try:
            if not (data := channel.recv_stderr(CHUNK)):
                return
            chunks.append(data)
        except TimeoutError:
            continue
        except (OSError, EOFError, paramiko.SSHException):
            return
