"""A stream sink for ``Cluster.run``/``Cluster.exec`` that keeps everything the command printed."""


class Collect:
    """Appends stdout and stderr chunks, in arrival order, to one list."""

    def __init__(self, out: list[bytes]):
        self.out = out

    def stdout(self, data: bytes) -> None:
        self.out.append(data)

    def stderr(self, data: bytes) -> None:
        self.out.append(data)
