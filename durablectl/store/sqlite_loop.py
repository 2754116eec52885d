"""Commits made on the event loop that submitted the writes (``synchronous`` NORMAL or OFF).

At FULL a commit waits for the disk, so the grouped writer is a thread: the loop runs on while
it waits. At NORMAL a commit only hands pages to the OS (tens of microseconds), and a writer
thread then costs more than it saves: it and the loop take turns at the GIL after every SQLite
call, so each write waits for the loop's Python work and the loop for the writer's. Measured
with a daemon fed by a client: 2,200 executions/s with the writer thread, 3,000 with the loop
committing its own batches (README, "Commits on the loop").

So a store at NORMAL or OFF commits the writes an event loop submits on that loop: a batch runs
one loop pass after its first write, and every write submitted before it runs shares its commit.
Two things must never stall the loop, and go elsewhere:

- the write lock held by another process (a CLI command, a prune): the batch is tried without
  waiting for the lock, and when it is taken it goes to the writer thread, which waits;
- checkpoints, which fsync at NORMAL: SQLite's automatic checkpoint (run by the committing
  connection) is switched off and a thread of its own checkpoints the WAL instead.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durablectl.store.base import JobSink

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

log = logging.getLogger(__name__)

Job = tuple[Callable[[], Any], JobSink]

CHECKPOINT_EVERY_COMMITS = 100  # roughly SQLite's own 1,000 pages at ~10 pages per batch
CHECKPOINT_IDLE_SECONDS = 1.0  # and whatever is left, once a second


class LoopWriter:
    """The writes one event loop submitted since its last pass, committed in one batch by
    ``commit`` (the store's) on that loop."""

    def __init__(self, loop: AbstractEventLoop,
                 commit: Callable[[list[Job]], None]) -> None:
        self.loop = loop
        self._commit = commit
        self._pending: list[Job] = []
        self._scheduled = False
        self._waited = False

    def add(self, call: Callable[[], Any], sink: JobSink) -> None:
        """From the loop's own thread only."""
        self._pending.append((call, sink))
        if not self._scheduled:
            self._scheduled = True
            self._waited = False
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        # one more pass first: the writes of the callbacks that this pass made ready (runs
        # woken by the previous commit, steps back from their threads) join this commit.
        # Fewer, larger commits write fewer WAL frames per execution (the same index pages)
        if not self._waited:
            self._waited = True
            self.loop.call_soon(self._flush)
            return
        self._scheduled = False
        batch, self._pending = self._pending, []
        # a caller that gave up (its task was cancelled) drops its job, as the writer does
        batch = [job for job in batch if job[1].set_running_or_notify_cancel()]
        if batch:
            self._commit(batch)

    def fail_pending(self, error: BaseException) -> None:
        """The store closed: writes not yet committed never will be."""
        batch, self._pending = self._pending, []
        for _call, sink in batch:
            if sink.set_running_or_notify_cancel():
                sink.set_exception(error)


class AlreadyRunning:
    """A sink whose ``set_running_or_notify_cancel`` was called already (by the loop writer),
    handed to the writer thread, which calls it again."""

    __slots__ = ("_sink",)

    def __init__(self, sink: JobSink) -> None:
        self._sink = sink

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: Any, /) -> None:
        self._sink.set_result(result)

    def set_exception(self, exception: BaseException | None, /) -> None:
        self._sink.set_exception(exception)

    def done(self) -> bool:
        return self._sink.done()


class Checkpointer:
    """Checkpoints the WAL (PASSIVE: never waits for readers or the writer) from a thread and
    connection of its own, every ``CHECKPOINT_EVERY_COMMITS`` commits and once a second."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wake = threading.Event()
        self._stopping = False
        self._commits = 0
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="durablectl-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY_COMMITS:
            self._commits = 0
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception:  # the store is failing anyway; SQLite checkpoints on close
            log.exception("checkpointer: no connection")
            return
        try:
            while not self._stopping:
                self._wake.wait(CHECKPOINT_IDLE_SECONDS)
                self._wake.clear()
                if self._stopping:
                    break
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the next one tries again
                    log.debug("checkpoint failed: %s", exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
