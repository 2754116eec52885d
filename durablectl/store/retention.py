"""How ``prune`` paces itself so that a daemon working on the same file barely notices it.

A prune deletes in batches, one write transaction each. Two things decide how long a daemon's
write can wait behind it:

- how long one batch holds the write lock. The cost of a batch varies with what the executions
  hold (a long history, a cold page cache, an fsync), so the batch size is not fixed: each batch
  is sized from how long the last one took, towards :data:`BUDGET_S`;
- whether the daemon gets in between batches at all. A writer that finds the lock taken sleeps
  in SQLite's busy handler at growing intervals (1, 2, 5, 10, 15, 20, 25 ms, ...), and a pruner
  that starts its next batch at once can win the lock every time (the daemon then waits for
  the whole prune). So after each batch the lock stays free for at least as long as the batch
  held it: the waiting writer's next poll falls into that gap.

The pruner also checkpoints the WAL itself between batches (outside the lock), so that the
daemon's next small commit does not find a WAL past the auto-checkpoint size and pay for
copying the pruner's pages.
"""

from __future__ import annotations

BUDGET_S = 0.010  # a batch's hold on the write lock; the target (issue #7) is 50 ms
FIRST_BATCH = 50  # executions in the first batch, before anything has been measured
GROWTH = 1.5  # at most this factor from one batch to the next
MIN_BATCH = 10
MAX_BATCH = 5000  # also keeps the IN (...) lists far below SQLite's variable limit
MIN_PAUSE_S = 0.002


def next_batch(size: int, held_s: float, budget_s: float = BUDGET_S) -> int:
    """The next batch size: scaled towards the budget, shrinking at once when a batch ran long
    but growing by at most :data:`GROWTH` when it was quick (one cheap batch says little about
    the next, and an overshoot is what the daemon would feel)."""
    grown = size * GROWTH
    wanted = grown if held_s <= 0 else min(grown, size * budget_s / held_s)
    return max(MIN_BATCH, min(MAX_BATCH, int(wanted)))


def pause_after(held_s: float, spent_s: float) -> float:
    """How long to leave the lock free after a batch that held it ``held_s``, given that
    ``spent_s`` already went by outside it (the checkpoint)."""
    return max(MIN_PAUSE_S, held_s - spent_s)
