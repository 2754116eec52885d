"""Suspended workflow runs kept in memory between wake-ups (a "sticky" cache).

Pure replay makes a wake-up cost O(history): a workflow looping a thousand times over
``wait_for_signal`` re-runs a thousand iterations of its own code to reach the next wait. When a
workflow parks on a plain ``await ctx.sleep(...)`` or ``await ctx.wait_for_signal(...)`` in its
own task, with nothing else of it running, the engine records the park exactly as before (the
timer, the status, the released lease) and keeps the suspended task here instead of throwing it
away. The next claim of the execution by this worker resumes the task where it stopped, in O(1),
after checking that nothing but the awaited step changed in the database since (the claim
carries the execution's step counter, so this costs no query).

What the database holds stays the single truth: a resumed run and a replayed run see the same
history, so eviction, a restart or another worker running the execution in between only cost a
replay. The cache holds at most ``size`` runs (the service's ``cache_size``); ``0`` turns it off.
An evicted run has :class:`Evicted` (a :class:`~durablectl.context.Suspend`) raised where it
waited, exactly what a non-sticky park raises, so the workflow's ``finally`` blocks run as they
always did, and any durable call it still makes suspends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from durablectl.context import Suspend
from durablectl.model import StepRecord

if TYPE_CHECKING:
    from durablectl.context import WorkflowContext

log = logging.getLogger(__name__)

PARKED = "parked"
DONE = "done"


class Evicted(Suspend):
    """Raised inside a kept run that will not be resumed: its execution replays next time."""


class LiveRun:
    """One workflow run, as an asyncio task, that may outlive the claim that started it.

    The engine awaits :meth:`turn`: it ends when the task finishes or when the workflow holds
    on a park (:meth:`hold`); :meth:`resume` lets a held workflow go on after a new claim."""

    def __init__(self, ctx: WorkflowContext, workflow: Any) -> None:
        self.ctx = ctx
        self.workflow = workflow  # the definition it runs: a reload makes a new one
        self.task: asyncio.Task[Any] | None = None
        self.parked: tuple[str, str] | None = None  # (timer kind, step id) it waits on
        self._turn: asyncio.Future[str] | None = None
        self._resume: asyncio.Future[None] | None = None

    def start(self, coroutine: Any) -> None:
        loop = asyncio.get_running_loop()
        self._turn = loop.create_future()
        self.task = loop.create_task(coroutine)
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if self._turn is not None and not self._turn.done():
            self._turn.set_result(DONE)
        elif not task.cancelled() and task.exception() is not None:
            # an evicted run ended on its own: retrieve the exception so asyncio stays quiet
            exc = task.exception()
            if not isinstance(exc, Suspend | BaseExceptionGroup):
                log.debug("execution %s: evicted run ended with %r",
                          self.ctx.execution_id, exc)

    async def turn(self) -> str:
        """Wait until the workflow finishes (``"done"``) or holds on a park (``"parked"``).
        Cancelling the caller cancels the workflow too (a stopping worker)."""
        assert self._turn is not None and self.task is not None
        try:
            # no shield: the turn future is this waiter's alone, and a cancelled one is done,
            # which ``can_hold`` and ``_finished`` already treat as "nobody waits for a turn"
            return await self._turn
        except asyncio.CancelledError:
            # the workflow runs in a task of its own: take it down with the run, as when it
            # ran inline, before the worker lets the execution go
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({self.task})
            raise

    def can_hold(self) -> bool:
        """Only a workflow parked on a plain await of its own task, with no step of it still
        running, can be kept: then nothing of it runs while it is parked."""
        task = self.task
        return (task is not None and asyncio.current_task() is task
                and self.ctx.inflight == 0 and len(self.ctx.park_requests) == 1
                and self._turn is not None and not self._turn.done())

    async def hold(self, timer_kind: str, step_id: str) -> None:
        """Called by the parking durable call: report "parked" to the engine and wait for
        :meth:`resume` (returns) or :meth:`evict` (raises :class:`Evicted`)."""
        assert self._turn is not None
        self.parked = (timer_kind, step_id)
        self._resume = asyncio.get_running_loop().create_future()
        self._turn.set_result(PARKED)
        await self._resume

    def resume(self) -> None:
        assert self._resume is not None and not self._resume.done()
        self._turn = asyncio.get_running_loop().create_future()
        self.parked = None
        self.ctx.park_requests.clear()
        self._resume.set_result(None)

    def evict(self) -> None:
        """Drop the run: the workflow sees :class:`Evicted` where it waited and ends."""
        self.ctx.closed = True
        self._turn = None
        if self._resume is not None and not self._resume.done():
            self._resume.set_exception(Evicted())
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def absorb(self, step_seq: int, fired: Sequence[StepRecord]) -> bool:
        """Take in what was stored since the park, from what the new claim carries; False
        when anything but the awaited step changed (another worker ran on, an operator edited
        a step): then only a replay is safe. Every change to a step takes the next value of
        the execution's step counter, so the run has seen everything if the counter is where
        it left it plus the steps the claim itself stored (a fired sleep, a timed-out wait),
        and those are for the step it waits on. (Steps are only ever deleted, by the
        operator's retry-rollback, from executions that ended: their runs are never kept.)"""
        history = self.ctx.history
        assert self.parked is not None
        kind, parked_step = self.parked
        if step_seq != history.max_seq + len(fired):
            return False
        if any(record.step_id != parked_step for record in fired):
            return False
        for record in fired:
            history.steps[record.step_id] = record
            history.max_seq = max(history.max_seq, record.seq)
            history.timers.pop((kind, parked_step), None)  # it fired
        history.step_count = len(history.steps)
        return True


class StickyCache:
    """The ``size`` most recently parked runs, least recently parked evicted first."""

    def __init__(self, size: int) -> None:
        self._size = max(0, int(size))
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()
        self.resumed = 0
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        return self._size > 0

    def keep(self, execution_id: str, run: LiveRun) -> None:
        old = self._runs.pop(execution_id, None)
        if old is not None and old is not run:
            old.evict()
        self._runs[execution_id] = run
        while len(self._runs) > self._size:
            _, oldest = self._runs.popitem(last=False)
            self.evicted += 1
            oldest.evict()

    def ids(self) -> list[str]:
        return list(self._runs)

    def take(self, execution_id: str) -> LiveRun | None:
        return self._runs.pop(execution_id, None)

    def discard(self, execution_id: str) -> None:
        run = self._runs.pop(execution_id, None)
        if run is not None:
            run.evict()

    def clear(self) -> None:
        while self._runs:
            _, run = self._runs.popitem()
            run.evict()

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._runs
