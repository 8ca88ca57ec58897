"""Stream sinks for ``Cluster.run``/``Cluster.exec``: what the command printed, kept for the test."""


class Collect:
    """Appends stdout and stderr chunks, in arrival order, to one list."""

    def __init__(self, out: list[bytes]):
        self.out = out

    def stdout(self, data: bytes) -> None:
        self.out.append(data)

    def stderr(self, data: bytes) -> None:
        self.out.append(data)


class Apart:
    """Keeps a command's stdout and stderr apart, each whole."""

    def __init__(self):
        self.out, self.err = b"", b""

    def stdout(self, data: bytes) -> None:
        self.out += data

    def stderr(self, data: bytes) -> None:
        self.err += data
