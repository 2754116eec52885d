"""The loop: ``tick()`` does one pass (fire due timers, claim ready executions, start their runs)
and returns when it next needs to run; ``run_forever`` only sleeps until then or until woken.

Wake-ups come from this process (a start, a signal, a run that ended, a fake clock moving) through
:meth:`Runner.wake`, and from other processes through the store's ``data_version`` on a slow
fallback tick; there is no fixed poll that adds latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from durablectl.client import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BACKOFF, new_execution_id
from durablectl.clock import Clock, real_time
from durablectl.context import RunEnv, WorkflowContext
from durablectl.definitions import Registry
from durablectl.engine import RunOutcome, run_execution
from durablectl.history import HistoryCache
from durablectl.model import Schedule
from durablectl.schedules import SchedulePlanner
from durablectl.sticky import StickyCache
from durablectl.store.base import Claim, Store
from durablectl.threads import StepThreads

log = logging.getLogger(__name__)

FALLBACK_TICK_SECONDS = 1.0  # idle check for other processes' writes and dead workers
FIRE_CHUNK = 100  # timers fired per transaction: the first runs start while the rest wait
UNLOADED_REASON = "workflow not loaded: "


class Runner:
    """Claims and runs executions for one worker."""

    def __init__(self, store: Store, registry: Registry, *, worker_id: str, clock: Clock,
                 concurrency: int = 100, lease_seconds: float = 30.0, audit: bool = True,
                 implicit_step_ids: str = "allow", max_payload_bytes: int = 1_048_576,
                 cache_size: int = 1000,
                 publish: Callable[[Any, Any], None] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.worker_id = worker_id
        self.clock = clock
        self.concurrency = max(1, int(concurrency))
        self.lease_seconds = float(lease_seconds)
        self._executor = StepThreads(min(self.concurrency, 32), name="durablectl-step")
        self.env = RunEnv(store=store, clock=clock, worker_id=worker_id,
                          executor=self._executor, audit=audit,
                          implicit_step_ids=implicit_step_ids,
                          max_payload_bytes=max_payload_bytes,
                          publish=publish or (lambda event, payload: None),
                          histories=HistoryCache(store, cache_size),
                          sticky=StickyCache(cache_size))
        self.running: dict[str, asyncio.Task[RunOutcome]] = {}
        self.contexts: dict[str, WorkflowContext] = {}
        self.outcome_listeners: list[Callable[[RunOutcome], None]] = []
        self._wake_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._claiming = True
        self._last_heartbeat = 0.0
        self._last_reap = 0.0
        self._data_version = -1
        self._orphans: set[str] = set()
        self._maybe_ready = True
        self._due_stale = True
        self._check_unloaded = False
        self._check_queued = True
        self._next_due: float | None = None
        self.schedule_options: dict[str, Any] = {"misfire_grace_seconds": 60.0,
                                                 "max_catch_up": 100}
        self.ticks = 0

    # waking ----------------------------------------------------------------------------------
    def wake(self, *, claim: bool = True, timers: bool = True) -> None:
        """Run a tick soon; safe from any thread. ``claim``: something may be ready to claim;
        ``timers``: timers may have changed."""
        if claim:
            self._maybe_ready = True
        if timers:
            self._due_stale = True
        loop, event = self._loop, self._wake_event
        if loop is None or event is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    # one pass --------------------------------------------------------------------------------
    def _lease_until(self) -> float:
        return real_time() + self.lease_seconds

    def lease_until(self) -> float:
        """The lease end for a claim made now."""
        return self._lease_until()

    def has_room(self) -> bool:
        return self._claiming and len(self.running) < self.concurrency

    def adopt(self, claim: Claim) -> None:
        """Run an execution claimed outside a tick (a signal that woke it in this process)."""
        self._start_runs([claim])

    async def _submit(self, method: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await self.env.write(method, *args, **kwargs)

    async def tick(self) -> float | None:
        """One pass; returns the clock time of the next due timer (None: nothing scheduled).

        Does no database work it does not need: timers are fired only when one is due, and
        ready executions are claimed only when something may have made one ready (a start or
        signal here, a run sent back to pending, another process's commit, a full runner)."""
        self.ticks += 1
        loaded = self.registry.ids()
        now = self.clock.timestamp()
        real_now = real_time()
        if self._due_stale:
            self._due_stale = False
            self._next_due = self.store.next_due_at()
        free = self.concurrency - len(self.running)
        if self._claiming and loaded:
            # fire in small chunks so the first woken runs start while the rest are fired
            if self._check_queued:
                self._check_queued = False
                if self.store.has_queued_schedule_runs():
                    await self._fire_schedules(now)
            while free > 0 and self._next_due is not None and self._next_due <= now:
                # schedules and execution timers fire in the same grouped commit
                started_future = self._fire_schedules(now)
                claims = await self._submit(
                    self.store.fire_due_timers, worker_id=self.worker_id, workflow_ids=loaded,
                    now=now, real_now=real_now, lease_until=self._lease_until(),
                    limit=min(free, FIRE_CHUNK), audit=self.env.audit)
                await started_future
                self._start_runs(claims)
                free = self.concurrency - len(self.running)
                self._next_due = self.store.next_due_at()
                if not claims:
                    self._maybe_ready = True  # timers woke executions another worker runs
                    break
        # leases, dead workers, unloaded workflows: after the due timers fired, so that a
        # heartbeat's commit or the dead-worker check never makes a wake-up late (before the
        # claim, so that executions freed from a dead worker are claimed in this same pass)
        await self._housekeeping(real_now)
        free = self.concurrency - len(self.running)
        if self._claiming and loaded:
            if free > 0 and self._maybe_ready:
                self._maybe_ready = False
                claims = await self._submit(
                    self.store.claim_ready, worker_id=self.worker_id, workflow_ids=loaded,
                    now=now, real_now=real_now, lease_until=self._lease_until(), limit=free,
                    audit=self.env.audit)
                self._start_runs(claims)
                if len(claims) == free:
                    self._maybe_ready = True  # there may be more than we had room for
            elif free <= 0:
                self._maybe_ready = True
        if len(self.running) >= self.concurrency:
            return None  # full: the next run to end wakes the loop
        return self._next_due

    def _fire_schedules(self, now: float) -> Any:
        """Start the executions of due schedule ticks (and of queued ticks whose previous
        execution has finished); returns an awaitable of the new execution ids."""
        planner = SchedulePlanner(now=now, **self.schedule_options)

        def new_execution(schedule: Schedule, tick: float) -> dict[str, Any]:
            workflow = self.registry.get(schedule.workflow_id)
            timeout = workflow.timeout if workflow is not None else None
            return {
                "execution_id": new_execution_id(),
                "max_attempts": workflow.max_attempts if workflow else DEFAULT_MAX_ATTEMPTS,
                "retry_backoff": workflow.retry_backoff if workflow else DEFAULT_RETRY_BACKOFF,
                "input_json": json.dumps(schedule.input),
                "deadline": None if timeout is None else now + timeout,
            }

        future = self.env.write(self.store.fire_schedules, now=now, limit=FIRE_CHUNK,
                                plan=planner, new_execution=new_execution,
                                audit=self.env.audit)

        async def settle() -> list[str]:
            started: list[str] = await future
            if started:
                self._maybe_ready = True
                log.info("worker %s: schedules started %s", self.worker_id, ", ".join(started))
            return started

        return asyncio.ensure_future(settle())

    async def _housekeeping(self, real_now: float) -> None:
        if real_now - self._last_heartbeat >= self.lease_seconds / 3:
            self._last_heartbeat = real_now
            try:
                await self._submit(self.store.heartbeat, worker_id=self.worker_id,
                                   real_now=real_now, lease_until=real_now + self.lease_seconds)
            except Exception:
                log.exception("worker %s: heartbeat failed", self.worker_id)
        if real_now - self._last_reap >= FALLBACK_TICK_SECONDS:
            self._last_reap = real_now
            try:
                # file locks and a possible write: off the loop, never blocking it
                freed = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.store.reap_dead_workers(real_now=real_now))
                if freed:
                    self._maybe_ready = True
                    log.info("worker %s: took over %d executions of dead workers",
                             self.worker_id, freed)
            except Exception:
                log.exception("worker %s: checking other workers failed", self.worker_id)
            await self._drop_kept_runs_ended_elsewhere()
        if self._check_unloaded:
            # another process may have queued work for a workflow this worker does not run:
            # say so on the execution instead of leaving it silently pending
            self._check_unloaded = False
            try:
                await self._submit(self.store.mark_unloaded, workflow_ids=self.registry.ids(),
                                   reason_prefix=UNLOADED_REASON)
            except Exception:
                log.exception("worker %s: marking unloaded workflows failed", self.worker_id)
        for execution_id in list(self._orphans):
            if execution_id in self.running:
                continue
            try:
                await self._submit(self.store.release, execution_id, worker_id=self.worker_id)
                self._orphans.discard(execution_id)
                self._maybe_ready = True
            except Exception:
                log.warning("worker %s: could not release %s yet", self.worker_id, execution_id)

    async def _drop_kept_runs_ended_elsewhere(self) -> None:
        """A kept run whose execution another process cancelled (or timed out, or an operator
        failed) would wait in the cache until it is evicted; drop it now so that its
        ``finally`` blocks run within a second, as they do for a cancel through this worker.
        One indexed read per 500 kept runs, off the loop."""
        sticky = self.env.sticky
        if sticky is None or not len(sticky):
            return
        kept = sticky.ids()
        try:
            ended = await asyncio.get_running_loop().run_in_executor(
                None, self.store.ended_among, kept)
        except Exception:
            log.exception("worker %s: checking kept runs failed", self.worker_id)
            return
        for execution_id in ended:
            if execution_id not in self.running:  # a run in progress ends on its own
                sticky.discard(execution_id)

    def _start_runs(self, claims: list[Claim]) -> None:
        for claim in claims:
            execution_id = claim.execution.execution_id
            workflow = self.registry.get(claim.execution.workflow_id)
            if workflow is None or execution_id in self.running:
                self._orphans.add(execution_id)
                continue
            task = asyncio.get_running_loop().create_task(self._run(workflow, claim))
            self.running[execution_id] = task

    async def _run(self, workflow: Any, claim: Claim) -> RunOutcome:
        execution_id = claim.execution.execution_id
        try:
            outcome = await run_execution(self.env, workflow, claim,
                                          ctx_hook=lambda ctx: self.contexts.__setitem__(
                                              execution_id, ctx))
        except asyncio.CancelledError:
            self._orphans.add(execution_id)
            outcome = RunOutcome(execution_id, "aborted", "worker stopping")
        except Exception as exc:
            log.exception("execution %s: could not record the outcome of its run", execution_id)
            self._orphans.add(execution_id)
            outcome = RunOutcome(execution_id, "aborted", str(exc))
        finally:
            self.running.pop(execution_id, None)
            self.contexts.pop(execution_id, None)
        # a run sent back to pending needs a claim; a parked or retrying one created timers
        # (one that finished only cancelled some: a due time remembered too early costs one
        # early pass, which re-reads it); a finished one may let a queued schedule tick start
        self._check_queued = True
        self.wake(claim=outcome.status == "pending",
                  timers=outcome.status not in ("completed", "failed", "cancelled",
                                                "compensation_failed"))
        if outcome.status == "aborted":
            self._orphans.add(execution_id)
        log.debug("execution %s: run ended %s", execution_id, outcome.status)
        for listener in list(self.outcome_listeners):
            try:
                listener(outcome)
            except Exception:
                log.exception("outcome listener failed")
        return outcome

    def request_cancel(self, execution_id: str) -> None:
        ctx = self.contexts.get(execution_id)
        if ctx is not None:
            ctx.cancel_requested = True
        if self.env.sticky is not None:
            self.env.sticky.discard(execution_id)  # a kept run of it will never resume

    # the loop --------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        unsubscribe = self.clock.subscribe(self.wake)
        try:
            while not self._stopping:
                try:
                    next_due = await self.tick()
                except Exception:
                    log.exception("worker %s: tick failed", self.worker_id)
                    next_due = None
                timeout = FALLBACK_TICK_SECONDS
                if next_due is not None:
                    timeout = min(timeout, max(0.0, next_due - self.clock.timestamp()))
                # leases are renewed every third of lease_seconds, however short
                heartbeat_due = self._last_heartbeat + self.lease_seconds / 3 - real_time()
                timeout = max(0.0, min(timeout, heartbeat_due))
                if timeout > 0:
                    try:
                        await asyncio.wait_for(self._wake_event.wait(), timeout)
                    except TimeoutError:
                        self._note_outside_writes()
                else:
                    await asyncio.sleep(0)  # due now: let running executions progress too
                self._wake_event.clear()
        finally:
            unsubscribe()

    def _note_outside_writes(self) -> None:
        """Fallback: another process committed (a client's start or signal, a cancel), or a
        stalled worker's lease ran out: look for claimable work on every quiet tick."""
        self._maybe_ready = True
        try:
            version = self.store.data_version()
        except Exception:
            return
        if version != self._data_version:
            self._data_version = version
            self._maybe_ready = True
            self._due_stale = True
            self._check_unloaded = True
            self._refresh_cancellations()

    def _refresh_cancellations(self) -> None:
        for execution_id in list(self.contexts):
            found = self.store.get_execution(execution_id)
            if found is not None and found.status != "running":
                self.request_cancel(execution_id)

    def stop_claiming(self) -> None:
        self._claiming = False

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming, give running executions ``grace_seconds`` to finish, then cancel
        what is left (it re-runs from its history on the next start)."""
        self._claiming = False
        self._stopping = True
        self.wake()
        tasks = list(self.running.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self.env.sticky is not None:
            self.env.sticky.clear()  # kept runs end as parked runs always did: at a Suspend
        for execution_id in list(self._orphans):
            try:
                self.store.release(execution_id, worker_id=self.worker_id)
            except Exception:
                log.warning("could not release %s on stop", execution_id)
        self._executor.shutdown(wait=False, cancel_futures=True)
