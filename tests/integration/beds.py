"""What every test bed (extra engines, a SLURM cluster) shares: a start that cleans up after itself."""

from __future__ import annotations


class Bed:
    """``with SomeBed(...) as bed:`` runs ``_start``; ``close`` undoes it, even a partial start."""

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
