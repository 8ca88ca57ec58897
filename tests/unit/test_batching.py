"""The batch-size rule of a map, one table per rule (no broker, no workers: the rule alone)."""

from __future__ import annotations

import pytest

from dockkit.runtime.batching import MAX_BATCH, MAX_BATCH_BYTES, BatchSizer, known_length

MiB = 1 << 20


def sizer(length, workers, *, chunksize=None, item_ns=None, item_bytes=None) -> BatchSizer:
    """A sizer in the state a map reaches after measuring ``item_ns`` and ``item_bytes``."""
    s = BatchSizer(length, workers, chunksize)
    if item_ns is not None:
        s.timed(item_ns, 1)
    if item_bytes is not None:
        s.pickled(item_bytes, 1)
    return s


# --- how many batches may be in flight -------------------------------------------------------------

@pytest.mark.parametrize(("length", "workers", "chunksize", "item_ns", "window"), [
    (1000, 3, None, None, 6),        # known length, no timing yet: a first wave of two per worker
    (1000, 3, None, 5e3, 14),        # ... then four per worker, plus two
    (None, 3, None, None, 14),       # endless: no first wave
    (None, 3, None, 5e3, 14),
    (1000, 3, 10, None, 14),         # a chunksize: sizes never change, so no first wave either
    (1000, 1, None, None, 2),
])
def test_window(length, workers, chunksize, item_ns, window):
    assert sizer(length, workers, chunksize=chunksize, item_ns=item_ns).window(workers) == window


def test_window_follows_the_worker_count_it_is_given():
    s = BatchSizer(1000, 2)
    assert (s.window(2), s.window(5)) == (4, 10)


# --- before the first timing ------------------------------------------------------------------------

@pytest.mark.parametrize(("length", "workers", "size"), [
    (1000, 2, 125),                 # Pool.map's split: ceil(1000 / (4 * 2))
    (20_000, 6, 834),               # W1: ceil(20000 / 24)
    (3, 4, 1),                      # fewer items than batches: one item each
    (0, 4, 1),                      # an empty input still asks for one (and reads nothing)
    (10 ** 9, 1, MAX_BATCH),        # never more than MAX_BATCH
    (1000, 0, 250),                 # no worker yet counts as one
])
def test_known_length_starts_with_the_even_split(length, workers, size):
    s = BatchSizer(length, workers)
    assert [s.next_size(sent, workers) for sent in (0, size, 2 * size)] == [size] * 3


def test_the_even_split_is_fixed_by_the_workers_at_the_start():
    s = BatchSizer(1000, 2)
    assert s.next_size(0, 8) == 125  # more workers later: the first wave keeps its size


def test_endless_input_doubles_from_one_up_to_max_batch():
    s = BatchSizer(None, 4)
    sizes = [s.next_size(0, 4) for _ in range(20)]
    assert sizes[:6] == [1, 2, 4, 8, 16, 32]
    assert sizes[-3:] == [MAX_BATCH] * 3
    assert all(b in (2 * a, MAX_BATCH) for a, b in zip(sizes, sizes[1:]))


# --- after the first timing: about TARGET_BATCH_SECONDS of work per batch ------------------------------

@pytest.mark.parametrize(("item_ns", "size"), [
    (1e6, 10),                      # 1 ms items: 10 ms of work is 10 items
    (1e3, MAX_BATCH),               # 1 µs items: capped
    (0.2, MAX_BATCH),               # a timing under 1 ns counts as 1 ns
    (1e9, 1),                       # items longer than the target: one at a time
])
def test_endless_input_after_timing_aims_at_the_target(item_ns, size):
    s = sizer(None, 4, item_ns=item_ns)
    assert [s.next_size(0, 4), s.next_size(10 ** 6, 4)] == [size, size]


@pytest.mark.parametrize(("length", "workers", "item_ns", "sent", "size"), [
    # guided: a quarter of each worker's share of what is left, while that is more than the target
    (10_000, 2, 1e6, 0, 1250),
    (10_000, 2, 1e6, 9000, 125),
    (10_000, 2, 1e6, 9960, 10),     # near the end: the target (10 items of 1 ms) again
    # never more than the even split
    (100_000, 2, 2e3, 0, 10_000),
    # the worker count given now, not the one at the start, divides what is left
    (10_000, 4, 1e6, 0, 625),
])
def test_known_length_after_timing_is_guided(length, workers, item_ns, sent, size):
    s = sizer(length, 2, item_ns=item_ns)
    assert s.next_size(sent, workers) == size


