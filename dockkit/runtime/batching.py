"""How many items go in each batch of a map: the sizing rule alone, with no I/O.

:class:`~dockkit.runtime.client.Client` reads the inputs, pickles and sends the
batches; it asks a :class:`BatchSizer` how many batches may be in flight
(:meth:`~BatchSizer.window`) and how many items the next one holds
(:meth:`~BatchSizer.next_size`), and tells it what it measured: how long an item
took on a worker (:meth:`~BatchSizer.timed`) and how many bytes an item pickles to
(:meth:`~BatchSizer.pickled`).

The rule, in the order it applies:

- An explicit ``chunksize`` wins: every batch read holds that many items (one over
  the byte cap below is still split when it is pickled).
- Before any timing, an input of known length is cut as ``multiprocessing.Pool.map``
  cuts it (``ceil(length / (4 * workers))``, at most ``MAX_BATCH``), and only a first
  wave of two batches per worker goes out, so the rest can be sized by measurement
  (sending the whole input in Pool.map's chunks leaves a whole chunk's tail). An
  endless input starts with single items that double per batch, up to ``MAX_BATCH``.
- Once a worker reports how long an item takes, a batch holds about
  ``TARGET_BATCH_SECONDS`` of work (at most ``MAX_BATCH`` for an endless input). For
  an input of known length, the batch is rather about four batches per worker of
  what is left, if that is more (few messages while much remains, single items at
  the end), but never more than the even split.
- Tiny items: when what is left of a known-length input is under a batch's worth of
  work per worker, it goes out as one batch per worker; that share, once chosen,
  stays for the rest of the map (the tail is one such batch).
- A batch never holds more than ``MAX_BATCH_BYTES`` of pickled arguments: big
  payloads pipeline better in small batches (pickling, transfer and work overlap).
"""

from __future__ import annotations

import math

TARGET_BATCH_SECONDS = 0.01
MAX_BATCH = 10_000
MAX_BATCH_BYTES = 2 << 20

__all__ = ["BatchSizer", "known_length", "TARGET_BATCH_SECONDS", "MAX_BATCH", "MAX_BATCH_BYTES"]


def known_length(iterables) -> int | None:
    """The number of items a map over ``iterables`` yields, or None if one has no length.

    Args:
        iterables: The map's input iterables (``zip`` stops at the shortest).

    Returns:
        The shortest length, or None when any input has no ``len()``.
    """
    try:
        return min(len(it) for it in iterables)
    except TypeError:
        return None


class BatchSizer:
    """The batch-size rule of one map call (see the module docstring).

    Args:
        length: How many items the map has, or None for an endless input.
        workers: How many workers there are at the start (sizes the even split).
        chunksize: A fixed batch size asked for by the caller, or None/0.

    Attributes:
        item_ns: Smoothed compute time of one item in ns, or None before any timing.
        item_bytes: Pickled size of one item in the last batch, 0.0 before any.
    """

    __slots__ = ("length", "chunksize", "even_split", "item_ns", "item_bytes", "_probe", "_last_share")

    def __init__(self, length: int | None, workers: int, chunksize: int | None = None):
        self.length = length
        self.chunksize = chunksize
        # Never bigger than Pool.map's chunks, so every worker gets several batches.
        self.even_split = (None if length is None else
                           max(1, min(MAX_BATCH, math.ceil(length / (4 * max(1, workers))))))
        self.item_ns: float | None = None
        self.item_bytes = 0.0
        self._probe = 1  # an endless input's next batch size before any timing
        self._last_share = 0  # the batch size of a tiny-item map's rest, once chosen

    def window(self, workers: int) -> int:
        """How many batches may be in flight at once with ``workers`` workers."""
        if self.item_ns is None and self.even_split is not None and not self.chunksize:
            # A first wave only, until a result says how long an item takes.
            return 2 * workers
        return 4 * workers + 2

    def next_size(self, sent: int, workers: int) -> int:
        """How many items the next batch holds, ``sent`` items having gone out already.

        Endless inputs: each call before the first timing doubles the next answer.
        """
        if self.chunksize:
            return self.chunksize
        if self.item_ns is not None:
            size = int(TARGET_BATCH_SECONDS * 1e9 / max(self.item_ns, 1.0))
            if self.length is None:
                size = min(size, MAX_BATCH)
            elif self._last_share or size * workers >= self.length - sent:
                # Tiny items: what is left is under a batch's worth of work per worker, so it
                # goes out as one batch each (fewer messages; the tail is one such batch).
                self._last_share = self._last_share or min(math.ceil((self.length - sent) / workers), MAX_BATCH)
                size = self._last_share
            else:
                # Guided: about four batches per worker of what is left, so long items travel
                # in few messages while much remains and one at a time at the end (the tail).
                size = max(size, math.ceil((self.length - sent) / (4 * workers)))
                size = min(size, self.even_split)
        elif self.even_split is not None:
            size = self.even_split
        else:
            size, self._probe = self._probe, min(2 * self._probe, MAX_BATCH)
        if self.item_bytes:
            size = min(size, int(MAX_BATCH_BYTES // self.item_bytes))
        return max(1, size)

    def timed(self, elapsed_ns: float, count: int) -> None:
        """Record that a batch of ``count`` items took ``elapsed_ns`` of compute on a worker."""
        per_item = elapsed_ns / count
        self.item_ns = per_item if self.item_ns is None else 0.5 * self.item_ns + 0.5 * per_item

    def pickled(self, nbytes: int, count: int) -> int:
        """Record that ``count`` items pickled to ``nbytes``; return how many may go in one batch.

        Returns:
            ``count`` when the batch fits under ``MAX_BATCH_BYTES`` (or holds one item),
            else the number of items per batch to split it into.
        """
        self.item_bytes = nbytes / count
        if self.item_bytes * count > MAX_BATCH_BYTES and count > 1:
            return max(1, int(MAX_BATCH_BYTES // self.item_bytes))
        return count