@pytest.mark.parametrize(("length", "workers", "item_ns", "sent", "share"), [
    (20_000, 6, 100, 10_008, 1666),  # W1: after the first wave, the rest in one batch per worker
    (10_000, 2, 1e6, 9985, 8),       # long items at the very end: the last 15 as 8 + 7
    (10_000, 2, 1e3, 0, 5000),       # the whole input is under a batch's work per worker
    (10 ** 6, 1, 1, 0, MAX_BATCH),   # the share is capped too
])
def test_tiny_items_go_out_as_one_batch_per_worker(length, workers, item_ns, sent, share):
    s = sizer(length, workers, item_ns=item_ns)
    assert s.next_size(sent, workers) == share
    # chosen once: the rest of the map keeps that share, whatever is left and however slow
    s.timed(1e9, 1)
    assert [s.next_size(sent + share, workers), s.next_size(length - 1, workers)] == [share, share]


def test_timing_is_smoothed_over_batches():
    s = BatchSizer(None, 1)
    assert s.item_ns is None
    s.timed(1000, 10)
    assert s.item_ns == 100
    s.timed(3000, 10)
    assert s.item_ns == 200  # half the old, half the new


# --- the byte cap -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("nbytes", "count", "per_batch"), [
    (100, 10, 10),                  # small: the batch goes whole
    (2 * MiB, 2, 2),                # exactly at the cap: whole
    (3 * MiB, 3, 2),                # 1 MiB items: two per batch
    (5 * MiB, 1, 1),                # one big item is never split
    (10 * MiB, 2, 1),               # items over the cap: one per batch
])
def test_a_batch_over_the_byte_cap_is_split(nbytes, count, per_batch):
    s = BatchSizer(1000, 2)
    assert s.pickled(nbytes, count) == per_batch
    assert s.item_bytes == nbytes / count


@pytest.mark.parametrize(("length", "chunksize", "item_ns", "item_bytes", "size"), [
    (1000, None, None, MiB, 2),      # known length, before timing
    (None, None, None, MiB, 1),      # endless: the probe's first 1 stays 1
    (None, None, 1e3, MiB // 4, 8),  # after timing
    (1000, None, None, 5 * MiB, 1),  # never below one
    (1000, None, None, 100, 125),    # small items: the cap does not bind
])
def test_the_byte_cap_bounds_every_next_size(length, chunksize, item_ns, item_bytes, size):
    s = sizer(length, 2, chunksize=chunksize, item_ns=item_ns, item_bytes=item_bytes)
    assert s.next_size(0, 2) == size
    assert size * item_bytes <= MAX_BATCH_BYTES or size == 1


# --- an explicit chunksize --------------------------------------------------------------------------

@pytest.mark.parametrize(("length", "item_ns"), [(1000, None), (1000, 1e6), (None, None), (None, 1e3)])
def test_chunksize_wins_over_timing(length, item_ns):
    s = sizer(length, 2, chunksize=7, item_ns=item_ns)
    assert [s.next_size(sent, 2) for sent in (0, 7, 993)] == [7, 7, 7]


def test_chunksize_batches_over_the_byte_cap_are_still_split():
    s = BatchSizer(1000, 2, chunksize=7)
    assert s.pickled(7 * MiB, 7) == 2
    assert s.next_size(0, 2) == 7  # asked for again: the batch read is split when it is pickled


# --- the known-length probe ----------------------------------------------------------------------

@pytest.mark.parametrize(("iterables", "length"), [
    ([range(5)], 5),
    ([range(5), [1, 2, 3]], 3),      # zip stops at the shortest
    ([(), "abc"], 0),
    ([iter([1, 2])], None),          # no len(): endless as far as sizing knows
    ([range(5), (x for x in "ab")], None),
])
def test_known_length(iterables, length):
    assert known_length(iterables) == length
